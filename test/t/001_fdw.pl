# FDW read path against the fake Stripe: request counts, retrieves, cancel,
# and no key in the server log at any level.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 1050, charges => 250 });
# one request at a time: the scans here go page after page (052_fdw_windows has
# a long scan's windows in flight together)
my $node = new_node('fdw', $fake, "log_min_messages = debug5\nstripe_sync.max_concurrent_requests = 1\n");

# 1,050 objects list in 11 requests and return 1,050 rows
$fake->clear_requests;
is($node->safe_psql('postgres', 'SELECT count(*) FROM stripe.customers'),
	'1050', '1,050 customers listed');
my @reqs = @{ $fake->requests };
is(scalar @reqs, 11, '... in 11 requests');
is(scalar(grep { $_->{path} =~ m{^/v1/customers\?limit=100(&starting_after=cus_\w+)?$} } @reqs),
	11, '... each a page of 100 with a cursor');
is(scalar(grep { ($_->{stripe_version} // '') eq '2026-10-28.endive' } @reqs),
	11, '... each with the pinned Stripe-Version');

# id = is one request; a missing id is no row
my $id = $node->safe_psql('postgres', 'SELECT id FROM stripe.customers ORDER BY created LIMIT 1');
$fake->clear_requests;
is($node->safe_psql('postgres', "SELECT id FROM stripe.customers WHERE id = '$id'"),
	$id, 'id = returns the object');
@reqs = @{ $fake->requests };
is(scalar @reqs, 1, '... in one request');
is($reqs[0]{path}, "/v1/customers/$id", '... a retrieve');
$fake->clear_requests;
is($node->safe_psql('postgres', "SELECT count(*) FROM stripe.customers WHERE id = 'cus_missing'"),
	'0', '404 is no row');
is(scalar @{ $fake->requests }, 1, '... after one request');

# the account option becomes Stripe-Account
$node->safe_psql('postgres', "ALTER SERVER stripe OPTIONS (ADD account 'acct_123abc')");
$fake->clear_requests;
$node->safe_psql('postgres', "SELECT count(*) FROM stripe.customers WHERE id = '$id'");
is($fake->requests->[0]{stripe_account}, 'acct_123abc', 'Stripe-Account sent');
$node->safe_psql('postgres', "ALTER SERVER stripe OPTIONS (DROP account)");

# cancel of a request the fake holds for 30 s returns in under a second
$fake->fault(kind => 'delay', delay => 30, count => 1, path => '/v1/charges');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started/, "\\echo started\nSELECT count(*) FROM stripe.charges;\n");
# wait until the scan runs (the fake logs a held request only when it answers)
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $pid AND state = 'active'"),
	'the scan is running');
# timed by the server's clock: the cancel's time, and when the backend went idle
my $t_cancel = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM clock_timestamp()) FROM pg_cancel_backend($pid)");
ok($node->poll_query_until('postgres', "SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $pid"),
	'the canceled scan ends');
my $elapsed = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM state_change) FROM pg_stat_activity WHERE pid = $pid") - $t_cancel;
my $out = $bg->query('SELECT 1 AS after_cancel');
ok($elapsed < 1.0, sprintf('cancel ended the scan in %.2f s (< 1 s; the request is held for 30 s)', $elapsed));
like($bg->{stderr}, qr/canceling statement due to user request/, '... as a cancel');
is($out, '1', '... and the backend stays usable');
is($bg->query('SELECT count(*) FROM stripe.charges'), '250', '... for a full scan too');
$bg->quit;

# a wrong key: the error shows neither the key nor a part of it
$node->safe_psql('postgres',
	"ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (SET api_key 'sk_test_WrongKey4242')");
my ($rc, $stdout, $stderr) = $node->psql('postgres', 'SELECT count(*) FROM stripe.customers');
isnt($rc, 0, 'a wrong key is an error');
like($stderr, qr/HTTP 401/, '... from a 401');
unlike($stderr, qr/4242|WrongKey|sk_test/, '... that shows no part of the key');
($rc, $stdout, $stderr) = $node->psql('postgres', "SELECT * FROM stripe_sync.test_connection('stripe')");
like($stderr, qr/Check the api_key option of the user mapping/, 'test_connection says what to check');
unlike($stderr, qr/4242|WrongKey/, '... without the key');

# the server log, at debug5, holds no key either; PostgreSQL itself echoes the
# text of the statements that set a key at this level, and only those may
$node->stop;
my $log = slurp_file($node->logfile);
my @leaks = grep { !/statement: (CREATE|ALTER) USER MAPPING/ }
  grep { /sk_test|WrongKey/ } split /\n/, $log;
is(scalar @leaks, 0, 'no API key in the server log at debug5') or diag(join "\n", @leaks);

done_testing();
