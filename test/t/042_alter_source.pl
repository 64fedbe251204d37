# alter_source on a source that the workers sync:
# - destination => …, on a source backfilled without one: the next sync is due
#   at once and sends the history from the local tables (no list request to
#   Stripe; a row edited in the local table shows in its event);
# - objects => …: an added object's table is created with the call, and the
#   next sync, due at once, backfills it and sends its history; a removed
#   object is no longer synced: no request for it, its table left as it was.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node add_intempt expected_history);

my $fake = start_fake(counts => { customers => 60, charges => 150, subscriptions => 40 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('alter', $fake, "stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the last line of what the statements print (alter_source prints an empty one)
sub last_line { return (split /\n/, sql($_[0]))[-1]; }

sub last_run { return sql("SELECT coalesce(max(id), 0) FROM stripe_sync.runs WHERE source = 'main'"); }

# the next run after $id, waited for
sub next_run_ok
{
	my ($id, $what) = @_;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND id > $id AND status = 'ok'"),
		$what);
}

# the paths of the fake's requests, without their query strings
sub paths { return [ map { (split /\?/, $_->{path})[0] } @{ $fake->requests } ]; }

sub delivered
{
	my ($n, $what) = @_;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) = $n AND bool_and(state = 'delivered') FROM stripe_sync.outbox"), $what);
}

sub names_received
{
	my %got;
	$got{ $_->{name} }++ for @{ $it->call('GET', '/_control/events?data=0') };
	return \%got;
}

# ---- a source without a destination: its first sync writes no outbox row
sql("SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', 'charges'])");
next_run_ok(0, 'the first sync (a backfill) ends');
is(sql("SELECT (SELECT count(*) FROM stripe_data.customers) || ' ' || (SELECT count(*) FROM stripe_data.charges)"),
	'60 150', '... with every customer and charge');
is(sql("SELECT count(*) FROM stripe_sync.outbox"), '0', 'no destination: no outbox row');
is(sql("SELECT string_agg(history, ' ' ORDER BY object) FROM stripe_sync.object_state WHERE source = 'main'"),
	'owed owed', '... the history is owed');

# a local row the history must be read from
my $edited = sql("SELECT id FROM stripe_data.customers WHERE email IS NOT NULL ORDER BY id LIMIT 1");
sql("UPDATE stripe_data.customers SET attrs = attrs || '{\"email\": \"from-the-local-table\@example.com\"}' "
	  . "WHERE id = '$edited'");

# ---- destination => …
add_intempt($node, $it);
my $run = last_run();
$fake->clear_requests;
is(last_line("BEGIN; SELECT stripe_sync.alter_source('main', destination => 'intempt'); "
	  . "SELECT next_sync_at <= now() FROM stripe_sync.sources WHERE name = 'main'; COMMIT;"),
	't', 'alter_source(destination => …) makes the next sync due at once');
next_run_ok($run, '... and it runs');
my $want = expected_history($fake, 'customers', 'charges');
my $total = 0;
$total += $_ for values %$want;
delivered($total, "it sends the history ($total events)");
is_deeply(names_received(), $want, '... as the fake objects say, per event name');
is_deeply(paths(), ['/v1/events'], '... from the local tables: its one request was for the events');
is($it->call('GET', "/_control/events?eventId=hist_customer.created_$edited")->[0]{userId},
	'from-the-local-table@example.com', "... a local row's edit shows in its event");
is(sql("SELECT string_agg(history, ' ' ORDER BY object) FROM stripe_sync.object_state WHERE source = 'main'"),
	'sent sent', '... and the history is sent');

# ---- objects => …: subscriptions in, charges out
$run = last_run();
$fake->clear_requests;
my $charges_before = sql("SELECT count(*) || ' ' || max(synced_at) FROM stripe_data.charges");
is(last_line("BEGIN; SELECT stripe_sync.alter_source('main', objects => ARRAY['customers', 'subscriptions']); "
	  . "SELECT to_regclass('stripe_data.subscriptions') IS NOT NULL AND next_sync_at <= now() "
	  . "FROM stripe_sync.sources WHERE name = 'main'; COMMIT;"),
	't', "alter_source(objects => …): the added object's table is there with the call, and a sync is due at once");
next_run_ok($run, '... and it runs');
is(sql("SELECT count(*) FROM stripe_data.subscriptions"), scalar @{ $fake->objects('subscriptions') },
	'the added object is backfilled, every status');
my $subs = scalar @{ $fake->objects('subscriptions') };
delivered($total + $subs, "its history is sent ($subs events)");
is(names_received()->{'Subscription created'}, $subs, '... and received');
is(sql("SELECT string_agg(object || ' ' || history || ' ' || backfill_done, ', ' ORDER BY object) "
	  . "FROM stripe_sync.object_state WHERE source = 'main'"),
	'customers sent true, subscriptions sent true', 'the removed object has no state any more');
my @p = @{ paths() };
ok((grep { $_ eq '/v1/subscriptions' } @p) && !(grep { $_ eq '/v1/charges' } @p),
	'the sync listed subscriptions and asked nothing about charges: ' . join(' ', @p));

# a new charge and a new subscription: the next sync takes the subscription only
my $cus = sql("SELECT id FROM stripe_data.customers ORDER BY id LIMIT 1");
my $ch = $fake->call('POST', '/_control/objects/charges',
	{ customer => $cus, status => 'succeeded', amount => 700, currency => 'usd' });
my $sub = $fake->call('POST', '/_control/objects/subscriptions', { customer => $cus, status => 'active' });
$fake->clear_requests;
like(sql("SELECT stripe_sync.sync_now('main')"), qr/"events": [1-9]/, 'a later sync applies their events');
is(sql("SELECT count(*) FROM stripe_data.subscriptions WHERE id = '$sub->{id}'"), '1',
	'the new subscription is in its table');
is(sql("SELECT count(*) || ' ' || max(synced_at) FROM stripe_data.charges"), $charges_before,
	'the charges table is left as it was: the new charge is not in it');
is(scalar(grep { m{^/v1/charges} } @{ paths() }), 0, '... and no request was about charges');

$node->stop;
done_testing();
