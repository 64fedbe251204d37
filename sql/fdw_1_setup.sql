-- Install, servers, import, test_connection
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION stripe_sync;
RESET client_min_messages;

SELECT extname, extversion, extnamespace::regnamespace FROM pg_extension WHERE extname = 'stripe_sync';
SELECT fdwname, fdwhandler::regproc, fdwvalidator::regproc
  FROM pg_foreign_data_wrapper ORDER BY fdwname;

CREATE SERVER stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key 'sk_test_fake');
CREATE SCHEMA stripe;
IMPORT FOREIGN SCHEMA stripe
  LIMIT TO (customers, charges, invoices, payment_intents, refunds, subscriptions, events)
  FROM SERVER stripe INTO stripe;
SELECT foreign_table_name FROM information_schema.foreign_tables
 WHERE foreign_table_schema = 'stripe' ORDER BY 1;

-- typed columns as SPEC §3 says: times timestamptz, amounts bigint, ids text, nested jsonb
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'stripe.charges'::regclass AND attnum > 0
   AND attname IN ('id', 'amount', 'amount_refunded', 'created', 'captured', 'customer',
                   'billing_details', 'metadata', 'attrs')
 ORDER BY attnum;
SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = 'stripe.subscriptions'::regclass;

-- EXCEPT imports the rest of the catalogue
CREATE SCHEMA stripe_rest;
IMPORT FOREIGN SCHEMA stripe EXCEPT (customers, charges) FROM SERVER stripe INTO stripe_rest;
SELECT count(*) >= 32 AS whole_catalogue,
       bool_and(foreign_table_name NOT IN ('customers', 'charges')) AS except_honoured
  FROM information_schema.foreign_tables WHERE foreign_table_schema = 'stripe_rest';
SET client_min_messages = warning;
DROP SCHEMA stripe_rest CASCADE;
RESET client_min_messages;

-- an unknown object in LIMIT TO is an error that lists the known ones
IMPORT FOREIGN SCHEMA stripe LIMIT TO (customers, unicorns) FROM SERVER stripe INTO stripe;

SELECT account_id, account_name, api_version FROM stripe_sync.test_connection('stripe');

CREATE TABLE regress_fake (url text);
INSERT INTO regress_fake VALUES (:'fake_url');
-- talk to the fake's control interface (tests only)
CREATE FUNCTION fake(method text, path text, body text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  url text := (SELECT url FROM regress_fake);
  res text;
BEGIN
  IF to_regclass('pg_temp.fake_out') IS NULL THEN
    CREATE TEMP TABLE fake_out (line text);
  END IF;
  TRUNCATE fake_out;
  EXECUTE format('COPY fake_out FROM PROGRAM %L WITH (FORMAT csv, QUOTE e''\x01'', DELIMITER e''\x02'')',
    format('curl -s -X %s %s %s', method,
           CASE WHEN body IS NULL THEN '' ELSE '-H "Content-Type: application/json" -d ' || quote_literal(body) END,
           url || path));
  SELECT string_agg(line, E'\n') INTO res FROM fake_out;
  RETURN CASE WHEN res IS NULL OR res = '' THEN NULL ELSE res::jsonb END;
END $$;
CREATE FUNCTION fake_requests() RETURNS SETOF text LANGUAGE sql AS $$
  SELECT r->>'method' || ' ' || (r->>'path') FROM jsonb_array_elements(fake('GET', '/_control/requests')->'requests') r $$;

