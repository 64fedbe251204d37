# A bounded run of the fuzzer (test/fuzz/fuzz.py): hostile answers from its own
# server to FDW scans, retrieves, writes, balance and test_connection, and
# hostile input to the SQL functions (ingest_webhook among them).  Errors are
# fine; a crash, a loop, a key or a secret in a message or in the log, or a
# row that differs from its answer are not, nor a broken page the scan takes
# where PostgreSQL's json type refuses its text (or the other way round).
# FUZZ_SECONDS (default 60) and FUZZ_SEED (default random) set the run; the
# seed is printed, and FUZZ_SEED replays it.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $seconds = $ENV{FUZZ_SECONDS} // 60;
my $seed = $ENV{FUZZ_SEED} // int(rand(2**31));
note("fuzz seed $seed (FUZZ_SEED=$seed replays it)");

my $fake = start_fake();
my $node = new_node('fuzz', $fake, "log_min_messages = debug1\n");
my $root = $ENV{STRIPE_TEST_ROOT} // '.';

my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[
		'python3', "$root/test/fuzz/fuzz.py",
		'--seconds', $seconds, '--seed', $seed,
		'--host', $node->host, '--port', $node->port, '--dbname', 'postgres',
		'--log', $node->logfile
	],
	'>', \$out, '2>', \$err);
note($out);
ok($ok, "the fuzzer found nothing (seed $seed)") or diag($out . $err);
like($out, qr/^fuzz: \d+ statements/m, '... after statements it counted');
like($out, qr/^json oracle: [1-9]\d* valid, [1-9]\d* invalid bodies/m,
	'... among them broken list pages, which the scan refused exactly when the json type did');

my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'no process was terminated by a signal');
unlike($log, qr/sk_test_fuzzKey/, 'the fuzz server\'s key is nowhere in the log');
unlike($log, qr/whsec_fuzzWebhook/, '... nor its webhook secret');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server still accepts connections');

done_testing();
