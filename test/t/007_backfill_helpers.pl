# A backfill shared with helper workers (stripe_sync.backfill_helpers): the
# local table equals the fake whoever wrote which rows; no page is fetched
# twice; no helper without the setting, without a free worker slot, or when
# the sync's own transaction created the table; a helper that stops short,
# a sync cancelled or terminated, and kill -9 of the postmaster all end with
# the backfill exact and no helper left behind.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use StripeTest qw(start_fake new_node crash_and_restart);

my $N = 15000;
my $fake = start_fake(counts => { charges => $N, customers => 10 });
my $node = new_node('helpers', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nrestart_after_crash = on\n"
	  . "stripe_sync.max_concurrent_requests = 8\n");
my $url = $fake->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the fake's charges, once: they do not change in this test
sql(qq{
	CREATE TABLE fake_raw (line text);
	COPY fake_raw FROM PROGRAM 'curl -s $url/_control/objects/charges'
	  WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02');
	CREATE TABLE fake_objs AS SELECT jsonb_array_elements(string_agg(line, '')::jsonb->'data') AS obj FROM fake_raw;
});
is(sql("SELECT count(*) FROM fake_objs"), $N, "the fake has $N charges");

# rows that differ from the fake (missing, extra or changed), and duplicates
sub differences
{
	my ($schema) = @_;
	return sql(qq{
		SELECT count(*) FROM fake_objs f
		  FULL JOIN (SELECT * FROM $schema.charges WHERE deleted_at IS NULL) l ON l.id = f.obj->>'id'
		 WHERE l.id IS NULL OR f.obj IS NULL OR l.attrs <> f.obj
	}) . '/' . sql("SELECT count(*) - count(DISTINCT id) FROM $schema.charges");
}

# sync_now of a source in a transaction of its own, after the statements in
# $before; -> (rows the sync's own backend inserted into <schema>.charges, rows
# every process inserted, the summary, stderr).  What other processes inserted
# is the helpers' work: their own transactions, counted by the statistics
# each process reports (a helper reports them when it exits).
sub sync_now_counted
{
	my ($name, $before) = @_;
	my ($out, $err);
	$node->psql('postgres', ($before // '') . "BEGIN; SELECT stripe_sync.sync_now('$name'); "
		  . "SELECT 'own ' || pg_stat_get_xact_tuples_inserted('$name.charges'::regclass); COMMIT;",
		stdout => \$out, stderr => \$err);
	my ($own) = $out =~ /^own (\d+)$/m;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'");
	my $all = sql("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = '$name.charges'::regclass");
	return ($own // -1, $all, $out, $err);
}

sub helpers_running
{
	return sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'");
}

sub new_source
{
	my ($name) = @_;
	sql("CREATE SCHEMA $name; BEGIN; SELECT stripe_sync.create_source('$name', server => 'stripe', "
		  . "objects => ARRAY['charges'], target_schema => '$name'); "
		  . "SELECT stripe_sync.alter_source('$name', enabled => false); COMMIT;");
}

sub list_requests
{
	return [ grep { $_->{path} =~ m{^/v1/charges\?} } @{ $fake->requests } ];
}

# ---- sync_now with the default helper
$fake->clear_requests;
new_source('s1');
my ($own, $all, $summary, $stderr) = sync_now_counted('s1');
like($summary, qr/"rows": $N\b/, 'sync_now reports every row, the helpers\' too');
is(differences('s1'), '0/0', 'the local table equals the fake, no duplicate');
is($all, $N, "every row was inserted once ($all inserts)");
cmp_ok($own, '<', $N, 'a helper process wrote part of the backfill: ' . ($N - $own)
	  . " rows inserted by other processes than the sync's ($own)");
my %seen;
$seen{ $_->{path} }++ for @{ list_requests() };
is(scalar(grep { $_ > 1 } values %seen), 0, 'no page was fetched twice');
is(sql("SELECT count(*) FROM stripe_sync.backfill_parts"), '0', 'no part rows left');
is(sql("SELECT rows, backfill_done FROM stripe_sync.object_state WHERE source = 's1'"), "$N|t",
	'status counts the helpers\' rows');
like($stderr, qr/backfill of charges: $N rows in \d+ pages, \d+ rows\/s \(done\)/,
	'the progress counts the helpers\' rows');

# ---- no helper when the setting is 0
new_source('s2');
($own, $all) = sync_now_counted('s2', 'SET stripe_sync.backfill_helpers = 0; ');
is(differences('s2'), '0/0', 'backfill_helpers = 0: the table equals the fake');
is("$own/$all", "$N/$N", '... every row inserted by the sync itself: no helper worked');

# ---- nor when the sync's transaction created the table (a helper could not see it)
sql("CREATE SCHEMA s3");
my $out;
$node->psql('postgres', "BEGIN; SELECT stripe_sync.create_source('s3', server => 'stripe', "
	  . "objects => ARRAY['charges'], target_schema => 's3'); "
	  . "SELECT stripe_sync.alter_source('s3', enabled => false); "
	  . "SELECT stripe_sync.sync_now('s3'); "
	  . "SELECT 'own ' || pg_stat_get_xact_tuples_inserted('s3.charges'::regclass); COMMIT;",
	stdout => \$out);
is(differences('s3'), '0/0', 'a source created in the same transaction: the table equals the fake');
like($out, qr/^own $N$/m, '... every row inserted by the sync itself, without a helper');

# ---- sync_now cancelled while a helper works: the helper stops too
new_source('s4');
$fake->config(latency_ms => 20);
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', '-' ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "SELECT stripe_sync.sync_now('s4');\n";
$h->pump_nb;
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'"),
	'sync_now deals part of the backfill to a helper');
sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%sync_now(''s4'')%' AND pid <> pg_backend_pid()");
$in .= "\\q\n";
$h->finish;
like($err, qr/canceling statement due to user request/, 'sync_now was cancelled mid-backfill');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'"),
	'... and its helper stopped');
$fake->config(latency_ms => 0);
$node->psql('postgres', "SELECT stripe_sync.sync_now('s4')");
is(differences('s4'), '0/0', 'the next sync_now makes the table equal to the fake');
is(sql("SELECT rows FROM stripe_sync.status WHERE source = 's4'"), $N,
	'status counts every row once: the cancelled run\'s helper wrote its rows, the next run the rest');

# ---- the worker: a helper that stops short leaves its part to the sync
$fake->config(latency_ms => 20);
$fake->clear_requests;
sql("CREATE SCHEMA w1; SELECT stripe_sync.create_source('w1', server => 'stripe', "
	  . "objects => ARRAY['charges'], target_schema => 'w1')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'"),
	'the worker deals part of the backfill to a helper');
# parts come and go: terminate until one is cut short (a helper may be done already)
my $short = qr/a backfill helper of source "w1" stopped short on charges/;
for (1 .. 200)
{
	sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'");
	last if $node->log_contains($short)
	  || sql("SELECT backfill_done FROM stripe_sync.object_state WHERE source = 'w1'") eq 't';
	usleep(50_000);
}
ok($node->poll_query_until('postgres',
	"SELECT backfill_done FROM stripe_sync.object_state WHERE source = 'w1'", 't'),
	'after a helper was terminated the backfill completes');
is(differences('w1'), '0/0', '... equal to the fake, no duplicate');
ok($node->log_contains($short), 'the log says the sync finished the helper\'s part');
sql("SELECT stripe_sync.alter_source('w1', enabled => false)");

# ---- the worker terminated while a helper works: no helper left behind
sql("CREATE SCHEMA w2; SELECT stripe_sync.create_source('w2', server => 'stripe', "
	  . "objects => ARRAY['charges'], target_schema => 'w2')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'"),
	'a helper works beside the worker');
sql("SELECT stripe_sync.alter_source('w2', enabled => false)");
sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stripe_sync w2'");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'"),
	'after the worker is terminated its helper stops');

# ---- kill -9 while a helper works: the backfill resumes and ends exact
# (each page's write made 20 ms slower by a trigger of the owner's: the backfill
# lasts seconds instead of one, so a helper is caught at work whatever the
# machine's speed; the writes being the slow part, the sync still deals one out)
sql("CREATE SCHEMA w3; BEGIN; SELECT stripe_sync.create_source('w3', server => 'stripe', "
	  . "objects => ARRAY['charges'], target_schema => 'w3'); "
	  . "CREATE FUNCTION w3.slow() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END\$\$; "
	  . "CREATE TRIGGER slow AFTER INSERT ON w3.charges FOR EACH STATEMENT EXECUTE FUNCTION w3.slow(); COMMIT;");
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM stripe_sync.backfill_parts WHERE source = 'w3' AND rows >= 500"),
	'a helper has committed part of the backfill');
my $before = sql("SELECT count(*) FROM w3.charges");
crash_and_restart($node);
cmp_ok(sql("SELECT count(*) FROM w3.charges"), '>=', 500, 'the committed rows survived the crash');
sql("SELECT stripe_sync.alter_source('w3', enabled => false)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('stripe_sync worker', 'stripe_sync backfill helper')"),
	'with the source disabled nothing writes');
is(sql("SELECT rows FROM stripe_sync.status WHERE source = 'w3'"), sql("SELECT count(*) FROM w3.charges"),
	'status counts every row written so far, the helpers\' included');
sql("DROP TRIGGER slow ON w3.charges; SELECT stripe_sync.alter_source('w3', enabled => true)");
sql("SELECT stripe_sync.alter_source('w2', enabled => true)");
ok($node->poll_query_until('postgres',
	"SELECT bool_and(backfill_done) FROM stripe_sync.object_state WHERE source IN ('w2', 'w3')", 't'),
	'after the crash both backfills complete');
is(differences('w3'), '0/0', 'the crashed backfill: equal to the fake, no duplicate');
is(sql("SELECT rows FROM stripe_sync.status WHERE source = 'w3'"), $N, '... and status counts each row once');
is(differences('w2'), '0/0', 'the terminated one too');
is(sql("SELECT count(*) FROM stripe_sync.backfill_parts"), '0', 'no part rows left');
$fake->config(latency_ms => 0);

# ---- no free worker slot: the sync does it all
$node->append_conf('postgresql.conf', "max_worker_processes = 2\n");
$node->restart;
new_source('s5');
($own, $all) = sync_now_counted('s5');
is(differences('s5'), '0/0', 'no worker slot for a helper: the table equals the fake');
is("$own/$all", "$N/$N", '... every row inserted by the sync alone');

$node->stop;
done_testing();
