# The rate limiter: with the library preloaded, two backends at
# stripe_sync.requests_per_second = N share one budget and never trip a fake
# Stripe that allows N requests in any sliding second; well above N they do.
# A reload changes the rate of a running backend, cancel ends a rate-limit
# wait at once, and without preloading each backend still limits itself.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use StripeTest qw(start_fake new_node);

my $N = 10;
my $fake = start_fake(counts => { charges => 3000 });    # 30 pages a scan
my $node = new_node('ratelimit', $fake);

sub set_rate
{
	my ($n) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET stripe_sync.requests_per_second = $n");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	ok( $node->poll_query_until('postgres',
			"SELECT current_setting('stripe_sync.requests_per_second') = '$n'"),
		"requests_per_second = $n after reload");
}

# Runs SELECT count(*) FROM stripe.charges in two sessions at once; returns
# the seconds both took and their outputs.
sub two_scans
{
	my ($max_retries) = @_;
	my (@h, @out, @err);
	local $ENV{PGOPTIONS} = "-c stripe_sync.max_retries=$max_retries";
	my $t0 = time;
	for my $i (0, 1)
	{
		$out[$i] = $err[$i] = '';
		$h[$i] = IPC::Run::start(
			[ 'psql', '-XAtq', '-d', $node->connstr('postgres'),
			  '-c', 'SELECT count(*) FROM stripe.charges' ],
			'<', \'', '>', \$out[$i], '2>', \$err[$i],
			IPC::Run::timeout(120));
	}
	$_->finish for @h;
	my $elapsed = time - $t0;
	chomp @out;
	diag("scan stderr: $_") for grep { length } @err;
	return ($elapsed, @out);
}

# ---- at N per second, two concurrent scans stay under a limit of N ----
# (the fake counts arrivals, which a loaded machine delays unevenly: one request
# of slack, N + 1 in any second, keeps that jitter out; the total time below
# holds the average to N a second)
$fake->config(rate_limit => $N + 1);
set_rate($N);
$fake->clear_requests;
my ($elapsed, @counts) = two_scans(0);
is_deeply(\@counts, [ 3000, 3000 ], 'two concurrent scans at the limit return 3000 rows each');
my $stats = $fake->call('GET', '/_control/stats');
is($stats->{rate_limited}, 0, '... and the fake rate-limited none of their requests');
# (max_retries = 0: none was retried; past the first page each scan reads its
# list in windows, whose last pages are part full: more than its 30 pages)
my $sent = $stats->{requests};
ok($sent >= 60 && $sent <= 100, "... which were $sent, for 60 pages");
ok($elapsed >= $sent / $N - 0.5,
	sprintf('... in %.2f s: %d requests at %d/s take at least %.1f s', $elapsed, $sent, $N, $sent / $N - 0.5));
ok($elapsed < 30, sprintf('... and not stuck (%.2f s < 30 s)', $elapsed));

# ---- the same check fails when the limiter lets more through ----
set_rate(200);
$fake->clear_requests;
($elapsed, @counts) = two_scans(40);
is_deeply(\@counts, [ 3000, 3000 ], 'at 200/s, the scans still return 3000 rows each (after retries)');
$stats = $fake->call('GET', '/_control/stats');
ok($stats->{rate_limited} > 0,
	"... but the fake rate-limited $stats->{rate_limited} of $stats->{requests} requests");

# ---- a reload reaches a running backend; cancel ends a rate-limit wait ----
$fake->config(rate_limit => 0);
my $bga = $node->background_psql('postgres', on_error_stop => 0);
my $bgb = $node->background_psql('postgres', on_error_stop => 0);
is($bga->query_safe('SHOW stripe_sync.requests_per_second'), '200', 'a session sees 200');
set_rate(1);
my $seen;
for (1 .. 100)
{
	$seen = $bga->query_safe('SHOW stripe_sync.requests_per_second');
	last if $seen eq '1';
	Time::HiRes::usleep(50_000);
}
is($seen, '1', '... and 1 after the reload, without reconnecting');

my $pid_a = $bga->query_safe('SELECT pg_backend_pid()');
my $pid_b = $bgb->query_safe('SELECT pg_backend_pid()');
my $waiting = sub {
	my ($pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT wait_event_type = 'Extension' AND wait_event = 'Extension' "
		  . "FROM pg_stat_activity WHERE pid = $pid");
};
# b sends its first page and waits about a second for its next slot; a, coming
# next, then waits about two
$bgb->query_until(qr/started/, "\\echo started\nSELECT count(*) FROM stripe.charges;\n");
ok($waiting->($pid_b), 'a scan at 1/s waits for the rate limiter');
$bga->query_until(qr/started/, "\\echo started\nSELECT count(*) FROM stripe.charges;\n");
ok($waiting->($pid_a), '... and so does a second one');
# timed by the server's clock: the cancel's time, and when the backend went idle
my $t_cancel = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM clock_timestamp()) FROM pg_cancel_backend($pid_a)");
ok($node->poll_query_until('postgres', "SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $pid_a"),
	'the canceled scan ends');
$elapsed = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM state_change) FROM pg_stat_activity WHERE pid = $pid_a") - $t_cancel;
my $out = $bga->query('SELECT 1 AS after_cancel');
ok($elapsed < 0.5, sprintf('cancel ended the wait in %.2f s (< 0.5 s; the wait was about 2 s)', $elapsed));
like($bga->{stderr}, qr/canceling statement due to user request/, '... as a cancel');
is($out, '1', '... and the backend stays usable');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid_b)");
is($bgb->query('SELECT 1 AS after_cancel'), '1', 'the other scan, canceled too, stays usable');
set_rate(20);
is($bga->query("SELECT count(*) FROM stripe.charges WHERE id = 'ch_missing'"), '0',
	'... and both can query Stripe again');
is($bgb->query("SELECT count(*) FROM stripe.charges WHERE id = 'ch_missing'"), '0',
	'... the other one too');
$bga->quit;
$bgb->quit;
$node->stop;

# ---- without preloading, each backend limits its own requests ----
my $local = new_node('local', $fake, "stripe_sync.requests_per_second = $N\n", preload => 0);
is($local->safe_psql('postgres', 'SHOW shared_preload_libraries'), '', 'a node without preloading');
$fake->config(rate_limit => $N);
$fake->clear_requests;
my $t0 = time;
my ($rc, $stdout, $stderr) = $local->psql('postgres',
	'SET stripe_sync.max_retries = 0; SELECT count(*) FROM stripe.charges');
is($stdout, '3000', '... scans 3000 rows') or diag($stderr);
$elapsed = time - $t0;
$stats = $fake->call('GET', '/_control/stats');
is($stats->{rate_limited}, 0, '... with no request rate-limited');
ok($elapsed >= 2.7, sprintf('... in %.2f s: 30 requests at %d/s take at least 2.7 s', $elapsed, $N));
$local->stop;

done_testing();
