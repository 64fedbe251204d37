# A long list scan reads the rest of the list, after its first page, in windows
# of created with several requests in flight (fdw_windows.c).  It returns what a
# one-page-at-a-time scan returns, in the same order (ORDER BY created DESC needs
# no sort); at most three times max_concurrent_requests pages wait to be handed out; a
# window's refused request fails the scan cleanly, a failed one is retried; a
# LIMIT still sends one request.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { charges => 2300, customers => 900, prices => 700 });
my $node = new_node('windows', $fake, "stripe_sync.max_concurrent_requests = 6\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub concurrency
{
	sql("ALTER SYSTEM SET stripe_sync.max_concurrent_requests = $_[0]; SELECT pg_reload_conf()");
	# the next session reads the file again
	for (1 .. 100)
	{
		last if sql('SHOW stripe_sync.max_concurrent_requests') eq $_[0];
		select(undef, undef, undef, 0.05);
	}
}

# 250 customers in the newest second: a first page all of one second, whose
# rows the windows after it must skip
my $t0 = 1760000000;
$fake->call('POST', '/_control/objects/customers', { created => $t0 }) for 1 .. 250;

# the middle half of the charges' life, as a range of created
my ($from, $to) = split /\|/, $node->safe_psql('postgres', q{
	SELECT to_timestamp(1700000000 + 2300 / 2 * 3600 / 4), to_timestamp(1700000000 + 2300 / 2 * 3600 * 3 / 4)});

# Each query's rows in the order they come, one string
my @queries = (
	'SELECT id FROM stripe.charges',
	'SELECT id FROM stripe.charges ORDER BY created DESC',
	'SELECT id FROM stripe.customers',
	"SELECT id FROM stripe.charges WHERE created >= '$from' AND created < '$to'",
	'SELECT id FROM stripe.prices',
	q{SELECT id FROM stripe.prices WHERE active},
);
sub rows
{
	return sql("SELECT count(*) || ':' || coalesce(string_agg(id, ',' ORDER BY n), '')
		FROM (SELECT id, row_number() OVER () AS n FROM ($_[0]) q) r");
}

concurrency(1);
my %seq = map { $_ => rows($_) } @queries;
concurrency(6);
$fake->call('POST', '/_control/config', { latency_ms => 20 });
for my $q (@queries)
{
	$fake->clear_requests;
	my $got = rows($q);
	my ($n) = split /:/, $got;
	is($got, $seq{$q}, "$q: the same $n rows in the same order as one page at a time");
	my @pages = grep { $_->{path} =~ m{^/v1/(charges|customers|prices)\?} } @{ $fake->requests };
	if ($q =~ /customers/)
	{
		my @ids = split /,/, (split /:/, $got)[1];
		my %seen;
		is(scalar(grep { !$seen{$_}++ } @ids), scalar(@ids), '... none twice (a first page of one second)');
	}
	# a window's last page is part full, and the tail of each list probes a few empty windows
	cmp_ok(scalar(@pages), '<=', 1.5 * $n / 100 + ($q =~ /prices$/ ? 16 : 8),
		"... in " . scalar(@pages) . ' requests');
}
cmp_ok($fake->call('GET', '/_control/stats')->{in_flight_peak}, '>', 1,
	'requests were in flight together');

# ORDER BY created DESC: Stripe's order is kept, no sort
my $plan = sql('EXPLAIN (COSTS OFF) SELECT id FROM stripe.charges ORDER BY created DESC');
unlike($plan, qr/Sort/, 'ORDER BY created DESC is the scan\'s own order');

my $analyze = sql('EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT id FROM stripe.charges');
like($analyze, qr/Stripe Windows: [1-9]/, 'EXPLAIN ANALYZE shows the windows');
my ($waiting) = $analyze =~ /Stripe Pages Waiting: (\d+)/;
ok(defined $waiting && $waiting >= 1 && $waiting <= 18,
	'at most three times max_concurrent_requests pages waited to be handed out (' . ($waiting // 'none') . ')');
my ($pages) = $analyze =~ /Stripe Pages: (\d+)/;
cmp_ok($pages, '>=', 23, "... of $pages pages");

# one request at a time: no windows
concurrency(1);
unlike(sql('EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT id FROM stripe.charges'),
	qr/Stripe Windows/, 'with max_concurrent_requests = 1 the scan reads page after page');
concurrency(6);

# LIMIT: one request
$fake->clear_requests;
is(sql('SELECT count(*) FROM (SELECT id FROM stripe.charges LIMIT 5) s'), '5', 'LIMIT 5');
is(scalar(grep { $_->{path} =~ m{^/v1/charges} } @{ $fake->requests }), 1, '... sends one request');

# a list per parent stays one page at a time
unlike(sql(q{EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT * FROM stripe.payment_methods WHERE customer = 'cus_none'}), qr/Stripe Windows/,
	'a list per parent has no windows');

# a window's request that fails is retried; one Stripe refuses fails the scan
$fake->fault(kind => 'status', status => 500, path => '/v1/charges?limit=100&created', count => 2);
is(rows($queries[0]), $seq{ $queries[0] }, 'a window\'s request that fails is retried');
$fake->fault(kind => 'status', status => 400, path => '/v1/charges?limit=100&created', count => 1,
	message => 'No such thing', code => 'parameter_invalid_integer');
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM stripe.charges');
isnt($rc, 0, 'a window\'s request that Stripe refuses fails the scan');
like($err, qr/ERROR:.*HTTP 400.*DETAIL:  No such thing/s, '... with Stripe\'s message');
unlike($err, qr/sk_test_fake/, '... and no key');
$fake->clear_faults;
is(sql('SELECT count(*) FROM stripe.charges'), (split /:/, $seq{ $queries[0] })[0],
	'the next scan is whole');

# a cursor lost inside a window: the window goes on from its second
$fake->clear_requests;
$fake->fault(kind => 'status', status => 400, path => '/v1/charges?limit=100&created', count => 1,
	contains => 'starting_after=', code => 'resource_missing', param => 'starting_after', message => 'No such charge');
is(rows($queries[0]), $seq{ $queries[0] }, 'a window whose cursor Stripe lost goes on from its second');
ok((grep { $_->{path} =~ /starting_after=/ && $_->{status} == 400 } @{ $fake->requests }),
	'... after Stripe answered its cursor 400');

done_testing();
