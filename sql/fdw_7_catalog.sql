-- The special objects of the catalogue: balance as rows per kind and currency, and the
-- objects Stripe lists only under a parent (payment_methods per customer,
-- setup_attempts per setup intent, subscription_items per subscription)
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';

IMPORT FOREIGN SCHEMA stripe
  LIMIT TO (balance, payment_methods, setup_intents, setup_attempts, subscription_items)
  FROM SERVER stripe INTO stripe;

-- the requests a query sends: requests_of(), defined by fdw_5_pushdown
-- the fake's objects of one type, as Stripe has them: fake_objects(), defined by fdw_3_scan

-- ---------- balance ----------
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'stripe.balance'::regclass AND attnum > 0 ORDER BY attnum;
-- one row per element of each top-level array; livemode is the balance's own
SELECT kind, currency, amount, source_types, livemode FROM stripe.balance ORDER BY kind, currency;
SELECT * FROM requests_of('SELECT * FROM stripe.balance');
-- the same rows as the fake's GET /v1/balance: its top-level arrays only (the arrays
-- inside refund_and_dispute_prefunding are not rows)
CREATE TEMP TABLE balance_truth AS
  SELECT k.key AS kind, e->>'currency' AS currency, (e->>'amount')::bigint AS amount,
         e->'source_types' AS source_types, (b->>'livemode')::boolean AS livemode, e AS attrs
    FROM fake('GET', '/_control/balance') b, jsonb_each(b) k, jsonb_array_elements(k.value) e
   WHERE jsonb_typeof(k.value) = 'array';
SELECT (SELECT count(*) FROM balance_truth) AS fake_rows,
       (SELECT count(*) FROM stripe.balance) AS rows,
       (SELECT count(*) FROM (SELECT * FROM balance_truth
                              EXCEPT ALL SELECT kind, currency, amount, source_types, livemode, attrs
                                           FROM stripe.balance) d) AS missing,
       (SELECT count(*) FROM (SELECT kind, currency, amount, source_types, livemode, attrs
                                FROM stripe.balance
                              EXCEPT ALL SELECT * FROM balance_truth) d) AS extra;
-- filters and LIMIT stay here: still the one request, without parameters
EXPLAIN (COSTS OFF) SELECT amount FROM stripe.balance WHERE kind = 'available' AND currency = 'usd';
SELECT * FROM requests_of('SELECT amount FROM stripe.balance WHERE kind = ''pending'' LIMIT 1');
SELECT amount FROM stripe.balance WHERE kind = 'pending' AND currency = 'eur';
-- a hand-written table over the balance takes any columns, in any order
CREATE FOREIGN TABLE balance_amounts (currency text, amount numeric, sort text OPTIONS (field 'kind'))
  SERVER stripe OPTIONS (object 'balance');
SELECT sort, currency, amount FROM balance_amounts WHERE amount <> 0 ORDER BY amount DESC;
SELECT sum(amount) FILTER (WHERE sort = 'available') AS available FROM balance_amounts;

-- ---------- payment_methods, listed per customer ----------
-- the customer with the most payment methods (and an email, for the join below)
SELECT pm->>'customer' AS pm_customer, count(*) AS pm_count
  FROM fake_objects('payment_methods') pm
  JOIN fake_objects('customers') c ON c->>'id' = pm->>'customer'
 WHERE c->>'email' IS NOT NULL
 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1 \gset
SELECT :pm_count AS payment_methods_of_that_customer;
SELECT email AS pm_email FROM stripe.customers WHERE id = :'pm_customer' \gset
-- Stripe's current list of a customer's payment methods: the customer is in the path
SELECT replace(r, :'pm_customer', '<customer>') AS request
  FROM requests_of(format('SELECT * FROM stripe.payment_methods WHERE customer = %L', :'pm_customer')) r;
EXPLAIN (COSTS OFF) SELECT id FROM stripe.payment_methods WHERE customer = 'cus_A' AND type = 'card';
SELECT type, card->>'brand' AS brand, card->>'last4' AS last4, allow_redisplay,
       customer = :'pm_customer' AS right_customer, billing_details->>'email' = :'pm_email' AS right_email
  FROM stripe.payment_methods WHERE customer = :'pm_customer' ORDER BY created, id;
-- the same objects as the fake's
CREATE TEMP TABLE pm_truth AS
  SELECT pm->>'id' AS id, pm->>'type' AS type, to_timestamp((pm->>'created')::bigint) AS created,
         pm->>'customer' AS customer, pm AS attrs
    FROM fake_objects('payment_methods') pm;
SELECT (SELECT count(*) FROM pm_truth WHERE customer = :'pm_customer') AS fake_rows,
       (SELECT count(*) FROM stripe.payment_methods WHERE customer = :'pm_customer') AS rows,
       (SELECT count(*) FROM (SELECT * FROM pm_truth WHERE customer = :'pm_customer'
                              EXCEPT SELECT id, type, created, customer, attrs
                                       FROM stripe.payment_methods WHERE customer = :'pm_customer') d) AS missing,
       (SELECT count(*) FROM (SELECT id, type, created, customer, attrs
                                FROM stripe.payment_methods WHERE customer = :'pm_customer'
                              EXCEPT SELECT * FROM pm_truth) d) AS extra;
-- more filters go along; the order is not Stripe's to give under a parent, so it is sorted
SELECT replace(r, :'pm_customer', '<customer>') AS request
  FROM requests_of(format('SELECT id FROM stripe.payment_methods WHERE customer = %L AND type = ''card'' ORDER BY created DESC', :'pm_customer')) r;
SELECT array_agg(id ORDER BY created DESC, id) =
       (SELECT array_agg(id ORDER BY created DESC, id) FROM pm_truth WHERE customer = :'pm_customer' AND type = 'card')
       AS same_cards
  FROM stripe.payment_methods WHERE customer = :'pm_customer' AND type = 'card';
EXPLAIN (COSTS OFF) SELECT id FROM stripe.payment_methods WHERE customer = 'cus_A' ORDER BY created DESC;
-- LIMIT goes along too
SELECT replace(r, :'pm_customer', '<customer>') AS request
  FROM requests_of(format('SELECT id FROM stripe.payment_methods WHERE customer = %L LIMIT 2', :'pm_customer')) r;
-- a retrieve by id needs no customer
SELECT id AS pm_one FROM pm_truth WHERE customer = :'pm_customer' ORDER BY id LIMIT 1 \gset
SELECT replace(r, :'pm_one', '<pm>') AS request
  FROM requests_of(format('SELECT * FROM stripe.payment_methods WHERE id = %L', :'pm_one')) r;
SELECT customer = :'pm_customer' AS right_customer FROM stripe.payment_methods WHERE id = :'pm_one';
-- a customer Stripe does not know (404) has no payment methods
SELECT count(*) FROM stripe.payment_methods WHERE customer = 'cus_gone';
SELECT * FROM requests_of('SELECT * FROM stripe.payment_methods WHERE customer = ''cus_gone''');

-- without a customer Stripe cannot list them: an error, before any request
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS log_cleared;
SELECT count(*) FROM stripe.payment_methods;
SELECT id FROM stripe.payment_methods WHERE type = 'card';
SELECT count(*) AS requests_sent FROM fake_requests();
EXPLAIN (COSTS OFF) SELECT id FROM stripe.payment_methods;
-- the hint names the column that reads customer
CREATE FOREIGN TABLE cards (id text, owner text OPTIONS (field 'customer'), type text)
  SERVER stripe OPTIONS (object 'payment_methods');
SELECT id FROM cards;
SELECT count(*) = :pm_count AS all_found FROM cards WHERE owner = :'pm_customer';

-- joins supply the customer through a parameterized path
EXPLAIN (COSTS OFF)
SELECT pm.id FROM stripe.customers c JOIN stripe.payment_methods pm ON pm.customer = c.id
 WHERE c.email = 'someone@example.com';
SELECT replace(replace(r, :'pm_customer', '<customer>'), replace(:'pm_email', '@', '%40'), '<email>') AS request
  FROM requests_of(format('SELECT pm.id FROM stripe.customers c JOIN stripe.payment_methods pm ON pm.customer = c.id WHERE c.email = %L', :'pm_email')) r;
SELECT count(*) = :pm_count AS all_found, bool_and(c.id = pm.customer) AS matched
  FROM stripe.customers c JOIN stripe.payment_methods pm ON pm.customer = c.id
 WHERE c.email = :'pm_email';
-- with c.id given, both sides get it
EXPLAIN (COSTS OFF)
SELECT pm.id FROM stripe.customers c JOIN stripe.payment_methods pm ON pm.customer = c.id
 WHERE c.id = 'cus_A';
SELECT count(*) = :pm_count AS all_found
  FROM stripe.customers c JOIN stripe.payment_methods pm ON pm.customer = c.id
 WHERE c.id = :'pm_customer';
-- from a local table of customers: one list per customer
CREATE TEMP TABLE pm_owners AS
  SELECT customer FROM pm_truth GROUP BY customer ORDER BY min(created), customer LIMIT 4;
INSERT INTO pm_owners VALUES ('cus_gone');
ANALYZE pm_owners;
EXPLAIN (COSTS OFF) SELECT o.customer, pm.id FROM pm_owners o JOIN stripe.payment_methods pm ON pm.customer = o.customer;
SELECT count(*) AS requests, count(*) FILTER (WHERE r LIKE 'GET /v1/customers/%/payment_methods?limit=100') AS per_customer
  FROM requests_of('SELECT o.customer, pm.id FROM pm_owners o JOIN stripe.payment_methods pm ON pm.customer = o.customer') r;
SELECT (SELECT array_agg(pm.id ORDER BY pm.id) FROM pm_owners o JOIN stripe.payment_methods pm ON pm.customer = o.customer) =
       (SELECT array_agg(t.id ORDER BY t.id) FROM pm_owners o JOIN pm_truth t ON t.customer = o.customer)
       AS same_join;
-- a join that cannot give the customer to the scan (payment methods on the outer side)
SELECT count(*) FROM stripe.payment_methods pm LEFT JOIN pm_owners o ON o.customer = pm.customer;

-- ---------- setup_attempts, listed per setup intent ----------
SELECT sa->>'setup_intent' AS si_id, count(*) AS si_attempts
  FROM fake_objects('setup_attempts') sa GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1 \gset
SELECT :si_attempts AS attempts_of_that_intent;
SELECT replace(r, :'si_id', '<setup_intent>') AS request
  FROM requests_of(format('SELECT * FROM stripe.setup_attempts WHERE setup_intent = %L', :'si_id')) r;
SELECT status, setup_error->>'code' AS error, setup_intent = :'si_id' AS right_intent
  FROM stripe.setup_attempts WHERE setup_intent = :'si_id' ORDER BY created, id;
SELECT (SELECT array_agg(id ORDER BY id) FROM stripe.setup_attempts WHERE setup_intent = :'si_id') =
       (SELECT array_agg(sa->>'id' ORDER BY sa->>'id') FROM fake_objects('setup_attempts') sa
         WHERE sa->>'setup_intent' = :'si_id') AS same_attempts;
-- Stripe has no retrieve for them: id alone is not enough, and with the setup intent it
-- is a local filter on the list
SELECT * FROM stripe.setup_attempts WHERE id = 'setatt_A';
EXPLAIN (COSTS OFF) SELECT * FROM stripe.setup_attempts WHERE id = 'setatt_A' AND setup_intent = 'seti_A';
-- created ranges go along
SELECT replace(r, :'si_id', '<setup_intent>') AS request
  FROM requests_of(format('SELECT * FROM stripe.setup_attempts WHERE setup_intent = %L AND created >= ''2023-11-14 22:13:20+00''', :'si_id')) r;
-- joined from setup intents
SELECT si->>'customer' AS si_customer FROM fake_objects('setup_intents') si WHERE si->>'id' = :'si_id' \gset
EXPLAIN (COSTS OFF)
SELECT sa.id FROM stripe.setup_intents si JOIN stripe.setup_attempts sa ON sa.setup_intent = si.id
 WHERE si.customer = 'cus_A';
SELECT count(*) = :si_attempts AS all_found, bool_and(sa.setup_intent = si.id) AS matched,
       count(*) FILTER (WHERE sa.id = si.latest_attempt) AS latest
  FROM stripe.setup_intents si JOIN stripe.setup_attempts sa ON sa.setup_intent = si.id
 WHERE si.customer = :'si_customer';

-- ---------- subscription_items, listed per subscription ----------
SELECT s->>'id' AS sub_id, s->>'customer' AS sub_customer, s->'items'->'data'->0->>'id' AS item_id
  FROM fake_objects('subscriptions') s
 WHERE jsonb_array_length(s->'items'->'data') > 0 AND s->>'customer' IS NOT NULL
 ORDER BY s->>'id' LIMIT 1 \gset
SELECT replace(r, :'sub_id', '<subscription>') AS request
  FROM requests_of(format('SELECT * FROM stripe.subscription_items WHERE subscription = %L', :'sub_id')) r;
SELECT (SELECT array_agg(id || ':' || quantity || ':' || (price->>'id') ORDER BY id)
          FROM stripe.subscription_items WHERE subscription = :'sub_id') =
       (SELECT array_agg((i->>'id') || ':' || (i->>'quantity') || ':' || (i->'price'->>'id') ORDER BY i->>'id')
          FROM fake_objects('subscriptions') s, jsonb_array_elements(s->'items'->'data') i
         WHERE s->>'id' = :'sub_id') AS same_items;
SELECT count(*) FROM stripe.subscription_items;
-- a retrieve by id exists for them
SELECT replace(r, :'item_id', '<item>') AS request
  FROM requests_of(format('SELECT * FROM stripe.subscription_items WHERE id = %L', :'item_id')) r;
SELECT subscription = :'sub_id' AS right_subscription FROM stripe.subscription_items WHERE id = :'item_id';
EXPLAIN (COSTS OFF)
SELECT it.id FROM stripe.subscriptions s JOIN stripe.subscription_items it ON it.subscription = s.id
 WHERE s.customer = 'cus_A';
SELECT (SELECT array_agg(it.id ORDER BY it.id)
          FROM stripe.subscriptions s JOIN stripe.subscription_items it ON it.subscription = s.id
         WHERE s.customer = :'sub_customer') =
       (SELECT array_agg(i->>'id' ORDER BY i->>'id')
          FROM fake_objects('subscriptions') s, jsonb_array_elements(s->'items'->'data') i
         WHERE s->>'customer' = :'sub_customer') AS same_join;
-- three tables: one list of items per active subscription (the README's example)
EXPLAIN (COSTS OFF)
SELECT c.email, it.price->>'id', it.quantity
  FROM stripe.subscriptions s JOIN stripe.customers c ON c.id = s.customer
  JOIN stripe.subscription_items it ON it.subscription = s.id
 WHERE s.status = 'active';
SELECT count(*) AS items,
       count(*) = (SELECT count(*) FROM fake_objects('subscriptions') s, jsonb_array_elements(s->'items'->'data') i
                    WHERE s->>'status' = 'active') AS all_found
  FROM stripe.subscriptions s JOIN stripe.customers c ON c.id = s.customer
  JOIN stripe.subscription_items it ON it.subscription = s.id
 WHERE s.status = 'active';
