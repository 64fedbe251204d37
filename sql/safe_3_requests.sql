-- Nothing loops, and nothing reaches a request path Stripe's grammar does not allow
\set SHOW_CONTEXT never
\set VERBOSITY default
SET stripe_sync.max_retries = 0;

-- a page whose last id is the previous page's cursor: an error after that page
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT hostile('/v1/customers?', page('{"id": "cus_a", "object": "customer"}', true), count => 20);
SELECT count(*) FROM stripe.customers;
SELECT * FROM fake_requests();
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
-- an empty page that says there is more: an error, not an empty result
SELECT hostile('/v1/customers?', page('', true));
SELECT count(*) FROM stripe.customers;
-- a page with more whose last object has no usable id
SELECT hostile('/v1/customers?', page('{"id": "cus_a", "object": "customer"}, {"id": 5, "object": "customer"}', true));
SELECT count(*) FROM stripe.customers;
SELECT hostile('/v1/customers?', page('{"id": "cus_a", "object": "customer"}, {"id": "", "object": "customer"}', true));
SELECT count(*) FROM stripe.customers;
-- a page without more ends the scan, however it ends
SELECT hostile('/v1/customers?', page('{"id": "cus_a", "object": "customer"}, {"id": null, "object": "customer"}'));
SELECT count(*) FROM stripe.customers;
SELECT hostile('/v1/customers?', page(''));
SELECT count(*) FROM stripe.customers;

-- a page of far more objects than Stripe's 100 is refused, not held in memory
SELECT after_answer('/v1/customers?', page(string_agg('{}', ',')), 200, 'SELECT count(*) FROM stripe.customers')
  FROM generate_series(1, 1001);
SELECT after_answer('/v1/customers?', page(string_agg('{}', ',')), 200, 'SELECT count(*) FROM stripe.customers')
  FROM generate_series(1, 1000);

-- the object path: lower-case letters, digits and _, in segments separated by single /
CREATE FOREIGN TABLE stripe."../../admin?x=1#" (id text) SERVER stripe;
CREATE FOREIGN TABLE stripe."Customers" (id text) SERVER stripe;
CREATE FOREIGN TABLE stripe."customers/" (id text) SERVER stripe;
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT * FROM stripe."../../admin?x=1#";
EXPLAIN (COSTS OFF) SELECT * FROM stripe."../../admin?x=1#";
SELECT * FROM stripe."Customers";
SELECT * FROM stripe."customers/" WHERE id = 'cus_1';
SELECT * FROM fake_requests();
-- an object option makes any table name fine
ALTER FOREIGN TABLE stripe."Customers" OPTIONS (ADD object 'customers');
SELECT count(*) > 1000 AS listed FROM stripe."Customers";
DROP FOREIGN TABLE stripe."../../admin?x=1#", stripe."Customers", stripe."customers/";
-- the option is checked when it is set
CREATE FOREIGN TABLE bad_path (id text) SERVER stripe OPTIONS (object 'Customers');
CREATE FOREIGN TABLE bad_path (id text) SERVER stripe OPTIONS (object 'customers/../account');
CREATE FOREIGN TABLE bad_path (id text) SERVER stripe OPTIONS (object 'customers?limit=1');
CREATE FOREIGN TABLE bad_path (id text) SERVER stripe OPTIONS (object 'cüstomers');
CREATE FOREIGN TABLE good_path (id text) SERVER stripe OPTIONS (object 'billing/meter_events2');
ALTER FOREIGN TABLE good_path OPTIONS (SET object 'x//y');
ALTER FOREIGN TABLE good_path OPTIONS (SET object '/customers');
ALTER FOREIGN TABLE good_path OPTIONS (SET object 'customers');
DROP FOREIGN TABLE good_path;

-- ids never become dot segments (or an empty one): no such object, no request
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT count(*) FROM stripe.customers WHERE id = '..';
SELECT count(*) FROM stripe.customers WHERE id = '.';
SELECT count(*) FROM stripe.customers WHERE id = '';
SELECT count(*) FROM stripe.customers WHERE id IN ('..', '.', '', 'cus_missing');
SELECT count(*) FROM stripe.customers WHERE id = ANY(ARRAY['..']);
PREPARE by_id(text) AS SELECT count(*) FROM stripe.customers WHERE id = $1;
EXECUTE by_id('..');
SELECT * FROM fake_requests();
-- a dot id from a join is no row either
CREATE TEMP TABLE dot_ids (id text);
INSERT INTO dot_ids VALUES ('..'), ('.');
ANALYZE dot_ids;
SELECT count(*) FROM dot_ids d JOIN stripe.customers c ON c.id = d.id;
-- an id with dots inside is an id like any other
SELECT count(*) FROM stripe.customers WHERE id = '...';
SELECT count(*) FROM stripe.customers WHERE id = 'a/../..';
SELECT * FROM fake_requests();

-- parents in the path: /v1/customers/{customer}/payment_methods
CREATE SCHEMA safe;
IMPORT FOREIGN SCHEMA stripe LIMIT TO (payment_methods) FROM SERVER stripe INTO safe;
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT count(*) FROM safe.payment_methods WHERE customer = '..';
SELECT count(*) FROM safe.payment_methods WHERE customer = '.';
SELECT count(*) FROM safe.payment_methods WHERE customer = '';
SELECT count(*) FROM dot_ids d JOIN safe.payment_methods p ON p.customer = d.id;
SELECT * FROM fake_requests();

-- UPDATE and DELETE of an object whose id is a dot segment: no row, no request
SELECT hostile('/v1/customers?', page('{"id": "..", "object": "customer", "email": "dots@example.com"}, {"id": ".", "object": "customer", "email": "dots@example.com"}'));
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
DELETE FROM stripe.customers WHERE email = 'dots@example.com';
SELECT hostile('/v1/customers?', page('{"id": "..", "object": "customer", "email": "dots@example.com"}'));
UPDATE stripe.customers SET name = 'x' WHERE email = 'dots@example.com';
SELECT * FROM fake_requests();
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;

-- an infinite time has no Unix seconds to send
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
INSERT INTO stripe.customers (email, created) VALUES ('inf@example.com', 'infinity');
SELECT * FROM fake_requests();
