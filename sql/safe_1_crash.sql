-- No input crashes a backend: intempt_data's objects, Stripe's error bodies,
-- /v1/account answers (test_connection), every JSON type in every position
\set SHOW_CONTEXT never
\set VERBOSITY default
SET stripe_sync.max_retries = 0;

-- a hostile answer from the fake, as given (kind "body"); bytes go as base64
CREATE FUNCTION hostile_bytes(path text, body bytea, status int DEFAULT 200, count int DEFAULT 1,
                              headers jsonb DEFAULT '{}') RETURNS boolean
LANGUAGE sql AS $$
  SELECT fake('POST', '/_control/faults',
              jsonb_build_object('kind', 'body', 'path', path, 'status', status, 'count', count,
                                 'headers', headers,
                                 'body_b64', translate(encode(body, 'base64'), E'\n', ''))::text)
         IS NOT NULL $$;
CREATE FUNCTION hostile(path text, body text, status int DEFAULT 200, count int DEFAULT 1,
                        headers jsonb DEFAULT '{}') RETURNS boolean
LANGUAGE sql AS $$ SELECT hostile_bytes(path, convert_to(body, 'UTF8'), status, count, headers) $$;
-- the fake answers path once with body; then stmt runs: its first value, or
-- its error (SQLSTATE, message | detail)
CREATE FUNCTION after_bytes(path text, body bytea, status int, stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r text;
  detail text;
BEGIN
  PERFORM hostile_bytes(path, body, status);
  EXECUTE stmt INTO r;
  RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
  PERFORM fake('DELETE', '/_control/faults');
  RETURN concat_ws(' | ', SQLSTATE || ': ' || SQLERRM, nullif(detail, ''));
END $$;
CREATE FUNCTION after_answer(path text, body text, status int, stmt text) RETURNS text
LANGUAGE sql AS $$ SELECT after_bytes(path, convert_to(body, 'UTF8'), status, stmt) $$;

-- intempt_data (PUBLIC): a subscription's items, data, price of any type
SELECT o, stripe_sync.intempt_data(o::jsonb, 'evt_1', 'customer.subscription.updated', NULL) AS data
  FROM unnest(ARRAY[
    '{"object": "subscription", "items": ["x"]}',
    '{"object": "subscription", "items": [{"data": []}]}',
    '{"object": "subscription", "items": "x"}',
    '{"object": "subscription", "items": {"data": {"price": 1}}}',
    '{"object": "subscription", "items": {"data": [["x"]]}}',
    '{"object": "subscription", "items": {"data": [1, null, "x"]}}',
    '{"object": "subscription", "items": {"data": [{"price": ["x"]}]}}',
    '{"object": "subscription", "items": {"data": [{"price": [{"unit_amount": 1}]}]}}',
    '{"object": "subscription", "items": {"data": [{"price": {"unit_amount": "5"}}]}}',
    '{"object": "subscription", "items": {"data": [{"price": {"unit_amount": 5}, "quantity": "2"}]}}',
    '{"object": "subscription", "currency": ["usd"], "items": {"data": [{"price": {"unit_amount": 5}, "quantity": [2]}]}}',
    '{"object": ["subscription"], "items": ["x"]}',
    '{"id": {"a": 1}, "object": 5, "status": [1], "currency": {}, "created": "x", "livemode": [], "amount": "12", "email": {}, "paid": null}',
    '{"id": 5, "amount": -1e30, "total": 1e-30, "tax": 0.5, "balance": -9223372036854775809}'
  ]) o;
-- an array where an object is due crashed the server
SELECT stripe_sync.intempt_data(jsonb_build_object('object', 'subscription',
         'items', jsonb_build_array('data', 'data', 'data', repeat('data', 100))), NULL, NULL, NULL);
SELECT stripe_sync.intempt_data(jsonb_build_object('object', 'subscription',
         'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_array('price', 'price', 'price', repeat('price', 100))))),
       NULL, NULL, NULL);
SELECT stripe_sync.intempt_data(jsonb_build_object('object', 'subscription',
         'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object('price',
           jsonb_build_array('unit_amount', 'unit_amount', repeat('unit_amount', 50)))))),
       NULL, NULL, NULL);
-- not an object at all
SELECT stripe_sync.intempt_data(o::jsonb, NULL, NULL, NULL)
  FROM unnest(ARRAY['["x"]', '"x"', '5', 'null']) o;
SELECT stripe_sync.intempt_data(NULL, NULL, NULL, NULL) IS NULL AS null_is_null;
-- major_units and currency_exponent take any number and any text
SELECT m, c, stripe_sync.major_units(m::numeric, c) AS major, stripe_sync.currency_exponent(c) AS exponent
  FROM (VALUES ('NaN', 'usd'), ('Infinity', 'jpy'), ('-Infinity', 'kwd'), ('1e300', 'kwd'),
               ('-0.5', NULL), ('1', ''), ('1', 'jpyy'), ('1', 'ü'), ('1', E'j\tp')) v(m, c);

-- Stripe's error fields in any JSON type: null, numbers, objects, arrays, booleans
SELECT status, body, after_answer('/v1/customers?', body, status, 'SELECT count(*) FROM stripe.customers')
  FROM (VALUES (400, '{"error": {"message": null, "type": null, "code": null, "param": null}}'),
               (402, '{"error": {"message": 5, "type": {"a": 1}, "code": [1], "param": true}}'),
               (409, '{"error": {"message": ["m"], "type": 1.5, "code": {}, "param": null}}'),
               (400, '{"error": null}'),
               (403, '{"error": ["x"]}'),
               (500, '[{"error": {"message": "x"}}]'),
               (401, '{"error": {"message": null}}')) v(status, body);
-- and on a retrieve and a write
SELECT after_answer('/v1/customers/', '{"error": {"message": null, "param": null}}', 404,
                    $$SELECT count(*) FROM stripe.customers WHERE id = 'cus_404'$$);
SELECT after_answer('/v1/customers', '{"error": {"message": null, "code": null}}', 400,
                    $$INSERT INTO stripe.customers (email) VALUES ('x@example.com') RETURNING id$$);

-- /v1/account: test_connection takes any answer (or refuses it, with a reason)
SELECT b, after_answer('/v1/account', b, 200,
                       $$SELECT account_id || ' | ' || coalesce(account_name, '(no name)')
                           FROM stripe_sync.test_connection('stripe')$$)
  FROM unnest(ARRAY[
    '{"id": "acct_1", "livemode": {}, "settings": "x", "business_profile": [1], "email": 7, "created": "x"}',
    '{"id": "acct_1", "settings": {"dashboard": "x"}, "business_profile": {"name": {"x": 1}}, "email": "a@example.com"}',
    '{"id": "acct_1", "settings": {"dashboard": {"display_name": null}}, "business_profile": null, "email": null, "created": 1e400}',
    '{"id": "acct_1", "settings": {"dashboard": {"display_name": ["x"]}}, "business_profile": {"name": "Biz"}, "created": -5}',
    '{"id": "acct_1", "settings": null, "livemode": null, "created": null, "settings": {"dashboard": {"display_name": "Dup"}}}',
    '{"id": 5, "settings": {"dashboard": {"display_name": "x"}}}',
    '{"id": null}',
    '{"id": {"id": "acct_1"}}',
    '["acct_1"]',
    'null',
    '{"id": "acct_1\u0000x"}',
    '{"id": "acct_1", "email": "nul\u0000led"}',
    '{"id": "acct 1; DROP"}'
  ]) b;

SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
-- the backend is alive and well
SELECT account_id FROM stripe_sync.test_connection('stripe');
