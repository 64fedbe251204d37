# Events as Stripe sends them.  customer.subscription.deleted means the
# subscription ended: it lives on, canceled, like the canceled ones a
# backfill lists.  An event that changes no local table (invoice.upcoming,
# whose preview invoice has no id; a type the source does not sync) is
# skipped and counted, never stored.  An event's object is rendered in the API
# version of the event, not the source's: one in another version is read
# again at the source's version (once per object and sync), so no column
# flips to NULL because a field moved.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);
use JSON::PP;

my $fake = start_fake(counts => { customers => 40, invoices => 20, subscriptions => 16, products => 5,
	prices => 10 });
my $node = new_node('events_real', $fake);
my $pinned = '2026-10-28.endive';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the fake's object, as a jsonb literal, to compare with a local row's attrs
sub fake_object
{
	my ($type, $id) = @_;
	my ($obj) = grep { $_->{id} eq $id } @{ $fake->objects($type) };
	return $obj ? JSON::PP->new->canonical->encode($obj) =~ s/'/''/gr : 'null';
}

disabled_source($node, 'main', q{objects => ARRAY['customers', 'invoices', 'subscriptions']});
sql(q{SELECT stripe_sync.sync_now('main')});

# ---- a subscription that ends is canceled, not deleted
my $sub = sql(q{SELECT id FROM stripe_data.subscriptions WHERE status = 'active' ORDER BY id LIMIT 1});
my $victim = sql(q{SELECT id FROM stripe_data.customers ORDER BY id LIMIT 1});
$fake->call('DELETE', "/_control/objects/subscriptions/$sub");
$fake->call('DELETE', "/_control/objects/customers/$victim");
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT status || ' ' || (deleted_at IS NULL) FROM stripe_data.subscriptions WHERE id = '$sub'"),
	'canceled true', 'customer.subscription.deleted: the subscription is canceled, not deleted');
is(sql("SELECT attrs = '@{[fake_object('subscriptions', $sub)]}'::jsonb FROM stripe_data.subscriptions WHERE id = '$sub'"),
	't', '... and equals Stripe\'s');
is(sql(q{SELECT count(*) FILTER (WHERE deleted_at IS NOT NULL) || ' of ' || count(*)
           FROM stripe_data.subscriptions WHERE status = 'canceled'}) =~ s/ of \d+$//r,
	'0', '... like the canceled subscriptions the backfill listed: none deleted');
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.customers WHERE id = '$victim'"), 't',
	'customer.deleted still deletes');

# ---- events that change no local table are skipped and counted
my $active = sql(q{SELECT id FROM stripe_data.subscriptions WHERE status = 'active' ORDER BY id LIMIT 1});
my $invoices = sql(q{SELECT count(*) FROM stripe_data.invoices});
$fake->call('POST', '/_control/upcoming_invoice', { subscription => $active });
$fake->call('POST', '/_control/events', { type => 'balance.available',
	object => { object => 'balance', available => [], pending => [], livemode => JSON::PP::false } });
$fake->call('POST', '/_control/objects/products', { name => 'not synced here' });
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
like($out, qr/"events_skipped": 3/,
	'invoice.upcoming, an object the source has no table for, a type it does not sync: skipped and counted')
  or diag($out, $err);
is(sql(q{SELECT status FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1}), 'ok',
	'... the run is ok');
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT events_skipped FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1});
is($out, '3', '... and stripe_sync.runs counts them') or diag($err);
is(sql(q{SELECT count(*) FROM stripe_data.invoices}), $invoices, '... no invoice stored for the upcoming one');

# ---- events in an older API version: the object is read again at the source's
my $inv = sql(q{SELECT id FROM stripe_data.invoices WHERE parent IS NOT NULL AND deleted_at IS NULL
                 ORDER BY id LIMIT 1});
my $gone = sql(qq{SELECT id FROM stripe_data.invoices WHERE deleted_at IS NULL AND id <> '$inv'
                  ORDER BY id LIMIT 1});
$fake->config(event_api_version => '2024-06-20');
$fake->call('POST', "/_control/objects/invoices/$inv", { metadata => { a => '1' } });
$fake->call('POST', "/_control/objects/invoices/$inv", { metadata => { b => '2' } });
my $new = $fake->call('POST', '/_control/objects/invoices', { status => 'open' });
$fake->call('DELETE', "/_control/objects/invoices/$gone");
$fake->call('POST', '/_control/events', { type => 'invoice.updated', api_version => '2024-06-20',
	object => { id => 'in_neverexisted', object => 'invoice', created => time - 10 } });
$fake->config(event_api_version => $pinned);
$fake->clear_requests;
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a sync of events in an older API version') or diag($err);
is(sql("SELECT parent IS NOT NULL FROM stripe_data.invoices WHERE id = '$inv'"), 't',
	'the invoice keeps its parent, which the older version does not have');
is(sql("SELECT attrs = '@{[fake_object('invoices', $inv)]}'::jsonb FROM stripe_data.invoices WHERE id = '$inv'"),
	't', '... and equals Stripe\'s, at the source\'s version, both changes in');
my @rereads = grep { $_->{path} =~ m{^/v1/invoices/$inv(\?|$)} } @{ $fake->requests };
is(scalar(@rereads) . ' ' . ($rereads[0]{stripe_version} // ''), "1 $pinned",
	'... read again once for its two events, at the source\'s API version');
is(sql("SELECT attrs = '@{[fake_object('invoices', $new->{id})]}'::jsonb FROM stripe_data.invoices WHERE id = '$new->{id}'"),
	't', 'an invoice created in the older version is stored at the source\'s');
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.invoices WHERE id = '$gone'"), 't',
	'an invoice deleted in the older version is marked deleted');
is(scalar(grep { $_->{path} =~ m{^/v1/invoices/$gone} } @{ $fake->requests }), 0,
	'... without a request: a deletion needs no state');
is(sql(q{SELECT count(*) FROM stripe_data.invoices WHERE id = 'in_neverexisted'}), '0',
	'an object Stripe no longer has is not stored');
like($out, qr/"events_skipped": 1\b/, '... its event skipped and counted');
is(sql(q{SELECT status FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1}), 'ok',
	'... the run is ok');

# an object Stripe refuses to read again: its event changes nothing, and the run says why
$fake->config(event_api_version => '2024-06-20');
$fake->call('POST', "/_control/objects/invoices/$inv", { metadata => { c => '3' } });
$fake->config(event_api_version => $pinned);
$fake->fault(kind => 'status', status => 403, path => "/v1/invoices/$inv", count => 100,
	message => "Having the 'rak_invoice_read' permission would allow this request to continue.");
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
$fake->clear_faults;
is(sql(q{SELECT status FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1}), 'partial',
	'an object Stripe refuses to read again: the run is partial');
like(sql(q{SELECT last_error FROM stripe_sync.status WHERE source = 'main' AND object = 'invoices'}),
	qr/is in API version 2024-06-20, and invoice $inv could not be read again at $pinned: .*rak_invoice_read/,
	'... status says why');
is(sql("SELECT attrs->'metadata' ? 'c' FROM stripe_data.invoices WHERE id = '$inv'"), 'f',
	'... and the row is left as it was');

done_testing();
