-- What Stripe (or whoever answers) says reaches a message scrubbed of the
-- configured key and of anything shaped like a key, in valid UTF-8, cut at a
-- character boundary.  The key is spelled in pieces in the statements that
-- could fail, so that no statement logged with its error holds it.
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
\set VERBOSITY default
SET stripe_sync.max_retries = 0;

-- a key of no known shape: only its exact text can be scrubbed
CREATE SERVER keyed FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER keyed OPTIONS (api_key 'Plain.Secret-Key_4711');
CREATE FOREIGN TABLE keyed_customers (id text, name text) SERVER keyed OPTIONS (object 'customers');
CREATE FUNCTION the_key() RETURNS text LANGUAGE sql AS $$ SELECT 'Plain.Secret' || '-Key_4711' $$;

-- every field of Stripe's error, and the request id
SELECT hostile('/v1/customers?',
               format('{"error": {"message": "bad key %s!", "type": "x_%s", "code": "sk_live_abc123", "param": "rk_test_%s"}}',
                      the_key(), the_key(), the_key()),
               400, headers => jsonb_build_object('Request-Id', 'req_' || the_key()));
\set SHOW_CONTEXT always
SELECT * FROM keyed_customers;
\set SHOW_CONTEXT never
-- the body when it is not Stripe's error; the parse error of a malformed answer
SELECT what, after_answer('/v1/customers?', b, s, 'SELECT count(*) FROM keyed_customers')
  FROM (VALUES ('html with both keys', 502, format('<html>%s pk_live_zzz</html>', the_key())),
               ('the key as a token', 200, format('{"data": [%s]}', the_key())),
               ('the key as a string', 200, format('{"data": [] "%s"}', the_key())),
               ('a key-shaped token', 200, '{"data": [sk_live_abc123]}')) v(what, s, b);
-- and the reason of a retry, logged at DEBUG1
SET stripe_sync.max_retries = 1;
SELECT hostile('/v1/customers?', format('{"data": [] "%s"}', the_key()), count => 2);
SELECT count(*) FROM keyed_customers;
SET stripe_sync.max_retries = 0;
-- the request path, here from the query
SELECT after_answer('/v1/customers/', '{"error": {"message": "no"}}', 400,
                    format('SELECT count(*) FROM keyed_customers WHERE id = %L', the_key()));
-- test_connection's answer
SELECT after_answer('/v1/account',
                    format('{"id": "acct_1", "settings": {"dashboard": {"display_name": "%s Ltd"}}}', the_key()),
                    200, $$SELECT account_name FROM stripe_sync.test_connection('keyed')$$);

-- a column's input function quotes its input in its errors: Stripe's text, not shown
CREATE FOREIGN TABLE keyed_values (id text, livemode boolean, balance numeric, metadata jsonb)
  SERVER keyed OPTIONS (object 'customers');
CREATE FUNCTION key_page() RETURNS text LANGUAGE sql AS $$
  SELECT format('{"object": "list", "has_more": false, "data": [{"id": "cus_1", "object": "customer", '
                '"livemode": ["%1$s"], "balance": "%1$s", "metadata": {"k": "\u0000 %1$s"}}]}', the_key()) $$;
SELECT hostile('/v1/customers?', key_page());
SELECT livemode FROM keyed_values;
SELECT hostile('/v1/customers?', key_page());
SELECT balance FROM keyed_values;
SELECT hostile('/v1/customers?', key_page());
SELECT metadata FROM keyed_values;

-- cut at a character boundary: 299 bytes and a two-byte character
SELECT after_answer('/v1/customers?', repeat('a', 299) || 'é and more', 400,
                    'SELECT count(*) FROM keyed_customers');
-- invalid UTF-8 and control characters from Stripe are not repeated as they are
SELECT b, after_bytes('/v1/customers?', b, 400, 'SELECT count(*) FROM keyed_customers')
  FROM unnest(ARRAY[convert_to('{"error": {"message": "bad ', 'UTF8') || '\xff'::bytea
                    || convert_to(' byte\u0007", "code": "c', 'UTF8') || '\xc3'::bytea
                    || convert_to('"}}', 'UTF8'),
                    convert_to('not json ', 'UTF8') || '\xe282'::bytea,
                    convert_to('bell ', 'UTF8') || '\x07001b'::bytea || convert_to(' end', 'UTF8')]) b;
SELECT after_bytes('/v1/customers?', convert_to('{"data": [', 'UTF8') || '\xff'::bytea || convert_to(']}', 'UTF8'),
                   200, 'SELECT count(*) FROM keyed_customers');

SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
SET client_min_messages = warning;
DROP SERVER keyed CASCADE;
RESET client_min_messages;
-- nothing of the key reached the server log (at debug1, with every retry's
-- reason and every error's statement)
SELECT strpos(pg_read_file(pg_current_logfile()), the_key()) > 0 AS key_in_log,
       strpos(pg_read_file(pg_current_logfile()), 'sk_live_' || 'abc123') > 0 AS shaped_key_in_log;
