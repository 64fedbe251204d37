-- What real Stripe does that an example object or a lenient fake would hide (issue 13):
-- lists that leave objects out unless asked (inactive prices, objects on test clocks),
-- numbers that are not integers (tax rates), an object without a list (mandates), and
-- a filter value outside Stripe's enum, which Stripe answers with a 400
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';
IMPORT FOREIGN SCHEMA stripe LIMIT TO (tax_rates, mandates) FROM SERVER stripe INTO stripe;

-- ---------- prices: Stripe lists the active ones unless asked for active=false ----------
-- every price, the archived ones too (old subscriptions still point at them): two lists
SELECT (SELECT count(*) FROM fake_objects('prices')) AS fake_prices,
       (SELECT count(*) FROM fake_objects('prices') p WHERE NOT (p->>'active')::boolean) AS inactive,
       (SELECT count(*) FROM stripe.prices) AS rows,
       (SELECT count(*) FROM stripe.prices WHERE NOT active) AS inactive_rows;
SELECT * FROM requests_of('SELECT * FROM stripe.prices');
EXPLAIN (COSTS OFF) SELECT * FROM stripe.prices;
-- an active qual is one list; two lists are not one newest-first order: a sort
SELECT * FROM requests_of('SELECT * FROM stripe.prices WHERE active = false');
EXPLAIN (COSTS OFF) SELECT id FROM stripe.prices ORDER BY created DESC LIMIT 3;
SELECT array_agg(id) = (SELECT array_agg(id) FROM (SELECT p->>'id' AS id FROM fake_objects('prices') p
                                                  ORDER BY (p->>'created')::bigint DESC, p->>'id' DESC LIMIT 3) t)
         AS newest_three
  FROM (SELECT id FROM stripe.prices ORDER BY created DESC, id DESC LIMIT 3) s;

-- ---------- tax rates: percentage is a number, 8.875 as well as 19 ----------
SELECT format_type(atttypid, atttypmod) AS percentage_type
  FROM pg_attribute WHERE attrelid = 'stripe.tax_rates'::regclass AND attname = 'percentage';
SELECT fake('POST', '/_control/objects/tax_rates',
            '{"id": "txr_ny", "percentage": 8.875, "display_name": "Sales tax", "created": 1700000000}') IS NOT NULL AS made;
SELECT fake('POST', '/_control/objects/tax_rates',
            '{"id": "txr_de", "percentage": 19, "display_name": "VAT", "created": 1700000001}') IS NOT NULL AS made;
SELECT id, percentage, display_name FROM stripe.tax_rates ORDER BY id;
SELECT percentage FROM stripe.tax_rates WHERE id = 'txr_ny';

-- ---------- mandates: Stripe has no list, only a retrieve by id ----------
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT count(*) FROM stripe.mandates;
SELECT * FROM fake_requests();
EXPLAIN (COSTS OFF) SELECT * FROM stripe.mandates;
EXPLAIN (COSTS OFF) SELECT * FROM stripe.mandates WHERE id = 'mandate_x';
SELECT * FROM stripe_sync.objects WHERE object = 'mandates';

-- ---------- a value outside a filter's enum: not sent, the same rows as without pushdown ----------
-- Stripe answers status=activ with 400 "Invalid status: must be one of …"
SELECT count(*) AS misspelt FROM stripe.subscriptions WHERE status = 'activ';
SELECT * FROM requests_of('SELECT * FROM stripe.subscriptions WHERE status = ''activ''');
SELECT same_result('stripe.subscriptions', 'status = ''activ''') AS same;
-- a value Stripe knows is sent; one of another enum's is not (prices.type)
SELECT * FROM requests_of('SELECT * FROM stripe.subscriptions WHERE status = ''paused''');
SELECT * FROM requests_of('SELECT * FROM stripe.prices WHERE type = ''monthly''');
SELECT count(*) FROM stripe.invoices WHERE status = 'lost' OR status = 'paid' AND false;
PREPARE by_status(text) AS SELECT count(*) FROM stripe.subscriptions WHERE status = $1;
EXECUTE by_status('trialling');
EXECUTE by_status('trialing') ;
SELECT count(*) = (SELECT count(*) FROM fake_objects('subscriptions') s WHERE s->>'status' = 'trialing') AS trialing_all
  FROM stripe.subscriptions WHERE status = 'trialing';

-- ---------- test clocks: Stripe lists their customers and subscriptions only per clock ----------
SELECT fake('POST', '/_control/objects/test_clocks', '{"id": "clock_A", "name": "A", "frozen_time": 1700000000}') IS NOT NULL AS clock;
SELECT fake('POST', '/_control/objects/customers',
            '{"id": "cus_clocked", "email": "clocked@example.com", "test_clock": "clock_A", "created": 1700000000}') IS NOT NULL AS customer;
-- a plain scan is Stripe's plain list: no customer on a test clock (as in Stripe's Dashboard lists)
SELECT count(*) AS plain FROM stripe.customers WHERE id LIKE 'cus_clocked%' OR email = 'clocked@example.com';
-- the test_clock qual is sent, and the clock's customers come
SELECT id, test_clock FROM stripe.customers WHERE test_clock = 'clock_A';
SELECT * FROM requests_of('SELECT * FROM stripe.customers WHERE test_clock = ''clock_A''');
SELECT id FROM stripe.customers WHERE id = 'cus_clocked';
-- the tests after this one see the fake as it was
SELECT fake('DELETE', '/_control/objects/customers/cus_clocked') IS NOT NULL AS removed;
