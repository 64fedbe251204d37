# Sync run in the session (sync_now): backfill equal to the fake, sync_from,
# incremental creates/updates/deletes, duplicate and out-of-order events,
# an idle sync costing one request.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);
use JSON::PP;

my $fake = start_fake(counts => { customers => 1050, charges => 2500, subscriptions => 80,
	invoices => 120, payment_intents => 300, refunds => 90, products => 12, prices => 30 });
my $node = new_node('sync', $fake);
my $url = $fake->url;

# the fake's own objects of a type, as a table fake_<type>(obj jsonb)
sub load_fake
{
	my ($type) = @_;
	return qq{
		DROP TABLE IF EXISTS fake_raw_$type, fake_$type;
		CREATE TABLE fake_raw_$type (line text);
		COPY fake_raw_$type FROM PROGRAM 'curl -s $url/_control/objects/$type'
		  WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02');
		CREATE TABLE fake_$type AS
		  SELECT jsonb_array_elements(string_agg(line, '')::jsonb->'data') AS obj FROM fake_raw_$type;
	};
}

# rows that differ between the local table and the fake (ids, created, attrs)
sub differences
{
	my ($schema, $type, $where) = @_;
	$where //= 'true';
	return $node->safe_psql('postgres', load_fake($type) . qq{
		SELECT count(*) FROM (SELECT * FROM fake_$type WHERE $where) f
		  FULL JOIN (SELECT * FROM $schema.$type WHERE deleted_at IS NULL) l ON l.id = f.obj->>'id'
		 WHERE l.id IS NULL OR f.obj IS NULL OR l.attrs <> f.obj
		    OR l.created <> to_timestamp((f.obj->>'created')::bigint);
	});
}

$node->safe_psql('postgres', 'CREATE SCHEMA stripe_data');
# disabled at once: here the syncs run in the session, not in a background worker
$node->safe_psql('postgres', "BEGIN; SELECT stripe_sync.create_source('main', server => 'stripe');
	SELECT stripe_sync.alter_source('main', enabled => false); COMMIT;");
is($node->safe_psql('postgres',
	"SELECT sync_interval, sync_from IS NULL, objects FROM stripe_sync.sources WHERE name = 'main'"),
	'01:00:00|t|{customers,charges,invoices,payment_intents,refunds,subscriptions,products,prices,'
	. 'invoice_line_items,subscription_items}',
	'defaults: hourly, all history, the eight default objects and the children of two');

$fake->clear_requests;
my ($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.sync_now('main')");
is($rc, 0, 'first sync (backfill) ran');
{
	my @first = @{ $fake->requests };
	my %lists;
	for (@first) { $lists{$1}++ if $_->{path} =~ m{^/v1/(\w+)\?}; }
	is(join('/', map { $lists{$_} } qw(products prices)), '1/2',
		'an object of fewer than 100 rows costs one request (prices: one per list, active and archived)');
	my ($last_customers) = grep { $first[$_]{path} =~ m{^/v1/customers\?} } reverse 0 .. $#first;
	my ($first_charges) = grep { $first[$_]{path} =~ m{^/v1/charges\?} } 0 .. $#first;
	cmp_ok($first_charges, '<', $last_customers, 'the objects are listed together, not one after another');
}
like($err, qr/backfill of customers: 1050 rows in \d+ pages, \d+ rows\/s \(done\)/, 'NOTICE progress per object');
# 4182 objects, and the 120 lines of the invoices and 80 items of the subscriptions
like($out, qr/"rows": 4382/, 'summary counts every row');

for my $type (qw(customers charges invoices payment_intents refunds subscriptions products prices))
{
	is(differences('stripe_data', $type), '0', "$type: local table equals the fake");
}
is($node->safe_psql('postgres', "SELECT count(DISTINCT status) FROM stripe_data.subscriptions"),
	'8', 'subscriptions of every status, canceled included');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM stripe_sync.status WHERE source = 'main' AND state = 'synced' AND backfill_done"),
	'10', 'status: every object synced and backfilled');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM stripe_data.charges WHERE account_id = 'acct_fake000000000'"),
	'2500', 'account_id is the account behind the key');

# an idle sync is one request
$fake->clear_requests;
$node->safe_psql('postgres', "SELECT stripe_sync.sync_now('main')");
my @reqs = @{ $fake->requests };
is(scalar @reqs, 1, 'an idle sync makes exactly one request');
like($reqs[0]{path}, qr{^/v1/events\?limit=100&created%5Bgte%5D=\d+$}, '... to /v1/events since the cursor');

# creates, updates and deletes through the fake appear after the next sync
my $new = $fake->call('POST', '/_control/objects/customers', { email => 'new@example.com', name => 'New' });
my $victim = $node->safe_psql('postgres', 'SELECT id FROM stripe_data.customers ORDER BY created LIMIT 1');
my $upd = $node->safe_psql('postgres', 'SELECT id FROM stripe_data.customers ORDER BY created OFFSET 1 LIMIT 1');
$fake->call('POST', "/_control/objects/customers/$upd", { email => 'changed@example.com' });
$fake->call('DELETE', "/_control/objects/customers/$victim");
my $sub = $node->safe_psql('postgres',
	"SELECT id FROM stripe_data.subscriptions WHERE status = 'active' LIMIT 1");
$fake->call('POST', "/_control/objects/subscriptions/$sub", { status => 'past_due' });
$fake->call('POST', '/_control/objects/charges', { amount => 4242, currency => 'usd' });

$out = $node->safe_psql('postgres', "SELECT stripe_sync.sync_now('main')");
like($out, qr/"events": [1-9]/, 'the incremental sync applied events');
is($node->safe_psql('postgres', "SELECT email FROM stripe_data.customers WHERE id = '$new->{id}'"),
	'new@example.com', 'a created customer appears');
is($node->safe_psql('postgres', "SELECT email FROM stripe_data.customers WHERE id = '$upd'"),
	'changed@example.com', 'an update appears');
is($node->safe_psql('postgres', "SELECT deleted_at IS NOT NULL FROM stripe_data.customers WHERE id = '$victim'"),
	't', 'a deleted customer is soft-deleted');
is($node->safe_psql('postgres', "SELECT status FROM stripe_data.subscriptions WHERE id = '$sub'"),
	'past_due', 'a subscription update appears');
is($node->safe_psql('postgres', "SELECT count(*) FROM stripe_data.charges WHERE amount = 4242"),
	'1', 'a new charge appears');
for my $type (qw(customers charges subscriptions))
{
	is(differences('stripe_data', $type), '0', "$type: still equal to the fake after the incremental sync");
}

# an event delivered twice, or an older state arriving late, changes nothing
my $before = $node->safe_psql('postgres',
	"SELECT attrs::text, observed_at FROM stripe_data.customers WHERE id = '$upd'");
my $old_state = $node->safe_psql('postgres',
	"SELECT (attrs || '{\"email\": \"stale\@example.com\"}')::text FROM stripe_data.customers WHERE id = '$upd'");
my $observed = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM observed_at)::bigint FROM stripe_data.customers WHERE id = '$upd'");
# an event older than the state we hold, still inside the window the next sync reads
my $stale = $fake->call('POST', '/_control/events', { type => 'customer.updated',
	object => decode_json($old_state), created => $observed - 1 });
$fake->clear_requests;
$out = $node->safe_psql('postgres', "SELECT stripe_sync.sync_now('main')");
# the sync read it: one request for the events since the cursor, which the
# stale event falls in, and the event is recorded as applied ...
my @ev_reqs = grep { $_->{path} =~ m{^/v1/events\?} } @{ $fake->requests };
my ($gte) = map { m{created%5Bgte%5D=(\d+)} ? $1 : () } map { $_->{path} } @ev_reqs;
ok(defined $gte && $gte <= $stale->{created} && $ev_reqs[0]{status} == 200,
	"the sync read the events since $gte, the stale one's time ($stale->{created}) included");
is($node->safe_psql('postgres',
	"SELECT count(*) FROM stripe_sync.applied_events WHERE source = 'main' AND event_id = '$stale->{id}'"),
	'1', '... and took the stale event in');
# ... and lost: the row keeps the newer state
is($node->safe_psql('postgres',
	"SELECT attrs::text, observed_at FROM stripe_data.customers WHERE id = '$upd'"),
	$before, 'an older state arriving late does not overwrite a newer one');
isnt($node->safe_psql('postgres', "SELECT email FROM stripe_data.customers WHERE id = '$upd'"),
	'stale@example.com', '... its email is not the stale one');
# a run finished more than 30 days ago is forgotten at the next sync
$node->safe_psql('postgres', "INSERT INTO stripe_sync.runs (source, started_at, finished_at, status) "
	  . "VALUES ('main', now() - interval '41 days', now() - interval '40 days', 'ok')");
my $runs = $node->safe_psql('postgres', "SELECT count(*) FROM stripe_sync.runs WHERE source = 'main'");
$out = $node->safe_psql('postgres', "SELECT stripe_sync.sync_now('main')");
like($out, qr/"rows": 0, "events": 0/, 'events re-read in the overlap are not applied again');
is($node->safe_psql('postgres',
	"SELECT count(*) || ' ' || count(*) FILTER (WHERE finished_at < now() - interval '30 days') FROM stripe_sync.runs WHERE source = 'main'"),
	"$runs 0", 'runs older than 30 days are pruned (one gone, one added)');

# sync_from: only objects created since then
my $from = $node->safe_psql('postgres',
	"SELECT to_timestamp((percentile_disc(0.5) WITHIN GROUP (ORDER BY (obj->>'created')::bigint)))
	   FROM fake_customers");
$node->safe_psql('postgres', 'CREATE SCHEMA stripe_recent');
$node->safe_psql('postgres', "BEGIN; SELECT stripe_sync.create_source('recent', server => 'stripe',
	sync_from => '$from', objects => ARRAY['customers', 'charges'], target_schema => 'stripe_recent');
	SELECT stripe_sync.alter_source('recent', enabled => false); COMMIT;");
$node->safe_psql('postgres', "SELECT stripe_sync.sync_now('recent')");
is(differences('stripe_recent', 'customers', "(obj->>'created')::bigint >= extract(epoch FROM '$from'::timestamptz)"),
	'0', 'sync_from: customers since then, exactly')
  or diag($node->safe_psql('postgres', qq{SELECT coalesce(l.id, f.obj->>'id'), l.id IS NULL, f.obj IS NULL, l.created, f.obj->>'created', '$from' FROM (SELECT * FROM fake_customers WHERE (obj->>'created')::bigint >= extract(epoch FROM '$from'::timestamptz)) f
		  FULL JOIN (SELECT * FROM stripe_recent.customers WHERE deleted_at IS NULL) l ON l.id = f.obj->>'id'
		 WHERE l.id IS NULL OR f.obj IS NULL OR l.attrs <> f.obj}));
is(differences('stripe_recent', 'charges', "(obj->>'created')::bigint >= extract(epoch FROM '$from'::timestamptz)"),
	'0', 'sync_from: charges since then, exactly');

# a cursor past Stripe's 30-day event retention: everything is listed again,
# and the events Stripe still has are read too, so a deletion in the gap lands
my $gone = $node->safe_psql('postgres',
	"SELECT id FROM stripe_data.customers WHERE deleted_at IS NULL ORDER BY id LIMIT 1");
my $renamed = $node->safe_psql('postgres',
	"SELECT id FROM stripe_data.customers WHERE deleted_at IS NULL ORDER BY id DESC LIMIT 1");
# as if the last sync were 40 days ago
$node->safe_psql('postgres', "UPDATE stripe_sync.sources SET events_cursor = "
	  . "extract(epoch FROM now() - interval '40 days')::bigint WHERE name = 'main'; "
	  . "UPDATE stripe_data.customers SET observed_at = observed_at - interval '40 days'");
# deleted two days ago: only a read of the events Stripe still has finds out
$fake->call('DELETE', "/_control/objects/customers/$gone", { created => time - 2 * 86400 });
$fake->call('POST', "/_control/objects/customers/$renamed", { name => 'after the gap' });
$out = $node->safe_psql('postgres', "SELECT stripe_sync.sync_now('main')");
like(slurp_file($node->logfile), qr/older than Stripe's 30-day event retention; listing every object again/,
	'a cursor past the retention: the log says so');
is(differences('stripe_data', 'customers'), '0',
	'after the re-list the customers equal the fake, the one deleted in the gap included');
is($node->safe_psql('postgres', "SELECT deleted_at IS NOT NULL FROM stripe_data.customers WHERE id = '$gone'"),
	't', '... which is soft-deleted');
is($node->safe_psql('postgres', "SELECT events_cursor > extract(epoch FROM now() - interval '1 day') "
	  . "FROM stripe_sync.sources WHERE name = 'main'"), 't', 'the events cursor is current again');

# bad input to the management functions
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.create_source('x', server => 'nope')");
like($err, qr/server "nope" does not exist/, 'unknown server');
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.create_source('x', server => 'stripe', objects => ARRAY['unicorns'])");
like($err, qr/unknown object "unicorns"/, 'unknown object');
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.create_source('x', server => 'stripe', target_schema => 'fresh', objects => ARRAY['customers'])");
is($node->safe_psql('postgres', "SELECT nspowner::regrole = current_user::regrole FROM pg_namespace WHERE nspname = 'fresh'"),
	't', 'a missing target schema is created, owned by the caller');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_tables WHERE schemaname = 'fresh' AND tableowner = current_user"),
	'1', '... with the local tables in it');
$node->safe_psql('postgres', "SELECT stripe_sync.drop_source('x'); DROP SCHEMA fresh CASCADE");
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.create_source('x', server => 'stripe', sync_interval => '500 ms')");
like($err, qr/under one second/, 'interval under a second');
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.create_source('x', server => 'stripe', sync_from => now() + interval '1 day')");
like($err, qr/in the future/, 'start date in the future');
($rc, $out, $err) = $node->psql('postgres', "SELECT stripe_sync.sync_now('nope')");
like($err, qr/source "nope" does not exist/, 'sync_now of an unknown source');

# another role sees none of the sources (009_privileges has the whole recipe)
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM stripe_sync.sources', extra_params => [ '-U', 'nobody' ]);
is($out, '0', 'another role sees no row of stripe_sync.sources');
($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM stripe_sync.status', extra_params => [ '-U', 'nobody' ]);
is($out, '0', '... nor of stripe_sync.status');

done_testing();
