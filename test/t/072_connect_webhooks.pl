# Connect webhooks: a platform's endpoint receives its connected accounts'
# events, "account" at the top level.  ingest_webhook('<platform>', …)
# verifies one with the platform's secret and applies it as the account's
# source ('<platform>/<acct_…>'): its account_id, its applied events (so the
# account's next poll does not apply it again) and its outbox row.  An event
# of an account the platform does not sync, or no longer does, is skipped
# and says why.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt add_intempt new_node disabled_source);
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;

my $SECRET = 'whsec_Pl4tformEndpointS3cret';
my $fake = start_fake(counts => { customers => 3, events => 0 });
my $it = start_intempt(api_key => 'pk7Xq.s3cr3tIntemptKey');
my $node = new_node('connhook', $fake, "stripe_sync.naptime = 1\n");
add_intempt($node, $it);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub quoted { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }

# a control request of the fake, as one connected account (undef: the platform)
sub ctl
{
	my ($method, $path, $acct, $body) = @_;
	return $fake->call_as($acct, $method, "/_control/$path", $body);
}

# an event of the account (undef: the platform) renaming one of its customers,
# and Stripe's signed delivery of it to the platform's endpoint
sub renamed
{
	my ($acct, $cus, $name) = @_;
	my $ev = ctl('POST', 'events', $acct, { type => 'customer.updated', object => { %$cus, name => $name } });
	my $d = ctl('POST', 'webhook', $acct, { event => $ev->{id}, secret => $SECRET });
	return ($ev, $d->{payload}, $d->{signature});
}

sub ingest
{
	my ($source, $payload, $sig) = @_;
	return decode_json(sql("SELECT stripe_sync.ingest_webhook(" . quoted($source) . ", "
		  . quoted($payload) . ", " . quoted($sig) . ")"));
}

for my $a (qw(acct_1Alpha acct_1Beta))
{
	ctl('POST', 'accounts', undef, { id => $a, counts => { customers => 2, events => 0 }, only => JSON::PP::true });
}
sql('CREATE SCHEMA stripe_data');
sql("SET log_statement = 'none'; ALTER USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (ADD webhook_secret '$SECRET')");
disabled_source($node, 'plat', "objects => ARRAY['customers'], destination => 'intempt', connected_accounts => true");
sql("SELECT stripe_sync.sync_now('plat')");
is(sql("SELECT string_agg(name, ',' ORDER BY name) FROM stripe_sync.sources WHERE platform = 'plat'"),
	'plat/acct_1Alpha,plat/acct_1Beta', 'the platform syncs two connected accounts');

# ---- a connected account's event, delivered to the platform, is the account's
my $cus = ctl('GET', 'objects/customers', 'acct_1Alpha')->{data}[0];
my ($ev, $p, $s) = renamed('acct_1Alpha', $cus, 'alpha by webhook');
like($p, qr/"account": "acct_1Alpha"/, 'the delivery names the connected account at the top level');
my $r = ingest('plat', $p, $s);
is_deeply([ @$r{qw(source applied reason outbox)} ], [ 'plat/acct_1Alpha', JSON::PP::true, undef, JSON::PP::true ],
	'applied as the account\'s source, with an outbox row');
is(sql("SELECT account_id || ':' || name FROM stripe_data.customers WHERE id = '$cus->{id}'"),
	'acct_1Alpha:alpha by webhook', 'the account\'s row, under its account_id');
is(sql("SELECT string_agg(source, ',') FROM stripe_sync.applied_events WHERE event_id = '$ev->{id}'"),
	'plat/acct_1Alpha', 'recorded as applied by the account\'s source');
$r = ingest('plat', $p, $s);
is_deeply([ @$r{qw(applied reason)} ], [ JSON::PP::false, 'already applied' ], 'a second delivery is dropped');

# the account's poll brings the same event: not applied a second time
$fake->clear_requests;
sql("SELECT stripe_sync.sync_now('plat')");
is(scalar(grep { $_->{path} =~ m{^/v1/events\b} && ($_->{stripe_account} // '') eq 'acct_1Alpha' } @{ $fake->requests }) > 0,
	1, 'the next sync polls the account\'s events');
is(sql("SELECT string_agg(source, ',') FROM stripe_sync.outbox WHERE event_id = '$ev->{id}'"),
	'plat/acct_1Alpha', 'the next sync applies it no second time: one outbox row, the account\'s');
is(sql("SELECT count(*) FROM stripe_sync.applied_events WHERE event_id = '$ev->{id}'"), '1',
	'... and one applied event');

# ---- the platform's own event stays the platform's
my $pcus = ctl('GET', 'objects/customers', undef)->{data}[0];
my ($pev, $pp, $ps) = renamed(undef, $pcus, 'platform by webhook');
$r = ingest('plat', $pp, $ps);
is_deeply([ @$r{qw(source applied)} ], [ 'plat', JSON::PP::true ], 'the platform\'s own event, as the platform');

# ---- an account the platform does not sync: skipped, said, not recorded
my $e = decode_json($p);
$e->{id} = 'evt_unknownacct1';
$e->{account} = 'acct_1Stranger';
my $body = encode_json($e);
my $t = time;
$r = ingest('plat', $body, "t=$t,v1=" . hmac_sha256_hex("$t.$body", $SECRET));
is_deeply([ @$r{qw(source applied reason)} ],
	[ 'plat', JSON::PP::false, 'an account that is not one of the platform\'s connected accounts' ],
	'an unknown account\'s event is skipped, and says why');
is(sql("SELECT count(*) FROM stripe_sync.applied_events WHERE event_id = 'evt_unknownacct1'"), '0',
	'... and not recorded as applied');

# ---- a deauthorized account's event: skipped
ctl('POST', 'accounts/acct_1Beta/deauthorize', undef, {});
sql("SELECT stripe_sync.sync_now('plat')");
$e->{id} = 'evt_deauthacct1';
$e->{account} = 'acct_1Beta';
$body = encode_json($e);
$r = ingest('plat', $body, "t=$t,v1=" . hmac_sha256_hex("$t.$body", $SECRET));
is_deeply([ @$r{qw(applied reason)} ],
	[ JSON::PP::false, 'a connected account the platform no longer syncs (deauthorized or stopped)' ],
	'a deauthorized account\'s event is skipped, and says why');

# ---- signed with another secret: refused, whichever account it names
my $bad = 'whsec_N0tThePlatforms';
my ($out, $err) = ('', '');
$node->psql('postgres', "SELECT stripe_sync.ingest_webhook('plat', " . quoted($p) . ", "
	  . quoted("t=$t,v1=" . hmac_sha256_hex("$t.$p", $bad)) . ")", stdout => \$out, stderr => \$err);
like($err, qr/the signature does not match/, 'a connected account\'s delivery is verified with the platform\'s secret');

done_testing();
