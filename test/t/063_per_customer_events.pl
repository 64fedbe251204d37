# The objects listed per customer, and billing meters, kept current after
# their backfill: a payment method detached is deleted, attached or updated is
# written; a tax id created or deleted; a customer balance transaction (no
# event of its own) is listed again for the customers whose row changed, and
# only for those; billing meters created, deactivated and reactivated.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 40, payment_methods => 50, tax_ids => 30,
	customer_balance_transactions => 30, charges => 0, invoices => 0, subscriptions => 0,
	payment_intents => 0, refunds => 0, setup_intents => 0, setup_attempts => 0 });
my $node = new_node('per_customer_events', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# rows that differ between a local table and the fake's objects of that type ($where on obj)
sub differences { return StripeTest::differences($node, $fake, "stripe_data.$_[0]", $_[1]); }

sub requests_to
{
	my ($re) = @_;
	return scalar grep { $_->{path} =~ $re } @{ $fake->requests };
}

my @meters = map { $fake->call('POST', '/_control/objects/billing_meters',
		{ display_name => "Meter $_", event_name => "calls_$_", status => 'active' }) } 1 .. 3;

sql('CREATE SCHEMA stripe_data');
disabled_source($node, 'main', "objects => ARRAY['customers', 'payment_methods', 'tax_ids', "
	  . "'customer_balance_transactions', 'billing_meters']");
sql("SELECT stripe_sync.sync_now('main')");
for my $type (qw(payment_methods tax_ids customer_balance_transactions billing_meters))
{
	is(differences($type), '0', "backfill: $type equal to the fake");
}
is(sql('SELECT count(*) FROM stripe_data.billing_meters'), '3', 'billing meters: all three');

# ---- an idle sync lists nothing per customer
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
is(requests_to(qr{^/v1/customers/}), 0, 'an idle sync lists no customer\'s objects');

# ---- changes at Stripe
my @pms = grep { defined $_->{customer} } @{ $fake->objects('payment_methods') };
my ($gone, $moved, $changed) = @pms[0 .. 2];
my @custs = map { $_->{id} } @{ $fake->objects('customers') };
my ($to) = grep { $_ ne $moved->{customer} } @custs;
$fake->call('POST', '/_control/detach', { payment_method => $gone->{id} });
$fake->call('POST', '/_control/detach', { payment_method => $moved->{id} });
$fake->call('POST', '/_control/attach', { payment_method => $moved->{id}, customer => $to });
$fake->call('POST', "/_control/objects/payment_methods/$changed->{id}", { metadata => { note => 'updated' } });
my $tax = $fake->call('POST', '/_control/objects/tax_ids', { customer => $custs[5], value => 'DE555' });
my $tax_gone = $fake->objects('tax_ids')->[-1];
$fake->call('DELETE', "/_control/objects/tax_ids/$tax_gone->{id}", {});
# a balance transaction changes its customer's balance: customer.updated, nothing of its own
my $cbt = $fake->call('POST', '/_control/objects/customer_balance_transactions',
	{ customer => $custs[7], amount => -700, currency => 'usd', type => 'adjustment' });
# a customer new since the walk, with a balance transaction
my $new = $fake->call('POST', '/_control/objects/customers', { email => 'new@example.com' });
my $new_cbt = $fake->call('POST', '/_control/objects/customer_balance_transactions',
	{ customer => $new->{id}, amount => 300, currency => 'usd', type => 'adjustment' });
$fake->call('POST', "/_control/objects/billing_meters/$meters[0]{id}", { status => 'inactive' });
$fake->call('POST', "/_control/objects/billing_meters/$meters[1]{id}", { status => 'inactive' });
$fake->call('POST', "/_control/objects/billing_meters/$meters[1]{id}", { status => 'active' });
my $meter = $fake->call('POST', '/_control/objects/billing_meters',
	{ display_name => 'Meter 4', event_name => 'calls_4', status => 'active' });

$fake->clear_requests;
my $summary = sql("SELECT stripe_sync.sync_now('main')");
ok(defined $summary, 'incremental sync ran');

# payment methods
isnt(sql("SELECT deleted_at FROM stripe_data.payment_methods WHERE id = '$gone->{id}'"), '',
	'payment_method.detached: the row is deleted');
is(sql("SELECT customer || ' ' || (deleted_at IS NULL) FROM stripe_data.payment_methods WHERE id = '$moved->{id}'"),
	"$to true", 'detached then attached to another customer: live, under its new customer');
is(sql("SELECT metadata->>'note' FROM stripe_data.payment_methods WHERE id = '$changed->{id}'"),
	'updated', 'payment_method.updated is applied');
is(differences('payment_methods', "obj->>'customer' IS NOT NULL"), '0',
	'payment methods equal to the fake\'s attached ones');
# tax ids
is(sql("SELECT value FROM stripe_data.tax_ids WHERE id = '$tax->{id}' AND deleted_at IS NULL"), 'DE555',
	'customer.tax_id.created is applied');
isnt(sql("SELECT deleted_at FROM stripe_data.tax_ids WHERE id = '$tax_gone->{id}'"), '',
	'customer.tax_id.deleted: the row is deleted');
is(differences('tax_ids'), '0', 'tax ids equal to the fake');
# balance transactions: listed again for the two customers whose rows changed, only them
is(sql("SELECT string_agg(id, ',' ORDER BY id) FROM stripe_data.customer_balance_transactions "
	  . "WHERE id IN ('$cbt->{id}', '$new_cbt->{id}')"),
	join(',', sort($cbt->{id}, $new_cbt->{id})), 'the new balance transactions are there');
my @relisted = sort map { $_->{path} =~ m{^/v1/customers/([^/]+)/balance_transactions} ? ($1) : () }
  @{ $fake->requests };
is(join(',', @relisted), join(',', sort($custs[7], $new->{id})),
	'listed again for the customers that changed, once each');
is(requests_to(qr{^/v1/customers/[^/]+/(payment_methods|tax_ids)}), 0,
	'payment methods and tax ids cost no list: their events bring them');
is(differences('customer_balance_transactions'), '0', 'customer balance transactions equal to the fake');
# billing meters
is(sql("SELECT string_agg(display_name || '=' || status, ',' ORDER BY display_name) FROM stripe_data.billing_meters"),
	'Meter 1=inactive,Meter 2=active,Meter 3=active,Meter 4=active',
	'billing.meter.created, .deactivated and .reactivated are applied');
is(differences('billing_meters'), '0', 'billing meters equal to the fake');

# ---- the next idle sync lists nothing again
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
is(requests_to(qr{^/v1/customers/}), 0, 'the next idle sync lists nothing per customer');

$node->stop;
done_testing();
