-- The README's own examples and promises, checked as written there: the plan of
-- the three-table join under "Objects listed only under a parent", and LIMIT
-- never truncating a result whose rows run past the first page
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET timezone = 'UTC';
-- stripe.subscription_items: imported by fdw_7_catalog

-- the README's example, as written there: "one list per subscription".  Its items are
-- asked for with one list per active subscription and no list without a parent, and
-- its customers with one retrieve per subscription, never a list of every customer.
CREATE FUNCTION readme_join() RETURNS text LANGUAGE sql AS $f$ SELECT $q$
SELECT c.email, it.price->>'id', it.quantity
  FROM stripe.subscriptions s JOIN stripe.customers c ON c.id = s.customer
  JOIN stripe.subscription_items it ON it.subscription = s.id      -- one list per subscription
 WHERE s.status = 'active'$q$ $f$;
CREATE FUNCTION plan_lines(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP RETURN NEXT l; END LOOP;
END $$;
SELECT trim(l) AS subscription_lines FROM plan_lines(readme_join()) l
 WHERE l ~ 'subscription';
CREATE TEMP TABLE active_items AS
  SELECT s->>'id' AS sub, i->>'id' AS item
    FROM fake_objects('subscriptions') s, jsonb_array_elements(s->'items'->'data') i
   WHERE s->>'status' = 'active';
SELECT count(*) FILTER (WHERE r ~ '^GET /v1/customers\?') AS customer_lists,
       count(*) FILTER (WHERE r ~ '^GET /v1/customers/cus_') = (SELECT count(DISTINCT sub) FROM active_items)
         AS one_customer_retrieve_per_subscription,
       count(*) FILTER (WHERE r ~ '^GET /v1/subscriptions\?') AS subscription_lists,
       count(*) FILTER (WHERE r ~ '^GET /v1/subscription_items\?') AS item_lists,
       array_agg(substring(r FROM 'subscription=(sub_\w+)') ORDER BY r) FILTER (WHERE r ~ '^GET /v1/subscription_items\?')
         = (SELECT array_agg(DISTINCT sub ORDER BY sub) FROM active_items) AS one_per_active_subscription
  FROM requests_of(readme_join()) r;
-- and its rows are the items of the fake's active subscriptions, one per item
SELECT (SELECT count(*) FROM active_items) > 0 AS some_items,
       (SELECT array_agg(item ORDER BY item) FROM active_items) =
       (SELECT array_agg(it.id ORDER BY it.id)
          FROM stripe.subscriptions s JOIN stripe.customers c ON c.id = s.customer
          JOIN stripe.subscription_items it ON it.subscription = s.id
         WHERE s.status = 'active') AS same_items;

-- LIMIT never truncates a later page.  The fake's customers come in pairs that share
-- a created time, so the 99 newest end inside a tie and WITH TIES needs the 100th:
-- it is on the second page of a scan whose first page asked for 99.
CREATE TEMP TABLE newest AS
  SELECT f->>'id' AS id, row_number() OVER () AS n FROM fake_objects('customers') f;
SELECT * FROM requests_of('SELECT id FROM stripe.customers ORDER BY created DESC FETCH FIRST 99 ROWS WITH TIES') r
 WHERE r NOT LIKE '%starting_after%';
SELECT count(*) AS with_ties,
       array_agg(id ORDER BY id) = (SELECT array_agg(id ORDER BY id) FROM newest WHERE n <= 100) AS the_newest_100
  FROM (SELECT id FROM stripe.customers ORDER BY created DESC FETCH FIRST 99 ROWS WITH TIES) s;
-- a cursor fetched in pieces across that boundary, then rewound (a rescan)
BEGIN;
DECLARE c SCROLL CURSOR FOR SELECT id FROM stripe.customers ORDER BY created DESC FETCH FIRST 99 ROWS WITH TIES;
MOVE FORWARD 98 IN c;
FETCH FORWARD 5 FROM c;
MOVE ABSOLUTE 0 IN c;
FETCH FORWARD 1 FROM c;
COMMIT;
SELECT n, id FROM newest WHERE n IN (1, 99, 100, 101) ORDER BY n;
-- a LIMIT inside a subquery that is scanned again for each outer row
SELECT g, (SELECT count(*) FROM (SELECT id FROM stripe.customers
                                  WHERE created <= to_timestamp(1700000000 + g * 3600)
                                  ORDER BY created DESC FETCH FIRST 99 ROWS WITH TIES) s) AS n
  FROM unnest(ARRAY[30, 48, 300]) g;
