-- Managing sources: the objects a source can sync and what each supports; an
-- unknown object lists them; a host that does not resolve fails at once.
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never

SELECT object, path, stripe_object, retrieve, listed_under, writable, syncable, stays_current
  FROM stripe_sync.objects ORDER BY object;
SELECT object, list_filters FROM stripe_sync.objects WHERE object IN ('charges', 'subscriptions', 'prices');
-- the lists Stripe inlines a first page of, read whole
SELECT object, nested_lists FROM stripe_sync.objects WHERE nested_lists IS NOT NULL ORDER BY object;
-- what a sync lists again for the changes Stripe sends no event for
SELECT object, relist, relist_from, relist_filter, relist_window
  FROM stripe_sync.objects WHERE relist <> 'none' ORDER BY object;

CREATE SERVER m_stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER m_stripe OPTIONS (api_key 'sk_test_fake');
-- an unknown object: the error lists every object a source can sync
SELECT stripe_sync.create_source('m', server => 'm_stripe', objects => ARRAY['customers', 'unicorns']);
-- an object Stripe lists only per customer needs the source to sync customers too
SELECT stripe_sync.create_source('m', server => 'm_stripe', objects => ARRAY['payment_methods']);

-- a host that does not resolve is not retried: one attempt, at once
CREATE SERVER m_nowhere FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url 'http://no-such-host.invalid');
CREATE USER MAPPING FOR CURRENT_USER SERVER m_nowhere OPTIONS (api_key 'sk_test_fake');
CREATE FOREIGN TABLE m_customers (id text) SERVER m_nowhere OPTIONS (object 'customers');
SET stripe_sync.max_retries = 5;
SET stripe_sync.retry_base_delay = '1s';
SELECT clock_timestamp() AS t0 \gset
SELECT * FROM m_customers;
SELECT clock_timestamp() - :'t0'::timestamptz < interval '1 second' AS failed_at_once;
RESET stripe_sync.max_retries;
RESET stripe_sync.retry_base_delay;

DROP FOREIGN TABLE m_customers;
DROP SERVER m_stripe, m_nowhere CASCADE;
