# The launcher's scheduling:
# - stripe_sync.max_workers is never exceeded: five sources due at once, two
#   workers at most (the runs' intervals, and the requests in flight at the
#   fake Stripe, each worker keeping one in flight);
# - the most overdue source goes first (max_workers = 1: the order of the runs
#   is the order of next_sync_at, not of the names);
# - a source whose worker ends without syncing (a sync_now holds the source)
#   is tried again after 5 s, then 10 s;
# - a failing source backs off in sources.next_sync_at (1, 2, 4 minutes, then
#   its interval of 5), failures counts up, and its error is logged once.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 300 });
my $node = new_node('launcher', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.http_timeout = 600\n"
	  . "stripe_sync.max_workers = 2\nstripe_sync.max_concurrent_requests = 1\n"
	  . "stripe_sync.backfill_helpers = 0\n"
	  # every line with the server's epoch; DEBUG1 has each worker the launcher starts
	  . "log_line_prefix = '%n [%p] %b: '\nlog_min_messages = debug1\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# creates sources (name => objects), disabled, in one transaction
sub create_disabled
{
	my (@names) = @_;
	sql('BEGIN; ' . join('', map {
		"SELECT stripe_sync.create_source('$_', server => 'stripe', target_schema => '$_', "
		  . "objects => ARRAY['customers']); SELECT stripe_sync.alter_source('$_', enabled => false); "
	} @names) . 'COMMIT;');
}

sub enable
{
	my (@names) = @_;
	sql('BEGIN; ' . join('', map { "SELECT stripe_sync.alter_source('$_', enabled => true); " } @names)
		  . 'COMMIT;');
}

# the captures of $re in the log after $offset, once there are $n of them (or
# the harness's timeout has passed)
sub log_matches
{
	my ($re, $n, $offset) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	my @m;
	while (time < $deadline)
	{
		@m = slurp_file($node->logfile, $offset) =~ /$re/g;
		last if @m >= $n;
		usleep(100_000);
	}
	return @m;
}

sub all_ok
{
	my ($like, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(DISTINCT source) = $n FROM stripe_sync.runs WHERE source LIKE '$like' AND status = 'ok'");
}

# ---- max_workers = 2, five sources due at once, 200 ms a request
$fake->config(latency_ms => 200);
$fake->clear_requests;
my @w = map { "w$_" } 1 .. 5;
create_disabled(@w);
enable(@w);
ok(all_ok('w%', 5), 'five due sources are synced');
$fake->config(latency_ms => 0);
# the most runs at once, from their rows: +1 at each start, -1 at each end (ends first)
is(sql(q{SELECT max(c) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS c FROM
	(SELECT started_at AS t, 1 AS d FROM stripe_sync.runs WHERE source LIKE 'w%'
	 UNION ALL SELECT finished_at, -1 FROM stripe_sync.runs WHERE source LIKE 'w%') e) s}),
	'2', 'max_workers = 2: two runs at once at the most, and two at some point');
is($fake->call('GET', '/_control/stats')->{in_flight_peak}, 2,
	'... and two requests in flight at the fake at the most (one per worker)');

# ---- max_workers = 1: the most overdue first
$node->append_conf('postgresql.conf', "stripe_sync.max_workers = 1\n");
$node->restart;
my %overdue = (p1 => 10, p2 => 40, p3 => 20, p4 => 30);    # minutes
create_disabled(sort keys %overdue);
sql(join('', map { "UPDATE stripe_sync.sources SET next_sync_at = now() - interval '$overdue{$_} minutes' "
	  . "WHERE name = '$_'; " } keys %overdue));
enable(sort keys %overdue);
ok(all_ok('p%', 4), 'four overdue sources are synced');
is(sql("SELECT string_agg(source, ' ' ORDER BY started_at) FROM stripe_sync.runs WHERE source LIKE 'p%'"),
	join(' ', sort { $overdue{$b} <=> $overdue{$a} } keys %overdue),
	'one at a time, the most overdue first (40, 30, 20, 10 minutes), not in the order of their names');
is(sql(q{SELECT bool_and(started_at >= prev) FROM (SELECT started_at,
	lag(finished_at) OVER (ORDER BY started_at) AS prev FROM stripe_sync.runs WHERE source LIKE 'p%') r}),
	't', '... each after the one before ended');

# ---- a sync_now holds the source: its workers end without syncing, and the
# launcher tries again after 5 s, then 10 s.  The source is enabled, and due
# only once the sync_now holds it (its first request, for the account, waits
# at the fake; its transaction then holds no lock that an UPDATE of next_sync_at
# waits for, though alter_source would wait for it, locking the row FOR UPDATE)
create_disabled('locked');
sql("UPDATE stripe_sync.sources SET next_sync_at = now() + interval '1 hour' WHERE name = 'locked'");
enable('locked');
$fake->hold('/v1/account', count => 1);
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
	"SELECT stripe_sync.sync_now('locked')" ], '<', \$in, '>', \$out, '2>', \$err);
ok($fake->wait_held(1), "a sync_now of source locked waits for Stripe, holding the source");
my $offset = -s $node->logfile;
sql("SET lock_timeout = '10s'; UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'locked'; "
	  . "SELECT stripe_sync.wake()");
my $start_re = qr/^(\d+\.\d+) .*stripe_sync: started a sync worker for source "locked"/m;
my @starts = log_matches($start_re, 3, $offset);
is(scalar @starts, 3, 'three workers of locked started');
my @gaps = map { $starts[$_] - $starts[ $_ - 1 ] } 1 .. 2;
ok($gaps[0] >= 5 && $gaps[0] < 10, sprintf('the second 5 s after the first (%.2f s)', $gaps[0]));
ok($gaps[1] >= 10 && $gaps[1] < 20, sprintf('the third 10 s after the second (%.2f s)', $gaps[1]));
my $busy = () = slurp_file($node->logfile, $offset) =~ /a sync of source "locked" is already running/g;
cmp_ok($busy, '>=', 3, "... each found the source's sync running ($busy)");
$fake->release;
$h->finish;
like($out, qr/"rows": 300/, 'the sync_now ends, with every customer');

# ---- a failing source: next_sync_at moves 1, 2, 4 minutes, then 5 (its interval)
$fake->fault(kind => '500', path => '/v1/account', count => 1000);
$offset = -s $node->logfile;
sql("SELECT stripe_sync.create_source('failing', server => 'stripe', target_schema => 'failing', "
	  . "objects => ARRAY['customers'], sync_interval => '5 minutes')");
my @backoff;
for my $attempt (1 .. 4)
{
	ok($node->poll_query_until('postgres',
		"SELECT count(*) = $attempt FROM stripe_sync.runs WHERE source = 'failing' AND status = 'error'"),
		"attempt $attempt fails");
	push @backoff, sql("SELECT s.failures || ' ' || round(extract(epoch FROM s.next_sync_at - r.started_at)) "
		  . "FROM stripe_sync.sources s, stripe_sync.runs r WHERE s.name = 'failing' AND r.id = "
		  . "(SELECT max(id) FROM stripe_sync.runs WHERE source = 'failing')");
	# due again now, rather than minutes from now
	sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'failing'; SELECT stripe_sync.wake()")
	  if $attempt < 4;
}
is(join(', ', @backoff), '1 60, 2 120, 3 240, 4 300',
	'failures 1 to 4; next_sync_at 1, 2, 4 minutes after each start, then 5 (8 capped at the interval)');
my @logged = slurp_file($node->logfile, $offset) =~ /sync of source "failing" failed/g;
is(scalar @logged, 1, 'the error is logged once, not once per attempt');
like(sql("SELECT last_error FROM stripe_sync.sources WHERE name = 'failing'"), qr/500|unknown error/i,
	'... and kept in sources.last_error');
$fake->clear_faults;
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'failing'; SELECT stripe_sync.wake()");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'failing' AND status = 'ok'"),
	'once Stripe answers, the sync succeeds');
is(sql("SELECT failures || ' ' || (last_error IS NULL) || ' ' || "
	  . "(next_sync_at > now() + interval '2 minutes') FROM stripe_sync.sources WHERE name = 'failing'"),
	'0 true true', '... and failures, last_error and next_sync_at are reset');

$node->stop;
done_testing();
