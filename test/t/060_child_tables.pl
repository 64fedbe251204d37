# Child tables (children.c): invoice_line_items and subscription_items hold
# one row per element of their parent's nested list, keyed by (parent, id),
# written with the parent at its backfill and at every event that changes it,
# for no request more; an element gone from the list is soft-deleted, one
# that comes back is live again.  Every local table has livemode.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 5, products => 3, prices => 4, invoices => 6, subscriptions => 4,
	charges => 5, refunds => 3 });
my $node = new_node('children', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# ---- the catalogue and the default set
is(sql(q{SELECT string_agg(object || ':' || parent || '.' || list_field || '>' || parent_column, ' ' ORDER BY object)
	FROM stripe_sync.catalog_children()}),
	'credit_note_lines:credit_notes.lines>credit_note invoice_line_items:invoices.lines>invoice '
	. 'subscription_items:subscriptions.items>subscription', 'three child tables');
like(sql(q{SELECT stripe_sync.default_objects()::text}), qr/invoice_line_items,subscription_items/,
	'the default set has the children of its invoices and subscriptions');
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT stripe_sync.check_objects(ARRAY['customers', 'credit_note_lines'])});
like($stderr, qr/object "credit_note_lines" is synced with its parent "credit_notes"/,
	'a child without its parent is refused');

my $inv = $fake->call('POST', '/_control/nested', { object => 'invoices', count => 25 });
my $sub = $fake->call('POST', '/_control/nested', { object => 'subscriptions', count => 15 });

sql("CREATE SCHEMA stripe_data");
disabled_source($node, 'main', "target_schema => 'stripe_data'");
$fake->clear_requests;
my $out = sql(q{SELECT stripe_sync.sync_now('main')});
like($out, qr/"invoice_line_items": \{"rows": [1-9]/, 'the sync writes invoice_line_items');
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') FROM stripe_data.invoices WHERE id = '$inv->{id}'"),
	'25', 'an invoice of 25 lines has 25 in attrs');
is(sql("SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || count(*) FILTER (WHERE deleted_at IS NULL)
	FROM stripe_data.invoice_line_items WHERE invoice = '$inv->{id}'"),
	'25 25 25', '... and 25 live rows in invoice_line_items');
is(sql("SELECT count(*) FROM stripe_data.invoice_line_items l JOIN stripe_data.invoices i ON i.id = l.invoice
	WHERE l.attrs = (SELECT e FROM jsonb_array_elements(i.attrs->'lines'->'data') e WHERE e->>'id' = l.id)
	  AND l.amount = (l.attrs->>'amount')::bigint"),
	sql("SELECT count(*) FROM stripe_data.invoice_line_items"), 'each row is its element, typed');
is(sql("SELECT sum(jsonb_array_length(attrs->'lines'->'data')) FROM stripe_data.invoices"),
	sql("SELECT count(*) FROM stripe_data.invoice_line_items"), 'every invoice\'s lines, seeded ones too');
is(sql("SELECT count(*) FROM stripe_data.subscription_items WHERE subscription = '$sub->{id}' AND deleted_at IS NULL"),
	'15', 'a subscription with 15 items has 15 rows in subscription_items');
is(sql("SELECT sum(jsonb_array_length(attrs->'items'->'data')) FROM stripe_data.subscriptions"),
	sql("SELECT count(*) FROM stripe_data.subscription_items"), '... and every subscription its items');
is(sql("SELECT count(*) FROM stripe_data.invoice_line_items WHERE account_id IS NULL OR synced_at IS NULL
	OR observed_at IS NULL"), '0', 'the bookkeeping columns are set');
is(sql(q{SELECT count(*) FROM stripe_sync.object_state WHERE source = 'main' AND object LIKE '%items'
	AND backfill_done AND state = 'synced'}), '2', 'the children are synced with their parents');
# no request of their own: only the rest of each long list, after its 10th element (as
# without child tables: once for the backfill, once for the creation event, 055)
my @other = grep { $_->{path} =~ m{lines|subscription_items} } @{ $fake->requests };
my %paths = map { $_->{path} => 1 } @other;
is(join(' ', sort keys %paths),
	"/v1/invoices/$inv->{id}/lines?limit=100&starting_after=$inv->{lines}{data}[9]{id} "
	. "/v1/subscription_items?subscription=$sub->{id}&limit=100&starting_after=$sub->{items}{data}[9]{id}",
	'no request for the child tables: only the rest of each long list');

# ---- an event that takes a line out: soft-deleted
my $gone = $inv->{lines}{data}[3]{id};
$fake->call('POST', '/_control/nested_remove', { object => 'invoices', id => $inv->{id}, element => $gone });
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) || ' ' || count(*)
	FROM stripe_data.invoice_line_items WHERE invoice = '$inv->{id}'"), '24 25',
	'after invoice.updated took a line out: 24 live rows, the 25th kept');
is(sql("SELECT l.deleted_at = l.observed_at AND l.observed_at = i.observed_at
	FROM stripe_data.invoice_line_items l JOIN stripe_data.invoices i ON i.id = l.invoice WHERE l.id = '$gone'"),
	't', '... soft-deleted at the event\'s time');

# the line comes back in a state older than the stored invoice: nothing changes
my $lines = decode_json(sql("SELECT attrs->'lines' FROM stripe_data.invoices WHERE id = '$inv->{id}'"));
push @{ $lines->{data} }, $inv->{lines}{data}[3];
sql("UPDATE stripe_data.invoices SET observed_at = observed_at + interval '1 hour' WHERE id = '$inv->{id}'");
$fake->call('POST', "/_control/objects/invoices/$inv->{id}", { lines => { data => $lines->{data} } });
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.invoice_line_items WHERE id = '$gone'"), 't',
	'a state older than the stored invoice leaves its lines as they are');
# and in a newer one (the backfill again): live again
sql("UPDATE stripe_data.invoices SET observed_at = observed_at - interval '2 hours' WHERE id = '$inv->{id}'");
# (a second later than the events so far: the times are Stripe's, in whole seconds)
sleep 2;
sql(q{SELECT stripe_sync.alter_source('main', sync_from => '2000-01-01')});
my $o = sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) FROM stripe_data.invoice_line_items
	WHERE invoice = '$inv->{id}'"), '25', 'a line that comes back is live again')
	or diag($o, sql("SELECT id, observed_at, deleted_at FROM stripe_data.invoice_line_items WHERE id = '$gone'"),
		sql("SELECT observed_at, jsonb_array_length(attrs->'lines'->'data') FROM stripe_data.invoices WHERE id = '$inv->{id}'"));

# ---- a subscription whose item goes: soft-deleted too
my $si = $sub->{items}{data}[0]{id};
$fake->call('POST', '/_control/nested_remove', { object => 'subscriptions', id => $sub->{id}, element => $si });
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) || ' ' || count(*)
	FROM stripe_data.subscription_items WHERE subscription = '$sub->{id}'"), '14 15',
	'a subscription item taken out is soft-deleted');

# ---- a deleted invoice: its lines are gone with it
my $del = $fake->call('POST', '/_control/nested', { object => 'invoices', count => 3 });
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT count(*) FROM stripe_data.invoice_line_items WHERE invoice = '$del->{id}' AND deleted_at IS NULL"),
	'3', 'a new invoice\'s 3 lines');
$fake->call('DELETE', "/_control/objects/invoices/$del->{id}", {});
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) || ' ' || count(*)
	FROM stripe_data.invoice_line_items WHERE invoice = '$del->{id}'"), '0 3',
	'... soft-deleted when the invoice is deleted');

# ---- livemode on every table: the object's own, or the key's mode
for my $t (qw(customers charges invoices refunds subscriptions invoice_line_items subscription_items))
{
	is(sql("SELECT count(*) FILTER (WHERE livemode IS false) || '/' || count(*) FROM stripe_data.$t"),
		sql("SELECT count(*) || '/' || count(*) FROM stripe_data.$t"), "livemode is false in $t (a test key)");
}
is(sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'stripe_data.invoices'::regclass AND attname = 'livemode'}),
	'1', 'one livemode column where the object has its own');
is(sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'stripe_data.refunds'::regclass AND attname = 'livemode'}),
	'1', '... and one where it has not (refunds)');

# ---- a live key: live mode objects, and the key's mode for those without their own
my $live = start_fake(api_key => 'sk_live_fake', counts => { customers => 3, charges => 4, refunds => 2,
	products => 2, prices => 2, invoices => 3, subscriptions => 2 });
my $live_url = $live->{url};
sql(qq{CREATE SERVER live FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$live_url');
	CREATE USER MAPPING FOR CURRENT_USER SERVER live OPTIONS (api_key 'sk_live_fake');
	CREATE SCHEMA stripe_live;
	BEGIN; SELECT stripe_sync.create_source('live', server => 'live', target_schema => 'stripe_live');
	SELECT stripe_sync.alter_source('live', enabled => false); COMMIT;});
sql(q{SELECT stripe_sync.sync_now('live')});
for my $t (qw(customers refunds invoices subscriptions invoice_line_items subscription_items))
{
	my ($yes, $all) = split /\|/, sql("SELECT count(*) FILTER (WHERE livemode), count(*) FROM stripe_live.$t");
	ok($all > 0 && $yes == $all, "livemode is true in $t (a live key): $yes of $all");
}

# ---- credit note lines, in a source that asks for them
my $cn = $fake->call('POST', '/_control/nested', { object => 'credit_notes', count => 12 });
sql("CREATE SCHEMA stripe_cn");
disabled_source($node, 'cn', "objects => ARRAY['credit_notes', 'credit_note_lines'], target_schema => 'stripe_cn'");
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('cn')});
is(sql("SELECT count(*) || ' ' || count(*) FILTER (WHERE credit_note = '$cn->{id}' AND deleted_at IS NULL
	AND livemode IS false AND amount = (attrs->>'amount')::bigint) FROM stripe_cn.credit_note_lines"),
	'12 12', 'a credit note of 12 lines has 12 rows in credit_note_lines, its id filled in');
my %cn_paths = map { $_->{path} => 1 } grep { $_->{path} =~ m{lines} } @{ $fake->requests };
is(join(' ', keys %cn_paths), "/v1/credit_notes/$cn->{id}/lines?limit=100&starting_after=$cn->{lines}{data}[9]{id}",
	'... for no request but the rest of its lines');
$fake->call('POST', '/_control/nested_remove', { object => 'credit_notes', id => $cn->{id} });
sql(q{SELECT stripe_sync.sync_now('cn')});
is(sql("SELECT count(*) FILTER (WHERE deleted_at IS NULL) || ' ' || count(*) FROM stripe_cn.credit_note_lines"),
	'11 12', 'after credit_note.updated took a line out: 11 live rows');

# ---- a child added later: its parent is backfilled again, and the rows come
sql("CREATE SCHEMA stripe_late");
disabled_source($node, 'late', "objects => ARRAY['invoices'], target_schema => 'stripe_late'");
sql(q{SELECT stripe_sync.sync_now('late')});
is(sql(q{SELECT to_regclass('stripe_late.invoice_line_items') IS NULL}), 't', 'no child table unless asked');
sql(q{SELECT stripe_sync.alter_source('late', objects => ARRAY['invoices', 'invoice_line_items'])});
sql(q{SELECT stripe_sync.sync_now('late')});
is(sql("SELECT count(*) FROM stripe_late.invoice_line_items WHERE deleted_at IS NULL"),
	sql("SELECT sum(jsonb_array_length(attrs->'lines'->'data')) FROM stripe_late.invoices WHERE deleted_at IS NULL"),
	'a child added later is filled by the parent\'s backfill again');

# ---- a backfill shared with helpers: their pages write the children too
$fake->reseed(counts => { invoices => 6000, customers => 10 }, only => 1);
$fake->config(latency_ms => 20);
sql("CREATE SCHEMA stripe_many; BEGIN; SELECT stripe_sync.create_source('many', server => 'stripe', "
	. "objects => ARRAY['invoices', 'invoice_line_items'], target_schema => 'stripe_many'); "
	. "SELECT stripe_sync.alter_source('many', enabled => false); COMMIT;");
my $many_out;
$node->psql('postgres', "BEGIN; SELECT stripe_sync.sync_now('many'); SELECT 'own ' || "
	. "pg_stat_get_xact_tuples_inserted('stripe_many.invoice_line_items'::regclass); COMMIT;", stdout => \$many_out);
my ($own_lines) = $many_out =~ /^own (\d+)$/m;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper'");
$fake->config(latency_ms => 0);
is(sql("SELECT count(*) || ' ' || count(DISTINCT invoice) FROM stripe_many.invoice_line_items WHERE deleted_at IS NULL"),
	'6000 6000', '6000 invoices backfilled: their 6000 lines');
cmp_ok($own_lines // 6000, '<', 6000, "... some written by the helpers ($own_lines by the sync itself)");

done_testing();
