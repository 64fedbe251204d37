# Several batches in flight to Intempt at once (stripe_sync.outbox_concurrency):
# each Stripe object's events still arrive in outbox order, and each event
# once, while Intempt answers late and in any order (latency with jitter) and
# refuses a quarter of the requests with 500 or 503; two sources share the
# places fairly; the setting is bounded and reloadable; a refused key pauses
# the destination until the user mapping changes; kill -9 with several
# batches in flight resends only those.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt add_intempt new_node crash_and_restart);

my $key = 'pk7Xq.s3cr3tIntemptKey';
my $fake = start_fake(counts => { customers => 1 });
my $it = start_intempt(api_key => $key);
my $node = new_node('ship_order', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nrestart_after_crash = on\n"
	  . "stripe_sync.outbox_concurrency = 4\nstripe_sync.outbox_batch_size = 20\n"
	  # the harness logs every statement, ALTER USER MAPPING's key included;
	  # what the extension itself logs is under test here
	  . "log_statement = none\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

add_intempt($node, $it);
sql('CREATE SCHEMA ship');

# a source that does not sync, with n pending events over `objects` objects
# (0: one object each), under three names in no particular order; its
# destination is set when shipping should start
sub add_source
{
	my ($src, $n, $objects) = @_;
	my $obj = $objects ? "abs(hashint4(k) % $objects)" : 'k';
	sql(qq{
		BEGIN;
		SELECT stripe_sync.create_source('$src', server => 'stripe', target_schema => 'ship',
		                                 objects => ARRAY['customers']);
		SELECT stripe_sync.alter_source('$src', enabled => false);
		COMMIT;
		INSERT INTO stripe_sync.outbox (source, event_id, event_name, stripe_event, object_id, occurred_at, payload)
		SELECT '$src', 'evt_${src}_' || k, name, 'customer.updated', 'cus_' || o, to_timestamp(1700000000 + k),
		       jsonb_build_object('eventId', 'evt_${src}_' || k, 'timestamp', (1700000000 + k) * 1000::bigint,
		                          'userId', 'cus_' || o, 'data', jsonb_build_object('k', k))
		  FROM generate_series(1, $n) k,
		       LATERAL (SELECT $obj AS o,
		                       (ARRAY['Customer created', 'Customer updated', 'Invoice paid'])
		                         [1 + abs(hashint4(k + 1000000) % 3)] AS name) x
		 ORDER BY k;
	});
}

sub ship { sql("SELECT stripe_sync.alter_source('$_', destination => 'intempt')") for @_; }

sub wait_delivered
{
	my ($what, @src) = @_;
	my $in = join(', ', map { "'$_'" } @src);
	ok($node->poll_query_until('postgres',
		"SELECT count(*) FILTER (WHERE state <> 'delivered') = 0 FROM stripe_sync.outbox WHERE source IN ($in)"),
		"$what: everything delivered");
}

sub stats { return $it->call('GET', '/_control/stats'); }

# Arrival order at the fake, checked against the outbox: each object's events
# (their first arrivals) in outbox order, and none missing.  Returns how often
# each eventId arrived.
sub check_order
{
	my ($src, $what) = @_;
	my (%want, %obj, %got, %times);
	for my $line (split /\n/,
		sql("SELECT event_id || ' ' || object_id FROM stripe_sync.outbox WHERE source = '$src' ORDER BY id"))
	{
		my ($e, $o) = split / /, $line;
		push @{ $want{$o} }, $e;
		$obj{$e} = $o;
	}
	for my $e (@{ $it->call('GET', '/_control/events?data=0') })
	{
		my $o = $obj{ $e->{eventId} } // next;
		push @{ $got{$o} }, $e->{eventId} unless $times{ $e->{eventId} }++;
	}
	my @bad = grep { join(',', @{ $got{$_} // [] }) ne join(',', @{ $want{$_} }) } sort keys %want;
	is(scalar @bad, 0,
		"$what: each object's events arrived in outbox order (" . scalar(keys %want) . ' objects)')
	  or diag("$bad[0]: arrived " . join(',', @{ $got{ $bad[0] } // [] })
		  . "\n  outbox " . join(',', @{ $want{ $bad[0] } }));
	is(scalar(grep { !$times{$_} } keys %obj), 0, "$what: every event arrived");
	return \%times;
}

# ---- 1500 events of 60 objects, 20 a batch, 4 in flight; Intempt answers in
# 20 to 170 ms and refuses a quarter with 500 or 503
$it->call('POST', '/_control/config', { latency_ms => 20, latency_jitter_ms => 150 });
$it->call('POST', '/_control/faults',
	{ kind => 'refuse_ratio', ratio => 0.25, seed => 3, status => [ 500, 503 ] });
add_source('a', 1500, 60);
$it->call('DELETE', '/_control/events');
ship('a');
wait_delivered('refusals and jitter', 'a');
$it->call('DELETE', '/_control/faults');
my $st = stats();
check_order('a', 'refusals and jitter');
is($st->{duplicates}, 0, 'refusals and jitter: no event arrived twice');
my $refused = ($st->{by_status}{500} // 0) + ($st->{by_status}{503} // 0);
cmp_ok($refused, '>', 10, "Intempt refused requests ($refused of $st->{requests})");
ok($st->{max_in_flight} >= 2 && $st->{max_in_flight} <= 4,
	"several requests in flight, at most outbox_concurrency ($st->{max_in_flight})");

# ---- two sources of one event per object: they share the four places
$it->call('POST', '/_control/config', { latency_ms => 100, latency_jitter_ms => 0 });
add_source('b', 400, 0);
add_source('c', 400, 0);
$it->call('DELETE', '/_control/events');
sql("BEGIN; SELECT stripe_sync.alter_source('b', destination => 'intempt'); "
	  . "SELECT stripe_sync.alter_source('c', destination => 'intempt'); COMMIT;");
wait_delivered('two sources', 'b', 'c');
$st = stats();
ok($st->{max_in_flight} >= 3 && $st->{max_in_flight} <= 4,
	"distinct objects fill the places ($st->{max_in_flight} of 4 in flight)");
my @first = map { $_->{eventId} =~ /^evt_([bc])_/ ? $1 : () }
  @{ $it->call('GET', '/_control/events?data=0') };
my $b_first = grep { $_ eq 'b' } @first[ 0 .. 399 ];
ok($b_first >= 100 && $b_first <= 300,
	"the sources take turns: of the first 400 events, $b_first are b's and " . (400 - $b_first) . " c's");
is($st->{duplicates}, 0, 'two sources: no event arrived twice');

# ---- outbox_concurrency is reloadable: 1 sends one batch at a time
$node->append_conf('postgresql.conf', "stripe_sync.outbox_concurrency = 1\n");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('stripe_sync.outbox_concurrency') = '1'"),
	'outbox_concurrency = 1 after a reload');
add_source('d', 200, 0);
$it->call('DELETE', '/_control/events');
ship('d');
wait_delivered('one at a time', 'd');
is(stats()->{max_in_flight}, 1, 'outbox_concurrency = 1: one request in flight at a time');
$node->append_conf('postgresql.conf', "stripe_sync.outbox_concurrency = 4\n");
$node->reload;

# ---- Intempt refusing the key pauses the destination, with one WARNING for
# the batches in flight; a new key in the user mapping ends the pause at once
my $offset = -s $node->logfile;
sql("ALTER USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (SET api_key 'pk7Xq.wr0ngKey')");
add_source('f', 200, 0);
$it->call('DELETE', '/_control/events');
ship('f');
ok($node->poll_query_until('postgres',
	"SELECT count(*) FILTER (WHERE state = 'pending') = 200 "
	  . "AND count(*) FILTER (WHERE last_error LIKE 'HTTP 401: Intempt refused the credentials%') > 0 "
	  . "FROM stripe_sync.outbox WHERE source = 'f'"),
	'a refused key: the events wait');
like(sql("SELECT DISTINCT delivery_error FROM stripe_sync.status WHERE source = 'f'"),
	qr/^HTTP 401: Intempt refused the credentials; delivery is paused until the user mapping of server intempt changes$/,
	'... and the status says why');
$node->wait_for_log(qr/refused the credentials of source "f"/, $offset);
my $refusals = stats()->{requests};
sleep 2;
is(stats()->{requests}, $refusals, "... and the destination is paused after $refusals refused requests");
my $warnings = () = slurp_file($node->logfile, $offset) =~ /WARNING:  stripe_sync: Intempt refused the credentials/g;
is($warnings, 1, '... with one WARNING');
my $fixed = time;
sql("ALTER USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (SET api_key '$key')");
wait_delivered('a new key', 'f');
cmp_ok(time - $fixed, '<', 60, 'a new key ends the pause at once');
unlike(slurp_file($node->logfile, $offset), qr/wr0ngKey/, 'the refused key is not in the log');

# ---- kill -9 with several batches in flight: those alone arrive twice
$it->call('POST', '/_control/config', { latency_ms => 3000 });
add_source('e', 400, 50);
$it->call('DELETE', '/_control/events');
ship('e');
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 20 FROM stripe_sync.outbox WHERE source = 'e' AND state = 'sending'"),
	'several batches in flight');
my %in_flight = map { $_ => 1 } split /\n/,
  sql("SELECT event_id FROM stripe_sync.outbox WHERE source = 'e' AND state = 'sending'");
$it->call('POST', '/_control/config', { latency_ms => 0 });
crash_and_restart($node);
wait_delivered('after kill -9', 'e');
# the requests cut off by the crash still end at the fake, which takes them
for (1 .. 100)
{
	last if stats()->{in_flight} == 0;
	select(undef, undef, undef, 0.2);
}
my $times = check_order('e', 'after kill -9');
my @twice = grep { $times->{$_} > 1 } keys %$times;
is(scalar(grep { !$in_flight{$_} } @twice), 0,
	'after kill -9, only the events in flight arrived twice (' . scalar(@twice) . ' of '
	  . scalar(keys %in_flight) . ')');

$node->stop;
done_testing();
