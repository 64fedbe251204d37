# Objects Stripe sends no event for some changes of, or none, stay current by
# the re-lists their catalogue entry names: a balance transaction that turns
# available silently is available after the next sync, a checkout session
# changed while open is current, an invoice item changed before an invoice
# takes it is current, and file links are listed again on their interval.
# Each re-list costs the requests its range needs, and a source without
# these objects still costs one request when idle.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 3 });
my $node = new_node('noevents', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub ctl { my ($path, $fields) = @_; return $fake->call('POST', "/_control/objects/$path", $fields); }

my $now = time;
my $day = 86400;
my $txn_old = ctl('balance_transactions', { status => 'available', available_on => $now - 15 * $day,
	created => $now - 20 * $day });
my $txn_due = ctl('balance_transactions', { status => 'pending', available_on => $now - 60,
	created => $now - 3 * $day });
my $txn_later = ctl('balance_transactions', { status => 'pending', available_on => $now + 7 * $day,
	created => $now - $day });
my $cs_open = ctl('checkout_sessions', { status => 'open', customer_email => undef, created => $now - 3600 });
my $cs_ends = ctl('checkout_sessions', { status => 'open', created => $now - 1800 });
my $ii_pending = ctl('invoiceitems', { invoice => undef, amount => 500, created => $now - 2 * $day });
my $ii_gone = ctl('invoiceitems', { invoice => undef, amount => 900, created => $now - 4 * $day });
my $ii_billed = ctl('invoiceitems', { invoice => 'in_billed', amount => 700, created => $now - 10 * $day });
my $link = ctl('file_links', { expired => JSON::PP::false, created => $now - 5 * $day });

sql("CREATE SCHEMA stripe_data; CREATE SCHEMA plain_data");
disabled_source($node, 'main',
	"objects => ARRAY['balance_transactions', 'checkout_sessions', 'invoice_items', 'file_links']");
disabled_source($node, 'plain', "objects => ARRAY['customers'], target_schema => 'plain_data'");

# the catalogue says how each stays current, machine-readably
is(sql("SELECT string_agg(object || ' ' || relist || ' ' || coalesce(relist_filter, '-') || ' ' "
	  . "|| coalesce(relist_window::text, '-') || ' ' || (relist_from IS NOT NULL), '; ' ORDER BY object) "
	  . "FROM stripe_sync.objects WHERE relist <> 'none'"),
	'balance_transactions recent - 30 days true; checkout_sessions recent status=open 1 day false; '
	  . 'customer_balance_transactions parent - - false; file_links full - - false; invoice_items recent - 35 days true',
	'stripe_sync.objects: the re-list each object without full events has');
is(sql("SELECT count(*) FROM stripe_sync.objects WHERE syncable AND relist = 'none' AND stays_current NOT LIKE 'events%' "
	  . "AND object NOT IN (SELECT object FROM stripe_sync.catalog_children())"),
	'0', 'every other syncable object stays current by its events alone');

sql("SELECT stripe_sync.sync_now('main')");
sql("SELECT stripe_sync.sync_now('plain')");
is(sql("SELECT count(*) FROM stripe_data.balance_transactions") . ' '
	  . sql("SELECT count(*) FROM stripe_data.checkout_sessions") . ' '
	  . sql("SELECT count(*) FROM stripe_data.invoice_items") . ' '
	  . sql("SELECT count(*) FROM stripe_data.file_links"),
	'3 2 3 1', 'the first sync backfills them all');
my $listed0 = sql("SELECT listed_at FROM stripe_sync.object_state WHERE object = 'file_links'");
isnt($listed0, '', 'a full re-list is counted from the backfill');

# changes Stripe sends no event for
ctl("balance_transactions/$txn_due->{id}", { status => 'available' });
ctl("checkout_sessions/$cs_open->{id}", { customer_email => 'late@example.com' });
ctl("invoiceitems/$ii_pending->{id}", { amount => 550 });
ctl("file_links/$link->{id}", { expired => JSON::PP::true });
# and with their events: a session that ends, an invoice item deleted
ctl("checkout_sessions/$cs_ends->{id}", { status => 'expired' });
$fake->call('DELETE', "/_control/objects/invoiceitems/$ii_gone->{id}");
my $txn_new = ctl('balance_transactions', { status => 'pending', available_on => $now + 2 * $day });

sub requests_by_path
{
	my %n;
	for my $r (@{ $fake->requests })
	{
		my ($p) = $r->{path} =~ m{^/v1/([a-z_/]+)};
		$n{$p}++;
	}
	return join ' ', map { "$_=$n{$_}" } sort keys %n;
}
sub paths { return [ map { $_->{path} } @{ $fake->requests } ]; }

$fake->clear_requests;
my $run = sql("SELECT stripe_sync.sync_now('main')");
is(sql("SELECT string_agg(id || ' ' || status, ', ' ORDER BY created) FROM stripe_data.balance_transactions"),
	"$txn_old->{id} available, $txn_due->{id} available, $txn_later->{id} pending, $txn_new->{id} pending",
	'a balance transaction turned available with no event is available after the next sync, and a new one is there');
is(sql("SELECT customer_email FROM stripe_data.checkout_sessions WHERE id = '$cs_open->{id}'"),
	'late@example.com', 'a checkout session changed while open is current');
is(sql("SELECT status FROM stripe_data.checkout_sessions WHERE id = '$cs_ends->{id}'"),
	'expired', 'a checkout session that expired is, by its event');
is(sql("SELECT amount FROM stripe_data.invoice_items WHERE id = '$ii_pending->{id}'"),
	'550', 'an invoice item changed before an invoice took it is current');
is(sql("SELECT expired FROM stripe_data.file_links"), 'f', 'file links wait for their interval');
is(requests_by_path(), 'balance_transactions=1 checkout/sessions=1 events=1 invoiceitems=1',
	'each re-list costs a page, file links none');
my @p = @{ paths() };
my ($bt) = grep { m{^/v1/balance_transactions\?} } @p;
like($bt, qr/created%5Bgte%5D=$txn_due->{created}(&|$)/,
	'balance transactions are listed from the oldest pending one now due');
my ($cs) = grep { m{^/v1/checkout/sessions\?} } @p;
like($cs, qr/&status=open(&|$)/, 'checkout sessions: the open ones');
my ($from) = $cs =~ /created%5Bgte%5D=(\d+)/;
ok(defined $from && abs($from - ($now + 0 - $day)) < 600, 'checkout sessions: of the last day');
my ($ii) = grep { m{^/v1/invoiceitems\?} } @p;
like($ii, qr/created%5Bgte%5D=$ii_pending->{created}(&|$)/,
	'invoice items are listed from the oldest not yet on an invoice, deleted ones aside');
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.invoice_items WHERE id = '$ii_gone->{id}'"),
	't', 'an invoice item deleted is, by its event');

# the next: nothing due among the balance transactions, from the newest
ctl("invoiceitems/$ii_pending->{id}", { invoice => 'in_later' });
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
($bt) = grep { m{^/v1/balance_transactions\?} } @{ paths() };
like($bt, qr/created%5Bgte%5D=$txn_new->{created}(&|$)/,
	'with none due, balance transactions are listed from the newest');
is(sql("SELECT invoice FROM stripe_data.invoice_items WHERE id = '$ii_pending->{id}'"),
	'in_later', 'an invoice item an invoice took silently shows its invoice');
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
is(requests_by_path(), 'balance_transactions=1 checkout/sessions=1 events=1',
	'invoice items all on invoices: no re-list of them');

# file links: a full re-list once the interval has passed
sleep 2;
$fake->clear_requests;
sql("SET stripe_sync.relist_interval = '1s'; SELECT stripe_sync.sync_now('main')");
is(sql("SELECT expired FROM stripe_data.file_links"), 't', 'file links are listed again on their interval');
is(requests_by_path(), 'balance_transactions=1 checkout/sessions=1 events=1 file_links=1',
	'... at a page for them');
ok(sql("SELECT listed_at > '$listed0' FROM stripe_sync.object_state WHERE object = 'file_links'") eq 't',
	'... and the next is counted from it');
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('main')");
is(requests_by_path(), 'balance_transactions=1 checkout/sessions=1 events=1',
	'not again within the interval');

# a re-list costs a request a page: 250 open sessions are 3 pages
ctl('checkout_sessions', { status => 'open' }) for 1 .. 250;
$fake->clear_requests;
$run = sql("SELECT stripe_sync.sync_now('main')");
my $pages = grep { m{^/v1/checkout/sessions\?} } @{ paths() };
is($pages, 3, '251 open sessions cost 3 pages');
is(sql("SELECT count(*) FROM stripe_data.checkout_sessions WHERE status = 'open'"), '251',
	'... and are all there');

# an idle source without these objects still costs one request
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('plain')");
is(requests_by_path(), 'events=1', 'an idle sync of a source without them costs one request');

done_testing();
