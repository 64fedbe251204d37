# Promotion codes, disputes, payouts, transfers and credit notes (with their
# lines): a source's first sync backfills each table equal to the fake, and the
# next applies the events Stripe sends as they change: a dispute's are
# charge.dispute.* (to disputes, not charges), a payout's payout.paid and
# .failed, a transfer's transfer.reversed, a promotion code's .updated.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 6, coupons => 3, charges => 10, promotion_codes => 9,
	disputes => 8, payouts => 11, transfers => 7, invoices => 0, subscriptions => 0,
	payment_intents => 10, refunds => 0, payment_methods => 0, setup_intents => 0,
	setup_attempts => 0 });
my $node = new_node('more_objects', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# rows that differ between a local table and the fake's objects of that type
sub differences { return StripeTest::differences($node, $fake, "stripe_data.$_[0]"); }

sub ids_of { return join(',', sort map { $_->{id} } @{ $fake->objects($_[0]) }); }

sub local_ids
{
	return sql("SELECT string_agg(id, ',' ORDER BY id) FROM stripe_data.$_[0] WHERE deleted_at IS NULL");
}

my @types = qw(promotion_codes disputes payouts transfers credit_notes);
my @cns = map { $fake->call('POST', '/_control/nested', { object => 'credit_notes', count => $_ }) } 2, 3;

sql('CREATE SCHEMA stripe_data');
disabled_source($node, 'main',
	"objects => ARRAY['charges', 'promotion_codes', 'disputes', 'payouts', 'transfers', 'credit_notes', "
	  . "'credit_note_lines']");
sql("SELECT stripe_sync.sync_now('main')");
for my $type (@types)
{
	my $n = scalar @{ $fake->objects($type) };
	ok($n > 0, "the fake has $type");
	is(local_ids($type), ids_of($type), "backfill: the $n $type ids are the fake's");
	is(differences($type), '0', "backfill: $type equal to the fake");
}
is(sql("SELECT string_agg(status || '=' || n, ',' ORDER BY status) FROM "
	  . "(SELECT status, count(*) n FROM stripe_data.payouts GROUP BY status) s"),
	'canceled=2,failed=2,in_transit=2,paid=2,pending=3', 'payouts: the status column typed and filled');
is(sql("SELECT count(*) FILTER (WHERE active) || ' ' || count(*) FILTER (WHERE NOT active) "
	  . "FROM stripe_data.promotion_codes"), '7 2', 'promotion codes: active, a boolean column');
is(sql("SELECT count(*) FROM stripe_data.disputes d WHERE d.charge = d.attrs->>'charge' AND d.amount = (d.attrs->>'amount')::bigint"),
	'8', 'disputes: charge and amount columns');
is(sql("SELECT sum(amount) FROM stripe_data.transfers"),
	(500 * 7 + 5 * 21), 'transfers: amount, an integer column');
is(sql("SELECT count(*) || ' ' || count(DISTINCT credit_note) FROM stripe_data.credit_note_lines"),
	'5 2', 'credit note lines: 2 + 3 rows under their 2 credit notes');
is(sql("SELECT count(*) FROM stripe_data.charges"), '10', 'the disputes\' charges are there too');

# ---- changes at Stripe
my ($payout) = grep { $_->{status} eq 'in_transit' } @{ $fake->objects('payouts') };
my ($failing) = grep { $_->{status} eq 'pending' } @{ $fake->objects('payouts') };
my ($dispute) = grep { $_->{status} eq 'needs_response' } @{ $fake->objects('disputes') };
my ($lost) = grep { $_->{status} eq 'under_review' } @{ $fake->objects('disputes') };
my ($promo) = grep { $_->{active} } @{ $fake->objects('promotion_codes') };
my $transfer = $fake->objects('transfers')->[2];
my $reversal = { id => 'trr_fake1', object => 'transfer_reversal', amount => $transfer->{amount},
	currency => $transfer->{currency}, created => time, transfer => $transfer->{id}, metadata => {} };

$fake->call('POST', "/_control/objects/payouts/$payout->{id}", { status => 'paid' });
$fake->call('POST', "/_control/objects/payouts/$failing->{id}",
	{ status => 'failed', failure_code => 'account_closed' });
my $new_payout = $fake->call('POST', '/_control/objects/payouts', { status => 'pending', amount => 4242 });
$fake->call('POST', "/_control/objects/disputes/$dispute->{id}", { status => 'won' });
$fake->call('POST', "/_control/objects/disputes/$lost->{id}", { status => 'lost' });
my $new_dispute = $fake->call('POST', '/_control/objects/disputes',
	{ status => 'needs_response', amount => 777, charge => $dispute->{charge} });
$fake->call('POST', "/_control/objects/promotion_codes/$promo->{id}", { active => JSON::PP::false });
my $new_promo = $fake->call('POST', '/_control/objects/promotion_codes',
	{ code => 'WINTER25', active => JSON::PP::true });
$fake->call('POST', "/_control/objects/transfers/$transfer->{id}",
	{ amount_reversed => $transfer->{amount}, reversed => JSON::PP::true, reversals => { data => [$reversal] } });
my $new_transfer = $fake->call('POST', '/_control/objects/transfers', { amount => 999, destination => 'acct_fake9' });
# reversed in 12 parts: Stripe inlines the first 10, the rest are at the list's url
my @parts = map { { id => sprintf('trr_part%02d', $_), object => 'transfer_reversal', amount => 10,
	currency => 'usd', created => time - 100 + $_, metadata => {} } } 1 .. 12;
my $split = $fake->call('POST', '/_control/objects/transfers', { amount => 120, amount_reversed => 120,
	reversed => JSON::PP::true, reversals => { data => \@parts } });
is(scalar @{ $split->{reversals}{data} } . ' ' . ($split->{reversals}{has_more} ? 'more' : 'all'), '10 more',
	'the fake shows the first 10 reversals of 12');
$fake->call('POST', "/_control/objects/credit_notes/$cns[0]{id}", { memo => 'corrected' });
my $new_cn = $fake->call('POST', '/_control/nested', { object => 'credit_notes', count => 4 });
$fake->call('POST', '/_control/nested_remove', { object => 'credit_notes', id => $cns[1]{id} });

my %types_sent = map { $_->{type} => 1 } @{ $fake->objects('events') };
ok($types_sent{$_}, "the fake sent $_") for qw(payout.paid payout.failed charge.dispute.closed
  charge.dispute.funds_reinstated promotion_code.updated transfer.reversed credit_note.updated);

$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
my @listed = grep { $_->{path} =~ m{^/v1/(payouts|disputes|transfers|promotion_codes)\b}
	  && $_->{path} !~ m{/reversals} } @{ $fake->requests };
is(scalar @listed, 0, 'the incremental sync lists none of them again: the events bring the changes')
  or diag(join("\n", map { $_->{path} } @listed));

is(sql("SELECT status || ' ' || (arrival_date IS NOT NULL) FROM stripe_data.payouts WHERE id = '$payout->{id}'"),
	'paid true', 'payout.paid: the payout is paid');
is(sql("SELECT status || ' ' || failure_code FROM stripe_data.payouts WHERE id = '$failing->{id}'"),
	'failed account_closed', 'payout.failed: the payout failed, with its code');
is(sql("SELECT status || ' ' || amount FROM stripe_data.payouts WHERE id = '$new_payout->{id}'"),
	'pending 4242', 'payout.created: the new payout');
is(sql("SELECT status FROM stripe_data.disputes WHERE id = '$dispute->{id}'"), 'won',
	'charge.dispute.closed: the dispute won');
is(sql("SELECT status FROM stripe_data.disputes WHERE id = '$lost->{id}'"), 'lost',
	'charge.dispute.closed: the dispute lost');
is(sql("SELECT status || ' ' || amount FROM stripe_data.disputes WHERE id = '$new_dispute->{id}'"),
	'needs_response 777', 'charge.dispute.created: the new dispute');
is(sql("SELECT count(*) || ' ' || count(*) FILTER (WHERE id LIKE 'dp\\_%') FROM stripe_data.charges"), '10 0',
	'charge.dispute.* wrote no charge: its object is a dispute');
is(differences('charges'), '0', 'charges equal to the fake');
is(sql("SELECT active::text FROM stripe_data.promotion_codes WHERE id = '$promo->{id}'"), 'false',
	'promotion_code.updated: deactivated');
is(sql("SELECT code || ' ' || active FROM stripe_data.promotion_codes WHERE id = '$new_promo->{id}'"),
	'WINTER25 true', 'promotion_code.created: the new code');
is(sql("SELECT reversed || ' ' || amount_reversed || ' ' || (reversals->'data'->0->>'id') "
	  . "FROM stripe_data.transfers WHERE id = '$transfer->{id}'"),
	"true $transfer->{amount} trr_fake1", 'transfer.reversed: reversed, with its reversal');
is(sql("SELECT string_agg(r->>'id', ',' ORDER BY r->>'id') || ' ' || (reversals->>'has_more') "
	  . "FROM stripe_data.transfers, jsonb_array_elements(reversals->'data') r WHERE id = '$split->{id}' GROUP BY reversals"),
	join(',', map { $_->{id} } @parts) . ' false', 'a transfer\'s 12 reversals: the 2 past the first page fetched');
is(join(' ', map { $_->{path} =~ m{^(/v1/transfers/[^/]+/reversals)} ? ($1) : () } @{ $fake->requests }),
	"/v1/transfers/$split->{id}/reversals", 'from the reversals list\'s url, once');
is(sql("SELECT amount || ' ' || destination FROM stripe_data.transfers WHERE id = '$new_transfer->{id}'"),
	'999 acct_fake9', 'transfer.created: the new transfer');
is(sql("SELECT memo FROM stripe_data.credit_notes WHERE id = '$cns[0]{id}'"), 'corrected',
	'credit_note.updated: the memo');
is(sql("SELECT count(*) FROM stripe_data.credit_note_lines WHERE credit_note = '$new_cn->{id}' AND deleted_at IS NULL"),
	'4', 'credit_note.created: the new credit note\'s 4 lines');
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) || ' ' || count(*) FROM stripe_data.credit_note_lines "
	  . "WHERE credit_note = '$cns[1]{id}'"), '2 3', 'credit_note.updated took a line out: 2 live rows of 3');
for my $type (@types)
{
	is(local_ids($type), ids_of($type), "incremental: $type ids are the fake's");
	# the fake's control list shows the split transfer's first 10 reversals only
	is(differences($type), $type eq 'transfers' ? '1' : '0', "incremental: $type equal to the fake");
}
is(sql("SELECT (SELECT count(*) FROM stripe_data.payouts) || ' ' || (SELECT count(*) FROM stripe_data.disputes) "
	  . "|| ' ' || (SELECT count(*) FROM stripe_data.promotion_codes) || ' ' || (SELECT count(*) FROM stripe_data.transfers) "
	  . "|| ' ' || (SELECT count(*) FROM stripe_data.credit_notes)"),
	'12 9 10 9 3', 'counts: one more of each (two transfers)');

$node->stop;
done_testing();
