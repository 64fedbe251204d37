-- Writes: INSERT / UPDATE / DELETE with RETURNING, nested parameters,
-- idempotent retries, and Stripe's own message for bad input
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SET stripe_sync.retry_base_delay = '10ms';
IMPORT FOREIGN SCHEMA stripe LIMIT TO (products, prices, coupons) FROM SERVER stripe INTO stripe;

EXPLAIN (COSTS OFF) INSERT INTO stripe.customers (email, name) VALUES ('a@b.c', 'A');

SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
INSERT INTO stripe.customers (email, name, metadata)
  VALUES ('new@example.com', 'New Customer', '{"plan": "gold", "tier": "2"}')
  RETURNING id LIKE 'cus_%' AS has_id, email, name, metadata, created IS NOT NULL AS has_created;
SELECT r->>'method' AS method, r->>'path' AS path, r->>'idempotency_key' LIKE 'stripe_sync-%' AS keyed
  FROM jsonb_array_elements(fake('GET', '/_control/requests')->'requests') r;
SELECT id AS new_id FROM stripe.customers WHERE email = 'new@example.com' \gset
SELECT name, metadata FROM stripe.customers WHERE id = :'new_id';

-- UPDATE sends only the columns set; NULL unsets
UPDATE stripe.customers SET name = 'Renamed', metadata = '{"plan": "platinum"}'
  WHERE id = :'new_id' RETURNING name, metadata->>'plan' AS plan, email;
UPDATE stripe.customers SET description = 'vip' WHERE email = 'new@example.com' RETURNING description;
UPDATE stripe.customers SET description = NULL WHERE id = :'new_id' RETURNING description IS NULL AS unset;
-- Stripe's metadata values are strings: a nested value is Stripe's 400, param and all
INSERT INTO stripe.customers (email, metadata) VALUES ('nested@example.com', '{"tier": {"level": 2}}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM stripe.customers WHERE email = 'nested@example.com';

-- an id that is not there updates and deletes nothing: Stripe answered 404
CREATE FUNCTION fake_log() RETURNS TABLE (method text, path text, status int) LANGUAGE sql AS $$
  SELECT r->>'method', r->>'path', (r->>'status')::int
    FROM jsonb_array_elements(fake('GET', '/_control/requests')->'requests') r $$;
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
UPDATE stripe.customers SET name = 'x' WHERE id = 'cus_missing' RETURNING id;
SELECT * FROM fake_log();
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
DELETE FROM stripe.customers WHERE id = 'cus_missing' RETURNING id;
SELECT * FROM fake_log();

-- the first attempt is carried out but its answer is lost on the way (cut short): the
-- retry reuses the Idempotency-Key, so Stripe (here the fake) replays the saved answer
-- and creates exactly one product
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT fake('POST', '/_control/faults', '{"kind": "truncate", "count": 1, "path": "/v1/products"}') IS NOT NULL AS injected;
INSERT INTO stripe.products (name, active) VALUES ('Retried product', true) RETURNING name, active;
CREATE FUNCTION post_attempts(OUT attempts bigint, OUT keys bigint) LANGUAGE sql AS $$
  SELECT count(*), count(DISTINCT r->>'idempotency_key')
    FROM jsonb_array_elements(fake('GET', '/_control/requests')->'requests') r WHERE r->>'method' = 'POST' $$;
SELECT * FROM post_attempts();
SELECT count(*) AS products_named_so FROM stripe.products WHERE name = 'Retried product';
-- the first attempt is carried out and answered 500: Stripe saves that answer and
-- replays it to the same key, so the retry gets the 500 again (Idempotent-Replayed);
-- the ERROR says so after that one retry, and there is one product, not two
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT fake('POST', '/_control/faults', '{"kind": "500", "count": 1, "path": "/v1/products", "after": true}') IS NOT NULL AS injected;
INSERT INTO stripe.products (name, active) VALUES ('Failed product', true) RETURNING name, active;
SELECT * FROM post_attempts();
SELECT count(*) AS products_named_so FROM stripe.products WHERE name = 'Failed product';

-- prices and nested parameters (recurring[interval])
SELECT id AS prod FROM stripe.products WHERE name = 'Retried product' \gset
INSERT INTO stripe.prices (product, currency, unit_amount, recurring)
  VALUES (:'prod', 'usd', 1500, '{"interval": "month"}')
  RETURNING product = :'prod' AS same_product, unit_amount, recurring->>'interval' AS every;
-- prices cannot be deleted in Stripe: archive them
DELETE FROM stripe.prices WHERE product = :'prod';

-- bad input: Stripe's message is the detail
INSERT INTO stripe.prices (currency) VALUES ('usd');
\echo :LAST_ERROR_SQLSTATE

-- DELETE, with RETURNING of Stripe's answer
DELETE FROM stripe.customers WHERE id = :'new_id' RETURNING id = :'new_id' AS deleted_it;
SELECT count(*) FROM stripe.customers WHERE id = :'new_id';
DELETE FROM stripe.customers WHERE id = :'new_id' RETURNING id;

-- subscriptions: DELETE cancels
SELECT id AS sub FROM stripe.subscriptions WHERE status = 'active' LIMIT 1 \gset
DELETE FROM stripe.subscriptions WHERE id = :'sub' RETURNING status;
SELECT status FROM stripe.subscriptions WHERE id = :'sub';

-- objects Stripe does not let us change
INSERT INTO stripe.charges (amount) VALUES (100);
