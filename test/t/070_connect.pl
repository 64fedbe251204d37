# Connect fan-out: a platform source with connected_accounts syncs its own
# account and each connected account (Stripe-Account), exactly, into the same
# tables by account_id; an account connected later is synced by the next run;
# a deauthorized one stops, its rows stay, marked; each account's events are
# applied; the outbox names the account.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt add_intempt new_node disabled_source);
use HTTP::Tiny;
use JSON::PP;

my $fake = start_fake(counts => { customers => 20, charges => 30, events => 10 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
# the launcher runs: the last part has a worker sync the platform (its sources are
# otherwise disabled, synced in the session)
my $node = new_node('connect', $fake, "stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n");
add_intempt($node, $it);
my $http = HTTP::Tiny->new(timeout => 120);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# a control request of the fake, as one connected account (undef: the platform)
sub ctl
{
	my ($method, $path, $acct, $body) = @_;
	return $fake->call_as($acct, $method, "/_control/$path", $body);
}

# a platform run's fan-out: listed/synced/deauthorized/rounds
sub tally
{
	my $c = decode_json($_[0])->{connected_accounts};
	return join('/', map { $c->{$_} // '?' } qw(listed synced deauthorized rounds));
}

sub connect_account
{
	my ($id, %counts) = @_;
	return ctl('POST', 'accounts', undef, { id => $id, counts => \%counts, only => JSON::PP::true })->{id};
}

# per account: "account customers charges" as the fake has them, and as the local tables do
sub fake_counts
{
	my (@accts) = @_;
	return join("\n", map {
		my $a = $_;
		join(' ', $a, map { scalar @{ ctl('GET', "objects/$_", $a eq 'acct_fake000000000' ? undef : $a)->{data} } }
			  qw(customers charges))
	} sort @accts);
}

sub local_counts
{
	my (@accts) = @_;
	my $list = join(',', map { "'$_'" } @accts);
	return sql(qq{
		SELECT a, (SELECT count(*) FROM stripe_data.customers c WHERE c.account_id = a AND c.deleted_at IS NULL),
		          (SELECT count(*) FROM stripe_data.charges c WHERE c.account_id = a AND c.deleted_at IS NULL)
		  FROM unnest(ARRAY[$list]) a ORDER BY a COLLATE "C"});
}

my @accts = (connect_account('acct_1One', customers => 5, charges => 7, events => 3),
	connect_account('acct_1Two', customers => 150, charges => 3, events => 0),
	connect_account('acct_1Three', customers => 2, charges => 0, events => 2));

sql('CREATE SCHEMA stripe_data');
disabled_source($node, 'plat',
	"objects => ARRAY['customers', 'charges'], destination => 'intempt', connected_accounts => true");
is(sql("SELECT connected_accounts FROM stripe_sync.sources WHERE name = 'plat'"), 't',
	'create_source(connected_accounts => true)');

$fake->clear_requests;
my $out = sql("SELECT stripe_sync.sync_now('plat')");
is(tally($out), '3/3/0/1', 'the first sync lists three connected accounts and syncs them, in one round');
my @all = ('acct_fake000000000', @accts);
(my $want = fake_counts(@all)) =~ s/ /|/g;
is(local_counts(@all), $want, 'each account\'s customers and charges, exactly, by account_id');
is(sql("SELECT count(*) FROM stripe_data.customers WHERE account_id IS NULL"), '0', 'every row names its account');
{
	my @reqs = @{ $fake->requests };
	my %by;
	$by{ $_->{stripe_account} // '' }++ for @reqs;
	is(join(',', map { $by{$_} ? 1 : 0 } '', @accts), '1,1,1,1', 'requests as the platform and as each account');
	is(scalar(grep { $_->{path} =~ m{^/v1/accounts\b} && $_->{stripe_account} } @reqs), 0,
		'the accounts are listed as the platform');
	is(scalar(grep { ($_->{status} // 0) != 200 } @reqs), 0, 'no request refused');
}
is(sql("SELECT string_agg(account_id || ':' || state || ':' || objects_backfilled, ',' ORDER BY account_id COLLATE \"C\") "
	  . "FROM stripe_sync.account_status WHERE source = 'plat'"),
	'acct_1One:synced:2,acct_1Three:synced:2,acct_1Two:synced:2,acct_fake000000000:synced:2',
	'account_status: a row per account, each synced');
is(sql("SELECT count(*) FROM stripe_sync.status WHERE source LIKE 'plat/%'"), '0',
	'status keeps to the sources themselves');

# ---- the outbox names the account
is(sql("SELECT count(*) > 0 AND count(*) FILTER (WHERE payload->'data'->>'stripeAccount' IS DISTINCT FROM 'acct_1One') = 0 "
	  . "FROM stripe_sync.outbox WHERE source = 'plat/acct_1One'"), 't',
	'an account\'s history events name it in the payload');
is(sql("SELECT count(*) > 0 AND count(*) FILTER (WHERE payload->'data'->>'stripeAccount' IS DISTINCT FROM 'acct_fake000000000') = 0 "
	  . "FROM stripe_sync.outbox WHERE source = 'plat'"), 't',
	'the platform\'s own events name the platform');

# ---- incremental: each account's events are applied
my $cus = ctl('POST', 'objects/customers', 'acct_1Two', { email => 'two@example.com' });
my $gone = ctl('GET', 'objects/customers', 'acct_1One')->{data}[0];
ctl('DELETE', "objects/customers/$gone->{id}", 'acct_1One', {});
ctl('POST', 'objects/customers', undef, { email => 'platform@example.com' });
$out = sql("SELECT stripe_sync.sync_now('plat')");
is(local_counts(@all), do { (my $w = fake_counts(@all)) =~ s/ /|/g; $w },
	'after events in two accounts and the platform: each account exact again');
is(sql("SELECT account_id FROM stripe_data.customers WHERE id = '$cus->{id}'"), 'acct_1Two',
	'a new customer of an account, from its event, under its account');
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.customers WHERE id = '$gone->{id}' AND account_id = 'acct_1One'"),
	't', 'a deleted customer of an account, from its event');
is(sql("SELECT payload->'data'->>'stripeAccount' FROM stripe_sync.outbox "
	  . "WHERE source = 'plat/acct_1Two' AND object_id = '$cus->{id}' AND event_id LIKE 'evt\\_%'"),
	'acct_1Two', 'a live event\'s payload names its account');

# ---- an account connected later is synced by the next run
push @all, connect_account('acct_1Four', customers => 4, charges => 2, events => 1);
$out = sql("SELECT stripe_sync.sync_now('plat')");
is(tally($out), '4/4/0/1', 'the next run lists and syncs the new account');
is(local_counts(@all), do { (my $w = fake_counts(@all)) =~ s/ /|/g; $w }, 'the new account\'s objects, exactly');

# ---- a deauthorized account stops syncing; its rows stay, marked
ctl('POST', 'accounts/acct_1Three/deauthorize', undef, {});
$fake->clear_requests;
$out = sql("SELECT stripe_sync.sync_now('plat')");
is(tally($out), '3/3/1/1', 'the deauthorized account is found gone');
is(scalar(grep { ($_->{stripe_account} // '') eq 'acct_1Three' } @{ $fake->requests }), 0,
	'no request as the deauthorized account');
is(sql("SELECT state || ':' || (deauthorized_at IS NOT NULL)::text FROM stripe_sync.account_status "
	  . "WHERE account_id = 'acct_1Three'"), 'deauthorized:true', 'account_status marks it deauthorized');
is(sql("SELECT count(*) FROM stripe_data.customers WHERE account_id = 'acct_1Three'"), '2', 'its rows stay');
is(sql("SELECT state, count(*) FROM stripe_sync.account_status WHERE source = 'plat' GROUP BY state ORDER BY state"),
	"deauthorized|1\nsynced|4", 'counts by state at a glance');
$out = sql("SELECT stripe_sync.sync_now('plat')");
is(tally($out), '3/3/0/1', 'a later run leaves it be');

# ---- alter_source: the platform's settings are its accounts'; off stops them
sql("SELECT stripe_sync.alter_source('plat', objects => ARRAY['customers'])");
is(sql("SELECT count(*) FROM stripe_sync.object_state o JOIN stripe_sync.sources s ON s.name = o.source "
	  . "WHERE s.platform = 'plat' AND o.object = 'charges'"), '0', 'objects changed for every account');
sql("SELECT stripe_sync.alter_source('plat', connected_accounts => false)");
$fake->clear_requests;
$out = sql("SELECT stripe_sync.sync_now('plat')");
unlike($out, qr/connected_accounts/, 'connected_accounts off: the platform alone');
is(scalar(grep { $_->{stripe_account} || $_->{path} =~ m{^/v1/accounts} } @{ $fake->requests }), 0,
	'no request for the accounts');

# a platform of its own: a fake with 3 customers and the accounts given
# (id => customers), its server and mapping, schema <name>_data, connect_turn
# set, and the source <name> (customers), disabled
sub new_platform
{
	my ($name, $turn, %accounts) = @_;
	my $f = start_fake(counts => { customers => 3, charges => 0, events => 0 });
	$f->call('POST', '/_control/accounts',
		{ id => $_, counts => { customers => $accounts{$_}, events => 0 }, only => JSON::PP::true })
	  for sort keys %accounts;
	my $furl = $f->url;
	sql(qq{
		CREATE SERVER $name FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$furl');
		CREATE USER MAPPING FOR CURRENT_USER SERVER $name OPTIONS (api_key 'sk_test_fake');
		CREATE SCHEMA ${name}_data;
		ALTER SYSTEM SET stripe_sync.connect_turn = $turn;
		SELECT pg_reload_conf();
		BEGIN;
		SELECT stripe_sync.create_source('$name', server => '$name', objects => ARRAY['customers'],
		                                 target_schema => '${name}_data', connected_accounts => true);
		SELECT stripe_sync.alter_source('$name', enabled => false);
		COMMIT;
	});
	return $f;
}

# ---- a large platform's first sync: the accounts' backfills take turns
my $big = new_platform('big', 100, acct_1BigA => 1500, acct_1BigB => 1500);
$big->config(latency_ms => 40);
$big->clear_requests;
$out = sql("SELECT stripe_sync.sync_now('big')");
my $rounds = decode_json($out)->{connected_accounts}{rounds};
cmp_ok($rounds // 0, '>', 1, 'the accounts\' backfills took turns, in more than one round');
{
	my @seq = map { $_->{stripe_account} } grep { $_->{path} =~ m{^/v1/customers\?} && $_->{stripe_account} }
	  @{ $big->requests };
	my $switches = grep { $seq[$_] ne $seq[ $_ - 1 ] } 1 .. $#seq;
	cmp_ok($switches, '>=', 2, "the accounts' pages interleave ($switches switches between accounts)");
}
is(sql("SELECT string_agg(account_id || ':' || n, ',' ORDER BY account_id) FROM "
	  . "(SELECT account_id, count(*) n FROM big_data.customers GROUP BY 1) c"),
	'acct_1BigA:1500,acct_1BigB:1500,acct_fake000000000:3', 'every account whole after its turns');
is(sql("SELECT string_agg(state, ',') FROM stripe_sync.account_status WHERE source = 'big'"),
	'synced,synced,synced', 'every account synced');

# ---- a worker's run: the platform, then each account, as the launcher schedules it
my $late = $big->call('POST', '/_control/objects/customers', { email => 'late@example.com' });
my $late_b = do {
	my $r = $http->request('POST', $big->url . '/_control/objects/customers',
		{ headers => { 'Content-Type' => 'application/json', 'Stripe-Account' => 'acct_1BigB' },
		  content => encode_json({ email => 'late-b@example.com' }) });
	decode_json($r->{content});
};
$big->config(latency_ms => 0);
# one account's requests fail (Stripe's 500s, past the retries)
$big->fault(kind => '500', path => '/v1/', account => 'acct_1BigA', count => 1000000);
sql("SELECT stripe_sync.alter_source('big', enabled => true, sync_interval => '1 second')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM big_data.customers WHERE (id, account_id) IN "
	  . "(('$late->{id}', 'acct_fake000000000'), ('$late_b->{id}', 'acct_1BigB'))"),
	'a worker syncs the platform and its accounts: each one\'s new customer, under its account');
ok($node->poll_query_until('postgres',
	"SELECT state = 'error' AND last_error LIKE '%500%' FROM stripe_sync.account_status WHERE account_id = 'acct_1BigA'"),
	'an account whose sync fails shows in account_status, with its error');
is(sql("SELECT string_agg(state || ':' || n, ',' ORDER BY state) FROM "
	  . "(SELECT state, count(*) n FROM stripe_sync.account_status WHERE source = 'big' GROUP BY 1) c"),
	'error:1,synced:2', '... and the others sync on');
$big->clear_faults;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM stripe_sync.account_status WHERE source = 'big' AND state = 'synced'"),
	'once Stripe answers again, every account synced by the worker');
sql("SELECT stripe_sync.alter_source('big', enabled => false)");

# ---- without turns (connect_turn = 0) a big account's backfill is shared with
# helpers, which read as the account too
my $huge = new_platform('huge', 0, acct_1Huge => 5000);

# a worker's run: the account's source is made in a step of its own, which the
# helpers see.  A slow trigger keeps the sync busy writing, which is when it deals.
sql(q{CREATE FUNCTION huge_data.slow() RETURNS trigger LANGUAGE plpgsql AS
	  $$ BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$;
	CREATE TRIGGER slow BEFORE INSERT ON huge_data.customers FOR EACH ROW EXECUTE FUNCTION huge_data.slow();});
sql("SELECT stripe_sync.alter_source('huge', enabled => true)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'stripe_sync backfill helper' "
	  . "AND application_name = 'stripe_sync huge/acct_1Huge helper'"),
	'a helper shares the account\'s backfill');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_sync.account_status WHERE source = 'huge' AND account_id = 'acct_1Huge' "
	  . "AND state = 'synced'"), 'the account\'s backfill is done');
sql("SELECT stripe_sync.alter_source('huge', enabled => false)");
is(sql("SELECT string_agg(account_id || ':' || n || ':' || d, ',' ORDER BY account_id) FROM "
	  . "(SELECT account_id, count(*) n, count(DISTINCT id) d FROM huge_data.customers GROUP BY 1) c"),
	'acct_1Huge:5000:5000,acct_fake000000000:3:3', '... every row once, under its account, as the fake has it');
{
	my @plain = grep { $_->{path} =~ m{^/v1/customers\?} && !$_->{stripe_account} } @{ $huge->requests };
	is(scalar(@plain), 1, 'the platform\'s one page of customers is the only one read without Stripe-Account');
}

done_testing();
