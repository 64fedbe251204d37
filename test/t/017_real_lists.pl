# What Stripe's lists leave out unless asked, and the backfill must ask for: archived
# prices (GET /v1/prices lists active ones), and customers and subscriptions on test
# clocks (listed only with test_clock=); a key that may not list test clocks leaves
# them out and says so; Stripe's rate limits as the fake keeps them by default.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 120, subscriptions => 30, products => 6, prices => 16 });
my $node = new_node('lists', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# two test clocks, with customers and subscriptions on them
my $price = (grep { $_->{active} && $_->{recurring} } @{ $fake->objects('prices') })[0]{id};
my (@clocked_customers, @clocked_subs);
for my $n (1, 2)
{
	my $clock = $fake->call('POST', '/_control/objects/test_clocks', { name => "clock $n", frozen_time => 1700000000 });
	for my $k (1 .. 2)
	{
		my $c = $fake->call('POST', '/_control/objects/customers',
			{ email => "clock$n-$k\@example.com", test_clock => $clock->{id}, created => 1700000000 + $k });
		push @clocked_customers, $c->{id};
		my $s = $fake->call('POST', '/_control/objects/subscriptions',
			{ customer => $c->{id}, test_clock => $clock->{id}, status => ($k == 1 ? 'active' : 'canceled'),
			  created => 1700000100 + $k, items => { object => 'list', data => [] } });
		push @clocked_subs, $s->{id};
	}
}
my $inactive = grep { !$_->{active} } @{ $fake->objects('prices') };
cmp_ok($inactive, '>', 0, "the fake has $inactive archived prices");

sql(q{
	CREATE SCHEMA stripe_data;
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe',
	                                 objects => ARRAY['customers', 'subscriptions', 'prices']);
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;
});
$fake->clear_requests;
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'the backfill ran') or diag($err);

# every object of the fake, as its control API has them, is in the local tables
for my $type (qw(customers subscriptions prices))
{
	my @ids = sort map { $_->{id} } @{ $fake->objects($type) };
	is(sql("SELECT string_agg(id, ',' ORDER BY id) FROM stripe_data.$type"), join(',', @ids),
		"$type: every one of the fake's " . scalar(@ids) . ', none left out');
}
is(sql(q{SELECT count(*) FROM stripe_data.prices WHERE NOT active}), $inactive, 'archived prices included');
is(sql("SELECT count(*) FROM stripe_data.customers WHERE id IN ('" . join("','", @clocked_customers) . "')"),
	'4', 'customers on test clocks included');
is(sql("SELECT count(*) FROM stripe_data.subscriptions WHERE id IN ('" . join("','", @clocked_subs) . "')"),
	'4', 'subscriptions on test clocks included, canceled ones too');

my @paths = map { $_->{path} } @{ $fake->requests };
is(scalar(grep { m{^/v1/test_helpers/test_clocks\?limit=100$} } @paths), 1, 'the test clocks listed once');
is(scalar(grep { m{^/v1/customers\?.*&test_clock=clock_} } @paths), 2, 'customers listed per clock');
is(scalar(grep { m{^/v1/subscriptions\?.*&status=all&test_clock=clock_} } @paths), 2,
	'subscriptions of every status listed per clock');
is(scalar(grep { m{^/v1/prices\?.*&active=false} } @paths), 1, 'prices: the archived ones listed too');

# ---- a key that may not list test clocks: their objects are left out, with a warning
sql(q{SELECT stripe_sync.drop_source('main'); DROP SCHEMA stripe_data CASCADE; CREATE SCHEMA stripe_data;
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers']);
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;});
$fake->fault(kind => 'status', status => 403, path => '/v1/test_helpers/test_clocks', count => 1,
	message => "The provided key does not have the required permissions for this endpoint.");
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a key that may not list test clocks still syncs') or diag($err);
like($err, qr/the test clocks could not be listed; customers and subscriptions on test clocks are left out/,
	'... saying what is left out');
# (the clocked ones may still come from their recent creation events)
is(sql("SELECT count(*) FROM stripe_data.customers WHERE id NOT IN ('" . join("','", @clocked_customers) . "')"),
	120, '... the customers of no clock all there');

# ---- a backfill cursor of 0.1 (its windows name no list) resumes as the active
# prices' list, and the archived prices get a list of their own
sql(q{SELECT stripe_sync.drop_source('main'); DROP SCHEMA stripe_data CASCADE; CREATE SCHEMA stripe_data;
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['prices']);
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;});
$node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
sql(q{TRUNCATE stripe_data.prices;
	UPDATE stripe_sync.object_state SET backfill_done = false, state = 'backfilling',
	       backfill_cursor = '{"id": 0, "windows": [{"gte": 0, "lt": 0, "after": null}]}'
	 WHERE source = 'main' AND object = 'prices'});
$fake->clear_requests;
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a 0.1 cursor resumes') or diag($err);
is(sql(q{SELECT count(*) FROM stripe_data.prices}), scalar(@{ $fake->objects('prices') }), '... every price');
is(join(',', sort map { $_->{path} =~ /(active=\w+)/ ? $1 : 'none' } grep { $_->{path} =~ m{^/v1/prices\?} }
	@{ $fake->requests }), 'active=false,active=true', '... one list each, active and archived');

# ---- Stripe's rate limits, on in the fake unless a test turns them off: a sync at
# the default pace (stripe_sync.requests_per_second 0: 22 a second for a test key,
# under Stripe's 25) is never refused
$fake->config(rate_limit => 25, endpoint_rate_limit => 25);
sql(q{ALTER SYSTEM SET stripe_sync.requests_per_second = 0; SELECT pg_reload_conf();});
sleep 1;
sql(q{SELECT stripe_sync.drop_source('main'); DROP SCHEMA stripe_data CASCADE; CREATE SCHEMA stripe_data;
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', 'prices']);
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;});
$fake->call('DELETE', '/_control/requests');
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a sync under the default limits') or diag($err);
is($fake->call('GET', '/_control/stats')->{rate_limited}, 0, '... no request refused');
# past them, the ERROR names the limiter Stripe gave
$fake->config(rate_limit => 0, endpoint_rate_limit => 0);
$fake->fault(kind => '429', path => '/v1/customers', count => 100, reason => 'endpoint-rate');
($rc, $out, $err) = $node->psql('postgres',
	q{SET stripe_sync.max_retries = 1; SET stripe_sync.retry_base_delay = '10ms';
	  SELECT count(*) FROM stripe.customers});
like($err, qr/\(code rate_limit; rate limiter endpoint-rate; 2 attempts\)/, 'a 429 names its limiter');
$fake->call('DELETE', '/_control/faults');

done_testing();
