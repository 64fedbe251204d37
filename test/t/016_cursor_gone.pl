# A list's cursor names an object Stripe no longer lists: deleted, or (for a
# filtered list) no longer taken by the filter.  Stripe answers the next page
# 400 resource_missing on starting_after.  A scan goes on from the cursor's
# created second (created[lte]), skipping what it already returned in that
# second; a backfill resumes its window from that second (upserts make the
# overlap harmless).  More than a page of objects in that one second, nothing
# is returned twice, nothing is missed, nothing loops.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 350 });
my $node = new_node('cursor', $fake,
	"stripe_sync.max_concurrent_requests = 1\nstripe_sync.backfill_helpers = 0\n");
my $url = $fake->url;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# 250 customers created in one second, the newest of the account
my $t0 = 1750000000;
$fake->call('POST', '/_control/objects/customers', { created => $t0, email => 'same@example.com' })
  for 1 .. 250;
my $total = scalar @{ $fake->objects('customers') };

# A scan that reads the first $n rows, then has the fake apply $change to the last
# row read (before the scan asks for the next page), then reads the rest.  The rows
# land in scan_rows(id).
sub scan_changing_last
{
	my ($query, $n, $change) = @_;
	my ($method, $body) = @$change;
	my $curl = "curl -s -X $method " . ($body ? "-H 'Content-Type: application/json' -d '$body' " : '')
	  . "$url/_control/objects/customers/";
	$curl =~ s/'/''/g;
	return $node->psql('postgres', qq{
		DROP TABLE IF EXISTS scan_rows, sink;
		CREATE TABLE scan_rows (id text);
		CREATE TABLE sink (line text);
		DO \$\$
		DECLARE
		  c refcursor;
		  r record;
		  n int := 0;
		BEGIN
		  OPEN c FOR $query;
		  LOOP
		    FETCH c INTO r;
		    EXIT WHEN NOT FOUND;
		    INSERT INTO scan_rows VALUES (r.id);
		    n := n + 1;
		    IF n = $n THEN
		      EXECUTE format('COPY sink FROM PROGRAM %L WITH (FORMAT csv, QUOTE e''\\x01'', DELIMITER e''\\x02'')',
		                     '$curl' || r.id);
		    END IF;
		  END LOOP;
		END \$\$;
	});
}

# ---- a scan whose cursor object is deleted between two pages, in a second of 250
$fake->clear_requests;
my ($rc, $out, $err) = scan_changing_last('SELECT id FROM stripe.customers', 100, [ 'DELETE', undef ]);
is($rc, 0, 'a scan goes on when the object its cursor names is deleted') or diag($err);
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT id) FROM scan_rows}), "$total $total",
	'... every object once, the deleted one included (it was read before)');
my @pages = grep { $_->{path} =~ m{^/v1/customers\?} } @{ $fake->requests };
like(join(' ', map { $_->{path} } @pages), qr/created%5Blte%5D=$t0(?!\d)/,
	'... from the cursor\'s second (created[lte])');
cmp_ok(scalar(@pages), '<=', 9, '... in ' . scalar(@pages) . ' requests');

# ---- a filtered scan whose cursor object no longer matches the filter
$total = scalar grep { ($_->{email} // '') eq 'same@example.com' } @{ $fake->objects('customers') };
($rc, $out, $err) = scan_changing_last(q{SELECT id FROM stripe.customers WHERE email = 'same@example.com'},
	100, [ 'POST', '{"email": "moved@example.com"}' ]);
is($rc, 0, 'a filtered scan goes on when its cursor object leaves the filter') or diag($err);
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT id) FROM scan_rows}), "$total $total",
	'... every object once');

# ---- a backfill resumes past its cursor object, deleted while the sync was away
disabled_source($node, 'main', q{objects => ARRAY['customers']});
# the first page commits, the next are refused: the sync stops with its cursor
$fake->fault(kind => 'status', status => 403, path => '/v1/customers?limit=100&starting_after=',
	count => 1000);
sql(q{SELECT stripe_sync.sync_now('main')});
$fake->clear_faults;
my $after = sql(q{SELECT backfill_cursor::jsonb->'windows'->0->>'after' FROM stripe_sync.object_state
                   WHERE source = 'main' AND object = 'customers'});
like($after, qr/^cus_/, 'a backfill stopped after its first page keeps its cursor');
is(sql("SELECT extract(epoch FROM created)::bigint FROM stripe_data.customers WHERE id = '$after'"), $t0,
	'... in the second of 250');
$fake->call('DELETE', "/_control/objects/customers/$after");
$fake->clear_requests;
($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is(sql(q{SELECT state || ' ' || backfill_done FROM stripe_sync.status WHERE source = 'main'}), 'synced true',
	'the next sync resumes past the deleted cursor object and finishes the backfill') or diag($err);
@pages = grep { $_->{path} =~ m{^/v1/customers\?} } @{ $fake->requests };
like(join(' ', map { $_->{path} } @pages), qr/created%5Blt%5D=@{[$t0 + 1]}(?!\d)/,
	'... from the cursor\'s second');
cmp_ok(scalar(@pages), '<=', 9, '... in ' . scalar(@pages) . ' requests');
my %live = map { $_->{id} => 1 } @{ $fake->objects('customers') };
is(sql(q{SELECT count(*) FROM stripe_data.customers WHERE deleted_at IS NULL}), scalar(keys %live),
	'... every object the account has');
is(sql("SELECT deleted_at IS NOT NULL FROM stripe_data.customers WHERE id = '$after'"), 't',
	'... and the deleted one marked by its event');

done_testing();
