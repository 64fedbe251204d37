# Nothing stalls a source for good: an object Stripe refuses (a restricted key
# without its read permission) fails alone, in status, while the other objects
# and the events go on; an object that cannot be stored (a \u0000 in jsonb, a
# trigger of the owner's refusing it) goes to stripe_sync.rejected with why,
# the rest of its page is written, and retry_rejected() tries it again.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use StripeTest qw(start_fake new_node);

my $fake = start_fake(counts => { customers => 250, invoices => 30, charges => 120 });
my $node = new_node('isolation', $fake);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
	BEGIN;
	SELECT stripe_sync.create_source('main', server => 'stripe',
	                                 objects => ARRAY['customers', 'invoices', 'charges']);
	SELECT stripe_sync.alter_source('main', enabled => false);
	COMMIT;
});

# ---- a restricted key without the invoices permission: Stripe's 403, as Stripe words it
my $refusal = "The provided key 'rk_test_***1234' does not have the required permissions for this endpoint "
  . "on account 'acct_fake000000000'. Having the 'rak_invoice_read' permission would allow this request to continue.";
$fake->fault(kind => 'status', status => 403, path => '/v1/invoices', count => 1000, message => $refusal);
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT stripe_sync.sync_now('main')});
is($rc, 0, 'a sync with one object refused still ends') or diag($err);
like($err, qr/the backfill of invoices failed; the other objects go on/, '... saying which object failed');
is(sql(q{SELECT count(*) FROM stripe_data.customers}) . '/' . sql(q{SELECT count(*) FROM stripe_data.charges}),
	'250/120', '... the other objects are synced');
is(sql(q{SELECT state, backfill_done FROM stripe_sync.status WHERE source = 'main' AND object = 'invoices'}),
	'error|f', 'status: invoices failed, not backfilled');
like(sql(q{SELECT last_error FROM stripe_sync.status WHERE source = 'main' AND object = 'invoices'}),
	qr/rak_invoice_read/, "... with the permission Stripe names");
is(sql(q{SELECT string_agg(state, ',' ORDER BY object) FROM stripe_sync.status
          WHERE source = 'main' AND object <> 'invoices'}), 'synced,synced', '... the others synced');
is(sql(q{SELECT status FROM stripe_sync.runs WHERE source = 'main' ORDER BY id DESC LIMIT 1}), 'partial',
	'the run is partial');
is(sql(q{SELECT events_cursor IS NOT NULL FROM stripe_sync.status WHERE source = 'main' LIMIT 1}), 't',
	'... and the events step went on');

# the permission granted: the next sync backfills the invoices
$fake->clear_faults;
sql(q{SELECT stripe_sync.sync_now('main')});
is(sql(q{SELECT state || '/' || backfill_done FROM stripe_sync.status WHERE source = 'main' AND object = 'invoices'}),
	'synced/true', 'the permission granted: invoices are backfilled by the next sync');
is(sql(q{SELECT count(*) FROM stripe_data.invoices}), '30', '... all of them');

# ---- objects that cannot be stored go to stripe_sync.rejected, the rest is written
my $bad = $fake->call('POST', '/_control/objects/customers', { name => "nul\x{0}in the name" });
my $refused = $fake->call('POST', '/_control/objects/customers', { name => 'refused by a trigger' });
my $good = $fake->call('POST', '/_control/objects/customers', { name => 'fine' });
sql(qq{
	CREATE FUNCTION stripe_data.no_refused() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
	  IF NEW.name = 'refused by a trigger' THEN
	    RAISE EXCEPTION 'the owner refuses %', NEW.id;
	  END IF;
	  RETURN NEW;
	END \$\$;
	CREATE TRIGGER no_refused BEFORE INSERT OR UPDATE ON stripe_data.customers
	  FOR EACH ROW EXECUTE FUNCTION stripe_data.no_refused();
});
$out = sql(q{SELECT stripe_sync.sync_now('main')});
like($out, qr/"rejected": 2/, 'the sync goes on, two objects set aside');
is(sql("SELECT count(*) FROM stripe_data.customers WHERE id = '$good->{id}'"), '1',
	'... and the good object of their page is written');
is(sql(q{SELECT string_agg(object_id, ' ' ORDER BY object_id) FROM stripe_sync.rejected}),
	join(' ', sort ($bad->{id}, $refused->{id})), 'stripe_sync.rejected holds the two');
like(sql("SELECT error FROM stripe_sync.rejected WHERE object_id = '$bad->{id}'"),
	qr/unsupported Unicode escape sequence/, '... the one with a \u0000, and why');
is(sql("SELECT error FROM stripe_sync.rejected WHERE object_id = '$refused->{id}'"),
	"the owner refuses $refused->{id}", '... the one the trigger refused, and why');
like(sql("SELECT raw FROM stripe_sync.rejected WHERE object_id = '$refused->{id}'"),
	qr/refused by a trigger/, '... with the object as Stripe sent it');
is(sql(q{SELECT rejected FROM stripe_sync.status WHERE source = 'main' AND object = 'customers'}), '2',
	'status counts them');

# the causes fixed: retry_rejected() has the next sync fetch them again
$fake->call('POST', "/_control/objects/customers/$bad->{id}", { name => 'no nul any more' });
sql(q{DROP TRIGGER no_refused ON stripe_data.customers});
is(sql(q{SELECT stripe_sync.retry_rejected('main')}), '2', 'retry_rejected() marks both');
$fake->clear_requests;
sql(q{SELECT stripe_sync.sync_now('main')});
is(scalar(grep { $_->{path} =~ m{^/v1/customers/cus_} } @{ $fake->requests }), 2,
	'... the next sync fetches each again');
is(sql(q{SELECT count(*) FROM stripe_sync.rejected}), '0', '... stores them and forgets them');
is(sql("SELECT name FROM stripe_data.customers WHERE id = '$bad->{id}'"), 'no nul any more',
	'... in their fixed state');

done_testing();
