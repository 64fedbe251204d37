# A worker's first sync asks for the account beside its first pages rather
# than before them:
# - its page requests do not wait for GET /v1/account's answer; their rows
#   do, since a row's account_id is its key (Citus's distribution column)
#   and never changes: none is written without it;
# - a run that ends before the answer has written nothing, and the next run
#   asks again;
# - a restricted key, refused the account, syncs under the placeholder.
# (sync_now asks before its first write instead: 044 holds it there.)
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 300 });
my $node = new_node('first_account', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nstripe_sync.backfill_helpers = 0\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $acct = sql(q{SELECT account_id FROM stripe_sync.test_connection('stripe')});
like($acct, qr/^acct_/, "the fake's account");

sub create
{
	my ($name) = @_;
	sql("CREATE SCHEMA $name; SELECT stripe_sync.create_source('$name', server => 'stripe', "
		  . "target_schema => '$name', objects => ARRAY['customers'])");
}

sub run_status
{
	my ($name) = @_;
	return $node->poll_query_until('postgres',
		"SELECT status FROM stripe_sync.runs WHERE source = '$name' AND status <> 'running' "
		  . 'ORDER BY id DESC LIMIT 1', 'ok');
}

sub accounts
{
	my ($name) = @_;
	return sql("SELECT coalesce(account_id, 'null') || ':' || count(*) FROM $name.customers "
		  . 'GROUP BY account_id ORDER BY 1')
	  . ' / ' . sql("SELECT coalesce(account_id, 'null') FROM stripe_sync.sources WHERE name = '$name'");
}

# pages of customers Stripe has answered
sub pages_answered
{
	return scalar grep { $_->{path} =~ m{^/v1/customers} } @{ $fake->requests };
}

# ---- the account held at the fake: the first pages are asked for meanwhile, not written
$fake->clear_requests;
$fake->hold('/v1/account', count => 1);
create('a');
ok($fake->wait_held(1), "a's worker asks for the account");
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
sleep 0.2 while pages_answered() == 0 && time < $deadline;
cmp_ok(pages_answered(), '>', 0, '... and for its first pages, without waiting for the answer');
sleep 1;
is(sql('SELECT count(*) FROM a.customers') . ' / ' . accounts('a'), '0 /  / null',
	'... whose rows wait for the account: none is written without it');
$fake->release;
ok(run_status('a'), 'the answer comes, and the run ends');
is(accounts('a'), "$acct:300 / $acct", '... every row and the source have the account id');

# ---- the run ends before the answer (its worker terminated): the next asks again
$fake->clear_requests;
$fake->hold('/v1/account', count => 1);
create('b');
ok($fake->wait_held(1), "b's worker waits for the account");
$deadline = time + $PostgreSQL::Test::Utils::timeout_default;
sleep 0.2 while pages_answered() == 0 && time < $deadline;
cmp_ok(pages_answered(), '>', 0, '... with pages answered');
ok($node->poll_query_until('postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stripe_sync b'"),
	'... and is terminated');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'stripe_sync b'"),
	'... and gone');
is(sql("SELECT count(*) FROM b.customers")
	  . ' / ' . sql("SELECT coalesce(account_id, 'null') FROM stripe_sync.sources WHERE name = 'b'"),
	'0 / null', "no row was written, and the source has no account id");
$fake->clear_faults;
sql("UPDATE stripe_sync.sources SET next_sync_at = now() WHERE name = 'b'; SELECT stripe_sync.wake()");
ok(run_status('b'), 'the next run ends');
is(accounts('b'), "$acct:300 / $acct", '... and every row has the account id');

# ---- a restricted key: no account, the sync goes on without it
my $rk = 'rk_test_51RestrictedKeyOfTheFirstSync' . 'Tests9876543';
$fake->config(restricted_keys => { $rk => [ 'customer_read', 'event_read' ] });
sql("ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (SET api_key '$rk')");
my $offset = -s $node->logfile;
create('c');
ok(run_status('c'), 'a restricted key: the first run ends');
is(accounts('c'), 'unknown:c:300 / unknown:c', '... with every row, under the placeholder account id');
like(slurp_file($node->logfile, $offset), qr/source "c": the API key cannot read the account; syncing without it/,
	'... as the log says');

done_testing();
