# Privileges, as the README's recipe for an ordinary role sets them up: a role
# with USAGE on the servers and a user mapping creates and syncs its own
# source; another role can neither see nor touch it; nobody reaches superuser
# through the source's owner, triggers on its local tables, sync_now or the
# worker; a revoked server stops the source with a clear error.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node);

my $fake = start_fake(counts => { customers => 120, charges => 150 });
my $it = start_intempt(api_key => 'pk1.secretA');
my $node = new_node('privileges', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n");
my ($furl, $iurl) = ($fake->url, $it->url);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# psql as a role: (stdout, stderr)
sub as
{
	my ($role, $query) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $query, extra_params => [ '-U', $role ]);
	return ($out, $err);
}

# ---- the recipe: a superuser sets up the servers and grants, once
sql(qq{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN;
	CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
	  OPTIONS (api_url '$iurl/v1', org 'acme', project 'web', source_id '123456789');
	GRANT USAGE ON FOREIGN SERVER stripe, intempt TO alice, bob;
	GRANT CREATE ON DATABASE postgres TO alice, bob;
});
# ... and each role brings its own key
for my $r (qw(alice bob))
{
	my ($out, $err) = as($r, q{
		CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake');
		CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key 'pk1.secretA');
	});
	is($err, '', "$r creates its user mappings");
}

# ---- alice creates and syncs her source
my ($out, $err) = as('alice', q{
	BEGIN;
	SELECT stripe_sync.create_source('alice_main', server => 'stripe', target_schema => 'alice_data',
	                                 objects => ARRAY['customers', 'charges'], destination => 'intempt');
	SELECT stripe_sync.alter_source('alice_main', enabled => false);
	COMMIT;
});
is($err, '', 'alice creates a source, in a schema created for her');
is(sql(q{SELECT owner::text, (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'alice_data')
           FROM stripe_sync.sources WHERE name = 'alice_main'}),
	'alice|alice', '... owned by alice, schema too');
is(sql(q{SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'alice_data'}),
	'alice', '... and its local tables');
($out, $err) = as('alice', q{SELECT (stripe_sync.sync_now('alice_main')->>'rows')::int});
is($out, '270', 'alice syncs it with sync_now') or diag($err);
($out) = as('alice', q{SELECT count(*) FROM stripe_sync.sources});
is($out, '1', 'alice sees her source');
($out) = as('alice', q{SELECT count(*) > 0 FROM stripe_sync.outbox});
is($out, 't', '... and its outbox rows');

# ---- bob cannot see, alter, drop, sync, retry or re-own it
for my $t (qw(sources status runs outbox object_state))
{
	($out, $err) = as('bob', "SELECT count(*) FROM stripe_sync.$t");
	is($out, '0', "bob sees no row of $t") or diag($err);
}
for my $call (
	"stripe_sync.alter_source('alice_main', enabled => true)",
	"stripe_sync.alter_source('alice_main', objects => ARRAY['customers'])",
	"stripe_sync.drop_source('alice_main')",
	"stripe_sync.sync_now('alice_main')",
	"stripe_sync.retry_dead('alice_main')")
{
	($out, $err) = as('bob', "SELECT $call");
	like($err, qr/source "alice_main" does not exist/, "bob: $call is refused");
}
($out, $err) = as('bob', q{UPDATE stripe_sync.sources SET owner = 'bob' WHERE name = 'alice_main'});
like($err, qr/permission denied/, 'bob cannot re-own it');
($out, $err) = as('bob', q{INSERT INTO stripe_sync.sources (name, server, owner, objects, target_schema)
                           VALUES ('forged', 'stripe', 'alice', '{customers}', 'public')});
like($err, qr/permission denied/, 'bob cannot write the management tables');
($out, $err) = as('bob', q{SELECT stripe_sync._create_source('alice', 'forged', 'stripe', '1 hour', NULL,
                           '{customers}', 'public', true, NULL)});
like($err, qr/permission denied for function _create_source/, 'bob cannot call the private functions');

# ---- alice cannot make a superuser the owner, nor escalate through the owner
sql(q{CREATE ROLE boss SUPERUSER LOGIN});
($out, $err) = as('alice', q{UPDATE stripe_sync.sources SET owner = 'boss' WHERE name = 'alice_main'});
like($err, qr/permission denied/, 'alice cannot hand her source to a superuser');

# ---- triggers on alice's tables run as alice, whoever syncs
($out, $err) = as('alice', q{
	CREATE TABLE alice_data.seen (who text, super boolean);
	CREATE FUNCTION alice_data.note() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  INSERT INTO alice_data.seen
	  SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
	  -- a trigger that tries to take over the cluster
	  BEGIN
	    EXECUTE 'ALTER ROLE alice SUPERUSER';
	  EXCEPTION WHEN insufficient_privilege THEN NULL;
	  END;
	  RETURN NEW;
	END $$;
	CREATE TRIGGER note AFTER INSERT OR UPDATE ON alice_data.customers
	  FOR EACH ROW EXECUTE FUNCTION alice_data.note();
});
is($err, '', 'alice puts a trigger on her local table');
$fake->call('POST', '/_control/objects/customers', { email => 'new1@example.com' });
sql(q{SELECT stripe_sync.sync_now('alice_main')});
is(sql(q{SELECT string_agg(DISTINCT who || '/' || super, ',') FROM alice_data.seen}), 'alice/false',
	"a superuser's sync_now runs alice's trigger as alice");
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'}), 'f', '... who stays no superuser');

# the worker: enabled again, it syncs as alice too
sql(q{DELETE FROM alice_data.seen});
$fake->call('POST', '/_control/objects/customers', { email => 'new2@example.com' });
as('alice', q{SELECT stripe_sync.alter_source('alice_main', enabled => true, sync_interval => '1 hour')});
sql(q{UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'alice_main'});
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM alice_data.seen}),
	'the worker syncs the new customer');
is(sql(q{SELECT string_agg(DISTINCT who || '/' || super, ',') FROM alice_data.seen}), 'alice/false',
	'... running the trigger as alice');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'}), 'f', '... who stays no superuser');
as('alice', q{SELECT stripe_sync.alter_source('alice_main', enabled => false)});

# ---- a role needs USAGE, a user mapping, and a schema it may create in
($out, $err) = as('carol', q{SELECT stripe_sync.create_source('c', server => 'stripe', target_schema => 'c')});
like($err, qr/permission denied for server "stripe"/, 'no USAGE on the server: refused');
sql(q{GRANT USAGE ON FOREIGN SERVER stripe TO carol});
($out, $err) = as('carol', q{SELECT stripe_sync.create_source('c', server => 'stripe', target_schema => 'c')});
like($err, qr/role carol has no user mapping for server "stripe"/, 'no user mapping: refused');
like($err, qr/CREATE USER MAPPING FOR carol SERVER stripe/, '... with the fix in the hint');
as('carol', q{CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake')});
($out, $err) = as('carol', q{SELECT stripe_sync.create_source('c', server => 'stripe', target_schema => 'alice_data')});
like($err, qr/permission denied for schema alice_data/, "another role's schema: refused");
($out, $err) = as('carol', q{SELECT stripe_sync.create_source('c', server => 'stripe', target_schema => 'c')});
like($err, qr/permission denied to create schema c/, 'no CREATE on the database: refused');
($out, $err) = as('carol', q{SELECT stripe_sync.create_source('c', server => 'stripe', target_schema => 'alice_data',
                                                               destination => 'intempt')});
like($err, qr/permission denied for server "intempt"/, 'no USAGE on the destination: refused');

# ---- a superuser manages every source; the owner stays alice
sql(q{SELECT stripe_sync.alter_source('alice_main', objects => ARRAY['customers', 'charges', 'refunds'])});
is(sql(q{SELECT tableowner FROM pg_tables WHERE schemaname = 'alice_data' AND tablename = 'refunds'}),
	'alice', "a superuser adding an object creates its table as the source's owner");

# ---- a revoked server stops the source with a clear error
sql(q{REVOKE USAGE ON FOREIGN SERVER stripe FROM alice});
($out, $err) = as('alice', q{SELECT stripe_sync.sync_now('alice_main')});
like($err, qr/the owner of source "alice_main" has no USAGE on its Stripe server "stripe"/,
	'a revoked server: sync_now says why');
sql(q{UPDATE stripe_sync.sources SET enabled = true, next_sync_at = now() WHERE name = 'alice_main'});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM stripe_sync.runs WHERE source = 'alice_main' AND status = 'error'
		     AND error LIKE '%has no USAGE on its Stripe server%'}),
	'... and the worker records it');
is(sql(q{SELECT last_error LIKE '%has no USAGE%' FROM stripe_sync.sources WHERE name = 'alice_main'}), 't',
	'... in the source, for status');

done_testing();
