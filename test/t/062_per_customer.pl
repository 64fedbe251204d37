# Objects Stripe lists only per customer (payment methods, tax ids, customer
# balance transactions): foreign tables need the customer; a source needs
# customers too; its backfill walks the local customers, one list (or more)
# per customer, equal to the fake; kill -9 of the postmaster mid-walk resumes
# from the committed customer, listing again only the few customers in flight.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use StripeTest qw(start_fake new_node);

my $ncust = 1000;
my $fake = start_fake(counts => { customers => $ncust, payment_methods => 1500, tax_ids => 900,
	customer_balance_transactions => 900, charges => 0, invoices => 0, subscriptions => 0,
	payment_intents => 0, refunds => 0, setup_intents => 0, setup_attempts => 0 });
my $node = new_node('per_customer', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nrestart_after_crash = on\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# rows that differ between a local table and the fake's objects of that type
sub differences { return StripeTest::differences($node, $fake, "$_[0].$_[1]"); }

# the customers whose list of $child was asked for, in the requests given
sub listed
{
	my ($child, @reqs) = @_;
	return map { $_->{path} =~ m{^/v1/customers/([^/?]+)/$child\?} ? ($1) : () } @reqs;
}

# one customer with more than a page of tax ids
my $big = $fake->objects('customers')->[0]{id};
$fake->call('POST', '/_control/objects/tax_ids', { customer => $big, value => "DE$_" }) for 1 .. 150;
my $ntax = scalar @{ $fake->objects('tax_ids') };

# ---- foreign tables: the customer is in the path
is(sql("SELECT count(*) FROM stripe.tax_ids WHERE customer = '$big'"),
	scalar(grep { $_->{customer} eq $big } @{ $fake->objects('tax_ids') }),
	'stripe.tax_ids lists a customer\'s tax ids, every page');
like(sql("EXPLAIN SELECT * FROM stripe.customer_balance_transactions WHERE customer = 'cus_x'"),
	qr{GET /v1/customers/cus_x/balance_transactions}, 'balance transactions: the customer\'s path');
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM stripe.customer_balance_transactions');
like($err, qr/needs a value for "customer".*GET \/v1\/customers\/\{customer\}\/balance_transactions/s,
	'without a customer: an error naming the list, before any request');
my $cbt = $fake->objects('customer_balance_transactions')->[0];
is(sql("SELECT amount FROM stripe.customer_balance_transactions WHERE customer = '$cbt->{customer}' "
	  . "AND id = '$cbt->{id}'"), $cbt->{amount}, 'an id with its customer: listed, the id checked locally');

# ---- a source needs customers
sql('CREATE SCHEMA stripe_data');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT stripe_sync.create_source('nocust', server => 'stripe', objects => ARRAY['tax_ids'])");
like($err, qr/object "tax_ids" needs "customers" in the same source/, 'a source without customers is refused');
like($err, qr/HINT:  Add customers/, '... saying what to add');
is(sql("SELECT syncable, listed_under FROM stripe_sync.objects WHERE object = 'customer_balance_transactions'"),
	't|customer', 'the catalogue: syncable, listed per customer');

# ---- the walk, killed in its middle: 3 lists per customer at 40 ms each, 8 in flight
$fake->clear_requests;
sql("SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', "
	  . "'payment_methods', 'tax_ids', 'customer_balance_transactions'])");
ok($node->poll_query_until('postgres',
	"SELECT backfill_done FROM stripe_sync.object_state WHERE source = 'main' AND object = 'customers'"),
	'the customers are backfilled first');
$fake->config(latency_ms => 40);
ok($node->poll_query_until('postgres',
	"SELECT rows >= 100 AND backfill_cursor LIKE 'walk:%' FROM stripe_sync.object_state "
	  . "WHERE source = 'main' AND object = 'tax_ids'"),
	'the walk commits its customers as it goes');
my $cursor = sql("SELECT split_part(backfill_cursor, ':', 4) FROM stripe_sync.object_state "
	  . "WHERE source = 'main' AND object = 'tax_ids'");
my $pid = $node->{_pid};
$node->kill9;
# its processes see the postmaster die; a request in flight may still reach the fake
for (1 .. 200) { last unless kill 0, $pid; usleep(20_000); }
sleep 2;
my @before = listed('tax_ids', @{ $fake->requests });
cmp_ok(scalar(@before), '<', $ncust, 'the kill came mid-walk (' . scalar(@before) . " of $ncust customers)");
$fake->clear_requests;
$fake->config(latency_ms => 0);
$node->start;
is(sql("SELECT backfill_done FROM stripe_sync.object_state WHERE source = 'main' AND object = 'tax_ids'"),
	'f', 'the walk was not done');
# the run that died waits for its backoff: this session finishes it
sql("SELECT stripe_sync.sync_now('main')");
is(sql("SELECT string_agg(object || '=' || backfill_done, ',' ORDER BY object) FROM stripe_sync.object_state "
	  . "WHERE source = 'main'"),
	'customer_balance_transactions=true,customers=true,payment_methods=true,tax_ids=true',
	'after the crash every walk completes');
my @after = listed('tax_ids', @{ $fake->requests });
my %again = map { $_ => 1 } @after;
my $redone = grep { $again{$_} } @before;
is(sql("SELECT count(*) FROM unnest(string_to_array('" . join(',', @after) . "', ',')) a(id) "
	  . "WHERE a.id <= '$cursor'"), '0', 'no customer up to the committed cursor was listed again');
cmp_ok($redone, '<=', 16, "few customers listed again: those in flight at the kill ($redone)");
is(scalar(keys %again) + scalar(@before) - $redone, $ncust, 'every customer was listed');
for my $type (qw(payment_methods tax_ids customer_balance_transactions))
{
	is(differences('stripe_data', $type), '0', "$type: equal to the fake, none lost");
	is(sql("SELECT count(*) - count(DISTINCT id) FROM stripe_data.$type"), '0', "$type: no duplicate");
}
is(sql('SELECT count(*) FROM stripe_data.tax_ids'), $ntax, "all $ntax tax ids");
is(sql("SELECT split_part(backfill_cursor, ':', 1) FROM stripe_sync.object_state "
	  . "WHERE source = 'main' AND object = 'customer_balance_transactions'"),
	'since', 'balance transactions: re-listed from the walk\'s start when a customer changes');

# ---- the cost: one request per customer and object, one more per extra page
sql("CREATE SCHEMA cost_data");
sql("BEGIN; SELECT stripe_sync.create_source('cost', server => 'stripe', target_schema => 'cost_data', "
	  . "objects => ARRAY['customers', 'tax_ids']); SELECT stripe_sync.alter_source('cost', enabled => false); COMMIT;");
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('cost')");
my @cost = listed('tax_ids', @{ $fake->requests });
is(scalar(@cost), $ncust + 1, "a walk of $ncust customers: one list each, and a second page for the big one");
is(scalar(grep { $_ eq $big } @cost), 2, '... the customer with 151 tax ids: two pages');
is(differences('cost_data', 'tax_ids'), '0', 'tax ids equal to the fake');

$node->stop;
done_testing();
