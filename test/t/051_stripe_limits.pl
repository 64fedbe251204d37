# Stripe's real limits as the defaults (issue 15 §2): against a fake that keeps
# Stripe's test-mode limits (25 a second in all and per endpoint), a backfill of
# several objects at once at the default settings is (almost) never refused and
# sends at most 25 requests to an endpoint in any second; a live key gets the
# live default; the settings override the defaults; a 429 naming its limiter
# slows that endpoint (or the account) down, and the rate climbs back.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(
	counts => { customers => 1500, charges => 1500, products => 800 },
	args => [ '--rate-limit', '25', '--endpoint-rate-limit', '25' ]);
# the defaults, as a user gets them (new_node sets 10000 for the rest of the suite)
my $node = new_node('limits', $fake, "stripe_sync.requests_per_second = 0\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub limits
{
	my ($server, $endpoint) = @_;
	my $where = defined $endpoint ? "endpoint = '$endpoint'" : 'endpoint IS NULL';
	return sql("SELECT mode, coalesce(requests_per_second::text, 'none'), "
		  . "coalesce(current_requests_per_second::text, 'none') "
		  . "FROM stripe_sync.rate_limits('$server') WHERE $where");
}

sub reload_with
{
	my ($settings, $check) = @_;
	sql(join('', map { "ALTER SYSTEM SET stripe_sync.$_;" } @$settings) . 'SELECT pg_reload_conf()');
	ok($node->poll_query_until('postgres', $check), "after reload: @$settings");
}

# an endpoint as Stripe counts it: the method and the path, ids taken out
sub endpoint_of
{
	my ($r) = @_;
	my ($path) = split /\?/, $r->{path};
	my @words = split m{/}, $path, -1;
	for my $i (2 .. $#words) { $words[$i] = '{id}' if $words[$i] =~ /[^a-z_]/; }
	return "$r->{method} " . join('/', @words);
}

# the most requests of the list that arrived within any one second
sub max_per_second
{
	my @t = sort { $a <=> $b } map { $_->{time} } @_;
	my ($max, $lo) = (0, 0);
	for my $hi (0 .. $#t)
	{
		$lo++ while $t[$hi] - $t[$lo] >= 1.0;
		$max = $hi - $lo + 1 if $hi - $lo + 1 > $max;
	}
	return $max;
}

# ---- the defaults by the key's mode ----
is(limits('stripe'), 'test|22|22', 'a test key: 22 requests a second in all (Stripe allows 25)');
$fake->config(api_keys => [ 'sk_test_fake', 'sk_live_fake' ]);
my $url = $fake->url;
sql(qq{CREATE SERVER live FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$url');
	CREATE USER MAPPING FOR CURRENT_USER SERVER live OPTIONS (api_key 'sk_live_fake');});
is(limits('live'), 'live|90|90', 'a live key: 90 in all (Stripe allows 100)');
is(sql(q{SELECT account_id IS NOT NULL FROM stripe_sync.test_connection('live')}), 't',
	'... and the fake takes the live key');
is(limits('live', 'GET /v1/account'), 'live|22|22', '... its endpoints 22 each (Stripe allows 25)');
is(limits('stripe', 'GET /v1/account'), '', "... which the test key's account does not share");

# ---- a backfill of several objects at once, at the defaults ----
disabled_source($node, 'main', "objects => ARRAY['customers', 'charges', 'products']");
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql(q{SELECT count(*) FROM stripe_sync.object_state WHERE source = 'main' AND backfill_done}), '3',
	'a backfill of three objects at the default limits');
my $stats = $fake->call('GET', '/_control/stats');
cmp_ok($stats->{rate_limited}, '<=', 2,
	"... Stripe's limits refused $stats->{rate_limited} of its $stats->{requests} requests");
my $log = $fake->requests;
my %by_endpoint;
push @{ $by_endpoint{ endpoint_of($_) } }, $_ for grep { $_->{path} =~ m{^/v1/} } @$log;
cmp_ok(scalar(keys %by_endpoint), '>=', 3, 'its requests went to ' . join(', ', sort keys %by_endpoint));
for my $ep (sort keys %by_endpoint)
{
	my $n = max_per_second(@{ $by_endpoint{$ep} });
	cmp_ok($n, '<=', 25, "... $ep: at most $n in any second (of " . scalar(@{ $by_endpoint{$ep} }) . ')');
}
my $all = max_per_second(grep { $_->{path} =~ m{^/v1/} } @$log);
cmp_ok($all, '<=', 25, "... all of them: at most $all in any second");
is(limits('stripe', 'GET /v1/customers'), 'test|22|22', 'rate_limits() shows the endpoints used');

# ---- the same with a live key: 90 a second in all, 22 an endpoint (the fake keeps
# Stripe's live limits for it: 100 in all, 25 an endpoint) ----
sql(q{CREATE SCHEMA live_data});
sql(q{BEGIN;
	SELECT stripe_sync.create_source('livesrc', server => 'live', target_schema => 'live_data',
	                                 objects => ARRAY['customers', 'charges', 'products']);
	SELECT stripe_sync.alter_source('livesrc', enabled => false);
	COMMIT;});
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('livesrc')});
is(sql(q{SELECT count(*) FROM stripe_sync.object_state WHERE source = 'livesrc' AND backfill_done}), '3',
	'a backfill of three objects with a live key');
$stats = $fake->call('GET', '/_control/stats');
cmp_ok($stats->{rate_limited}, '<=', 2,
	"... Stripe's live limits refused $stats->{rate_limited} of its $stats->{requests} requests");
$log = $fake->requests;
%by_endpoint = ();
push @{ $by_endpoint{ endpoint_of($_) } }, $_ for grep { $_->{path} =~ m{^/v1/} } @$log;
for my $ep (grep { @{ $by_endpoint{$_} } > 1 } sort keys %by_endpoint)
{
	my $n = max_per_second(@{ $by_endpoint{$ep} });
	cmp_ok($n, '<=', 25, "... $ep: at most $n in any second (of " . scalar(@{ $by_endpoint{$ep} }) . ')');
}
diag('with the live key, at most ' . max_per_second(grep { $_->{path} =~ m{^/v1/} } @$log)
	  . ' requests in all in any second (the test key: at most 22)');

# ---- a 429 that names its limiter ----
# resource-specific (one object's own limit) slows nothing down
$fake->fault(kind => '429', path => '/v1/charges', count => 1, reason => 'resource-specific');
sql(q{SELECT count(*) FROM (SELECT id FROM stripe.charges LIMIT 5) c});
is(limits('stripe', 'GET /v1/charges'), 'test|22|22', 'a resource-specific 429 slows nothing down');
is(limits('stripe'), 'test|22|22', '... nor the account');

# endpoint-rate halves the endpoint's rate: a scan's requests leave half as often
$fake->fault(kind => '429', path => '/v1/customers', count => 3, reason => 'endpoint-rate');
$fake->clear_requests;
is(sql(q{SELECT count(*) FROM stripe.customers}), '1500', 'a scan through three 429s (endpoint-rate)');
my $cut = limits('stripe', 'GET /v1/customers');
like($cut, qr/^test\|22\|(\d+)$/, "... leaves GET /v1/customers slowed: $cut");
my ($now) = $cut =~ /(\d+)$/;
cmp_ok($now, '<', 22, '... under 22 a second');
is(limits('stripe'), 'test|22|22', '... and the account as it was');
my @ok = grep { $_->{path} =~ m{^/v1/customers\?} && $_->{status} == 200 } @{ $fake->requests };
is(scalar(grep { $_->{path} =~ m{^/v1/customers\?} && $_->{status} == 429 } @{ $fake->requests }), 3,
	'... which got the three 429s');
# at 11 a second, ten requests span nine intervals of 1.02 s / 11: 0.83 s (at 22: 0.42 s)
my $span = $ok[9]{time} - $ok[0]{time};
cmp_ok($span, '>=', 0.7, sprintf('... then its first ten pages took %.2f s (half the rate: 0.83 s)', $span));
ok($node->poll_query_until('postgres',
		qq{SELECT current_requests_per_second > $now AND current_requests_per_second < 22
		   FROM stripe_sync.rate_limits('stripe') WHERE endpoint = 'GET /v1/customers'}),
	'... then the rate climbs back step by step');
ok($node->poll_query_until('postgres',
		q{SELECT current_requests_per_second = 22 FROM stripe_sync.rate_limits('stripe')
		   WHERE endpoint = 'GET /v1/customers'}),
	'... to 22 a second');

# global-rate halves the account's
$fake->fault(kind => '429', path => '/v1/products', count => 1, reason => 'global-rate');
sql(q{SELECT count(*) FROM (SELECT id FROM stripe.products LIMIT 5) p});
like(limits('stripe'), qr/^test\|22\|(1\d|[1-9])$/, 'a global-rate 429 slows the account: ' . limits('stripe'));
ok($node->poll_query_until('postgres',
		q{SELECT current_requests_per_second = 22 FROM stripe_sync.rate_limits('stripe')
		   WHERE endpoint IS NULL}),
	'... until it climbs back');

# ---- the settings override the defaults ----
reload_with([ 'requests_per_second = 50' ],
	q{SELECT requests_per_second = 50 FROM stripe_sync.rate_limits('stripe') WHERE endpoint IS NULL});
is(limits('live'), 'live|50|50', 'requests_per_second = 50: 50 in all, whatever the mode');
is(limits('live', 'GET /v1/account'), 'live|none|none', '... and no limit per endpoint');
reload_with([ 'endpoint_requests_per_second = 10' ],
	q{SELECT requests_per_second = 10 FROM stripe_sync.rate_limits('stripe') WHERE endpoint IS NOT NULL LIMIT 1});
is(limits('live', 'GET /v1/account'), 'live|10|10', 'endpoint_requests_per_second = 10: 10 an endpoint');
reload_with([ 'requests_per_second = 0', 'endpoint_requests_per_second = -1' ],
	q{SELECT requests_per_second = 90 FROM stripe_sync.rate_limits('live') WHERE endpoint IS NULL});
is(limits('live', 'GET /v1/account'), 'live|none|none', 'endpoint_requests_per_second = -1: none, by mode in all');

done_testing();
