# Backups: pg_dump -Fc of a cluster with a source mid-life, pg_restore into a
# fresh cluster, and everything goes on there: the source, its cursors and
# backfill state (the next sync is incremental: a few requests, no
# backfill), the undelivered outbox rows (shipped once the destination
# answers), and the edits to stripe_sync.event_map.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node);

my $key = 'pk9.dumpSecret';
my $fake = start_fake(counts => { customers => 250, charges => 300 });
my $it = start_intempt(api_key => $key);
my $conf = "stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n";
my $a = new_node('dump_a', $fake, $conf);
my $iurl = $it->url;

sub sql { my ($node, $q) = @_; return $node->safe_psql('postgres', $q); }

sql($a, qq{
	CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
	  OPTIONS (api_url '$iurl/v1', org 'acme', project 'web', source_id '123456789');
	CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key '$key');
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', 'charges'],
	                                 destination => 'intempt');
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;
});
# the first sync's history is delivered
sql($a, q{SELECT stripe_sync.sync_now('main')});
ok($a->poll_query_until('postgres',
		q{SELECT count(*) > 0 AND bool_and(state = 'delivered') FROM stripe_sync.outbox}),
	'cluster A: the history is delivered');
my $delivered = sql($a, q{SELECT count(*) FROM stripe_sync.outbox});

# edits to the event map: one renamed, one disabled, one added
sql($a, q{
	UPDATE stripe_sync.event_map SET intempt_event = 'Payment received' WHERE stripe_event = 'charge.succeeded';
	UPDATE stripe_sync.event_map SET enabled = false WHERE stripe_event = 'invoice.updated';
	INSERT INTO stripe_sync.event_map VALUES ('customer.deleted', 'Customer gone', true);
});

# then Intempt goes down, and new events stay pending
$it->call('POST', '/_control/faults', { kind => 'down', seconds => 3600 });
for my $i (1 .. 5)
{
	$fake->call('POST', '/_control/objects/customers', { email => "late$i\@example.com" });
}
sql($a, q{SELECT stripe_sync.sync_now('main')});
my $pending = sql($a, q{SELECT count(*) FROM stripe_sync.outbox WHERE state <> 'delivered'});
cmp_ok($pending, '>=', 5, "cluster A: $pending events wait for Intempt");
my %before = map { $_ => sql($a, $_) } (
	q{SELECT name, owner, objects, events_cursor, history_until, account_id FROM stripe_sync.sources},
	q{SELECT object, backfill_done, history, rows FROM stripe_sync.object_state ORDER BY object},
	q{SELECT event_id, state FROM stripe_sync.outbox WHERE state <> 'delivered' ORDER BY id},
	q{SELECT count(*) FROM stripe_sync.applied_events},
	q{SELECT * FROM stripe_sync.event_map ORDER BY stripe_event});

# ---- dump, then restore into a fresh cluster
my $dump = $a->basedir . '/all.dump';
$a->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $a->connstr('postgres') ], 'pg_dump -Fc');
$a->stop;
my $b = new_node('dump_b', $fake, $conf, bare => 1);
$b->command_ok([ 'pg_restore', '-d', $b->connstr('postgres'), $dump ], 'pg_restore into a fresh cluster');

for my $q (sort keys %before)
{
	is(sql($b, $q), $before{$q}, "restored: $q");
}
is(sql($b, q{SELECT count(*) FROM stripe_sync.outbox WHERE state = 'delivered'}), '0',
	'delivered rows are not in the dump');
is(sql($b, q{SELECT intempt_event || ' ' || enabled FROM stripe_sync.event_map
              WHERE stripe_event IN ('charge.succeeded', 'invoice.updated', 'customer.deleted')
              ORDER BY stripe_event}),
	"Payment received true\nCustomer gone true\nInvoice updated false",
	'the map edits survive: renamed, added, disabled');
is(sql($b, q{SELECT count(*) FROM stripe_sync.event_map}), '18', '... and the other defaults are there once');

# the next sync is incremental: the events since the cursor, one request
$fake->clear_requests;
my $summary = sql($b, q{SELECT stripe_sync.sync_now('main')});
like($summary, qr/"requests": 1\b/, 'the next sync after the restore costs one request');
is(scalar(grep { $_->{path} =~ m{^/v1/(customers|charges)\?} } @{ $fake->requests }), 0,
	'... and lists no object again');

# new outbox rows come after the restored ones
$fake->call('POST', '/_control/objects/customers', { email => 'after_restore@example.com' });
sql($b, q{SELECT stripe_sync.sync_now('main')});
is(sql($b, q{SELECT max(id) FILTER (WHERE payload->'data'->>'email' = 'after_restore@example.com')
                  > max(id) FILTER (WHERE payload->'data'->>'email' <> 'after_restore@example.com')
             FROM stripe_sync.outbox}),
	't', "the outbox's sequence goes on after the restored rows");

# Intempt back: the pending rows are shipped from the restored cluster
$it->call('DELETE', '/_control/faults');
ok($b->poll_query_until('postgres', q{SELECT bool_and(state = 'delivered') FROM stripe_sync.outbox}),
	'Intempt back: the restored pending rows are delivered');
my $got = $it->call('GET', '/_control/events?data=0');
my %ids = map { $_->{eventId} => 1 } @$got;
my @restored = split /\n/, sql($b, q{SELECT event_id FROM stripe_sync.outbox ORDER BY id});
is(scalar(grep { !$ids{$_} } @restored), 0, '... every one of them reached Intempt');

done_testing();
