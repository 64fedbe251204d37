# Upgrades: a cluster runs the released 0.1 (its library built from git by
# test/run, its SQL script kept in sql/), syncs a source and ships to Intempt;
# then the current library is installed and the cluster restarted.  Until
# ALTER EXTENSION stripe_sync UPDATE nothing syncs or ships, and the log says
# why; after it, syncing and shipping go on with nothing lost and nothing
# sent twice.
use strict;
use warnings;
use File::Copy;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node);

my $old_lib = "$ENV{STRIPE_RELEASES}/0.1/stripe_sync.so";
ok(-f $old_lib, 'the 0.1 library was built from git') or BAIL_OUT("no $old_lib");

# the private installation's library: 0.1 for now, the current one put back at the end
chomp(my $pkglib = `pg_config --pkglibdir`);
my $lib = "$pkglib/stripe_sync.so";
my $current = "$lib.current";
copy($lib, $current) or die "copy: $!";

# a library is replaced by a rename, never rewritten in place: a process that
# still maps the old file (one exiting while the test ends) would die of SIGBUS
sub put_library
{
	my ($from) = @_;
	copy($from, "$lib.new") or die "copy: $!";
	rename("$lib.new", $lib) or die "rename: $!";
}
END { put_library($current) if -f $current; }
put_library($old_lib);

my $key = 'pk5.upgradeSecret';
my $fake = start_fake(counts => { customers => 200, charges => 300 });
my $it = start_intempt(api_key => $key);
my $node = new_node('upgrade', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n", bare => 1);
my ($furl, $iurl) = ($fake->url, $it->url);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# ---- 0.1
sql(qq{
	CREATE EXTENSION stripe_sync VERSION '0.1';
	CREATE SERVER stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$furl');
	CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake');
	CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
	  OPTIONS (api_url '$iurl/v1', org 'acme', project 'web', source_id '123456789');
	CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key '$key');
	CREATE SCHEMA stripe_data;
	SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers', 'charges'],
	                                 destination => 'intempt', sync_interval => '1 hour');
});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'stripe_sync'}), '0.1', 'version 0.1 installed');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'}),
	'0.1: the worker syncs the source');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 AND bool_and(state = 'delivered') FROM stripe_sync.outbox}),
	'0.1: the shipper delivers its history');
my $history = sql(q{SELECT count(*) FROM stripe_sync.outbox});
sql(q{UPDATE stripe_sync.event_map SET intempt_event = 'Payment received' WHERE stripe_event = 'charge.succeeded'});

# a source of a key that could not read the account: 0.1 left its account_id NULL
sql(q{CREATE SCHEMA rk_data;
	BEGIN;
	SELECT stripe_sync.create_source('rk', server => 'stripe', objects => ARRAY['customers'], target_schema => 'rk_data');
	SELECT stripe_sync.alter_source('rk', enabled => false);
	COMMIT;
	SELECT stripe_sync.sync_now('rk');
	UPDATE stripe_sync.sources SET account_id = NULL WHERE name = 'rk';
	UPDATE rk_data.customers SET account_id = NULL;});
is(sql(q{SELECT count(*) FROM rk_data.customers WHERE account_id IS NULL}), '200', '0.1: a source without its account');

# Intempt goes down; new events wait in the outbox
$it->call('POST', '/_control/faults', { kind => 'down', seconds => 3600 });
$fake->call('POST', '/_control/objects/customers', { email => 'before_upgrade@example.com' });
sql(q{UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM stripe_sync.outbox WHERE state <> 'delivered'}),
	'0.1: a new event waits for Intempt');
my @waiting = split /\n/, sql(q{SELECT event_id FROM stripe_sync.outbox WHERE state <> 'delivered' ORDER BY id});
my $runs = sql(q{SELECT count(*) FROM stripe_sync.runs});
my $main_runs = sql(q{SELECT count(*) FROM stripe_sync.runs WHERE source = 'main'});

# one of them in flight when 0.1's shipper stops (its state 'sending'): the new
# shipper sends it again, once the extension is updated
sql("UPDATE stripe_sync.outbox SET state = 'sending' WHERE event_id = '$waiting[0]'");

# ---- the current library, before the update: nothing moves, the log says why
$node->stop;
put_library($current);
my $offset = -s $node->logfile;
$node->start;
ok($node->wait_for_log(qr/extension stripe_sync is at version 0\.1, and its library at 0\.2/, $offset),
	'the new library says the extension needs an update');
like(PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset), qr/HINT:  ALTER EXTENSION stripe_sync UPDATE;/,
	'... with the command');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
like($err, qr/ALTER EXTENSION stripe_sync UPDATE/, 'sync_now refuses until the update');
my $t = sql(q{UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main' RETURNING clock_timestamp()});
# two passes of the launcher end after the source fell due, and no run started
for (1 .. 2)
{
	ok($node->poll_query_until('postgres',
			"SELECT state = 'idle' AND state_change > '$t' FROM pg_stat_activity WHERE backend_type = 'stripe_sync launcher'"),
		'the launcher looks at the due source');
	$t = sql(q{SELECT clock_timestamp()});
}
is(sql(q{SELECT count(*) FROM stripe_sync.runs}), $runs, '... and starts no worker');

# ---- the update
sql(q{ALTER EXTENSION stripe_sync UPDATE});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'stripe_sync'}), '0.2', 'updated to 0.2');
is(sql(q{SELECT string_agg(object || ':' || history, ',' ORDER BY object) FROM stripe_sync.object_state WHERE source = 'main'}),
	'charges:sent,customers:sent', 'objects that sent their history under 0.1 are not owed it again');
is(sql(q{SELECT intempt_event FROM stripe_sync.event_map WHERE stripe_event = 'charge.succeeded'}),
	'Payment received', 'the map edit is kept');

# the local tables are keyed by (id, account_id), account_id never NULL: a source
# without its account keys its rows by its placeholder
is(sql(q{SELECT string_agg(c.oid::regclass || ':' || pg_get_constraintdef(k.oid) || ':' || a.attnotnull, ' ' ORDER BY c.oid::regclass::text)
           FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'account_id'
          WHERE c.relnamespace IN ('stripe_data'::regnamespace, 'rk_data'::regnamespace)}),
	'rk_data.customers:PRIMARY KEY (id, account_id):true stripe_data.charges:PRIMARY KEY (id, account_id):true '
	  . 'stripe_data.customers:PRIMARY KEY (id, account_id):true', "0.1's tables are keyed by (id, account_id)");
is(sql(q{SELECT account_id || ' ' || (SELECT string_agg(DISTINCT account_id, ',') FROM rk_data.customers)
           FROM stripe_sync.sources WHERE name = 'rk'}), 'unknown:rk unknown:rk',
	'a source without its account gets the placeholder, in its rows too');
is(sql(q{SELECT string_agg(DISTINCT account_id, ',') FROM stripe_data.customers}), 'acct_fake000000000',
	'... and a source with its account keeps it');
sql(q{SELECT stripe_sync.sync_now('rk')});
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT id) FROM rk_data.customers}), '201 201',
	'... and syncs on under it, no object twice');

# syncing goes on: incrementally, as the worker
$fake->call('POST', '/_control/objects/customers', { email => 'after_upgrade@example.com' });
$fake->clear_requests;
sql(q{UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'main'});
ok($node->poll_query_until('postgres',
		"SELECT count(*) > $main_runs FROM stripe_sync.runs WHERE source = 'main' AND status = 'ok'"),
	'after the update the worker syncs again');
is(scalar(grep { $_->{path} =~ m{^/v1/(customers|charges)\?} } @{ $fake->requests }), 0,
	'... incrementally: no object is listed again');
is(sql(q{SELECT count(*) FROM stripe_data.customers WHERE email = 'after_upgrade@example.com'}), '1',
	'... and the new customer is there');

# shipping goes on: what waited is delivered, with what came after, each once
$it->call('DELETE', '/_control/faults');
ok($node->poll_query_until('postgres', q{SELECT bool_and(state = 'delivered') FROM stripe_sync.outbox}),
	'Intempt back: everything is delivered');
my %n;
$n{ $_->{eventId} }++ for @{ $it->call('GET', '/_control/events?data=0') };
is(scalar(grep { !$n{$_} } @waiting), 0, 'the events that waited across the upgrade arrived');
is(scalar(grep { $n{$_} > 1 } keys %n), 0, 'no event arrived twice');
cmp_ok(scalar(keys %n), '>', $history, '... and the new ones too');
is(sql(q{SELECT count(*) FROM stripe_sync.outbox WHERE event_id LIKE 'hist\_%'}), $history,
	'no history was sent again');

done_testing();
