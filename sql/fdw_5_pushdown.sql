-- Pushdown: the exact requests sent, and results equal to the same query
-- with pushdown made impossible (the qual behind OFFSET 0)
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';

CREATE FUNCTION requests_of(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fake('DELETE', '/_control/requests');
  EXECUTE q;
  RETURN QUERY SELECT * FROM fake_requests();
END $$;
-- same rows with and without pushdown
CREATE FUNCTION same_result(tab text, qual text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  pushed text[];
  local text[];
BEGIN
  EXECUTE format('SELECT array_agg(id ORDER BY id) FROM %s WHERE %s', tab, qual) INTO pushed;
  EXECUTE format('SELECT array_agg(id ORDER BY id) FROM (SELECT * FROM %s OFFSET 0) s WHERE %s', tab, qual) INTO local;
  RETURN pushed IS NOT DISTINCT FROM local;
END $$;

SELECT id AS c1 FROM stripe.customers ORDER BY created, id LIMIT 1 \gset
SELECT id AS c2 FROM stripe.customers ORDER BY created, id OFFSET 1 LIMIT 1 \gset
SELECT id AS ch1 FROM stripe.charges WHERE customer IS NOT NULL ORDER BY created, id LIMIT 1 \gset
SELECT customer AS ch1_customer, payment_intent AS ch1_pi FROM stripe.charges WHERE id = :'ch1' \gset

-- id = and id IN / = ANY: one retrieve per distinct id, 404s are no rows
SELECT * FROM requests_of(format('SELECT * FROM stripe.customers WHERE id = %L', :'c1'));
SELECT * FROM requests_of(format('SELECT * FROM stripe.customers WHERE id IN (%L, %L, %L, ''cus_gone'')', :'c1', :'c2', :'c1'));
SELECT count(*) FROM stripe.customers WHERE id IN (:'c1', :'c2', 'cus_gone');
SELECT same_result('stripe.customers', format('id IN (%L, %L, ''cus_gone'')', :'c1', :'c2'));
SELECT count(*) FROM stripe.customers WHERE id = ANY (ARRAY[:'c1', NULL, :'c2']);
EXPLAIN (COSTS OFF) SELECT * FROM stripe.customers WHERE id = ANY (ARRAY['cus_a', 'cus_b']);

-- list filters: one request with the filter, rechecked here
SELECT * FROM requests_of(format('SELECT * FROM stripe.charges WHERE customer = %L', :'ch1_customer'));
SELECT same_result('stripe.charges', format('customer = %L', :'ch1_customer'));
SELECT * FROM requests_of(format('SELECT * FROM stripe.charges WHERE payment_intent = %L', :'ch1_pi'));
SELECT same_result('stripe.charges', format('payment_intent = %L', :'ch1_pi'));
SELECT * FROM requests_of('SELECT * FROM stripe.invoices WHERE status = ''paid''');
SELECT same_result('stripe.invoices', 'status = ''paid''');
SELECT * FROM requests_of('SELECT * FROM stripe.customers WHERE email = ''user3@example.com''');
SELECT same_result('stripe.customers', 'email = ''user3@example.com''');
SELECT * FROM requests_of('SELECT * FROM stripe.subscriptions WHERE status = ''canceled''');
SELECT same_result('stripe.subscriptions', 'status = ''canceled''');

-- created ranges and BETWEEN
SELECT * FROM requests_of('SELECT * FROM stripe.customers WHERE created BETWEEN ''2023-11-15 00:00:00+00'' AND ''2023-11-15 12:00:00+00''');
SELECT same_result('stripe.customers', 'created BETWEEN ''2023-11-15 00:00:00+00'' AND ''2023-11-15 12:00:00+00''');
SELECT * FROM requests_of('SELECT * FROM stripe.customers WHERE created > ''2023-11-15 00:00:00+00'' AND created <= ''2023-11-15 06:00:00.25+00''');
SELECT same_result('stripe.customers', 'created > ''2023-11-15 00:00:00+00'' AND created <= ''2023-11-15 06:00:00.25+00''');
SELECT same_result('stripe.customers', 'created = ''2023-11-15 05:00:00+00''');
SELECT same_result('stripe.customers', '''2023-11-15 05:00:00+00'' < created');

-- a qual Stripe cannot answer stays local, and the result is the same
SELECT * FROM requests_of('SELECT * FROM stripe.customers WHERE name LIKE ''Customer 1%'' LIMIT 3');
SELECT same_result('stripe.customers', 'name LIKE ''Customer 1%''');

-- Stripe's newest-first order needs no sort, and LIMIT goes to Stripe when nothing
-- above the scan can drop rows
EXPLAIN (COSTS OFF) SELECT id FROM stripe.charges ORDER BY created DESC LIMIT 5;
SELECT * FROM requests_of('SELECT id FROM stripe.charges ORDER BY created DESC LIMIT 5');
-- (ties in created may come in any order, so compare the times)
SELECT (SELECT array_agg(created) FROM (SELECT created FROM stripe.charges ORDER BY created DESC LIMIT 5) a) =
       (SELECT array_agg(created) FROM (SELECT created FROM (SELECT * FROM stripe.charges OFFSET 0) s ORDER BY created DESC LIMIT 5) b)
       AS same_first_five;
SELECT * FROM requests_of('SELECT id FROM stripe.charges WHERE status = ''failed'' LIMIT 5');
SELECT * FROM requests_of('SELECT id FROM stripe.charges LIMIT 150');
-- a LIMIT above a local qual cannot be sent: it would starve the filter
SELECT * FROM requests_of('SELECT id FROM stripe.customers WHERE name LIKE ''Customer 9%'' LIMIT 2');
-- ORDER BY another column: every row is needed
EXPLAIN (COSTS OFF) SELECT id FROM stripe.charges ORDER BY amount LIMIT 5;

-- parameterized paths: one retrieve per row of a small local table
CREATE TABLE local_refs AS
  SELECT id AS customer_id, row_number() OVER (ORDER BY created, id) AS n
    FROM stripe.customers ORDER BY created, id LIMIT 50;
ANALYZE local_refs;
EXPLAIN (COSTS OFF) SELECT c.email FROM local_refs r JOIN stripe.customers c ON c.id = r.customer_id;
-- one retrieve per outer row: 50 requests, each for a different customer of the table
SELECT count(*) AS requests, count(DISTINCT r) AS distinct_requests,
       count(*) FILTER (WHERE substr(r, length('GET /v1/customers/') + 1) IN (SELECT customer_id FROM local_refs)) AS retrieves_of_outer_rows
  FROM requests_of('SELECT c.email FROM local_refs r JOIN stripe.customers c ON c.id = r.customer_id') r;
SELECT (SELECT count(*) FROM local_refs r JOIN stripe.customers c ON c.id = r.customer_id) AS joined,
       (SELECT array_agg(c.attrs ORDER BY c.id) FROM local_refs r JOIN stripe.customers c ON c.id = r.customer_id) =
       (SELECT array_agg(c.attrs ORDER BY c.id) FROM local_refs r
          JOIN (SELECT * FROM stripe.customers OFFSET 0) c ON c.id = r.customer_id) AS same_as_full_scan;
-- charges per customer through the customer filter
EXPLAIN (COSTS OFF) SELECT ch.id FROM (SELECT * FROM local_refs WHERE n <= 3) r JOIN stripe.charges ch ON ch.customer = r.customer_id;
SELECT count(*) FILTER (WHERE r LIKE 'GET /v1/charges?limit=100&customer=cus_%') AS filtered, count(*) AS total
  FROM requests_of('SELECT ch.id FROM (SELECT * FROM local_refs WHERE n <= 3) r JOIN stripe.charges ch ON ch.customer = r.customer_id') r;
SELECT (SELECT count(*) FROM (SELECT * FROM local_refs WHERE n <= 3) r JOIN stripe.charges ch ON ch.customer = r.customer_id) =
       (SELECT count(*) FROM (SELECT * FROM local_refs WHERE n <= 3) r JOIN (SELECT * FROM stripe.charges OFFSET 0) ch ON ch.customer = r.customer_id)
       AS same_join;
