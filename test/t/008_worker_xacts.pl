# How a sync worker uses transactions: none is open while it waits on Stripe
# (vacuum is not held back by a backfill of hours), now() moves with each
# step (last_success_at is not the worker's connection time), and the shipper
# reports its table statistics while it lives (autovacuum sees the outbox).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use StripeTest qw(start_fake start_intempt new_node);

my $key = 'pk7Xq.s3cr3tIntemptKey';
my $fake = start_fake(counts => { customers => 3000 });
my $it = start_intempt(api_key => $key);
my $node = new_node('xacts', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n"
	  . "stripe_sync.max_concurrent_requests = 1\n");
my $iurl = $it->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
	CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
	  OPTIONS (api_url '$iurl/v1', org 'acme', project 'web', source_id '123456789');
	CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key '$key');
	CREATE SCHEMA stripe_data;
});

# 30 pages at 300 ms each, one at a time: a backfill of nine seconds
$fake->config(latency_ms => 300);
sql(q{SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers'],
                                       destination => 'intempt')});

my $backends = "backend_type IN ('stripe_sync worker', 'stripe_sync backfill helper')";
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM pg_stat_activity WHERE $backends"),
	'a worker backfills');
my ($samples, $with_xmin) = (0, 0);
for (1 .. 2000)
{
	my $r = sql("SELECT count(*), count(backend_xmin) FROM pg_stat_activity WHERE $backends");
	my ($n, $x) = split /\|/, $r;
	last if $n == 0 && $samples > 0;
	$samples += $n;
	$with_xmin += $x;
	usleep(20_000);
}
cmp_ok($samples, '>=', 30, "sampled the sync's backends while they worked ($samples samples)");
cmp_ok($with_xmin, '<=', $samples / 10,
	"no backend_xmin in at least 90 % of samples ($with_xmin of $samples held one)");
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'"),
	'the run ends');
is(sql("SELECT count(*) FROM stripe_data.customers"), '3000', '... with every customer');

# now() moves inside the worker: every time the run wrote is at or after its start
is(sql(q{SELECT bool_and(o.last_success_at >= r.started_at)
           FROM stripe_sync.object_state o, stripe_sync.runs r WHERE r.source = 'main'}),
	't', "last_success_at is at or after the run's start");
is(sql(q{SELECT bool_and(s.next_sync_at >= r.started_at + s.sync_interval)
           FROM stripe_sync.sources s, stripe_sync.runs r WHERE r.source = 'main'}),
	't', "next_sync_at counts from the run's end, not the worker's connection");
is(sql(q{SELECT bool_and(ob.created_at >= r.started_at)
           FROM stripe_sync.outbox ob, stripe_sync.runs r WHERE r.source = 'main'}),
	't', "the outbox rows' created_at too");

# the shipper delivers the history and reports its updates while it lives
$fake->config(latency_ms => 0);
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 3000 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	'the shipper delivers the history');
my $shipper = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'stripe_sync shipper'");
ok($node->poll_query_until('postgres',
		"SELECT n_tup_upd > 0 FROM pg_stat_user_tables WHERE relid = 'stripe_sync.outbox'::regclass"),
	"the outbox's n_tup_upd grows while the shipper lives");
is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'stripe_sync shipper'"), $shipper,
	'... the same shipper, still running');

done_testing();
