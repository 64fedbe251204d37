# Syncs run by the background workers: kill -9 of the postmaster mid-backfill
# and mid-incremental loses nothing, duplicates nothing and does not start the
# backfill again; a source with a bad key records its error in status while
# the others keep syncing; a new interval takes effect while the worker runs.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use StripeTest qw(start_fake new_node crash_and_restart);

my $fake = start_fake(counts => { customers => 4000, charges => 10 });
my $node = new_node('crash', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nrestart_after_crash = on\n");
my $url = $fake->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub differences { return StripeTest::differences($node, $fake, "stripe_data.$_[0]"); }

# ---- kill -9 mid-backfill: 40 pages at a second each, at most 8 in flight, so
# the backfill takes at least 5 s and the kill lands in its middle
$fake->config(latency_ms => 1000);
$fake->clear_requests;
sql("CREATE SCHEMA stripe_data");
sql("SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', 'charges'])");
ok($node->poll_query_until('postgres',
	"SELECT rows >= 500 FROM stripe_sync.object_state WHERE source = 'main' AND object = 'customers'"),
	'the worker is backfilling page by page');
# what is committed now, read in one snapshot with the state of the backfill
my ($committed_ids, $done_before) = split /\|/, sql(
	"SELECT (SELECT string_agg(id, ',') FROM stripe_data.customers), "
	  . "(SELECT backfill_done FROM stripe_sync.object_state WHERE source = 'main' AND object = 'customers')");
my @committed = split /,/, $committed_ids;
crash_and_restart($node);
is($done_before, 'f', 'the crash came before the backfill was done');
# the rows committed before the crash, counted again now, before the sync adds any
is(sql("SELECT count(*) FROM stripe_data.customers WHERE id = ANY ('{$committed_ids}')"),
	scalar(@committed), scalar(@committed) . ' rows committed before the crash are there after it');
ok($node->poll_query_until('postgres',
	"SELECT bool_and(backfill_done) FROM stripe_sync.object_state WHERE source = 'main'", 't'),
	'after the crash the backfill completes');
# The backfill runs created windows concurrently (max_concurrent_requests,
# 8 by default), each with its own cursor: a restart from scratch would ask
# for the first windows' first pages again.
my @pages = grep { $_->{path} =~ m{^/v1/customers\?} } @{ $fake->requests };
my %times;
$times{ $_->{path} }++ for @pages;
my @initial = grep { $_->{path} !~ /starting_after/ } @pages[0 .. 7];
is(scalar(grep { $times{ $_->{path} } > 1 } @initial), 0,
	'the backfill resumed from its cursors, not from the first pages');
# at most max_concurrent_requests (8) pages were in flight at the crash
my $again = scalar(@pages) - scalar(keys %times);
cmp_ok($again, '<=', 8, "no pages fetched again beyond the 8 in flight ($again of ${\ scalar @pages })");
is(differences('customers'), '0', 'customers: equal to the fake, no row lost');
is(sql("SELECT count(*) - count(DISTINCT id) FROM stripe_data.customers"), '0', 'no duplicate rows');
is(sql("SELECT count(*) FROM stripe_sync.runs WHERE source = 'main' AND status = 'interrupted'"), '1',
	'the interrupted run is marked');

# ---- kill -9 mid-incremental: 300 changes read in pages of 100 at 300 ms
$fake->config(latency_ms => 0);
my $ids = sql("SELECT string_agg(id, ',') FROM (SELECT id FROM stripe_data.customers ORDER BY id LIMIT 300) s");
for my $id (split /,/, $ids)
{
	$fake->call('POST', "/_control/objects/customers/$id", { name => "renamed $id" });
}
# three pages of 100 events at a second each: the kill lands once the sync has
# asked for the second page, before it has them all
$fake->config(latency_ms => 1000);
$fake->clear_requests;
sql("SELECT stripe_sync.alter_source('main', sync_interval => '1 second')");
my $second_page;
for (1 .. 3000)
{
	last if $second_page = grep { $_->{path} =~ m{^/v1/events\?.*starting_after=} } @{ $fake->requests };
	usleep(20_000);
}
ok($second_page, 'the incremental sync reads the events page by page');
crash_and_restart($node);
cmp_ok(sql("SELECT count(*) FROM stripe_data.customers WHERE name LIKE 'renamed %'"), '<', 300,
	'the crash came before every change was applied');
$fake->config(latency_ms => 0);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 300 FROM stripe_data.customers WHERE name LIKE 'renamed %'"),
	'after a crash mid-incremental every change arrives');
is(differences('customers'), '0', 'customers: equal to the fake again');
is(sql("SELECT count(*) - count(DISTINCT id) FROM stripe_data.customers"), '0', 'no duplicate rows');

# ---- the interval changes while the worker runs
my $runs = sql("SELECT count(*) FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'");
# (an hourly source would not sync again within the poll's three minutes)
ok($node->poll_query_until('postgres',
	"SELECT count(*) >= $runs + 2 FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'"),
	'a one-second interval set with alter_source repeats the sync');
sql("SELECT stripe_sync.alter_source('main', sync_interval => '1 hour')");

# ---- a bad key: the error is in status, the other source keeps syncing
sql("CREATE SERVER badstripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$url')");
sql("CREATE USER MAPPING FOR CURRENT_USER SERVER badstripe OPTIONS (api_key 'sk_test_wrong_key_1234')");
sql("CREATE SCHEMA bad_data");
sql("SELECT stripe_sync.create_source('bad', server => 'badstripe', objects => ARRAY['customers'], target_schema => 'bad_data')");
ok($node->poll_query_until('postgres',
	"SELECT state = 'error' AND last_error LIKE '%HTTP 401%' FROM stripe_sync.status WHERE source = 'bad' AND object = 'customers'"),
	'a source with a bad key records the error in status');
unlike(sql("SELECT last_error FROM stripe_sync.status WHERE source = 'bad'"), qr/wrong_key|1234/,
	'... without the key');
my $new = $fake->call('POST', '/_control/objects/customers', { email => 'after@example.com' });
sql("SELECT stripe_sync.alter_source('main', sync_interval => '1 second')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_data.customers WHERE id = '$new->{id}'"),
	'... while the other source keeps syncing');

$node->stop;
done_testing();
