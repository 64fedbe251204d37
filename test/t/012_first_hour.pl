# A new user's first hour: sync_now right after create_source joins the
# worker's run; alter_source that adds objects or moves sync_from makes the
# source due at once; status and runs show what a run does as it commits (an
# interrupted run too); a backend waiting on Stripe shows a wait event; a
# source that cannot run says so at create_source; DROP EXTENSION CASCADE
# stops the workers quietly and leaves the user's tables alone.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 600, charges => 300, refunds => 40 });
my $node = new_node('first_hour', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.max_concurrent_requests = 1\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# ---- sync_now right after create_source, in autocommit, joins the worker's run
$fake->config(latency_ms => 200);
sql(q{SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers'])});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM stripe_sync.runs WHERE source = 'main' AND status = 'running'}),
	'create_source: the worker starts the first sync');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
like($out, qr/"joined": true/, 'sync_now waits for that run instead of returning NULL');
like($out, qr/"status": "ok"/, '... and returns its outcome');
like($out, qr/"rows": 600/, '... with its rows');
like($err, qr/a sync of source "main" is running: waiting for it/, '... saying it waited');

# ---- status: enabled, next run, failures; runs: rows and requests
is(sql(q{SELECT enabled, next_sync_at > now() + interval '50 minutes', failures, rows
           FROM stripe_sync.status WHERE source = 'main'}),
	't|t|0|600', 'status shows the source enabled, its next run in an hour, no failure');

# ---- alter_source that adds an object makes the source due at once
sql(q{SELECT stripe_sync.alter_source('main', objects => ARRAY['customers', 'refunds'])});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 40 FROM stripe_data.refunds}),
	'an object added: the worker backfills it at once, not in an hour');
sql(q{SELECT stripe_sync.alter_source('main', enabled => false)});
sql(q{SELECT stripe_sync.alter_source('main', sync_from => now() - interval '10 years')});
is(sql(q{SELECT next_sync_at <= now() FROM stripe_sync.sources WHERE name = 'main'}), 't',
	'sync_from moved: due at once');

# ---- runs show rows and requests as each page commits, and keep them when interrupted
sql(q{SELECT stripe_sync.create_source('slow', server => 'stripe', objects => ARRAY['charges'],
                                        target_schema => 'slow_data')});
ok($node->poll_query_until('postgres',
		q{SELECT rows >= 100 AND requests >= 1 FROM stripe_sync.runs
		   WHERE source = 'slow' AND status = 'running'}),
	'a running backfill shows its rows and requests in runs as its pages commit');
my $worker = "SELECT pid FROM pg_stat_activity WHERE application_name = 'stripe_sync slow'";
is(sql(q{SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'stripe_sync slow'}),
	'Extension', 'the worker waiting on Stripe shows the wait event Extension');
sql("SELECT pg_terminate_backend(($worker))");
ok($node->poll_query_until('postgres',
		q{SELECT status = 'interrupted' AND rows >= 100 AND requests >= 1 FROM stripe_sync.runs
		   WHERE source = 'slow' ORDER BY id LIMIT 1}),
	'... and an interrupted run keeps them');
sql(q{SELECT stripe_sync.alter_source('slow', enabled => false)});

# ---- a backend waiting on Stripe shows a wait event too
$fake->fault(kind => 'delay', delay => 30, count => 1);
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/started/, "\\echo started\nSELECT count(*) FROM stripe.customers;\n");
ok($node->poll_query_until('postgres',
		q{SELECT wait_event_type = 'Extension' FROM pg_stat_activity
		   WHERE query = 'SELECT count(*) FROM stripe.customers;'}),
	'a scan waiting on Stripe shows the wait event Extension');
sql(q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT count(*) FROM stripe.customers;'});
# the canceled psql may have gone already
eval { $bg->quit; };
$fake->clear_faults;
$fake->config(latency_ms => 0);

# ---- a source that cannot run on a schedule says so when created
sql(q{CREATE DATABASE other});
$node->safe_psql('other', qq{
	CREATE EXTENSION stripe_sync;
	CREATE SERVER stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '@{[ $fake->url ]}');
	CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake');
});
($rc, $out, $err) = $node->psql('other', q{SELECT stripe_sync.create_source('o', server => 'stripe')});
like($err, qr/WARNING:  source "o" will not sync on a schedule: the workers use database "postgres"/,
	'a source in another database than stripe_sync.database: a WARNING says why');
like($err, qr/HINT:  Set stripe_sync.database = 'other'/, '... and what to set');
my $plain = new_node('not_preloaded', $fake, '', preload => 0);
($rc, $out, $err) = $plain->psql('postgres', q{SELECT stripe_sync.create_source('p', server => 'stripe')});
like($err, qr/will not sync on a schedule: stripe_sync is not preloaded/,
	'without preloading: a WARNING says why');
like($err, qr/shared_preload_libraries/, '... and what to set');
$plain->stop;

# ---- DROP EXTENSION CASCADE: the running workers stop quietly, nothing is left
$fake->config(latency_ms => 300);
sql(q{SELECT stripe_sync.alter_source('slow', enabled => true)});
sql(q{UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'slow'});
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($worker) w"), 'a worker syncs');
my $offset = -s $node->logfile;
sql(q{DROP EXTENSION stripe_sync CASCADE});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync worker'}),
	'DROP EXTENSION CASCADE: the worker stops');
# PostgreSQL creates the control file's schema but keeps it after the drop: empty
is(sql(q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'stripe_sync'})
	  + sql(q{SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'stripe_sync'}),
	0, 'nothing is left in schema stripe_sync');
is(sql(q{SELECT count(*) FROM pg_foreign_data_wrapper WHERE fdwname IN ('stripe_sync', 'intempt')}), '0',
	'... and the wrappers');
is(sql(q{SELECT count(*) FROM stripe_data.customers}), '600', "the local tables are the user's data: they stay");
# a tick of the launcher after the drop, then the log: no error from our workers
my $t = sql(q{SELECT clock_timestamp()});
ok($node->poll_query_until('postgres',
		"SELECT state = 'idle' AND state_change > '$t' FROM pg_stat_activity WHERE backend_type = 'stripe_sync launcher'"),
	'the launcher goes on, waiting for the extension');
my $log = slurp_file($node->logfile, $offset);
my @errors = grep { /ERROR|WARNING|FATAL/ && !/terminating background worker "stripe_sync worker/ } split /\n/, $log;
is(join("\n", @errors), '', '... and nothing but the stop is logged');

done_testing();
