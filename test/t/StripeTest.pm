# Helpers for the TAP tests: a fake Stripe server per test file and a
# PostgreSQL::Test::Cluster node with stripe_sync preloaded and a server
# pointing at the fake.
package StripeTest;

use strict;
use warnings;
use Exporter 'import';
use HTTP::Tiny;
use JSON::PP;
use File::Temp qw(tempdir);
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;

our @EXPORT_OK = qw(start_fake start_intempt new_node);

my @fakes;

sub root { return $ENV{STRIPE_TEST_ROOT} // '.'; }

# spawn(script, args...) -> a fake server (test/<script>) on a free port
sub spawn
{
	my ($script, @args) = @_;
	my $dir = tempdir(CLEANUP => 1);
	my $portfile = "$dir/port";
	my @cmd = ('python3', root() . "/test/$script", '--port', '0', '--port-file', $portfile, @args);
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', "$dir/fake.log");
		open(STDERR, '>&', \*STDOUT);
		exec(@cmd) or die "exec: $!";
	}
	for (1 .. 600)
	{
		last if -s $portfile;
		usleep(50_000);
	}
	open(my $fh, '<', $portfile) or die "$script did not start";
	my $port = <$fh>;
	chomp $port;
	close $fh;
	my $self = bless {
		pid => $pid,
		port => $port,
		url => "http://127.0.0.1:$port",
		http => HTTP::Tiny->new(timeout => 120),
	}, 'StripeTest::Fake';
	push @fakes, $self;
	return $self;
}

# start_fake(counts => {customers => 1050}) -> the fake Stripe
sub start_fake
{
	my (%args) = @_;
	my @args = ('--fixtures', root() . '/test/fixtures/stripe/fixtures3.json');
	push @args, '--counts',
	  join(',', map { "$_=$args{counts}{$_}" } sort keys %{ $args{counts} })
	  if $args{counts};
	return spawn('fake_stripe.py', @args);
}

# start_intempt(api_key => 'prefix.secret') -> the fake Intempt for org acme,
# project web, source 123456789
sub start_intempt
{
	my (%args) = @_;
	return spawn('fake_intempt.py', '--org', 'acme', '--project', 'web', '--source-id', '123456789',
		'--api-key', $args{api_key});
}

# new_node(name, fake, extra_conf, preload => 0|1) -> started node with the extension, a server
# "stripe" at the fake and a user mapping with the fake's key
sub new_node
{
	my ($name, $fake, $conf, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		(($opt{preload} // 1) ? "shared_preload_libraries = 'stripe_sync'\n" : '')
		  . "stripe_sync.retry_base_delay = 20\n"
		  . "stripe_sync.requests_per_second = 10000\n"
		  . ($conf // ''));
	$node->start;
	my $url = $fake->{url};
	$node->safe_psql('postgres', qq{
		CREATE EXTENSION stripe_sync;
		CREATE SERVER stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$url');
		CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake');
		CREATE SCHEMA stripe;
		IMPORT FOREIGN SCHEMA stripe FROM SERVER stripe INTO stripe;
	});
	return $node;
}

END
{
	for my $f (@fakes)
	{
		kill 'TERM', $f->{pid};
		waitpid($f->{pid}, 0);
	}
}

package StripeTest::Fake;

use JSON::PP;

sub url { return $_[0]{url}; }

sub call
{
	my ($self, $method, $path, $body) = @_;
	my %opt;
	if (defined $body)
	{
		$opt{content} = encode_json($body);
		$opt{headers} = { 'Content-Type' => 'application/json' };
	}
	my $r = $self->{http}->request($method, $self->{url} . $path, \%opt);
	die "fake control $method $path: $r->{status} $r->{content}"
	  unless $r->{success};
	return length($r->{content}) ? decode_json($r->{content}) : undef;
}

sub fault { my ($self, %f) = @_; return $self->call('POST', '/_control/faults', \%f); }
sub clear_faults { return $_[0]->call('DELETE', '/_control/faults'); }
sub requests { return $_[0]->call('GET', '/_control/requests')->{requests}; }
sub clear_requests { return $_[0]->call('DELETE', '/_control/requests'); }
sub config { my ($self, %c) = @_; return $self->call('POST', '/_control/config', \%c); }
sub reseed { my ($self, %c) = @_; return $self->call('POST', '/_control/reseed', \%c); }
sub objects { my ($self, $type) = @_; return $self->call('GET', "/_control/objects/$type")->{data}; }

1;
