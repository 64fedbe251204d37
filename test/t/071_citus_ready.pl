# A path past one machine: a source's local tables can be distributed with
# Citus by account_id, co-located.  Citus is not installed here, so
# tools/check_citus.sql checks a synced source's tables against Citus's rules
# from the catalog (keys that include account_id, account_id NOT NULL, no
# foreign key or exclusion constraint Citus refuses); it passes on what
# create_source made, and fails, naming the table and why, on each kind of
# table Citus would refuse.  The sync writes and finds rows by the whole key.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 30, charges => 40, invoices => 10, subscriptions => 5 });
my $node = new_node('citus', $fake);
my $root = $ENV{STRIPE_TEST_ROOT} // '.';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# check(source) -> (1 when it passes, 0 when it fails; the problems printed; stderr)
sub check
{
	my ($source) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'psql', '-X', '-qAt', '-F', ' | ', '-v', 'ON_ERROR_STOP=1', '-v', "source=$source",
			'-d', $node->connstr('postgres'), '-f', "$root/tools/check_citus.sql" ],
		'>', \$out, '2>', \$err);
	return ($ok ? 1 : 0, $out, $err);
}

# ---- a source of every object a source can sync
disabled_source($node, 'main',
	q{objects => (SELECT array_agg(object ORDER BY object) FROM stripe_sync.objects WHERE syncable)});
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a source of every syncable object syncs') or diag($err);
my $tables = sql(q{SELECT count(*) FROM pg_tables WHERE schemaname = 'stripe_data'});
cmp_ok($tables, '>=', 20, "it has $tables local tables");

# every table: the key (id, account_id), a child table's (parent, id, account_id),
# account_id NOT NULL, and nothing else unique
is(sql(q{
	SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'stripe_data'
	  JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
	  LEFT JOIN stripe_sync.catalog_children() ch ON ch.object = c.relname
	 WHERE c.relkind = 'r'
	   AND (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY k(att, ord)
	          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.att)
	       = CASE WHEN ch.object IS NULL THEN ARRAY['id', 'account_id']
	              ELSE ARRAY[ch.parent_column, 'id', 'account_id'] END}),
	$tables, 'every local table is keyed by (id, account_id), a child table by (parent, id, account_id)');
is(sql(q{SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'stripe_data'
	WHERE c.relkind = 'r' AND a.attname = 'account_id' AND a.attnotnull}), $tables,
	'... with account_id NOT NULL');
is(sql(q{SELECT string_agg(DISTINCT account_id, ',') FROM stripe_data.customers}), 'acct_fake000000000',
	'the rows carry the account');

($rc, $out, $err) = check('main');
is($rc, 1, 'the Citus check passes on the synced source') or diag("$out\n$err");
like($err, qr/ok: $tables tables can be distributed by account_id/, '... having checked every table');
($rc, $out, $err) = check('nosuch');
is($rc, 0, 'the check fails for a source that does not exist');
like($err, qr/no local tables found/, '... saying so');

# ---- the sync finds its rows by the whole key: an update and a deletion change
# the row in place, and the outbox still learns a charge's customer's email
my $cus = sql(q{SELECT id FROM stripe_data.customers ORDER BY id LIMIT 1});
sql(qq{UPDATE stripe.customers SET email = 'moved\@example.com' WHERE id = '$cus'});
my $gone = sql(q{SELECT id FROM stripe_data.customers ORDER BY id DESC LIMIT 1});
sql(qq{DELETE FROM stripe.customers WHERE id = '$gone'});
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql(qq{SELECT count(*) || ' ' || min(email) FROM stripe_data.customers WHERE id = '$cus'}),
	'1 moved@example.com', 'an updated object stays one row, changed');
is(sql(qq{SELECT count(*) || ' ' || (min(deleted_at) IS NOT NULL) FROM stripe_data.customers WHERE id = '$gone'}),
	'1 true', 'a deleted one is marked deleted, in place');
my $ch = sql(q{SELECT id || ' ' || customer FROM stripe_data.charges WHERE customer IS NOT NULL LIMIT 1});
my ($chid, $chcus) = split / /, $ch;
my $email = sql(qq{SELECT attrs->>'email' FROM stripe_data.customers WHERE id = '$chcus'});
# another account's rows of the same ids (as a Connect platform's tables hold): never this source's
sql(qq{CREATE TEMP TABLE cus AS SELECT * FROM stripe_data.customers WHERE id = '$chcus';
	UPDATE cus SET account_id = 'acct_other', email = 'other\@example.com', attrs = attrs || '{"email": "other\@example.com"}';
	INSERT INTO stripe_data.customers SELECT * FROM cus;
	CREATE TEMP TABLE ch AS SELECT * FROM stripe_data.charges WHERE id = '$chid';
	UPDATE ch SET account_id = 'acct_other', customer = 'cus_other', attrs = attrs || '{"customer": "cus_other"}';
	INSERT INTO stripe_data.charges SELECT * FROM ch;});
is(sql(qq{SELECT payload->>'userId' FROM stripe_sync.outbox_rows('main', ARRAY['evt_x'], ARRAY['refund.created'],
		ARRAY[1]::bigint[], ARRAY[jsonb_build_object('id', 're_x', 'object', 'refund', 'charge', '$chid')], NULL)}),
	$email || $chcus, "the outbox finds a refund's charge and its customer by the whole key");
sql(q{DELETE FROM stripe_data.customers WHERE account_id = 'acct_other';
	DELETE FROM stripe_data.charges WHERE account_id = 'acct_other'});

# ---- tables Citus would refuse: each fails the check, named with why
sub refused
{
	my ($what, $setup, $undo, $problem) = @_;
	sql($setup);
	my ($rc, $out, $err) = check('main');
	is($rc, 0, "the check fails on $what");
	like($out, $problem, '... naming the table and why') or diag("$out\n$err");
	like($err, qr/problem\(s\) keep Citus from distributing/, '... and says it fails');
	sql($undo);
	return;
}
refused('a table keyed by id alone',
	q{CREATE TABLE stripe_data.notes (id text PRIMARY KEY, account_id text, note text)},
	q{DROP TABLE stripe_data.notes},
	qr/^stripe_data\.notes \| account_id may be NULL\nstripe_data\.notes \| unique index stripe_data\.notes_pkey does not include account_id$/m);
refused('a table whose account_id is of another type',
	q{CREATE TABLE stripe_data.tallies (id text, account_id varchar(40) NOT NULL, PRIMARY KEY (id, account_id))},
	q{DROP TABLE stripe_data.tallies},
	qr/^stripe_data\.tallies \| account_id is character varying\(40\), not text/m);
refused('a table without account_id',
	q{CREATE TABLE stripe_data.tags (tag text)},
	q{DROP TABLE stripe_data.tags},
	qr/^stripe_data\.tags \| no account_id column\nstripe_data\.tags \| no primary key$/m);
refused('a unique index of the user\'s without account_id',
	q{CREATE UNIQUE INDEX customers_email_key ON stripe_data.customers (email)},
	q{DROP INDEX stripe_data.customers_email_key},
	qr/^stripe_data\.customers \| unique index stripe_data\.customers_email_key does not include account_id$/m);
refused('an exclusion constraint without account_id',
	q{ALTER TABLE stripe_data.prices ADD CONSTRAINT one_price EXCLUDE USING btree (id WITH =)},
	q{ALTER TABLE stripe_data.prices DROP CONSTRAINT one_price},
	qr/^stripe_data\.prices \| exclusion constraint one_price does not include account_id with =$/m);
refused('a foreign key to a table that is not distributed',
	q{CREATE TABLE public.plans_local (id text PRIMARY KEY);
	  ALTER TABLE stripe_data.charges ADD COLUMN plan_local text CONSTRAINT charge_plan REFERENCES public.plans_local},
	q{ALTER TABLE stripe_data.charges DROP COLUMN plan_local; DROP TABLE public.plans_local},
	qr/^stripe_data\.charges \| foreign key charge_plan references plans_local, which is not distributed with it$/m);
refused('a foreign key between local tables on id alone',
	q{ALTER TABLE stripe_data.customers ADD CONSTRAINT id_key UNIQUE (id);
	  ALTER TABLE stripe_data.charges ADD CONSTRAINT charge_customer FOREIGN KEY (customer) REFERENCES stripe_data.customers (id)},
	q{ALTER TABLE stripe_data.charges DROP CONSTRAINT charge_customer;
	  ALTER TABLE stripe_data.customers DROP CONSTRAINT id_key},
	qr/^stripe_data\.charges \| foreign key charge_customer does not pair account_id with account_id$/m);
refused('a local table that references a local one',
	q{CREATE TABLE public.orders (customer text, account_id text,
	    CONSTRAINT order_customer FOREIGN KEY (customer, account_id) REFERENCES stripe_data.customers (id, account_id))},
	q{DROP TABLE public.orders},
	qr/^stripe_data\.customers \| foreign key order_customer of orders, which is not distributed with it, references it$/m);

# a foreign key Citus accepts between co-located tables: the check passes
sql(q{ALTER TABLE stripe_data.charges ADD CONSTRAINT charge_customer
	FOREIGN KEY (customer, account_id) REFERENCES stripe_data.customers (id, account_id) NOT VALID});
($rc, $out, $err) = check('main');
is($rc, 1, 'a foreign key with account_id on both sides passes') or diag("$out\n$err");
sql(q{ALTER TABLE stripe_data.charges DROP CONSTRAINT charge_customer});

done_testing();
