# The outbox end to end: the backfill's history and live events reach the
# fake Intempt once each, with the outbox's payloads; refusals, an outage,
# kill -9 mid-delivery, 400 and 413 lose nothing; no key reaches the log.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MIME::Base64;
use StripeTest qw(start_fake start_intempt new_node crash_and_restart);

my $key = 'pk7Xq.s3cr3tIntemptKey';
my $fake = start_fake();
my $it = start_intempt(api_key => $key);
my $node = new_node('outbox', $fake,
	"stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\nrestart_after_crash = on\n"
	  . "log_min_messages = debug5\n"
	  # the harness logs every statement, CREATE USER MAPPING's text included;
	  # what the extension itself logs is under test here
	  . "log_statement = none\n");
my $iurl = $it->url;
my $json = JSON::PP->new->canonical;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub received { return $it->call('GET', '/_control/events?data=0'); }
sub it_stats { return $it->call('GET', '/_control/stats'); }

# every event the outbox has, delivered: waits for the sync and the shipper
sub wait_delivered
{
	my ($what, $min_rows) = @_;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) >= $min_rows AND count(*) FILTER (WHERE state <> 'delivered') = 0 FROM stripe_sync.outbox"),
		"$what: everything delivered");
}

# n changes to customers in the fake: n customer.updated events
my $round = 0;
sub update_customers
{
	my ($n) = @_;
	$round++;
	my $customers = $fake->objects('customers');
	for my $i (0 .. $n - 1)
	{
		my $c = $customers->[ $i % @$customers ];
		$fake->call('POST', "/_control/objects/customers/$c->{id}", { name => "round $round change $i" });
	}
}

sub outbox_count { return sql("SELECT count(*) FROM stripe_sync.outbox"); }

# each eventId of the outbox arrived, and how often
sub arrivals
{
	my %n;
	$n{ $_->{eventId} }++ for @{ received() };
	return \%n;
}

sub missing
{
	my $n = arrivals();
	my @ids = split /\n/, sql("SELECT event_id FROM stripe_sync.outbox ORDER BY id");
	return scalar grep { !$n->{$_} } @ids;
}

# ---- setup: the source ships to Intempt from its first sync
sql(qq{
	CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
	  OPTIONS (api_url '$iurl/v1', org 'acme', project 'web', source_id '123456789');
	CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key '$key');
	CREATE SCHEMA stripe_data;
	SELECT stripe_sync.create_source('main', server => 'stripe', sync_interval => '1 second',
	                                 destination => 'intempt');
});

# ---- history: one event per object as SPEC §5 lists, each once
ok($node->poll_query_until('postgres',
	"SELECT bool_and(backfill_done) FROM stripe_sync.object_state WHERE source = 'main'", 't'),
	'the backfill completes');
my %expect;
$expect{'Customer created'} = scalar @{ $fake->objects('customers') };
for my $c (@{ $fake->objects('charges') })
{
	$expect{'Charge succeeded'}++ if $c->{status} eq 'succeeded';
	$expect{'Charge failed'}++ if $c->{status} eq 'failed';
}
$expect{'Invoice created'} = scalar @{ $fake->objects('invoices') };
for my $p (@{ $fake->objects('payment_intents') })
{
	$expect{'Payment intent created'}++;
	$expect{'Payment intent succeeded'}++ if $p->{status} eq 'succeeded';
}
$expect{'Refund issued'} = scalar @{ $fake->objects('refunds') };
$expect{'Subscription created'} = scalar @{ $fake->objects('subscriptions') };
my $total = 0;
$total += $_ for values %expect;
wait_delivered('history', $total);
my %got;
$got{ $_->{name} }++ for @{ received() };
is_deeply(\%got, \%expect, "historical events per name as the fake's objects say ($total)");
is(it_stats()->{duplicates}, 0, 'no historical event arrived twice');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id NOT LIKE 'hist\\_%'"), '0',
	'history has deterministic ids');

# ---- a second backfill (an earlier sync_from) sends no history again, even once
# the first one's rows are purged
sql("DELETE FROM stripe_sync.outbox");
sql("SELECT stripe_sync.alter_source('main', sync_from => '2000-01-01')");
ok($node->poll_query_until('postgres',
	"SELECT bool_and(backfill_done) FROM stripe_sync.object_state WHERE source = 'main'", 't'),
	'an earlier sync_from: the objects are listed again');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id LIKE 'hist\\_%'"), '0',
	'... and no history is written twice');
is(it_stats()->{duplicates}, 0, '... nor sent twice');
$total = 0;

# ---- emit_history => false: the same backfill writes no history
sql(qq{
	CREATE SCHEMA quiet;
	BEGIN;
	SELECT stripe_sync.create_source('quiet', server => 'stripe', target_schema => 'quiet',
	                                 objects => ARRAY['customers', 'charges'], destination => 'intempt',
	                                 emit_history => false);
	SELECT stripe_sync.alter_source('quiet', enabled => false);
	COMMIT;
	SELECT stripe_sync.sync_now('quiet');
});
is(sql("SELECT (SELECT count(*) FROM quiet.customers) > 0 AND "
	  . "(SELECT count(*) FROM stripe_sync.outbox WHERE source = 'quiet') = 0"), 't',
	'emit_history => false: the tables fill, the outbox does not');
sql("SELECT stripe_sync.drop_source('quiet'); DROP SCHEMA quiet CASCADE;");

# ---- every mapped event type, live, arrives as the outbox wrote it
my $now = time;
my @golden = (
	[ 'charge.succeeded', 'Charge succeeded', { id => 'ch_g1', object => 'charge', amount => 1234, currency => 'usd', customer => undef, billing_details => { email => 'g1@example.com' }, status => 'succeeded' } ],
	[ 'charge.failed', 'Charge failed', { id => 'ch_g2', object => 'charge', amount => 500, currency => 'jpy', status => 'failed', failure_code => 'card_declined' } ],
	[ 'customer.created', 'Customer created', { id => 'cus_g3', object => 'customer', email => 'g3@example.com', balance => 0 } ],
	[ 'customer.updated', 'Customer updated', { id => 'cus_g3', object => 'customer', email => 'g3b@example.com', balance => -250, currency => 'eur' } ],
	[ 'invoice.created', 'Invoice created', { id => 'in_g5', object => 'invoice', customer => 'cus_g3', status => 'draft', currency => 'kwd', total => 12345, amount_due => 12345 } ],
	[ 'invoice.updated', 'Invoice updated', { id => 'in_g5', object => 'invoice', customer => 'cus_g3', status => 'open', currency => 'kwd', total => 12345 } ],
	[ 'invoice.paid', 'Invoice paid', { id => 'in_g5', object => 'invoice', customer => 'cus_g3', status => 'paid', currency => 'kwd', amount_paid => 12345 } ],
	[ 'invoice.voided', 'Invoice voided', { id => 'in_g8', object => 'invoice', customer => 'cus_g3', status => 'void', currency => 'usd', total => 700 } ],
	[ 'invoice.marked_uncollectible', 'Invoice marked uncollectible', { id => 'in_g9', object => 'invoice', customer => 'cus_g3', status => 'uncollectible', currency => 'usd', amount_remaining => 900 } ],
	[ 'payment_intent.created', 'Payment intent created', { id => 'pi_g10', object => 'payment_intent', amount => 1234, currency => 'usd', customer => 'cus_g3', status => 'requires_payment_method' } ],
	[ 'payment_intent.succeeded', 'Payment intent succeeded', { id => 'pi_g10', object => 'payment_intent', amount => 1234, amount_received => 1234, currency => 'usd', customer => 'cus_g3', status => 'succeeded' } ],
	[ 'refund.created', 'Refund issued', { id => 're_g12', object => 'refund', amount => 1234, charge => 'ch_g1', currency => 'usd', status => 'succeeded' } ],
	[ 'application_fee.refunded', 'Refund issued', { id => 'fee_g13', object => 'application_fee', amount => 100, amount_refunded => 100, charge => 'ch_g1', currency => 'usd' } ],
	[ 'customer.subscription.created', 'Subscription created', { id => 'sub_g14', object => 'subscription', customer => 'cus_g3', status => 'active', currency => 'eur', items => { data => [ { price => { unit_amount => 999 }, quantity => 2 } ] } } ],
	[ 'customer.subscription.updated', 'Subscription updated', { id => 'sub_g14', object => 'subscription', customer => 'cus_g3', status => 'past_due', currency => 'eur' } ],
	[ 'customer.subscription.paused', 'Subscription updated', { id => 'sub_g14', object => 'subscription', customer => 'cus_g3', status => 'paused', currency => 'eur' } ],
	[ 'customer.subscription.resumed', 'Subscription updated', { id => 'sub_g14', object => 'subscription', customer => 'cus_g3', status => 'active', currency => 'eur' } ],
);
my %golden_name;
for my $g (@golden)
{
	my ($type, $name, $obj) = @$g;
	$obj->{created} = $now;
	my $ev = $fake->call('POST', '/_control/events', { type => $type, object => $obj, created => $now });
	$golden_name{ $ev->{id} } = [ $type, $name ];
}
wait_delivered('17 event types', $total + 17);
my $all = $it->call('GET', '/_control/events');
my ($right, @wrong) = (0);
for my $e (@$all)
{
	my $g = $golden_name{ $e->{eventId} } or next;
	my $row = sql("SELECT event_name || '|' || payload::text FROM stripe_sync.outbox WHERE event_id = '$e->{eventId}'");
	my ($name, $payload) = split /\|/, $row, 2;
	my %sent = map { $_ => $e->{$_} } qw(eventId timestamp userId data);
	if ($e->{name} eq $g->[1] && $name eq $g->[1]
		&& $json->encode(\%sent) eq $json->encode(decode_json($payload))
		&& $e->{timestamp} == $now * 1000 && length $e->{userId})
	{
		$right++;
	}
	else
	{
		push @wrong, "$g->[0] arrived as $e->{name}";
	}
}
is($right, 17, 'each of the 17 event types arrived once, under its name, with the outbox payload')
  or diag(join("\n", @wrong));
my ($ch) = grep { $golden_name{ $_->{eventId} } && $golden_name{ $_->{eventId} }[0] eq 'charge.succeeded' } @$all;
is($ch->{data}{amount} . '|' . $ch->{data}{amount_minor} . '|' . $ch->{userId}, '12.34|1234|g1@example.com',
	'a guest charge: amount in major and minor units, userId from the billing email');
my ($inv) = grep { $golden_name{ $_->{eventId} } && $golden_name{ $_->{eventId} }[0] eq 'invoice.created' } @$all;
is($inv->{data}{total} . '|' . $inv->{userId}, '12.345|g3b@example.com',
	'a three-decimal currency, and userId from the customer synced by the earlier event');

# ---- an object created before the source's sync_from is not the source's: no event
my $before_ev = $fake->call('POST', '/_control/events', { type => 'customer.updated', created => time,
	object => { id => 'cus_before', object => 'customer', email => 'b@example.com', created => 900000000 } });
my $after_ev = $fake->call('POST', '/_control/events', { type => 'customer.updated', created => time,
	object => { id => 'cus_after', object => 'customer', email => 'a@example.com', created => time } });
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM stripe_sync.outbox WHERE event_id = '$after_ev->{id}'"), 'an event of a new object is written');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE event_id = '$before_ev->{id}'"), '0',
	'... and none for an object created before sync_from');

# ---- Intempt refusing 30% of requests: all delivered, each once
$it->call('POST', '/_control/faults', { kind => 'refuse_ratio', ratio => 0.3, seed => 7 });
my $before = outbox_count();
update_customers(300);
wait_delivered('30% refused', $before + 300);
$it->call('DELETE', '/_control/faults');
my $st = it_stats();
is($st->{duplicates}, 0, 'with 30% refused, no event arrived twice');
is(missing(), 0, 'with 30% refused, every event arrived');
my $refused = 0;
$refused += $st->{by_status}{$_} // 0 for qw(429 500 503);
cmp_ok($refused, '>', 0, "the fake refused requests ($refused)");

# the events of each Stripe object arrived in the order the outbox has them
{
	my (%sent, %outbox, %in_outbox);
	for my $line (split /\n/, sql("SELECT object_id || ' ' || event_id FROM stripe_sync.outbox ORDER BY id"))
	{
		my ($o, $id) = split / /, $line;
		push @{ $outbox{$o} }, $id;
		$in_outbox{$id} = 1;
	}
	for my $e (@{ $it->call('GET', '/_control/events') })
	{
		my $o = $e->{data}{stripe_object_id};
		next unless $in_outbox{ $e->{eventId} };    # rows deleted above
		push @{ $sent{$o} }, $e->{eventId} unless grep { $_ eq $e->{eventId} } @{ $sent{$o} // [] };
	}
	my @out_of_order = grep { join(',', @{ $sent{$_} // [] }) ne join(',', @{ $outbox{$_} }) } keys %outbox;
	my $busiest = (sort { $b <=> $a } map { scalar @$_ } values %outbox)[0];
	is(scalar @out_of_order, 0,
		"each object's events arrived in order, through 30% refusals (up to $busiest events an object)");
}

# ---- Intempt down for a minute, then back
$it->call('POST', '/_control/faults', { kind => 'down', seconds => 60 });
$before = outbox_count();
update_customers(50);
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM stripe_sync.outbox WHERE state = 'pending' AND attempts > 0"),
	'while Intempt is down, events wait');
wait_delivered('after a minute down', $before + 50);
is(missing(), 0, 'after the outage, every event arrived');
is(it_stats()->{duplicates}, 0, 'after the outage, none twice');

# ---- kill -9 of the postmaster mid-delivery
$it->call('POST', '/_control/config', { latency_ms => 3000 });
$before = outbox_count();
update_customers(120);
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM stripe_sync.outbox WHERE state = 'sending'"), 'a batch is in flight');
my %in_flight = map { $_ => 1 } split /\n/,
  sql("SELECT event_id FROM stripe_sync.outbox WHERE state = 'sending'");
$it->call('POST', '/_control/config', { latency_ms => 0 });
crash_and_restart($node);
wait_delivered('after kill -9', $before + 120);
is(missing(), 0, 'after kill -9 mid-delivery, every event arrived');
my $n = arrivals();
my @twice = grep { $n->{$_} > 1 } keys %$n;
is(scalar(grep { !$in_flight{$_} } @twice), 0,
	'only the batch in flight was sent again (' . scalar(@twice) . ' of ' . scalar(keys %in_flight) . ')');

# ---- 400: dead with the answer; retry_dead() sends them again
# (the five events reach the outbox in one transaction, so one batch carries them)
$it->call('POST', '/_control/faults', { kind => '400', count => 1 });
$before = outbox_count();
sql("SELECT stripe_sync.alter_source('main', enabled => false)");
update_customers(5);
sql("SELECT stripe_sync.sync_now('main')");
sql("SELECT stripe_sync.alter_source('main', enabled => true)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 5 FROM stripe_sync.outbox WHERE state = 'dead'"),
	'a 400 makes the batch dead');
like(sql("SELECT DISTINCT last_error || ' ' || response FROM stripe_sync.outbox WHERE state = 'dead'"),
	qr/HTTP 400 .*injected bad request/, 'the dead rows keep the answer');
is(sql("SELECT stripe_sync.retry_dead()"), '5', 'retry_dead() requeues them');
wait_delivered('after retry_dead', $before + 5);
is(missing(), 0, 'the requeued events arrived');

# ---- 413: the batch is halved until it fits
$it->call('POST', '/_control/config', { max_body_bytes => 6000 });
$before = outbox_count();
my $s413 = it_stats()->{by_status}{413} // 0;
sql("SELECT stripe_sync.alter_source('main', enabled => false)");
update_customers(60);
sql("SELECT stripe_sync.sync_now('main')");
sql("SELECT stripe_sync.alter_source('main', enabled => true)");
wait_delivered('after 413', $before + 60);
cmp_ok(it_stats()->{by_status}{413} // 0, '>', $s413, 'Intempt answered 413');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE state = 'dead'"), '0', 'a 413 kills nothing');
is(missing(), 0, 'after 413, halves delivered everything');
$it->call('POST', '/_control/config', { max_body_bytes => 0 });

# ---- 429 with Retry-After: the next attempt waits that long
$it->call('POST', '/_control/faults', { kind => '429', count => 1, retry_after => 2 });
$before = outbox_count();
update_customers(3);
wait_delivered('after a 429', $before + 3);
my @log = grep { $_->{path} =~ m{/track$} } @{ $it->call('GET', '/_control/requests?limit=20') };
my ($i429) = grep { ($log[$_]{status} // 0) == 429 } 0 .. $#log;
ok(defined $i429 && $i429 < $#log && $log[ $i429 + 1 ]{time} - $log[$i429]{time} >= 1.9,
	'after a 429 with Retry-After: 2, the next attempt came 2 s later')
  or diag(explain(\@log));

# ---- delivered rows are purged after stripe_sync.outbox_retention
$node->append_conf('postgresql.conf', "stripe_sync.outbox_retention = '1s'\n");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM stripe_sync.outbox WHERE state = 'delivered'"),
	'delivered rows are purged after the retention');

# ---- no key in the log, at debug5, nor in the outbox
my $log = slurp_file($node->logfile);
my $basic = encode_base64('pk7Xq:s3cr3tIntemptKey', '');
ok($log !~ /s3cr3tIntemptKey/ && index($log, $basic) < 0, 'the Intempt key is not in the server log');
ok($log !~ /sk_test_fake/, 'the Stripe key is not in the server log');
is(sql("SELECT count(*) FROM stripe_sync.outbox WHERE last_error LIKE '%s3cr3t%' OR response LIKE '%s3cr3t%'"),
	'0', 'nor in the outbox');

$node->stop;
done_testing();
