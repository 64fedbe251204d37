# The rate limiter's keys and the backfill's concurrency bound.  An account is
# the server's api_url with its account option, else with its key: two servers
# with one key (and no account) share one budget; different keys, or different
# accounts, get a budget each.  The fake refuses more than 6 requests in any
# second, the limiter allows 5 a second per account: sharing, two scans stay
# under the fake's limit; with a budget each they go over it.
# stripe_sync.max_concurrent_requests bounds a sync and its backfill helper
# together: the fake counts the requests it holds at once.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my ($k1, $k2) = ('sk_test_fake', 'sk_test_other');
my $fake = start_fake(counts => { charges => 1500, customers => 10 });
$fake->config(api_keys => [ $k1, $k2 ]);
my $node = new_node('keys', $fake, "stripe_sync.requests_per_second = 5\n");
my $url = $fake->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# a server at the fake with a key (and an account), and its charges table
sub server
{
	my ($name, $key, $account) = @_;
	my $opt = $account ? ", account '$account'" : '';
	sql(qq{
		CREATE SERVER $name FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$url'$opt);
		CREATE USER MAPPING FOR CURRENT_USER SERVER $name OPTIONS (api_key '$key');
		CREATE FOREIGN TABLE ${name}_charges (id text) SERVER $name OPTIONS (object 'charges');
	});
}

# scans the charges of two servers at once (15 pages each); -> requests the
# fake rate-limited, with the counts each scan returned
sub two_scans
{
	my ($a, $b) = @_;
	$fake->clear_requests;
	my (@h, @out);
	local $ENV{PGOPTIONS} = '-c stripe_sync.max_retries=100 -c stripe_sync.retry_base_delay=50';
	for my $i (0, 1)
	{
		$out[$i] = '';
		$h[$i] = IPC::Run::start(
			[ 'psql', '-XAtq', '-d', $node->connstr('postgres'),
			  '-c', 'SELECT count(*) FROM ' . ($a, $b)[$i] . '_charges' ],
			'<', \'', '>', \$out[$i], '2>', \my $err, IPC::Run::timeout(300));
	}
	$_->finish for @h;
	chomp @out;
	return ($fake->call('GET', '/_control/stats')->{rate_limited}, @out);
}

server('one', $k1);
server('same', $k1);
server('other', $k2);
server('acct_a', $k1, 'acct_1AAAAAAAAAAAAAAA');
server('acct_b', $k1, 'acct_1BBBBBBBBBBBBBBB');
$fake->config(rate_limit => 6);

my ($limited, @counts) = two_scans('one', 'same');
is("@counts", '1500 1500', 'two servers with one key: both scans complete');
is($limited, 0, '... sharing one budget of 5 a second, never over the fake\'s 6');
($limited, @counts) = two_scans('one', 'other');
is("@counts", '1500 1500', 'two servers with different keys: both scans complete');
cmp_ok($limited, '>', 0, "... with a budget each, 10 a second: the fake refused $limited");
($limited, @counts) = two_scans('acct_a', 'acct_b');
is("@counts", '1500 1500', 'one key, two accounts: both scans complete');
cmp_ok($limited, '>', 0, "... with a budget per account: the fake refused $limited");
$fake->config(rate_limit => 0);

# ---- max_concurrent_requests = 3 bounds a backfill and its helper together
$fake->reseed(counts => { charges => 15000, customers => 10 });
$fake->config(latency_ms => 20);
sql(q{
	ALTER SYSTEM SET stripe_sync.requests_per_second = 10000;
	ALTER SYSTEM SET stripe_sync.max_concurrent_requests = 3;
	SELECT pg_reload_conf();
	CREATE SCHEMA cc;
	BEGIN;
	SELECT stripe_sync.create_source('cc', server => 'one', objects => ARRAY['charges'], target_schema => 'cc');
	SELECT stripe_sync.alter_source('cc', enabled => false);
	COMMIT;
});
$fake->clear_requests;
my $out;
$node->psql('postgres', "BEGIN; SELECT stripe_sync.sync_now('cc'); "
	  . "SELECT 'own ' || pg_stat_get_xact_tuples_inserted('cc.charges'::regclass); COMMIT;",
	stdout => \$out);
my ($own) = $out =~ /^own (\d+)$/m;
is(sql('SELECT count(*) FROM cc.charges'), '15000', 'the backfill with a helper lists every charge');
cmp_ok($own, '<', 15000, "... a helper wrote part of it (the sync itself $own rows)");
my $peak = $fake->call('GET', '/_control/stats')->{in_flight_peak};
cmp_ok($peak, '<=', 3, "at most 3 requests were in flight at once ($peak)");
cmp_ok($peak, '>=', 2, '... and more than one: the bound is used');

done_testing();
