-- Scans of the core objects against the fake Stripe
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- one request at a time: these scans show the cursor from page to page (TAP
-- 052_fdw_windows shows a long scan's windows in flight together); it is
-- reloadable, not per session, and the reload reaches this session in the sleep
ALTER SYSTEM SET stripe_sync.max_concurrent_requests = 1;
SELECT pg_reload_conf(), pg_sleep(0.3);

-- 1,050 customers stream in 11 pages of at most 100
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT count(*), count(DISTINCT id), min(created) < max(created) AS spread FROM stripe.customers;
SELECT * FROM fake_requests();

-- every row, typed column and attrs equal the fake's own JSON of the object (read
-- from its control interface and parsed by jsonb_in, not by the extension); a JSON
-- null, or a field the object lacks, is SQL NULL in every typed column
CREATE FUNCTION fake_objects(type text) RETURNS SETOF jsonb LANGUAGE sql AS $$
  SELECT jsonb_array_elements(fake('GET', '/_control/objects/' || type)->'data') $$;
CREATE FUNCTION typed_vs_fake(tab regclass, type text,
  OUT objects bigint, OUT unmatched bigint, OUT attrs_differ bigint, OUT typed_differ bigint,
  OUT nulls_seen bigint, OUT nulls_not_null bigint)
LANGUAGE plpgsql AS $$
DECLARE
  a record;
  differ bigint;
  seen bigint;
  not_null bigint;
  conv text;
  json_null text;
BEGIN
  CREATE TEMP TABLE f AS SELECT o->>'id' AS id, o FROM fake_objects(type) o;
  objects := (SELECT count(*) FROM f);
  EXECUTE format('SELECT count(*) FROM %s t FULL JOIN f ON f.id = t.id WHERE t.id IS NULL OR f.id IS NULL', tab)
    INTO unmatched;
  EXECUTE format('SELECT count(*) FROM %s t JOIN f USING (id) WHERE t.attrs <> f.o OR t.attrs::text <> f.o::text', tab)
    INTO attrs_differ;
  typed_differ := 0; nulls_not_null := 0; nulls_seen := 0;
  FOR a IN SELECT attname, atttypid::regtype::text AS t FROM pg_attribute
            WHERE attrelid = tab AND attnum > 0 AND attname <> 'attrs' AND NOT attisdropped LOOP
    conv := CASE a.t
      WHEN 'timestamp with time zone' THEN format('to_timestamp((f.o->>%L)::bigint)', a.attname)
      WHEN 'jsonb' THEN format('(f.o->%L)', a.attname)
      ELSE format('(f.o->>%L)::%s', a.attname, a.t) END;
    json_null := format('coalesce(f.o->%L, %L) = %L', a.attname, 'null', 'null');
    EXECUTE format('SELECT count(*) FILTER (WHERE NOT %s AND t.%I IS DISTINCT FROM %s), '
                   '       count(*) FILTER (WHERE %s), count(*) FILTER (WHERE %s AND t.%I IS NOT NULL) '
                   '  FROM %s t JOIN f USING (id)',
                   json_null, a.attname, conv, json_null, json_null, a.attname, tab)
      INTO differ, seen, not_null;
    typed_differ := typed_differ + differ;
    nulls_seen := nulls_seen + seen;
    nulls_not_null := nulls_not_null + not_null;
  END LOOP;
  DROP TABLE f;
END $$;
SELECT v.t, c.objects, c.unmatched, c.attrs_differ, c.typed_differ,
       c.nulls_seen > 0 AS nulls_seen, c.nulls_not_null
  FROM (VALUES ('stripe.customers', 'customers'), ('stripe.charges', 'charges'),
               ('stripe.invoices', 'invoices'), ('stripe.payment_intents', 'payment_intents'),
               ('stripe.refunds', 'refunds'), ('stripe.subscriptions', 'subscriptions'),
               ('stripe.events', 'events')) v(t, type),
       typed_vs_fake(t::regclass, type) c;
-- and equal Stripe's own example objects wherever the fake kept the example's value
\getenv fixtures STRIPE_FIXTURES
CREATE TEMP TABLE fx AS
  SELECT key AS res, value AS obj FROM jsonb_each(pg_read_file(:'fixtures')::jsonb->'resources');
CREATE FUNCTION fixture_check(tab regclass, res text, OUT compared int, OUT different int)
LANGUAGE plpgsql AS $$
DECLARE
  a record;
  fobj jsonb := (SELECT obj FROM fx WHERE fx.res = fixture_check.res);
  rid text;
  kept boolean;
  equal boolean;
  conv text;
BEGIN
  compared := 0; different := 0;
  EXECUTE format('SELECT id FROM %s LIMIT 1', tab) INTO rid;
  FOR a IN SELECT attname, atttypid::regtype::text AS t FROM pg_attribute
            WHERE attrelid = tab AND attnum > 0 AND attname NOT IN ('attrs', 'id') LOOP
    CONTINUE WHEN fobj->a.attname IS NULL OR fobj->a.attname = 'null'::jsonb;
    conv := CASE a.t
      WHEN 'timestamp with time zone' THEN format('to_timestamp(($2->>%L)::bigint)', a.attname)
      WHEN 'jsonb' THEN format('($2->%L)', a.attname)
      ELSE format('($2->>%L)::%s', a.attname, a.t) END;
    EXECUTE format('SELECT attrs->%L = $2->%L, %I IS NOT DISTINCT FROM %s FROM %s WHERE id = $1',
                   a.attname, a.attname, a.attname, conv, tab)
      INTO kept, equal USING rid, fobj;
    CONTINUE WHEN NOT kept;     -- the fake varies this field
    compared := compared + 1;
    IF NOT equal THEN different := different + 1; END IF;
  END LOOP;
END $$;
SELECT t, c.compared, c.different
  FROM (VALUES ('stripe.customers', 'customer'), ('stripe.charges', 'charge'),
               ('stripe.invoices', 'invoice'), ('stripe.payment_intents', 'payment_intent'),
               ('stripe.refunds', 'refund'), ('stripe.subscriptions', 'subscription'),
               ('stripe.events', 'event')) v(t, res),
       fixture_check(t::regclass, res) c;
SELECT count(*) FROM stripe.customers WHERE id IS NULL OR created IS NULL OR attrs IS NULL;
SELECT pg_typeof(created), pg_typeof(amount), pg_typeof(paid), pg_typeof(outcome)
  FROM stripe.charges LIMIT 1;

-- rows arrive newest first
SELECT bool_and(ok) AS newest_first FROM (
  SELECT created <= lag(created) OVER () OR lag(created) OVER () IS NULL AS ok FROM stripe.charges) s;

-- id = const is one retrieve; a missing id is no row, not an error
SELECT id AS some_customer FROM stripe.customers ORDER BY created, id LIMIT 1 \gset
-- the retrieved object is the fake's
SELECT (SELECT attrs FROM stripe.customers WHERE id = :'some_customer') =
       (SELECT f FROM fake_objects('customers') f WHERE f->>'id' = :'some_customer')
       AS same_as_fake;
SELECT fake('DELETE', '/_control/requests') IS NOT NULL AS cleared;
SELECT id = :'some_customer' AS same FROM stripe.customers WHERE id = :'some_customer';
SELECT * FROM stripe.customers WHERE id = 'cus_doesnotexist';
SELECT count(*) FROM fake_requests() r WHERE r LIKE 'GET /v1/customers/%';
SELECT * FROM fake_requests() r WHERE r NOT LIKE 'GET /v1/customers/cus_%';
EXPLAIN (COSTS OFF) SELECT * FROM stripe.customers WHERE id = 'cus_x';
-- a prepared statement pushes its parameter too
PREPARE one(text) AS SELECT count(*) FROM stripe.customers WHERE id = $1;
EXECUTE one(:'some_customer');
EXECUTE one('cus_nope');
EXPLAIN (COSTS OFF) EXECUTE one('cus_x');
DEALLOCATE one;

-- list filters and created ranges go to Stripe, and are rechecked here
SELECT customer AS a_customer FROM stripe.charges WHERE customer IS NOT NULL LIMIT 1 \gset
EXPLAIN (COSTS OFF) SELECT id FROM stripe.charges WHERE customer = 'cus_x' AND created >= '2023-11-15 00:00:00+00' AND created < '2023-11-16 00:00:00.5+00';
SELECT (SELECT count(*) FROM stripe.charges WHERE customer = :'a_customer') =
       (SELECT count(*) FROM (SELECT * FROM stripe.charges OFFSET 0) s WHERE customer = :'a_customer') AS same_result;
SELECT (SELECT count(*) FROM stripe.charges WHERE created > '2023-11-15 10:00:00+00') =
       (SELECT count(*) FROM (SELECT * FROM stripe.charges OFFSET 0) s WHERE created > '2023-11-15 10:00:00+00') AS same_result;
SELECT count(*) FROM stripe.charges WHERE created = '2023-11-15 10:00:00.5+00';
EXPLAIN (COSTS OFF) SELECT count(*) FROM stripe.charges WHERE created = '2023-11-15 10:00:00.5+00';

-- subscriptions list every status unless one is asked for
SELECT status, count(*) FROM stripe.subscriptions GROUP BY status ORDER BY status;
EXPLAIN (COSTS OFF) SELECT id FROM stripe.subscriptions;
EXPLAIN (COSTS OFF) SELECT id FROM stripe.subscriptions WHERE status = 'canceled';
SELECT count(*) FROM stripe.subscriptions WHERE status = 'canceled';

-- EXPLAIN ANALYZE counts requests and pages
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM stripe.customers;

-- a generic table for any list path, and a user-defined subset of columns
CREATE FOREIGN TABLE stripe.my_charges (amount bigint, cents text OPTIONS (field 'amount'), id text, attrs jsonb)
  SERVER stripe OPTIONS (object 'charges');
SELECT count(*) FROM stripe.my_charges WHERE amount::text = cents AND attrs->>'id' = id;
CREATE FOREIGN TABLE stripe.events_generic (id text, created timestamptz, attrs jsonb)
  SERVER stripe OPTIONS (object 'events');
SELECT (SELECT count(*) FROM fake_objects('events')) AS fake_events,
       count(*) FILTER (WHERE f IS NULL OR e IS NULL OR e.attrs <> f OR e.created <> to_timestamp((f->>'created')::bigint)) AS differ
  FROM stripe.events_generic e FULL JOIN fake_objects('events') f ON f->>'id' = e.id;

-- attrs is built without a second pass of jsonb_in (src/jsonb_fast.c), which
-- answers for what is not plain (escapes): either way it is the jsonb that
-- jsonb_in makes of the text, every key found at every depth
INSERT INTO stripe.customers (email, name, description, metadata)
  VALUES ('odd@example.com', 'Zoë "Q" \ Smith', e'tab\there, newline\n, é ✓ 😀',
          '{"k": "v", "quote": "say \"hi\"", "ünï": "ok"}')
  RETURNING name, description = e'tab\there, newline\n, é ✓ 😀' AS description_kept, metadata;
CREATE TEMP TABLE all_attrs AS
  SELECT attrs FROM stripe.customers UNION ALL SELECT attrs FROM stripe.charges
  UNION ALL SELECT attrs FROM stripe.invoices UNION ALL SELECT attrs FROM stripe.subscriptions
  UNION ALL SELECT attrs FROM stripe.payment_intents UNION ALL SELECT attrs FROM stripe.events;
SELECT count(*) > 1000 AS many FROM all_attrs;
WITH RECURSIVE v(j) AS (
  SELECT attrs FROM all_attrs
  UNION ALL
  SELECT x.value FROM v, LATERAL (
    SELECT value FROM jsonb_each(CASE WHEN jsonb_typeof(v.j) = 'object' THEN v.j END)
    UNION ALL
    SELECT value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v.j) = 'array' THEN v.j END)) x)
SELECT count(*) FILTER (WHERE jsonb_typeof(j) = 'object') > 10000 AS many_objects,
       count(*) FILTER (WHERE jsonb_typeof(j) = 'object' AND
                        EXISTS (SELECT 1 FROM jsonb_object_keys(j) k WHERE NOT j ? k)) AS keys_not_found
  FROM v;
SELECT attrs->>'name' AS name, attrs->'metadata'->>'quote' AS quote
  FROM stripe.customers WHERE email = 'odd@example.com';
-- and it is the fake's JSON of that customer, escapes and all
SELECT c.attrs = f AND c.attrs::text = f::text AS same_as_fake
  FROM stripe.customers c JOIN fake_objects('customers') f ON f->>'id' = c.id
 WHERE c.email = 'odd@example.com';
-- the later tests count 1050 customers
DELETE FROM stripe.customers WHERE email = 'odd@example.com';
SELECT count(*) FROM stripe.customers;

ALTER SYSTEM RESET stripe_sync.max_concurrent_requests;
SELECT pg_reload_conf(), pg_sleep(0.3);
