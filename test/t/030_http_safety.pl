# What the HTTP layer refuses or hides: a key that Stripe's message of a non-401
# error carries is scrubbed from the ERROR and the log; a redirect is not
# followed; TLS verifies the peer (a self-signed certificate on loopback fails,
# though curl trusting that certificate reaches the same server).
use strict;
use warnings;
use File::Temp qw(tempdir);
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 5 });
my $node = new_node('http', $fake, "log_min_messages = debug5\nlog_statement = none\n"
	  . "stripe_sync.max_retries = 1\n");
my $url = $fake->url;

sub query_error
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	return $rc == 0 ? "(no error: $out)" : $err;
}

# ---- keys in Stripe's message of errors other than 401
my @keys = ('sk_test_51Abc' . 'DefGhi0123456789', 'rk_live_Zz9' . '8YyXx7766', 'pk_test_Qq1' . '2Ww3Ee4Rr');
$fake->fault(kind => 'status', status => 400, count => 1, code => 'resource_missing', param => 'id',
	message => "No such key: $keys[0] (nor $keys[1])");
my $err = query_error('SELECT count(*) FROM stripe.customers');
like($err, qr/HTTP 400 .*No such key: \[redacted\] \(nor \[redacted\]\)/s,
	'a 400 whose message holds keys: the ERROR shows Stripe\'s message with the keys redacted');
unlike($err, qr/DefGhi|8YyXx/, '... and no part of them');
$fake->fault(kind => 'status', status => 402, count => 1, message => "card declined for $keys[2]");
$err = query_error('SELECT count(*) FROM stripe.customers');
like($err, qr/HTTP 402 .*card declined for \[redacted\]/s, 'a 402: the same');
$fake->fault(kind => 'status', status => 503, count => 2, message => "overloaded, $keys[0]");
$err = query_error('SELECT count(*) FROM stripe.customers');
like($err, qr/HTTP 503 .*overloaded, \[redacted\]/s, 'a 503 past the retries: the same');
$fake->fault(kind => '429', count => 2, message => "slow down, $keys[1]");
$err = query_error('SELECT count(*) FROM stripe.customers');
like($err, qr/HTTP 429 .*slow down, \[redacted\]/s, 'a 429 past the retries: the same');

# ---- a redirect is an error, not followed (following it would succeed: it
# points at the same fake's own list)
for my $status (301, 302)
{
	$fake->clear_requests;
	$fake->fault(kind => 'redirect', status => $status, count => 1, location => "$url/v1/customers?limit=100");
	$err = query_error('SELECT count(*) FROM stripe.customers');
	like($err, qr/HTTP $status/, "a $status is an error");
	my @reqs = @{ $fake->requests };
	is(scalar @reqs, 1, '... after one request: the Location was not followed')
	  or diag(explain(\@reqs));
}
$fake->clear_faults;
is($node->safe_psql('postgres', 'SELECT count(*) FROM stripe.customers'), '5', 'the server answers again');

# ---- TLS: a self-signed certificate on loopback is refused
my $dir = tempdir(CLEANUP => 1);
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
	'-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', "$dir/key.pem", '-out', "$dir/cert.pem",
	'-loglevel', 'error') == 0 or system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
	'-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
	'-keyout', "$dir/key.pem", '-out', "$dir/cert.pem") == 0
  or die 'openssl could not make a certificate';
chmod 0644, "$dir/key.pem";
my $tls = start_fake(counts => { customers => 5 }, args => [ '--tls-cert', "$dir/cert.pem", '--tls-key', "$dir/key.pem" ]);
my $https = "https://127.0.0.1:$tls->{port}";
# the server works for a client that trusts its certificate
my $listed = `curl -s --cacert $dir/cert.pem -H 'Authorization: Bearer sk_test_fake' $https/v1/customers?limit=100`;
is(scalar @{ decode_json($listed)->{data} }, 5, 'curl trusting the certificate lists the 5 customers over HTTPS');
$node->safe_psql('postgres', qq{
	CREATE SERVER tls FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$https');
	CREATE USER MAPPING FOR CURRENT_USER SERVER tls OPTIONS (api_key 'sk_test_fake');
	CREATE FOREIGN TABLE tls_customers (id text) SERVER tls OPTIONS (object 'customers');
});
$err = query_error('SELECT count(*) FROM tls_customers');
like($err, qr/certificate/i, "the extension refuses the same server's self-signed certificate");
my $stats = decode_json(`curl -s --cacert $dir/cert.pem $https/_control/stats`);
is($stats->{requests}, 1, '... having sent no request to it (the one logged is curl\'s)');

# ---- none of the keys reached the server log
$node->stop;
my $log = slurp_file($node->logfile);
my @leaks = grep { my $k = $_; index($log, substr($k, 0, 12)) >= 0 } @keys;
is(scalar @leaks, 0, 'no key from Stripe\'s messages is in the server log at debug5') or diag("@leaks");

done_testing();
