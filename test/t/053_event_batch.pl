# A page of events is applied as a batch: each table's objects in one
# statement, each object at the newest state its events in the page bring.
# What the batch leaves is what applying the events one by one, oldest
# first, would: the newest state wins whatever order the events were made
# in; an object deleted by an event without its state keeps the state an
# older event of the page brought (even one created in the same page); an
# object that cannot be stored is set aside alone; and every event is still
# counted, and shipped, oldest first.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake start_intempt new_node add_intempt);

my $fake = start_fake(counts => { customers => 10, products => 3 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('batch', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

add_intempt($node, $it);
sql("CREATE SCHEMA stripe_data; BEGIN; SELECT stripe_sync.create_source('main', server => 'stripe', "
	  . "objects => ARRAY['customers', 'products'], destination => 'intempt'); "
	  . "SELECT stripe_sync.alter_source('main', enabled => false); COMMIT;");
sql("SELECT stripe_sync.sync_now('main')");

my @ids = split /\n/, sql("SELECT id FROM stripe_data.customers ORDER BY id LIMIT 3");
my ($ca, $cb, $r) = @ids;
my %cust = map { $_ => decode_json(sql("SELECT attrs FROM stripe_data.customers WHERE id = '$_'")) } @ids;
my $r_name = sql("SELECT name FROM stripe_data.customers WHERE id = '$r'");
my $product = $fake->objects('products')->[0];
my $t = sql("SELECT history_until FROM stripe_sync.sources WHERE name = 'main'") + 20;
sub event
{
	my ($type, $object, $at) = @_;
	return $fake->call('POST', '/_control/events', { type => $type, object => $object, created => $t + $at })->{id};
}

# customer a: three states, made in the order 2 3 1
my %a_event;
$a_event{$_} = event('customer.updated', { %{ $cust{$ca} }, name => "state $_" }, $_) for (2, 3, 1);
# customer b: a last state, then deleted by an event without it
event('customer.updated', { %{ $cust{$cb} }, name => 'before its deletion' }, 4);
event('customer.deleted', { id => $cb, object => 'customer', deleted => JSON::PP::true }, 5);
# a customer created and deleted within the page
my $new = { %{ $cust{$ca} }, id => 'cus_bornandgone', name => 'born and gone', created => $t };
event('customer.created', $new, 1);
event('customer.deleted', { id => $new->{id}, object => 'customer', deleted => JSON::PP::true }, 2);
# customer r: a state that cannot be stored (a trigger of the owner's refuses it)
sql(q{
	CREATE FUNCTION stripe_data.no_refused() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  IF NEW.name = 'refused by a trigger' THEN
	    RAISE EXCEPTION 'the owner refuses %', NEW.id;
	  END IF;
	  RETURN NEW;
	END $$;
	CREATE TRIGGER no_refused BEFORE INSERT OR UPDATE ON stripe_data.customers
	  FOR EACH ROW EXECUTE FUNCTION stripe_data.no_refused();
});
event('customer.updated', { %{ $cust{$r} }, name => 'refused by a trigger' }, 3);
# a product, in the same page: another table's statement
event('product.updated', { %$product, name => "product state $_" }, $_) for (6, 5);

$fake->clear_requests;
my $run = sql("SELECT stripe_sync.sync_now('main')");
is(scalar(grep { $_->{path} =~ m{^/v1/events\?} } @{ $fake->requests }), 1,
	'the 10 events come in one page');
like($run, qr/"events": 10,/, 'every event of the page is counted as applied');
like($run, qr/"events_skipped": 0\b/, '... none skipped');
like($run, qr/"rejected": 1\b/, '... and the object that cannot be stored is set aside');

is(sql("SELECT name || ' ' || (extract(epoch FROM observed_at)::bigint - $t) || ' ' || (deleted_at IS NULL) "
	  . "FROM stripe_data.customers WHERE id = '$ca'"),
	'state 3 3 true', 'a customer ends in its newest state, observed at its time');
is(sql("SELECT name || ' ' || (extract(epoch FROM deleted_at)::bigint - $t) FROM stripe_data.customers WHERE id = '$cb'"),
	'before its deletion 5', 'a customer deleted after a change keeps that state, marked deleted at its time');
is(sql("SELECT name || ' ' || (extract(epoch FROM deleted_at)::bigint - $t) FROM stripe_data.customers "
	  . "WHERE id = '$new->{id}'"),
	'born and gone 2', 'a customer created and deleted in the page is there, deleted');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$r'"), $r_name,
	'the customer that cannot be stored keeps its row');
is(sql("SELECT object_id FROM stripe_sync.rejected"), $r, '... and is in stripe_sync.rejected');
is(sql("SELECT name FROM stripe_data.products WHERE id = '$product->{id}'"), 'product state 6',
	'the product of the page ends in its newest state');

is(sql("SELECT string_agg(event_id, ' ' ORDER BY id) FROM stripe_sync.outbox "
	  . "WHERE object_id = '$ca' AND event_id NOT LIKE 'hist%'"),
	join(' ', map { $a_event{$_} } 1 .. 3), "the outbox holds each of a customer's events, oldest first");
is(sql("SELECT count(*) FROM stripe_sync.applied_events WHERE created >= $t"), '10',
	'every event is recorded as applied');

# the page read again (the overlap): nothing applied twice
$run = sql("SELECT stripe_sync.sync_now('main')");
like($run, qr/"events": 0,/, 'a second sync applies none of them again');

# an object with a NUL in a string (\u0000, which jsonb refuses): set aside
# locally, its event still shipped (the NUL as U+FFFD), the rest of the page applied
my $nul = event('customer.updated', { %{ $cust{$ca} }, name => "nul\x{0}name" }, 7);
event('customer.updated', { %{ $cust{$cb} }, name => 'after the nul' }, 8);
$run = sql("SELECT stripe_sync.sync_now('main')");
like($run, qr/"events": 2,.*"rejected": 1\b/, 'a page with an object holding \u0000 is applied, that object set aside');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$cb'"), 'after the nul', '... the other applied');
is(sql("SELECT count(*) FROM stripe_sync.rejected WHERE object_id = '$ca' AND error LIKE '%Unicode%'"), '1',
	'... the one with the NUL in stripe_sync.rejected, saying why');
is(sql("SELECT payload->'data'->>'name' FROM stripe_sync.outbox WHERE event_id = '$nul'"), "nul\xEF\xBF\xBDname",
	'... and its event in the outbox, the NUL shown as U+FFFD');
like(sql("SELECT stripe_sync.sync_now('main')"), qr/"events": 0,/, 'the next sync is not held up by it');

$node->stop;
done_testing();
