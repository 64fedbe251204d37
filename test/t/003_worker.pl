# The background workers: the launcher starts one worker per due source,
# sleeps until the next source falls due (or stripe_sync.naptime), wakes at
# once for stripe_sync.wake() and alter_source, stops the sync of a disabled
# source, survives a killed worker and a killed launcher (runs rows left
# 'running' become 'interrupted'), and does not hold up a fast shutdown.
#
# The assertions use only what every sync does: it adds a stripe_sync.runs
# row and moves sources.next_sync_at to now() + sync_interval when it ends.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use StripeTest qw(start_fake new_node logged_at);

my $fake = start_fake(counts => { customers => 5 });
my $node = new_node('worker', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n"
	  . "restart_after_crash = on\n"
	  # every line with the server's epoch and the process's type
	  . "log_line_prefix = '%n [%p] %b: '\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub poll
{
	my ($query, $name) = @_;
	ok($node->poll_query_until('postgres', $query), $name);
}

sub runs
{
	return sql("SELECT count(*) FROM stripe_sync.runs WHERE source = 'main'");
}

my $worker_q =
  "FROM pg_stat_activity WHERE backend_type = 'stripe_sync worker'";
# a sync of five customers takes milliseconds: a worker this old is held
my $held = "backend_start < now() - interval '1 second'";

# the launcher was running before CREATE EXTENSION and waited quietly
poll(
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'stripe_sync launcher'",
	'the launcher runs');

# a new source is due at once: a worker syncs it, once
sql(q{
	CREATE SCHEMA stripe_data;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers']);
});
poll(
	"SELECT count(*) >= 1 FROM stripe_sync.runs WHERE source = 'main' AND status <> 'running'",
	'a worker syncs a new source');
poll(
	"SELECT next_sync_at > now() + interval '50 minutes' FROM stripe_sync.sources WHERE name = 'main'",
	'... and the sync moves next_sync_at an hour ahead');
my $before = runs();
sleep 2;
is(runs(), $before, '... and it is not synced again before the interval');

# with a one-hour naptime, a source made due behind the launcher's back waits;
# stripe_sync.wake() starts it at once
# (log_min_messages comes with it in the same reload: the launcher's first
# DEBUG line shows that it has applied both; debug1 also logs each worker's exit)
my $offset = -s $node->logfile;
sql('ALTER SYSTEM SET stripe_sync.naptime = 3600');
sql('ALTER SYSTEM SET log_min_messages = debug5');
sql('SELECT pg_reload_conf()');
$node->wait_for_log(qr/stripe_sync launcher: DEBUG:/, $offset);
# (the reload woke the launcher, which then chose its sleep with the new naptime)
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'");
sleep 3;
is(runs(), $before, 'after a reload to naptime = 1 hour, a due source waits for the tick');
my $last_run = sql("SELECT max(id) FROM stripe_sync.runs WHERE source = 'main'");
my $t_wake = sql('SELECT extract(epoch FROM clock_timestamp()) FROM stripe_sync.wake()');
poll("SELECT count(*) > $before FROM stripe_sync.runs WHERE source = 'main'",
	'stripe_sync.wake() starts its sync');
# by the server's clock, from the wake() to the new run's start
my $elapsed = sql("SELECT extract(epoch FROM min(started_at)) FROM stripe_sync.runs "
	  . "WHERE source = 'main' AND id > $last_run") - $t_wake;
ok($elapsed < 1, sprintf('... at once (%.2f s, against a naptime of an hour)', $elapsed));
poll(
	"SELECT next_sync_at > now() + interval '50 minutes' FROM stripe_sync.sources WHERE name = 'main'",
	'... and that sync ends');

# alter_source wakes the launcher, which then sleeps exactly until the next
# due time: a 2-second interval repeats the sync every 2 s although the
# naptime is still an hour
my $last = sql("SELECT max(id) FROM stripe_sync.runs WHERE source = 'main'");
sql("SELECT stripe_sync.alter_source('main', sync_interval => '2 seconds')");
poll("SELECT count(*) >= 3 FROM stripe_sync.runs WHERE source = 'main' AND id > $last AND status = 'ok'",
	'sync_interval 2 s: three more syncs, with the naptime an hour');
my @gaps = split /\n/, sql(
	"SELECT extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY id)) "
	  . "FROM stripe_sync.runs WHERE source = 'main' AND id > $last ORDER BY id OFFSET 1");
ok((!grep { $_ < 1.9 || $_ > 60 } @gaps),
	'... started 2 s apart or a little more, never sooner: ' . join(', ', map { sprintf '%.2f s', $_ } @gaps));

sql('ALTER SYSTEM RESET stripe_sync.naptime');
sql('SELECT pg_reload_conf()');

# enabled => false stops the syncs
sql("SELECT stripe_sync.alter_source('main', enabled => false)");
poll("SELECT count(*) = 0 $worker_q", 'disabled: no worker is left');
$before = runs();
sleep 4;
is(runs(), $before, '... and no sync starts');

# A worker held in a request the fake delays by 30 s: it connects as the
# source's owner, SIGTERM ends it at once, and the runs row it leaves
# 'running' becomes 'interrupted'.
$fake->fault(kind => 'delay', delay => 30, count => 1);
sql("SELECT stripe_sync.alter_source('main', sync_interval => '1 hour', enabled => true)");
poll("SELECT count(*) = 1 $worker_q AND $held",
	'enabled again: a worker waits for Stripe');
is( sql("SELECT usename = current_user AND application_name = 'stripe_sync main' $worker_q"),
	't', '... connected as the source owner, named after the source');
# the worker's own run row, committed before its first request
poll("SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'",
	'... and has its run row, running');
my $leftover = sql("SELECT id FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'");
my $pid = sql("SELECT pid $worker_q");
$offset = -s $node->logfile;
my $t_term = sql("SELECT extract(epoch FROM clock_timestamp()) FROM pg_terminate_backend($pid)");
poll("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid",
	'pg_terminate_backend ends the worker');
# when the postmaster saw it exit, by the server's clock: no client round trip counted
$elapsed = logged_at($node, qr/"stripe_sync worker" \(PID $pid\) exited/, $offset) - $t_term;
ok($elapsed < 1, sprintf('... mid-request, in %.2f s (the request is held for 30 s)', $elapsed));
poll("SELECT status = 'interrupted' FROM stripe_sync.runs WHERE id = $leftover",
	'... and its own run row is marked interrupted');
poll(
	"SELECT next_sync_at > now() + interval '50 minutes' FROM stripe_sync.sources WHERE name = 'main'",
	'the launcher starts the sync again, which ends');

# disabling a source stops the sync in flight
$fake->fault(kind => 'delay', delay => 30, count => 1);
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'");
sql('SELECT stripe_sync.wake()');
poll("SELECT count(*) = 1 $worker_q AND $held", 'a sync waits for Stripe');
$pid = sql("SELECT pid $worker_q");
$offset = -s $node->logfile;
my $t_off = sql("SELECT extract(epoch FROM clock_timestamp()) FROM stripe_sync.alter_source('main', enabled => false)");
poll("SELECT count(*) = 0 $worker_q", 'disabling the source stops it');
$elapsed = logged_at($node, qr/"stripe_sync worker" \(PID $pid\) exited/, $offset) - $t_off;
ok($elapsed < 1, sprintf('... in %.2f s (the request is held for 30 s)', $elapsed));
poll(
	"SELECT count(*) = 0 FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'",
	'... and leaves no run marked running');

# kill -9 of the launcher: the cluster restarts, the launcher comes back and
# marks the run of the worker the crash ended
$fake->fault(kind => 'delay', delay => 30, count => 1);
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'");
sql("SELECT stripe_sync.alter_source('main', enabled => true)");
poll("SELECT count(*) = 1 $worker_q AND $held", 'a sync waits for Stripe');
poll("SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'",
	'... with its run row, running');
$leftover = sql("SELECT id FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'");
my $launcher =
  sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'stripe_sync launcher'");
kill 'KILL', $launcher;
poll(
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'stripe_sync launcher' AND pid <> $launcher",
	'kill -9 of the launcher: it comes back');
poll("SELECT status = 'interrupted' FROM stripe_sync.runs WHERE id = $leftover",
	'... and marks the run the crash ended interrupted');
sql("SELECT stripe_sync.alter_source('main', enabled => true)");
poll(
	"SELECT count(*) >= 1 FROM stripe_sync.runs WHERE source = 'main' AND id > $leftover AND status <> 'running'",
	'... and syncs go on');

# a fast shutdown does not wait for a sync held in a 30-second request
$fake->fault(kind => 'delay', delay => 30, count => 1);
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'");
sql('SELECT stripe_sync.wake()');
poll("SELECT count(*) = 1 $worker_q AND $held", 'a sync is held by Stripe');
my $t0 = time;
$node->stop('fast');
$elapsed = time - $t0;
ok($elapsed < 20, sprintf('pg_ctl stop takes %.2f s (< 20 s: it does not wait out the 30 s request)', $elapsed));

my $log = slurp_file($node->logfile);
$log =~ s/received fast shutdown request.*//s;    # where every worker exits with 1
unlike($log, qr/"stripe_sync launcher" \(PID \d+\) exited with exit code/,
	'the launcher never failed, not even before CREATE EXTENSION');
my $starts = () = $log =~ /stripe_sync launcher started/g;
ok($starts >= 2, "the launcher started $starts times (boot and crash restart)");
unlike($log, qr/"stripe_sync worker" \(PID \d+\) was terminated by signal/,
	'no sync worker crashed');

done_testing();
