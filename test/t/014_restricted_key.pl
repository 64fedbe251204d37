# A restricted key (rk_…) syncs what it may read.  Stripe refuses such a key
# GET /v1/account, so the sync starts without the account: the local rows are
# keyed by the placeholder account_id 'unknown:<source>', kept for the source's
# life (a distribution column under Citus never changes), and the backfill
# reaches back to a fixed floor instead of the account's creation.  An object it may not read fails alone, with the permission Stripe
# names; test_connection says what the key can do; no message shows the key.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 250, invoices => 30, charges => 120 });
my $node = new_node('restricted', $fake);
my $rk = 'rk_test_51RestrictedKeyOfTheSync' . 'Tests9876543210';
$fake->config(restricted_keys => { $rk => [ 'customer_read', 'charge_read', 'event_read' ] });

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql("ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (SET api_key '$rk')");

# ---- test_connection: the key works, but cannot read the account
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT account_id IS NULL, account_name IS NULL, api_version FROM stripe_sync.test_connection('stripe')});
is($rc, 0, 'test_connection with a restricted key does not fail') or diag($err);
is($out, 't|t|2026-10-28.endive', '... no account id or name, the API version');
like($err, qr/NOTICE:  the API key of server "stripe" cannot read the account/, '... a NOTICE says why');
like($err, qr/rak_accounts_kyc_id_numbers_read/, '... with the permission Stripe names');
unlike($err, qr/\Q@{[substr($rk, -6)]}\E|RestrictedKey/, '... and never the key');

# ---- a sync: customers and charges, invoices refused
disabled_source($node, 'main', q{objects => ARRAY['customers', 'invoices', 'charges']});
$fake->clear_requests;
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a sync with a restricted key runs') or diag($err);
is(sql(q{SELECT count(*) FROM stripe_data.customers}) . '/' . sql(q{SELECT count(*) FROM stripe_data.charges}),
	'250/120', '... and syncs what the key may read');
is(sql(q{SELECT count(*) FROM stripe_data.customers WHERE account_id = 'unknown:main'}), '250',
	'... with account_id the placeholder of an unknown account');
is(sql(q{SELECT account_id FROM stripe_sync.sources WHERE name = 'main'}), 'unknown:main',
	'the source keys its rows by it');
like($err, qr/HINT:  account_id is "unknown:main" in the local tables/, '... and a NOTICE says so');
like(sql(q{SELECT last_error FROM stripe_sync.status WHERE source = 'main' AND object = 'invoices'}),
	qr/rak_invoice_read/, 'invoices fail with the permission Stripe names');
is(sql(q{SELECT string_agg(object || ':' || state || ':' || backfill_done, ',' ORDER BY object)
           FROM stripe_sync.status WHERE source = 'main'}),
	'charges:synced:true,customers:synced:true,invoices:error:false', 'status: the others are synced');
is(sql(q{SELECT status FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1}), 'partial',
	'the run is partial');
unlike(sql(q{SELECT string_agg(coalesce(last_error, ''), ' ') FROM stripe_sync.status})
	  . sql(q{SELECT string_agg(coalesce(error, ''), ' ') FROM stripe_sync.runs}) . $err,
	qr/\Q@{[substr($rk, -6)]}\E|RestrictedKey/, 'no status, run or message shows the key');
# (but PostgreSQL's own echo of the ALTER USER MAPPING that set it)
unlike(join("\n", grep { !/USER MAPPING/ } split /\n/, slurp_file($node->logfile)),
	qr/\Q@{[substr($rk, -6)]}\E|RestrictedKey/, '... nor the server log');

# the account's creation is unknown: the backfill reaches back to a fixed floor (2010),
# and the years before the objects cost about what they cost from the account's
# creation: the same backfill by a full key (the carvings follow the timing of the
# answers, so the two differ by a few requests)
sub lists_of_sync
{
	my ($source, $schema) = @_;
	disabled_source($node, $source, qq{objects => ARRAY['customers', 'charges'], target_schema => '$schema'});
	$fake->clear_requests;
	sql(qq{SELECT stripe_sync.sync_now('$source')});
	return scalar grep { $_->{path} =~ m{^/v1/(customers|charges)\?} } @{ $fake->requests };
}
my $restricted_lists = lists_of_sync('floor', 'floor_data');
sql("ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (SET api_key 'sk_test_fake')");
my $full_lists = lists_of_sync('full', 'full_data');
cmp_ok($restricted_lists, '<=', int($full_lists * 1.25) + 1,
	"the backfill from the floor: $restricted_lists list requests, from the account's creation: $full_lists");
is(sql(q{SELECT count(*) FROM floor_data.customers WHERE account_id = 'unknown:floor'}) . '/'
	  . sql(q{SELECT count(*) FROM full_data.customers WHERE account_id = 'acct_fake000000000'}), '250/250',
	'... both whole, and only the full key learns the account');

# a key that may read the account later changes no key: the source's rows stay
# under its placeholder, one row per object, changes and new objects included
my $first = sql(q{SELECT id FROM floor_data.customers ORDER BY id LIMIT 1});
sql(qq{UPDATE stripe.customers SET email = 'later\@example.com' WHERE id = '$first'});
$fake->call('POST', '/_control/objects/customers', { email => 'new@example.com' });
sql(q{SELECT stripe_sync.sync_now('floor')});
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || string_agg(DISTINCT account_id, ',')
           FROM floor_data.customers}) . ' ' . sql(q{SELECT account_id FROM stripe_sync.sources WHERE name = 'floor'}),
	'251 251 unknown:floor unknown:floor', 'a full key later keeps the placeholder: no object twice');
is(sql(qq{SELECT email FROM floor_data.customers WHERE id = '$first'}), 'later@example.com',
	'... and the change is applied to the row');
sql("ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (SET api_key '$rk')");

# an idle sync asks nothing it asked before but the events (and the account, whose
# creation the invoices' backfill still needs)
$fake->config(restricted_keys => { $rk => [ 'customer_read', 'charge_read', 'event_read', 'invoice_read' ] });
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql(q{SELECT count(*) FROM stripe_data.invoices}), '30', 'the permission granted: the invoices follow');
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('main')});
is(join(' ', map { $_->{path} =~ m{^(/v1/\w+)} } @{ $fake->requests }), '/v1/events',
	'an idle sync with a restricted key is one request');

done_testing();
