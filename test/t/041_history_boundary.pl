# The cut between history and live events (sources.history_until, the first
# backfill's start): a customer and its charge created before it get exactly
# one historical event each (hist_…) although the first sync reads their real
# events too (they fall in its 5-minute overlap); a customer and its charge
# created while the backfill runs (the fake Stripe holds its customers' list
# meanwhile, and answers it after they exist, so the backfill lists them) get
# their real events, with Stripe's event ids, and no historical one.  (The
# first sync asks for its first page of events while the customers' list is
# held, before they exist: the next sync reads their events, README "First
# sync".)
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node add_intempt expected_history);

my $fake = start_fake(counts => { customers => 50, charges => 80 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('boundary', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.http_timeout = 600\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the event the fake made for object $id, of type $type
sub event_of
{
	my ($type, $id) = @_;
	my @e = grep { $_->{type} eq $type && $_->{data}{object}{id} eq $id } @{ $fake->objects('events') };
	return @e == 1 ? $e[0] : die "not one $type event for $id";
}

sub outbox_ids
{
	my ($object_id) = @_;
	return sql("SELECT string_agg(event_id, ' ' ORDER BY id) FROM stripe_sync.outbox WHERE object_id = '$object_id'");
}

sub arrived_ids
{
	my ($object_id) = @_;
	return join(' ', map { $_->{eventId} }
		  grep { $_->{data}{stripe_object_id} eq $object_id } @{ $it->call('GET', '/_control/events') });
}

add_intempt($node, $it);

# ---- before the backfill: a customer and its charge, in a second before it starts
my $pre = $fake->call('POST', '/_control/objects/customers', { email => 'pre@example.com' });
my $pre_ch = $fake->call('POST', '/_control/objects/charges',
	{ customer => $pre->{id}, status => 'succeeded', amount => 1000, currency => 'usd' });
ok($node->poll_query_until('postgres',
	"SELECT floor(extract(epoch FROM clock_timestamp())) > $pre_ch->{created}"),
	'the clock has left the second they were created in');

# ---- the backfill starts, and waits at its customers' list
$fake->hold('/v1/customers', count => 1);
sql("SELECT stripe_sync.create_source('main', server => 'stripe', destination => 'intempt', "
	  . "objects => ARRAY['customers', 'charges'])");
ok($fake->wait_held(1), "the backfill's customers' list is held");
my $until = sql("SELECT history_until FROM stripe_sync.sources WHERE name = 'main'");
cmp_ok($until, '>', $pre_ch->{created}, "history_until ($until) is after the first two were created");

# ---- during it: a customer and its charge, then the list is answered
my $during = $fake->call('POST', '/_control/objects/customers', { email => 'during@example.com' });
my $during_ch = $fake->call('POST', '/_control/objects/charges',
	{ customer => $during->{id}, status => 'succeeded', amount => 2000, currency => 'usd' });
cmp_ok($during->{created}, '>=', $until, "the second two were created at or after it ($during->{created})");
is($fake->release, 1, 'the held list is answered now');

my $want = expected_history($fake, 'customers', 'charges');
my $hist = 0;
$hist += $_ for values %$want;
$hist -= 2;    # the two created during the backfill are not history
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'"),
	'the first sync ends');
is(sql("SELECT string_agg(id, ' ' ORDER BY id) FROM stripe_data.customers "
	  . "WHERE id IN ('$pre->{id}', '$during->{id}')"), join(' ', sort($pre->{id}, $during->{id})),
	'its backfill listed both customers');
like(sql("SELECT stripe_sync.sync_now('main')"), qr/"events": [1-9]/, 'a second sync reads the events since');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $hist + 2 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	"history ($hist events) and two live events delivered");

# ---- before: history only, though the sync read their real events
my $pre_ev = event_of('customer.created', $pre->{id});
my $pre_ch_ev = event_of('charge.succeeded', $pre_ch->{id});
is(sql("SELECT count(*) FROM stripe_sync.applied_events WHERE source = 'main' "
	  . "AND event_id IN ('$pre_ev->{id}', '$pre_ch_ev->{id}')"), '2',
	'the first sync read the real events of the two created before it');
is(outbox_ids($pre->{id}), "hist_customer.created_$pre->{id}",
	'a customer created before the backfill: one historical event, not its real one');
is(outbox_ids($pre_ch->{id}), "hist_charge.succeeded_$pre_ch->{id}", '... and its charge');
is(arrived_ids($pre->{id}) . ' / ' . arrived_ids($pre_ch->{id}),
	"hist_customer.created_$pre->{id} / hist_charge.succeeded_$pre_ch->{id}", '... as Intempt received them');

# ---- during: the real events only
my $during_ev = event_of('customer.created', $during->{id});
my $during_ch_ev = event_of('charge.succeeded', $during_ch->{id});
is(outbox_ids($during->{id}), $during_ev->{id},
	"a customer created during the backfill: its real event ($during_ev->{id}), no historical one");
is(outbox_ids($during_ch->{id}), $during_ch_ev->{id}, '... and its charge');
is(arrived_ids($during->{id}) . ' / ' . arrived_ids($during_ch->{id}),
	"$during_ev->{id} / $during_ch_ev->{id}", '... as Intempt received them');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id LIKE 'hist\\_%' "
	  . "AND occurred_at >= to_timestamp($until)"), '0', 'no historical event is dated at or after history_until');

$node->stop;
done_testing();
