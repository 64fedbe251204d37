# Lists Stripe inlines only the first page of (an invoice's lines, a
# subscription's items: 10 elements, has_more, the rest at the list's url)
# are read whole (nested.c): the sync's local tables and an FDW scan of attrs
# or of the list's column hold every element, and the list says has_more
# false.  Objects whose lists are whole cost no request more, nor does a scan
# that reads neither attrs nor the list; a sub-list Stripe refuses sets that
# object aside alone.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use StripeTest qw(start_fake new_node disabled_source);

my $fake = start_fake(counts => { customers => 5, products => 3, prices => 4, invoices => 6, subscriptions => 4 });
my $node = new_node('nested', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub nested_requests
{
	return scalar grep { $_->{path} =~ m{^/v1/(invoices/[^/?]+/lines|subscription_items)} } @{ $fake->requests };
}

# the catalogue: every list Stripe's description and current example show inlined
is(sql(q{SELECT count(*) FROM stripe.invoices}), '6', 'seeded invoices are listed');

# ---- an account whose lists are all whole: no request more
sql("CREATE SCHEMA stripe_small");
disabled_source($node, 'small', "objects => ARRAY['invoices', 'subscriptions'], target_schema => 'stripe_small'");
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('small')});
is(nested_requests(), 0, 'lists of 10 elements or fewer: no request for the rest');
is(sql(q{SELECT count(*) FROM stripe_small.invoices WHERE attrs->'lines'->>'has_more' = 'false'}), '6',
	'... and the invoices are stored as Stripe sent them');

# ---- long lists
my $inv = $fake->call('POST', '/_control/nested', { object => 'invoices', count => 25 });
my $sub = $fake->call('POST', '/_control/nested', { object => 'subscriptions', count => 15 });
my $bad = $fake->call('POST', '/_control/nested', { object => 'invoices', count => 12 });
is(scalar @{ $inv->{lines}{data} }, 10, 'Stripe shows 10 of the 25 lines');
ok($inv->{lines}{has_more}, '... and has_more');
# the one whose rest Stripe refuses
$fake->fault(kind => 'status', status => 404, path => "/v1/invoices/$bad->{id}/lines", count => 1000,
	message => 'No such invoice', code => 'resource_missing');

sql("CREATE SCHEMA stripe_data");
disabled_source($node, 'main', "objects => ARRAY['invoices', 'subscriptions'], target_schema => 'stripe_data'");
$fake->clear_requests;
my $out = sql(q{SELECT stripe_sync.sync_now('main')});
like($out, qr/"rejected": [1-9]/, 'the sync goes on, an object set aside');
is(sql(q{SELECT string_agg(object_id, ' ') FROM stripe_sync.rejected}), $bad->{id}, '... that one alone');
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') || ' ' || jsonb_array_length(lines->'data')
	|| ' ' || (attrs->'lines'->>'has_more') FROM stripe_data.invoices WHERE id = '$inv->{id}'"),
	'25 25 false', 'an invoice of 25 lines has 25 in attrs and in lines after the backfill');
is(sql("SELECT count(DISTINCT l->>'id') FROM stripe_data.invoices, jsonb_array_elements(attrs->'lines'->'data') l
	WHERE id = '$inv->{id}'"), '25', '... all different');
is(sql("SELECT jsonb_array_length(attrs->'items'->'data') || ' ' || jsonb_array_length(items->'data')
	FROM stripe_data.subscriptions WHERE id = '$sub->{id}'"),
	'15 15', 'a subscription of 15 items has 15');
is(sql("SELECT count(*) FROM stripe_data.invoices WHERE id = '$bad->{id}'"), '0',
	'the invoice whose lines Stripe refuses is not stored');
like(sql("SELECT error FROM stripe_sync.rejected WHERE object_id = '$bad->{id}'"), qr/No such invoice/,
	'... it is set aside with why');
is(sql("SELECT count(*) FROM stripe_data.invoices"), '7', '... and the other invoices are stored');
# the backfill and the creation events each write the long objects: each time the rest
# comes in one request, after the last element Stripe inlined
my @nested = grep { $_->{path} =~ m{/lines|subscription_items} } @{ $fake->requests };
my $after = $inv->{lines}{data}[9]{id};
my @lines = grep { $_->{path} =~ m{^/v1/invoices/$inv->{id}/lines} } @nested;
cmp_ok(scalar @lines, '>=', 1, 'the rest of the 25 lines was asked for');
is(scalar(grep { $_->{path} eq "/v1/invoices/$inv->{id}/lines?limit=100&starting_after=$after" } @lines),
	scalar @lines, '... each time in one request after the 10th line');
my @items = grep { $_->{path} =~ m{^/v1/subscription_items\?subscription=$sub->{id}&} } @nested;
$after = $sub->{items}{data}[9]{id};
cmp_ok(scalar @items, '>=', 1, 'the rest of the 15 items was asked for');
is(scalar(grep { $_->{path} eq "/v1/subscription_items?subscription=$sub->{id}&limit=100&starting_after=$after" } @items),
	scalar @items, '... each time in one request after the 10th item');
is(scalar @nested, scalar(@lines) + scalar(@items) + scalar(grep { $_->{path} =~ m{^/v1/invoices/$bad->{id}/lines} } @nested),
	'no other request for nested lists');

# ---- an event that changes the list: the object stored whole again
$fake->clear_faults;
$fake->call('POST', '/_control/nested_remove', { object => 'invoices', id => $inv->{id} });
sql(q{SELECT stripe_sync.retry_rejected('main')});
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') FROM stripe_data.invoices WHERE id = '$bad->{id}'"), '12',
	'the refused invoice, read again once Stripe answers: its 12 lines');
is(sql(q{SELECT count(*) FROM stripe_sync.rejected}), '0', '... and no longer set aside');
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') || ' ' || jsonb_array_length(lines->'data')
	FROM stripe_data.invoices WHERE id = '$inv->{id}'"), '24 24',
	'after invoice.updated that took a line out: 24');

# ---- FDW scans
$fake->clear_requests;
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') FROM stripe.invoices WHERE id = '$inv->{id}'"), '24',
	'a retrieve of attrs holds every line');
is(sql("SELECT jsonb_array_length(attrs->'lines'->'data') FROM stripe.invoices ORDER BY 1 DESC LIMIT 1"), '24',
	'a list scan of attrs holds every line');
is(sql("SELECT jsonb_array_length(lines->'data') FROM stripe.invoices WHERE id = '$inv->{id}'"), '24',
	'... so does one of the lines column');
cmp_ok(nested_requests(), '>', 0, '... which asked for the rest');
$fake->clear_requests;
is(sql("SELECT count(id) FROM stripe.invoices"), '8', 'a scan of id alone');
is(sql("SELECT count(*) FROM (SELECT id, status, total FROM stripe.invoices) q"), '8', '... or of other columns');
is(nested_requests(), 0, '... sends no request for the rest');
my $err = $node->psql('postgres', 'SELECT attrs FROM stripe.invoices', stderr => \my $stderr);
is($err, 0, 'a scan of attrs while the refused invoice is gone');
$fake->fault(kind => 'status', status => 404, path => "/v1/invoices/$inv->{id}/lines", count => 1000,
	message => 'No such invoice', code => 'resource_missing');
$err = $node->psql('postgres', 'SELECT attrs FROM stripe.invoices', stderr => \$stderr);
isnt($err, 0, 'a scan of attrs fails when a list cannot be read whole');
like($stderr, qr/No such invoice/, '... with Stripe\'s message');
$fake->clear_faults;

# ---- several objects' lists at once
my @many = map { $fake->call('POST', '/_control/nested', { object => 'invoices', count => 30 })->{id} } 1 .. 6;
$fake->config(latency_ms => 100);
$fake->clear_requests;
is(sql("SELECT string_agg(jsonb_array_length(attrs->'lines'->'data')::text, ' ') FROM stripe.invoices
	WHERE id || '' IN ('" . join("', '", @many) . "')"), '30 30 30 30 30 30', 'six invoices of 30 lines on one list page read whole');
cmp_ok($fake->call('GET', '/_control/stats')->{in_flight_peak}, '>', 1, '... their lines asked for together');
$fake->config(latency_ms => 0);

# ---- a list past 10,000 elements: the first 10,000 kept, with a WARNING
my $huge = $fake->call('POST', '/_control/nested', { object => 'invoices', count => 10050 });
my ($ret, $stdout) = (undef, undef);
$ret = $node->psql('postgres', "SELECT jsonb_array_length(attrs->'lines'->'data') || ' ' || (attrs->'lines'->>'has_more')
	FROM stripe.invoices WHERE id = '$huge->{id}'", stdout => \$stdout, stderr => \$stderr);
is($stdout, '10000 true', 'a list of 10,050 lines: 10,000 kept, has_more still true');
like($stderr, qr/WARNING:  a list of a Stripe invoice holds more than 10000 elements/, '... with a WARNING');

done_testing();
