# One Intempt identity per customer on a real first backfill that sees each
# customer's charges (refunds, invoices, ...) before the customer: the source
# lists charges first, and the fake Stripe holds the customers' list until
# every charge is committed to the local table.  Every event of one customer
# that reaches the fake Intempt, history and live alike, carries the same
# userId: the customer's email, or its id when it has none.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node add_intempt expected_history);

my $fake = start_fake(counts => { customers => 120, charges => 600, invoices => 60,
	payment_intents => 150, refunds => 40, subscriptions => 50 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
# a held request must not time out on the client's side
my $node = new_node('identity', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.http_timeout = 600\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

add_intempt($node, $it);
my @types = qw(charges refunds invoices payment_intents subscriptions customers);
my %count = map { $_ => scalar @{ $fake->objects($_) } } @types;

# ---- the backfill: every charge committed before any customer is listed
$fake->hold('/v1/customers', count => 1);
sql("SELECT stripe_sync.create_source('main', server => 'stripe', destination => 'intempt', "
	  . "objects => ARRAY['" . join("', '", @types) . "'])");
ok($fake->wait_held(1), "the worker's first request for customers is held");
ok($node->poll_query_until('postgres',
	"SELECT (SELECT count(*) FROM stripe_data.charges) = $count{charges} "
	  . "AND (SELECT count(*) FROM stripe_data.refunds) = $count{refunds} "
	  . "AND (SELECT count(*) FROM stripe_data.customers) = 0"),
	"all $count{charges} charges and $count{refunds} refunds are committed while no customer is");
is(sql("SELECT count(*) FROM stripe_data.charges WHERE customer IS NOT NULL"),
	scalar(grep { defined $_->{customer} } @{ $fake->objects('charges') }),
	'... charges that name their customers');
is($fake->release, 1, 'the customers are listed after that');

my $want = expected_history($fake, @types);
my $total = 0;
$total += $_ for values %$want;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $total AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	"the history ($total events) is delivered");
ok($node->poll_query_until('postgres',
	"SELECT string_agg(status, ' ') = 'ok' FROM stripe_sync.runs WHERE source = 'main'"),
	'... by one run, which succeeds');

# ---- live events after it: a charge of a known customer whose card bears
# another email, and a new customer with a charge
my %email = map { $_->{id} => $_->{email} } @{ $fake->objects('customers') };
my ($known) = sort grep { defined $email{$_} } keys %email;
$fake->call('POST', '/_control/objects/charges', { customer => $known, status => 'succeeded',
	amount => 4200, currency => 'usd', billing_details => { email => 'card-holder@example.com' } });
my $new = $fake->call('POST', '/_control/objects/customers', { email => 'newcomer@example.com' });
$email{ $new->{id} } = 'newcomer@example.com';
$fake->call('POST', '/_control/objects/charges', { customer => $new->{id}, status => 'failed',
	amount => 100, currency => 'eur', billing_details => { email => 'someone-else@example.com' } });
like(sql("SELECT stripe_sync.sync_now('main')"), qr/"events": 3/, 'a sync applies their three events');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $total + 3 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	'... and their events are delivered');

# ---- what the fake Intempt received: one userId per customer
my $got = $it->call('GET', '/_control/events');
is(scalar @$got, $total + 3, 'every event arrived, once');
my (%ids_of, %events_of, %names);
for my $e (@$got)
{
	my $c = $e->{data}{customer_id} // next;    # a guest's charge: no customer
	$ids_of{$c}{ $e->{userId} }++;
	$events_of{$c}++;
	$names{ $e->{name} }++;
}
is(scalar(keys %ids_of), scalar(keys %email),
	'the events name every customer (' . scalar(keys %email) . ')');
my @several = grep { keys %{ $ids_of{$_} } > 1 } sort keys %ids_of;
is(scalar @several, 0, 'no customer arrived under two userIds')
  or diag(join("\n", map { "$_: " . join(', ', sort keys %{ $ids_of{$_} }) } @several[0 .. ($#several < 4 ? $#several : 4)]));
my @wrong = grep { (keys %{ $ids_of{$_} })[0] ne ($email{$_} // $_) } sort keys %ids_of;
is(scalar @wrong, 0, "each customer's userId is its email, else its id")
  or diag(join("\n", map { "$_: " . join(', ', keys %{ $ids_of{$_} }) . ' for ' . ($email{$_} // 'no email') } @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]));
my $busiest = (sort { $b <=> $a } values %events_of)[0];
cmp_ok($busiest, '>=', 10, "... customers with many events among them (up to $busiest)");
is(scalar(keys %names), 8, '... of eight kinds: ' . join(', ', sort keys %names));
is((keys %{ $ids_of{$known} })[0] . ' ' . (keys %{ $ids_of{ $new->{id} } })[0],
	"$email{$known} newcomer\@example.com", "live charges take the customer's email, not the card's");
is(scalar(grep { !defined $email{$_} } keys %ids_of) > 0 ? 'some' : 'none', 'some',
	'customers without an email are among them (their id is their userId)');

$node->stop;
done_testing();
