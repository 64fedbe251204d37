# Webhooks as a second way in: stripe_sync.ingest_webhook(source, payload,
# signature) verifies a delivery signed as Stripe signs it (the fake Stripe's
# /_control/webhook, and deliveries signed here with Digest::SHA) with the
# webhook_secret of the owner's user mapping, and applies its event as the
# poll applies one: once, whichever comes first, older state never over newer,
# its outbox row with it.  Refused: a bad, stale or future signature, a
# missing secret, another role's source.  Skipped and said: events of types
# the source does not sync, of another account, of the other mode.  And the
# README's receiver (test/webhook_receiver.py) forwards a real POST.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256_hex);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node add_intempt);

my $SECRET = 'whsec_T3stEndpointS3cret';
my $fake = start_fake(counts => { customers => 5, products => 2 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('webhook', $fake, "stripe_sync.naptime = 1\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# (stderr, stdout) of a statement, with the SQLSTATE in the message
sub try_sql
{
	my ($q, $user) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "\\set VERBOSITY verbose\n$q", stdout => \$out, stderr => \$err,
		$user ? (extra_params => [ '-U', $user ]) : ());
	return ($err, $out);
}

sub quoted { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }

sub ingest_sql
{
	my ($payload, $sig, $source) = @_;
	return "SELECT stripe_sync.ingest_webhook(" . quoted($source // 'main') . ", "
	  . quoted($payload) . ", " . quoted($sig) . ")";
}

# what ingest_webhook returns for a delivery, decoded
sub ingest { return decode_json(sql(ingest_sql(@_))); }

# Stripe's delivery of an event (the fake signs it)
sub delivery
{
	my ($event_id, %opt) = @_;
	my %req = (event => $event_id, secret => $opt{secret} // $SECRET);
	$req{timestamp} = $opt{timestamp} if defined $opt{timestamp};
	my $d = $fake->call('POST', '/_control/webhook', \%req);
	return ($d->{payload}, $d->{signature});
}

# a payload signed here, as Stripe signs: v1 = HMAC-SHA256(secret, "t.payload")
sub signed
{
	my ($payload, %opt) = @_;
	my $t = $opt{t} // time;
	return ($payload, "t=$t,v1=" . hmac_sha256_hex("$t.$payload", $opt{secret} // $SECRET));
}

add_intempt($node, $it);
sql("BEGIN; SELECT stripe_sync.create_source('main', server => 'stripe', objects => ARRAY['customers'], "
	  . "destination => 'intempt'); SELECT stripe_sync.alter_source('main', enabled => false); COMMIT;");
my $cus = $fake->objects('customers')->[0];
my $id = $cus->{id};

# ---- the secret: a user mapping option, checked, never shown
my ($err) = try_sql("ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (ADD webhook_secret 'sk_nope_12345')");
like($err, qr/invalid value for option "webhook_secret"/, 'a webhook_secret that is not whsec_… is refused');
unlike($err, qr/sk_nope_12345/, '... without echoing it');
($err) = try_sql("ALTER SERVER stripe OPTIONS (ADD webhook_secret 'whsec_onAServer')");
like($err, qr/invalid option "webhook_secret".*\n.*user mapping/, 'a server takes no webhook_secret');

# before the first sync: no history is sent yet, so the event reaches the table only
$fake->call('POST', "/_control/objects/customers/$id", { name => 'first webhook' });
my ($p, $s) = delivery($fake->objects('events')->[0]{id});
($err) = try_sql(ingest_sql($p, $s));
like($err, qr/28000: .*source "main" has no webhook secret/, 'without a webhook_secret: 28000');
like($err, qr/HINT: .*ADD webhook_secret/, '... and the hint says how to set it');
# (PostgreSQL's own echo of the statement at log_statement = all would hold it)
sql("SET log_statement = 'none'; ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (ADD webhook_secret '$SECRET')");
unlike(sql("SELECT stripe_sync.test_connection('stripe')::text"), qr/whsec/, 'test_connection shows no secret');

my $r = ingest($p, $s);
is_deeply([ @$r{qw(applied reason outbox)} ], [ JSON::PP::true, undef, JSON::PP::false ],
	'a delivery before the first sync is applied, with no outbox row (the backfill owes the history)');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$id'"), 'first webhook', '... the row is there');

# ---- the first sync: backfill, history, and the poll drops the event the webhook applied
my $run = decode_json(sql("SELECT stripe_sync.sync_now('main')"));
is($run->{events}, 0, 'the poll drops the event a webhook applied');
my $outbox_before = sql("SELECT count(*) FROM stripe_sync.outbox");

# ---- a signed event applied in one call, its outbox row with it
$fake->call('POST', "/_control/objects/customers/$id", { name => 'second webhook' });
my $evt = $fake->objects('events')->[0]{id};
($p, $s) = delivery($evt);
my $cursor = sql("SELECT events_cursor FROM stripe_sync.sources WHERE name = 'main'");
$r = ingest($p, $s);
is_deeply([ @$r{qw(event type applied reason outbox)} ],
	[ $evt, 'customer.updated', JSON::PP::true, undef, JSON::PP::true ],
	'a signed customer.updated is applied, and goes to the outbox');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$id'"), 'second webhook', '... the row changed');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id = '$evt'"), '1', '... one outbox row');
is(sql("SELECT events_cursor FROM stripe_sync.sources WHERE name = 'main'"), $cursor,
	'... and the events cursor stays: the poll still reads every event before it');

# ---- the same delivery again (Stripe retries), and the poll after it: nothing more
$r = ingest($p, $s);
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::false, 'already applied' ], 'a second delivery is a no-op');
$run = decode_json(sql("SELECT stripe_sync.sync_now('main')"));
is($run->{events}, 0, 'the poll then reads the event and drops it');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id = '$evt'"), '1', '... the outbox has one row for it');
is(sql("SELECT count(*) FROM stripe_sync.outbox") - $outbox_before, 1, '... and no other new one');

# ---- webhooks ahead of the poll: its cursor passes the events it drops (else
# it would read them again and again, and fall past Stripe's retention)
my $ahead = $fake->call('POST', '/_control/events',
	{ type => 'customer.updated', object => { %$cus, name => 'ahead' }, created => time + 30 });
ingest(delivery($ahead->{id}));
$run = decode_json(sql("SELECT stripe_sync.sync_now('main')"));
is($run->{events}, 0, 'the poll drops an event a webhook applied ahead of it');
is(sql("SELECT events_cursor FROM stripe_sync.sources WHERE name = 'main'"), $ahead->{created},
	'... and its cursor moves past it');

# ---- the other way round: the poll first, then the webhook
$fake->call('POST', "/_control/objects/customers/$id", { name => 'polled' });
my $polled = $fake->objects('events')->[0]{id};
$run = decode_json(sql("SELECT stripe_sync.sync_now('main')"));
is($run->{events}, 1, 'the poll applies an event');
$r = ingest(delivery($polled));
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::false, 'already applied' ],
	'... and its webhook, arriving later, is a no-op');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id = '$polled'"), '1', '... one outbox row');

# ---- an older event after a newer one does not regress the row
my $t0 = time + 60;
my $newer = $fake->call('POST', '/_control/events',
	{ type => 'customer.updated', object => { %$cus, name => 'newer' }, created => $t0 + 2 });
my $older = $fake->call('POST', '/_control/events',
	{ type => 'customer.updated', object => { %$cus, name => 'older' }, created => $t0 + 1 });
ingest(delivery($newer->{id}));
$r = ingest(delivery($older->{id}));
is(sql("SELECT name || ' ' || extract(epoch FROM observed_at)::bigint FROM stripe_data.customers WHERE id = '$id'"),
	'newer ' . ($t0 + 2), 'an older event delivered after a newer one leaves the newer state');
is(sql("SELECT string_agg(payload->'data'->>'name', ',' ORDER BY id) FROM stripe_sync.outbox "
	  . "WHERE event_id IN ('$newer->{id}', '$older->{id}')"), 'newer,older', '... both are shipped, as delivered');

# ---- refused: a bad signature, a stale one, one from the future, a malformed header
($p, $s) = delivery($evt);
(my $tampered = $p) =~ s/second webhook/third webhook/;
($err) = try_sql(ingest_sql($tampered, $s));
like($err, qr/28000: webhook delivery for source "main" refused: the signature does not match/,
	'a tampered payload is refused: 28000');
my ($hex) = $s =~ /v1=([0-9a-f]+)/;
unlike($err, qr/\Q$hex\E|whsec_/, '... naming neither the signature nor the secret');
($err) = try_sql(ingest_sql(signed($p, secret => 'whsec_another')));
like($err, qr/the signature does not match/, 'a signature with another secret is refused');
($err) = try_sql(ingest_sql(delivery($evt, timestamp => time - 400)));
like($err, qr/28000: .*the signature is too old/, 'a delivery signed 400 s ago is refused');
($err) = try_sql(ingest_sql(delivery($evt, timestamp => time + 400)));
like($err, qr/28000: .*the signature is from the future/, '... and one signed 400 s ahead');
for my $bad ('', 'garbage', "t=abc,v1=$hex", "v1=$hex", 't=' . time, "t=1,t=2,v1=$hex")
{
	($err) = try_sql(ingest_sql($p, $bad));
	like($err, qr/28000: .*malformed Stripe-Signature header/, "a malformed header ('$bad') is refused");
}
($err) = try_sql("SELECT stripe_sync.ingest_webhook('main', " . quoted($p) . ", NULL)");
like($err, qr/signature must not be NULL/, 'a NULL signature is an error, not NULL');
# a secret being rolled: two v1, either matches; v0 is never looked at
my ($p2, $s2) = delivery($evt, secret => [ 'whsec_old1', $SECRET ]);
like(sql(ingest_sql($p2, $s2)), qr/already applied/, 'with two v1 signatures (a secret rolled), one that matches is enough');

# ---- payloads that are no Stripe event, signed: clean errors
for my $case (
	[ '{}', qr/"object" is not "event"/ ],
	[ '[1,2]', qr/not a Stripe event/ ],
	[ '{"object":"event","id":7}', qr/id is not a string/ ],
	[ '{"object":"event","id":"evt_1","type":"x.y","created":"soon"}', qr/created is not a Unix time/ ],
	[ '{"object":"event","id":"evt_1","type":"x.y","created":1,"data":{"object":[]}}', qr/data.object is not an object/ ],
	[ '{"object":"event","id":"evt_1","type":"x.y","created":1,"livemode":"yes","data":{"object":{}}}', qr/livemode is not a boolean/ ],
	[ '{"object":"event","id":"evt_1","type":"x.y","created":1,"account":5,"data":{"object":{}}}', qr/account is not a string/ ],
	[ '{"object":"event","id":"evt_1","type":"x;y","created":1,"data":{"object":{}}}', qr/type is not a string/ ],
	[ '{"object":"event",', qr/not a Stripe event/ ])
{
	($err) = try_sql(ingest_sql(signed($case->[0])));
	like($err, $case->[1], "a signed payload $case->[0] is refused");
}
($err) = try_sql("SELECT stripe_sync.ingest_webhook('main', repeat('x', 3000000), 't=1,v1=00')");
like($err, qr/54000: webhook payload of 3000000 bytes is over the limit/, 'a 3 MB payload is refused before anything');

# ---- skipped, and said why: types not synced, another account, the other mode
my $product = $fake->objects('products')->[0];
my $pev = $fake->call('POST', '/_control/events', { type => 'product.updated', object => $product });
$r = ingest(delivery($pev->{id}));
is_deeply([ @$r{qw(applied reason outbox)} ],
	[ JSON::PP::false, 'the source does not sync its object\'s type', JSON::PP::false ],
	'an event of a type the source does not sync is skipped, and says so');
my $charge = { id => 'ch_webhook1', object => 'charge', status => 'succeeded', customer => $id,
	amount => 1234, currency => 'usd', created => time };
my $cev = $fake->call('POST', '/_control/events', { type => 'charge.succeeded', object => $charge });
$r = ingest(delivery($cev->{id}));
is_deeply([ @$r{qw(applied outbox)} ], [ JSON::PP::false, JSON::PP::true ],
	'... a mapped one (charge.succeeded) still goes to the outbox, as with the poll');
my $e = decode_json($p);
$e->{id} = 'evt_otheraccount1';
$e->{account} = 'acct_someoneelse';
$r = ingest(signed(encode_json($e)));
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::false, 'another account' ],
	'an event of a connected account, for a source of the platform, is skipped');
delete $e->{account};
$e->{livemode} = JSON::PP::true;
$r = ingest(signed(encode_json($e)));
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::false, 'a live mode event for a test mode key' ],
	'a live mode event for a source with a test key is skipped');
is(sql("SELECT count(*) FROM stripe_sync.applied_events WHERE event_id = 'evt_otheraccount1'"), '0',
	'... and not recorded as applied');

# ---- only the source's owner (or a member, or a superuser) may ingest
sql("CREATE ROLE mallory LOGIN");
($err) = try_sql(ingest_sql(delivery($evt)), 'mallory');
like($err, qr/42704: source "main" does not exist/, 'another role cannot ingest: the source does not exist for it');

# ---- an ordinary role's source: its own secret, its own tables, as itself
sql("CREATE ROLE alice LOGIN; GRANT USAGE ON FOREIGN SERVER stripe TO alice; GRANT CREATE ON DATABASE postgres TO alice; "
	  . "SET log_statement = 'none'; CREATE USER MAPPING FOR alice SERVER stripe "
	  . "OPTIONS (api_key 'sk_test_fake', webhook_secret 'whsec_AliceEndpoint1')");
$node->safe_psql('postgres', "BEGIN; SELECT stripe_sync.create_source('alice_src', server => 'stripe', "
	  . "objects => ARRAY['customers'], target_schema => 'alice_data'); "
	  . "SELECT stripe_sync.alter_source('alice_src', enabled => false); COMMIT;", extra_params => [ '-U', 'alice' ]);
my $av = $fake->call('POST', '/_control/events',
	{ type => 'customer.created', object => { %$cus, name => 'alice' }, created => $t0 + 5 });
($err) = try_sql(ingest_sql(delivery($av->{id}), 'alice_src'), 'alice');
like($err, qr/the signature does not match/, "a delivery signed with another owner's secret is refused");
my ($out);
($err, $out) = try_sql(ingest_sql(delivery($av->{id}, secret => 'whsec_AliceEndpoint1'), 'alice_src'), 'alice');
like($out, qr/"applied": true/, "an ordinary role ingests into its own source, with its own secret") or diag($err);
is(sql("SELECT name || ' ' || pg_get_userbyid(c.relowner) FROM alice_data.customers t, pg_class c "
	  . "WHERE c.oid = 'alice_data.customers'::regclass AND t.id = '$id'"), 'alice alice', '... into its own table');
($err) = try_sql(ingest_sql(delivery($av->{id}, secret => 'whsec_AliceEndpoint1'), 'alice_src'), 'mallory');
like($err, qr/source "alice_src" does not exist/, '... which another role cannot');

# ---- the README's receiver: a real POST, forwarded with psql
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $root = $ENV{STRIPE_TEST_ROOT} // '.';
my $receiver = IPC::Run::start(
	[ 'python3', "$root/test/webhook_receiver.py" ],
	'>', \my $rout, '2>', \my $rerr,
	init => sub {
		$ENV{PORT} = $port;
		$ENV{PGHOST} = $node->host;
		$ENV{PGPORT} = $node->port;
		$ENV{PGDATABASE} = 'postgres';
	});
my $http = HTTP::Tiny->new(timeout => 30);
# (at a time after the newer state's)
my $via = $fake->call('POST', '/_control/events',
	{ type => 'customer.updated', object => { %$cus, name => 'via receiver' }, created => $t0 + 3 });
($p, $s) = delivery($via->{id});
my $resp;
for (1 .. 100)
{
	$resp = $http->post("http://127.0.0.1:$port/",
		{ content => $p, headers => { 'Stripe-Signature' => $s, 'Content-Type' => 'application/json' } });
	last unless $resp->{status} == 599;
	select(undef, undef, undef, 0.1);
}
is($resp->{status}, 200, "the receiver answers Stripe's POST with 200");
like($resp->{content}, qr/"applied": true/, '... having applied the event');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$id'"), 'via receiver', '... the row changed');
$resp = $http->post("http://127.0.0.1:$port/",
	{ content => $p, headers => { 'Stripe-Signature' => 't=1,v1=' . ('0' x 64) } });
is($resp->{status}, 400, '... and a forged POST with 400');
$receiver->kill_kill;

# ---- an endpoint in another API version than the source's: as with the poll,
# the object is read again at the source's version
my $v = $fake->call('POST', '/_control/events', { type => 'customer.updated', api_version => '2024-06-20',
	object => { %$cus, name => 'old version' }, created => $t0 + 4 });
$fake->clear_requests;
$r = ingest(delivery($v->{id}));
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::true, undef ], 'an event in another API version is applied');
is(join(' ', map { "$_->{method} $_->{path}" } @{ $fake->requests }), "GET /v1/customers/$id",
	'... its object read again, once, at the source\'s version');
isnt(sql("SELECT name FROM stripe_data.customers WHERE id = '$id'"), 'old version',
	'... and not stored as the event renders it (newer than the row, it would be)');

ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 AND bool_and(state = 'delivered') FROM stripe_sync.outbox"),
	'the webhooks\' outbox rows are delivered to Intempt');
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$SECRET\E/, 'the secret is nowhere in the server log');

$node->stop;
done_testing();
