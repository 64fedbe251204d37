# drop_source stops a running sync: a worker held by the fake Stripe in the
# middle of its backfill (its second page of customers waits at the fake)
# exits once its source is dropped, and no further request of that source
# reaches the fake, while another source (another Stripe-Account, so that the
# fake's log tells them apart) syncs from start to end.  The local table stays,
# with the page committed before.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 500 });
my $node = new_node('drop', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.http_timeout = 600\n"
	  . "stripe_sync.max_concurrent_requests = 1\n");
my $url = $fake->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $s1_worker = "FROM pg_stat_activity WHERE application_name = 'stripe_sync s1'";

sql(qq{
	CREATE SERVER stripe_b FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$url', account 'acct_second');
	CREATE USER MAPPING FOR CURRENT_USER SERVER stripe_b OPTIONS (api_key 'sk_test_fake');
});

# ---- s1's worker: its first page of customers commits, its second waits at the fake
$fake->hold('/v1/customers?limit=100&starting_after=', count => 1);
sql("SELECT stripe_sync.create_source('s1', server => 'stripe', target_schema => 's1', objects => ARRAY['customers'])");
ok($fake->wait_held(1), "s1's worker asks for its second page, which the fake holds");
is(sql("SELECT count(*) FROM s1.customers"), '100', '... its first page is committed');
is(sql("SELECT count(*) $s1_worker"), '1', '... and the worker runs');

# ---- drop_source: the worker exits while its request is still held
sql("SELECT stripe_sync.drop_source('s1')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 $s1_worker"),
	"drop_source: s1's worker exits, its request still held at the fake");
my $seen = scalar @{ $fake->requests };
is($fake->release, 1, 'the held request is answered now, to nobody');

# ---- another source syncs from start to end meanwhile
sql("SELECT stripe_sync.create_source('s2', server => 'stripe_b', target_schema => 's2', objects => ARRAY['customers'])");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 's2' AND status = 'ok'"),
	'another source syncs from start to end');
is(sql("SELECT count(*) FROM s2.customers"), '500', '... with every customer');
my @after = @{ $fake->requests }[ $seen .. $#{ $fake->requests } ];
my @s1 = grep { ($_->{stripe_account} // '') ne 'acct_second' } @after;
is(join(' ', map { "$_->{fault}:" . (split /\?/, $_->{path})[0] } @s1), 'hold:/v1/customers',
	'since s1 was dropped, its only request at the fake is the one held before (' . scalar(@after)
	  . ' requests of s2)');
is(sql("SELECT count(*) FROM stripe_sync.sources WHERE name = 's1'") . ' '
	  . sql("SELECT count(*) FROM s1.customers"), '0 100', 's1 is gone; its local table stays as it was');

# ---- a sync_now holds its source for its caller's whole transaction: alter_source
# and drop_source say so at once, naming the process, instead of waiting for it
sql(q{
	BEGIN;
	SELECT stripe_sync.create_source('s3', server => 'stripe', target_schema => 's3', objects => ARRAY['customers']);
	SELECT stripe_sync.alter_source('s3', enabled => false);
	COMMIT;
});
$fake->hold('/v1/customers?limit=100&starting_after=', count => 1);
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/started/, "\\echo started\nSELECT stripe_sync.sync_now('s3');\n");
ok($fake->wait_held(1), "a sync_now of s3 waits at the fake for its second page");
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE query LIKE '%sync_now(''s3'')%' AND pid <> pg_backend_pid()");
my $t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.drop_source('s3')");
like($err, qr/source "s3" is busy.*DETAIL:  Another transaction holds it: process $pid is syncing it.*pg_cancel_backend\($pid\)/s,
	"drop_source during a sync_now: busy, naming the process ($pid) and how to cancel it");
ok(time - $t0 < 30, '... within seconds (' . (time - $t0) . ' s), not when the sync ends');
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.alter_source('s3', sync_interval => '1 day')");
like($err, qr/source "s3" is busy/, '... and so does alter_source');
is($fake->release, 1, 'the held page is answered');
$bg->quit;
is(sql("SELECT count(*) FROM s3.customers"), '500', 'the sync_now ends with every customer');
sql("SELECT stripe_sync.drop_source('s3')");
is(sql("SELECT count(*) FROM stripe_sync.sources WHERE name = 's3'"), '0', '... and the source drops then');

$node->stop;
done_testing();
