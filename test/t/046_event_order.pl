# Events of one object at distinct times, listed by the fake Stripe newest
# first across several pages (Stripe's order), and made in another order than
# their times: the sync applies them oldest first, so the local row ends in
# the newest state, and the outbox, and the fake Intempt after it, hold them
# oldest first.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake start_intempt new_node add_intempt);

my $fake = start_fake(counts => { customers => 20, products => 5 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('order', $fake, "stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

add_intempt($node, $it);
sql("CREATE SCHEMA stripe_data; BEGIN; SELECT stripe_sync.create_source('main', server => 'stripe', "
	  . "objects => ARRAY['customers'], destination => 'intempt'); "
	  . "SELECT stripe_sync.alter_source('main', enabled => false); COMMIT;");
sql("SELECT stripe_sync.sync_now('main')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 20 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	'the backfill and its history are delivered');
$it->call('DELETE', '/_control/events');

# five states of one customer, at times T+1 … T+5 (after the history's cut),
# made in the order 3 1 5 2 4; at each time 100 events of a product beside
# them (neither synced nor mapped), so that each state is on a page of its own
my $id = sql("SELECT id FROM stripe_data.customers ORDER BY id LIMIT 1");
my $customer = decode_json(sql("SELECT attrs FROM stripe_data.customers WHERE id = '$id'"));
my $product = $fake->objects('products')->[0];
my $t = sql("SELECT history_until FROM stripe_sync.sources WHERE name = 'main'") + 20;
my %event_of;
for my $k (3, 1, 5, 2, 4)
{
	$fake->call('POST', '/_control/events', { type => 'product.updated', object => $product,
		created => $t + $k }) for 1 .. 50;
	my $ev = $fake->call('POST', '/_control/events', { type => 'customer.updated',
		object => { %$customer, name => "state $k" }, created => $t + $k });
	$event_of{$k} = $ev->{id};
	$fake->call('POST', '/_control/events', { type => 'product.updated', object => $product,
		created => $t + $k }) for 1 .. 50;
}
# Stripe's order (newest first), as the fake lists its events: each state's page
my @listed = grep { $_->{created} > $t } @{ $fake->objects('events') };
my %page_of = map { $listed[$_]{id} => int($_ / 100) } 0 .. $#listed;
is(join(' ', map { $page_of{ $event_of{$_} } } reverse 1 .. 5), '0 1 2 3 4',
	'the fake lists the states newest first, each on a page of its own');
$fake->clear_requests;
my $run = sql("SELECT stripe_sync.sync_now('main')");
like($run, qr/"events": 5,/, "a sync applies the customer's 5 events");
like($run, qr/"events_skipped": 500\b/, "... and skips the products' 500, which change no local table");
my @pages = grep { $_->{path} =~ m{^/v1/events\?} } @{ $fake->requests };
is(scalar @pages, 6, '... read in six pages of 100, newest first');

is(sql("SELECT name FROM stripe_data.customers WHERE id = '$id'"), 'state 5',
	'the local row ends in the newest state');
is(sql("SELECT extract(epoch FROM observed_at)::bigint FROM stripe_data.customers WHERE id = '$id'"),
	$t + 5, '... observed at its time');
is(sql("SELECT string_agg(payload->'data'->>'name', ', ' ORDER BY id) FROM stripe_sync.outbox "
	  . "WHERE object_id = '$id' AND event_id NOT LIKE 'hist%'"),
	join(', ', map { "state $_" } 1 .. 5), 'the outbox holds them oldest first');
is(sql("SELECT string_agg(event_id, ' ' ORDER BY id) FROM stripe_sync.outbox "
	  . "WHERE object_id = '$id' AND event_id NOT LIKE 'hist%'"),
	join(' ', map { $event_of{$_} } 1 .. 5), '... with their Stripe event ids');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 25 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	'they are delivered');
is(join(' ', map { $_->{eventId} } @{ $it->call('GET', '/_control/events?data=0') }),
	join(' ', map { $event_of{$_} } 1 .. 5), '... and arrive at Intempt oldest first');

$node->stop;
done_testing();
