-- Faults: each kind is retried then succeeds; past max_retries it is an ERROR
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
-- one request at a time: the requests counted are a scan's from page to page
-- (TAP 052_fdw_windows has a long scan's windows and their faults); it is
-- reloadable, not per session, and the reload reaches this session in the sleep
ALTER SYSTEM SET stripe_sync.max_concurrent_requests = 1;
SELECT pg_reload_conf(), pg_sleep(0.3);
SET stripe_sync.retry_base_delay = '10ms';

CREATE FUNCTION fault_then_scan(kind text, extra text DEFAULT '') RETURNS TABLE (rows bigint, requests bigint)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fake('DELETE', '/_control/requests');
  PERFORM fake('POST', '/_control/faults',
               format('{"kind": "%s", "count": 2, "path": "/v1/customers"%s}', kind, extra));
  rows := (SELECT count(*) FROM stripe.customers);
  requests := (SELECT count(*) FROM fake_requests());
  RETURN NEXT;
END $$;

SELECT k AS fault, f.* FROM unnest(ARRAY['429', '500', '503', 'drop', 'reset', 'truncate',
                                         'malformed', 'empty']) k,
  fault_then_scan(k) f;
-- Retry-After is honoured: two 429s asking for 1 s each take at least 2 s
SELECT clock_timestamp() AS t0 \gset
SELECT * FROM fault_then_scan('429', ', "retry_after": 1');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '2 s' AS waited_retry_after;
-- a timeout is retried (the fake logs a held request only when it answers)
SET stripe_sync.http_timeout = '1s';
SELECT clock_timestamp() AS t0 \gset
SELECT rows FROM fault_then_scan('delay', ', "delay": 3');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '2 s' AS waited_two_timeouts;
RESET stripe_sync.http_timeout;

-- Stripe-Should-Retry: false is final
SELECT fake('POST', '/_control/faults', '{"kind": "500", "count": 1, "should_retry": false}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
\echo :LAST_ERROR_SQLSTATE
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;

-- past max_retries: an ERROR, never an empty result (libcurl itself retries a
-- GET once on a fresh connection when a reused one closes, hence more drops)
SET stripe_sync.max_retries = 2;
SELECT fake('POST', '/_control/faults', '{"kind": "500", "count": 3}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
\echo :LAST_ERROR_SQLSTATE
SELECT fake('POST', '/_control/faults', '{"kind": "malformed", "count": 3}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
SELECT fake('POST', '/_control/faults', '{"kind": "drop", "count": 8}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
\echo :LAST_ERROR_SQLSTATE
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
SELECT fake('POST', '/_control/faults', '{"kind": "429", "count": 3}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
\echo :LAST_ERROR_SQLSTATE
-- a 400 is not retried: the error carries Stripe's message
SELECT fake('POST', '/_control/faults', '{"kind": "status", "status": 400, "count": 1}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
RESET stripe_sync.max_retries;

-- 401 mid-scan: a clear error, no key
SELECT fake('POST', '/_control/faults', '{"kind": "401", "count": 1}') IS NOT NULL AS injected;
SELECT count(*) FROM stripe.customers;
\echo :LAST_ERROR_SQLSTATE

-- statement_timeout stops a request the fake holds for 4 s, promptly
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
SELECT fake('POST', '/_control/faults', '{"kind": "delay", "delay": 4, "count": 1}') IS NOT NULL AS injected;
SELECT clock_timestamp() AS t0 \gset
SET statement_timeout = '200ms';
SELECT count(*) FROM stripe.customers;
RESET statement_timeout;
SELECT clock_timestamp() - :'t0'::timestamptz < interval '1 s' AS stopped_within_a_second;
-- and the backend goes on working
SELECT count(*) FROM stripe.customers;
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
-- the fake logs the held request only when it answers: let that happen here,
-- not in the middle of the next test's request counts
SELECT pg_sleep(4);

ALTER SYSTEM RESET stripe_sync.max_concurrent_requests;
SELECT pg_reload_conf(), pg_sleep(0.3);
