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
use PostgreSQL::Test::Utils;

our @EXPORT_OK = qw(start_fake start_intempt new_node crash_and_restart server_ms logged_at
  add_intempt expected_history disabled_source differences);

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

# start_fake(counts => {customers => 1050}, api_key => 'sk_test_x', args => [...]) -> the fake Stripe
sub start_fake
{
	my (%args) = @_;
	# the suite runs at 10000 requests a second: off with Stripe's rate limits, which
	# the fake keeps by default (a test that wants them sets them, see 002_ratelimit)
	my @args = ('--fixtures', root() . '/test/fixtures/stripe/fixtures3.json',
		'--rate-limit', '0', '--endpoint-rate-limit', '0', '--live-rate-limit', '0');
	push @args, '--counts',
	  join(',', map { "$_=$args{counts}{$_}" } sort keys %{ $args{counts} })
	  if $args{counts};
	push @args, '--api-key', $args{api_key} if $args{api_key};
	push @args, @{ $args{args} } if $args{args};
	return spawn('fake_stripe.py', @args);
}

# start_intempt(api_key => 'prefix.secret', source_id => '123456789') -> the fake
# Intempt for org acme, project web, source 123456789 unless told otherwise
sub start_intempt
{
	my (%args) = @_;
	my $it = spawn('fake_intempt.py', '--org', 'acme', '--project', 'web', '--source-id',
		$args{source_id} // '123456789', '--api-key', $args{api_key});
	$it->{api_key} = $args{api_key};
	$it->{source_id} = $args{source_id} // '123456789';
	return $it;
}

# add_intempt(node, fake Intempt, name => 'intempt'): a server of the intempt
# wrapper at the fake, and the current user's mapping with the fake's key
sub add_intempt
{
	my ($node, $it, %opt) = @_;
	my $name = $opt{name} // 'intempt';
	my $url = $it->url;
	$node->safe_psql('postgres', qq{
		CREATE SERVER $name FOREIGN DATA WRAPPER intempt
		  OPTIONS (api_url '$url/v1', org 'acme', project 'web', source_id '$it->{source_id}');
		CREATE USER MAPPING FOR CURRENT_USER SERVER $name OPTIONS (api_key '$it->{api_key}');
	});
	return;
}

# The historical events (name => count) the fake's objects of these types stand
# for, as README's "History" lists them: what a first backfill owes a destination.
sub expected_history
{
	my ($fake, @types) = @_;
	my %want;
	for my $type (@types)
	{
		for my $o (@{ $fake->objects($type) })
		{
			my $st = $o->{status} // '';
			if ($type eq 'customers') { $want{'Customer created'}++; }
			elsif ($type eq 'charges')
			{
				$want{'Charge succeeded'}++ if $st eq 'succeeded';
				$want{'Charge failed'}++ if $st eq 'failed';
			}
			elsif ($type eq 'invoices') { $want{'Invoice created'}++; }
			elsif ($type eq 'payment_intents')
			{
				$want{'Payment intent created'}++;
				$want{'Payment intent succeeded'}++ if $st eq 'succeeded';
			}
			elsif ($type eq 'refunds') { $want{'Refund issued'}++; }
			elsif ($type eq 'subscriptions') { $want{'Subscription created'}++; }
		}
	}
	return \%want;
}

# kill -9 of the postmaster, then a start once every process it had started is
# gone (they notice the postmaster's death on their own; a start before that
# finds the old shared memory still in use)
sub crash_and_restart
{
	my ($node) = @_;
	my $pm = $node->{_pid};
	my @children;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh> // '';
		close $fh;
		push @children, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $pm;
	}
	$node->kill9;
	for (1 .. 1200)
	{
		last unless grep { kill 0, $_ } @children;
		usleep(50_000);
	}
	$node->start;
	return;
}

# The server's epoch (seconds, with milliseconds) at which a line matching $re was
# logged after byte $offset of the log, waiting for it; the node must log with
# log_line_prefix = '%n ' (the epoch) first.
sub logged_at
{
	my ($node, $re, $offset) = @_;
	$node->wait_for_log($re, $offset);
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
	for my $line (split /\n/, $log)
	{
		return $1 if $line =~ $re && $line =~ /^(\d+\.\d+) /;
	}
	die "no time on the log line matching $re";
}

# the server's clock, in milliseconds since the epoch: durations measured inside
# the server do not include a client's round trips
sub server_ms
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint');
}

# new_node(name, fake, extra_conf, preload => 0|1, bare => 0|1) -> started node with the extension, a server
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
	return $node if $opt{bare};    # nothing created: a restore's target
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

# disabled_source(node, name, "objects => ARRAY['customers'], …") -> a source on the server
# "stripe" that only sync_now syncs: disabled in the transaction that creates it, so
# that no worker starts a sync of its own
sub disabled_source
{
	my ($node, $name, $args) = @_;
	$node->safe_psql('postgres',
		"BEGIN; SELECT stripe_sync.create_source('$name', server => 'stripe'" . ($args ? ", $args" : '')
		  . "); SELECT stripe_sync.alter_source('$name', enabled => false); COMMIT;");
	return;
}

# differences(node, fake, "stripe_data.payouts"[, where]) -> how many live rows of the
# local table differ from the fake's objects of its type (the table's name), by id and
# attrs; where (on obj) takes only some of the fake's objects
sub differences
{
	my ($node, $fake, $table, $where) = @_;
	my ($type) = $table =~ /([^.]+)$/;
	$where //= 'true';
	my $url = $fake->url;
	return $node->safe_psql('postgres', qq{
		DROP TABLE IF EXISTS fake_raw, fake_objs;
		CREATE TABLE fake_raw (line text);
		COPY fake_raw FROM PROGRAM 'curl -s $url/_control/objects/$type'
		  WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02');
		CREATE TABLE fake_objs AS SELECT jsonb_array_elements(string_agg(line, '')::jsonb->'data') AS obj FROM fake_raw;
		SELECT count(*) FROM (SELECT * FROM fake_objs WHERE $where) f
		  FULL JOIN (SELECT * FROM $table WHERE deleted_at IS NULL) l ON l.id = f.obj->>'id'
		 WHERE l.id IS NULL OR f.obj IS NULL OR l.attrs <> f.obj;
	});
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

sub call { my ($self, @req) = @_; return $self->call_as(undef, @req); }

# a request as one connected account (Stripe-Account; undef: the platform)
sub call_as
{
	my ($self, $acct, $method, $path, $body) = @_;
	my %opt = (headers => {});
	$opt{headers}{'Stripe-Account'} = $acct if $acct;
	if (defined $body)
	{
		$opt{content} = encode_json($body);
		$opt{headers}{'Content-Type'} = 'application/json';
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

# the fake Stripe's "hold" fault: requests to paths starting with $path wait,
# before they are carried out, until release (count: how many it takes)
sub hold { my ($self, $path, %opt) = @_; return $self->fault(kind => 'hold', path => $path, %opt); }
sub held { return $_[0]->call('GET', '/_control/held')->{held}; }
sub release { return $_[0]->call('POST', '/_control/release')->{released}; }

# Waits until at least $n requests are held, polling as poll_query_until does;
# false when they are not within the harness's timeout.
sub wait_held
{
	my ($self, $n) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		return 1 if @{ $self->held } >= ($n // 1);
		Time::HiRes::usleep(50_000);
	}
	return 0;
}

1;
