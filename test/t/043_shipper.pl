# The shipper serves every source, each at its own pace:
# - isolation: source a_down's destination (its own fake Intempt) answers
#   503 to everything; source b_up's events, written after a_down's, are all
#   delivered meanwhile, and a_down's once its destination is back;
# - 413: a batch that is too large is sent again in halves, and the batch
#   grows back towards stripe_sync.outbox_batch_size (set to 50) after 10 successes, as
#   the sizes of the requests the fake Intempt received show.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake start_intempt new_node add_intempt);

my $N = 300;
my $fake = start_fake(counts => { customers => $N });
my %it = map { $_ => start_intempt(api_key => "pk$_.s3cr3t$_", source_id => "src$_") } qw(a b c);
# one batch in flight, of at most 50 events: the sizes of the requests are then
# the shipper's choice alone
my $node = new_node('shipper', $fake, "stripe_sync.naptime = 1\nstripe_sync.database = 'postgres'\n"
	  . "stripe_sync.outbox_batch_size = 50\nstripe_sync.outbox_concurrency = 1\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub create_source
{
	my ($name, $dest) = @_;
	sql("CREATE SCHEMA $name; SELECT stripe_sync.create_source('$name', server => 'stripe', "
		  . "target_schema => '$name', objects => ARRAY['customers'], destination => '$dest')");
}

add_intempt($node, $it{$_}, name => "intempt_$_") for qw(a b c);

# ---- isolation
$it{a}->call('POST', '/_control/faults', { kind => 'down', seconds => 3600 });
create_source('a_down', 'intempt_a');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $N AND bool_and(state <> 'delivered') AND bool_or(attempts > 0) "
	  . "FROM stripe_sync.outbox WHERE source = 'a_down'"),
	"a_down's history waits: its destination refuses it");
create_source('b_up', 'intempt_b');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $N AND bool_and(state = 'delivered') FROM stripe_sync.outbox WHERE source = 'b_up'"),
	"b_up's history, written after a_down's, is all delivered meanwhile");
is($it{b}->call('GET', '/_control/stats')->{events}, $N, '... each event once');
# (a retry may have a batch in flight: sending, not delivered)
is(sql("SELECT count(*) FILTER (WHERE state IN ('pending', 'sending')) || ' of ' || count(*) "
	  . "FROM stripe_sync.outbox WHERE source = 'a_down'"), "$N of $N", "a_down's events still wait");
my $a_stats = $it{a}->call('GET', '/_control/stats');
is("$a_stats->{events} events, " . ($a_stats->{by_status}{503} > 0 ? 'refused' : 'not tried'),
	'0 events, refused', "... and its destination took none ($a_stats->{by_status}{503} tries refused)");
$it{a}->call('DELETE', '/_control/faults');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $N AND bool_and(state = 'delivered') FROM stripe_sync.outbox WHERE source = 'a_down'"),
	"once a_down's destination is back, its events are delivered");
is($it{a}->call('GET', '/_control/stats')->{events}, $N, '... each once');

# ---- 413: the same history again, for a third source; its destination takes
# 25 events in a request and not 50.  The payloads do not depend on the source:
# a_down's give the sizes of the requests.
my ($max25, $min50) = split /\|/, sql(q{
	WITH r AS (SELECT id, length(payload::text) + 1 AS len FROM stripe_sync.outbox WHERE source = 'a_down'),
	w AS (SELECT sum(len) OVER (ORDER BY id ROWS BETWEEN CURRENT ROW AND 24 FOLLOWING) AS s25,
	             sum(len) OVER (ORDER BY id ROWS BETWEEN CURRENT ROW AND 49 FOLLOWING) AS s50,
	             count(*) OVER (ORDER BY id ROWS BETWEEN CURRENT ROW AND 49 FOLLOWING) AS n50
	        FROM r)
	SELECT max(s25), min(s50) FILTER (WHERE n50 = 50) FROM w});
my $limit = int(($max25 + $min50) / 2);
cmp_ok($max25 + 100, '<', $limit, "25 events fit in $limit bytes, with the body's frame ($max25 bytes of them)");
cmp_ok($limit, '<', $min50, "50 events do not ($min50 bytes at the least)");
$it{c}->call('POST', '/_control/config', { max_body_bytes => $limit });
# the rows commit together: the shipper finds them all at once
sql("CREATE SCHEMA c_413; BEGIN; SELECT stripe_sync.create_source('c_413', server => 'stripe', "
	  . "target_schema => 'c_413', objects => ARRAY['customers'], destination => 'intempt_c'); "
	  . "SELECT stripe_sync.alter_source('c_413', enabled => false); COMMIT; "
	  . "SELECT stripe_sync.sync_now('c_413');");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $N AND bool_and(state = 'delivered') FROM stripe_sync.outbox WHERE source = 'c_413'"),
	"with 413s, c_413's $N events are delivered");
is($it{c}->call('GET', '/_control/stats')->{events}, $N, '... each once');
my @sizes = map { "$_->{status}:" . ($_->{status} == 413 ? $_->{oversized_events} : $_->{events}) }
  grep { $_->{path} =~ m{/track$} } @{ $it{c}->call('GET', '/_control/requests') };
# halves by events and by bytes: a half of 50 events' body holds 24 or 25
my $half = qr/200:(?:1\d|2[0-5])/;
like(join(' ', @sizes), qr/^413:50(?: $half){10} 413:(?:2[6-9]|[3-5]\d)(?: $half)+$/,
	'50 refused, then halves (25 or fewer); after 10 successes more than 25 again, refused, and halves again');

$node->stop;
done_testing();
