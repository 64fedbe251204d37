-- No silent corruption: what does not fit the column is an error naming the
-- field and the table; text is valid UTF-8; a key is read only when it is the key;
-- an object of another type is refused
\set SHOW_CONTEXT never
\set VERBOSITY default
SET stripe_sync.max_retries = 0;
SET timezone = 'UTC';

CREATE FUNCTION page(objs text, has_more boolean DEFAULT false) RETURNS text
LANGUAGE sql AS $$
  SELECT format('{"object": "list", "url": "/v1/customers", "has_more": %s, "data": [%s]}',
                to_json(has_more), objs) $$;
-- one customer whose field col holds the JSON text val, read as the column's type
CREATE FUNCTION read_as_column(col text, val text) RETURNS text
LANGUAGE sql AS $$
  SELECT after_answer('/v1/customers?',
                      page(format('{"id": "cus_1", "object": "customer", %s: %s}', to_json(col), val)),
                      200, format('SELECT %I::text FROM stripe.customers', col)) $$;

-- timestamptz: Unix seconds within PostgreSQL's range, nothing else
SELECT v, read_as_column('created', v) AS created
  FROM unnest(ARRAY['0', '-1', '1700000000', '-210866803200', '9224318015999',
                    '-210866803201', '9224318016000', '922337203685477579',
                    '9223372036854775807', '9223372036854775808', '-9223372036854775809',
                    '99999999999999999999999', '1.5', '1e3', '-0', '-', '"1700000000"', '"now"',
                    'true', '{}', '[1]', 'null']) v;
-- bigint: JSON integers that fit, nothing else
SELECT v, read_as_column('balance', v) AS balance
  FROM unnest(ARRAY['0', '-0', '9223372036854775807', '-9223372036854775808',
                    '9223372036854775808', '-9223372036854775809', '18446744073709551616',
                    '1e3', '1.0', '0.5', '"12"', 'false', '{"a": 1}', '[]', 'null']) v;
-- text, boolean, jsonb take their JSON types
SELECT v, read_as_column('email', v) AS email
  FROM unnest(ARRAY['"a@example.com"', '"tab\tquote\"u\u00e9"', '5', 'true', '{"a": 1}', 'null',
                    '"\u0000"', '"\ud800"']) v;
-- what a value's error does not say, its context does
\set SHOW_CONTEXT always
SELECT hostile('/v1/customers?', page('{"id": "cus_1", "object": "customer", "email": "\u0000"}'));
SELECT email FROM stripe.customers;
\set SHOW_CONTEXT never
SELECT v, read_as_column('livemode', v) AS livemode
  FROM unnest(ARRAY['true', 'false', 'null', '"t"', '1']) v;
SELECT v, read_as_column('metadata', v) AS metadata
  FROM unnest(ARRAY['{"a": "b"}', '[1, {"x": null}]', '"s"', '12.50', 'null', '{"a": 1, "a": 2}']) v;

-- a key with an escaped quote is not the key it ends with
SELECT hostile('/v1/customers?', page('{"id": "cus_real", "object": "customer", "email": "real@example.com", "x\"id": "cus_fake", "x\"email": "fake@example.com", "\"name": "fake"}'));
SELECT id, email, name, attrs->>'x"id' AS escaped_key FROM stripe.customers;
-- nor is a cursor
SELECT hostile('/v1/customers?limit', page('{"id": "cus_p1", "object": "customer", "x\"id": "cus_fake"}', true));
SELECT hostile('/v1/customers?limit=100&starting_after=cus_p1', page('{"id": "cus_p2", "object": "customer"}'));
SELECT hostile('/v1/customers?limit=100&starting_after=cus_fake', '{"error": {"message": "wrong cursor"}}', 400);
SELECT id FROM stripe.customers;
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;

-- text is valid UTF-8 or refused, naming the field; fields not read are not looked at
CREATE FUNCTION bad_utf8_page() RETURNS bytea LANGUAGE sql AS $$
  SELECT convert_to('{"object": "list", "has_more": false, "data": [{"id": "cus_u", "object": "customer", "email": "ok@example.com", "name": "bad ', 'UTF8')
         || '\xff'::bytea || convert_to('", "description": "cut \u00e9 ', 'UTF8') || '\xc3'::bytea
         || convert_to('", "phone": "sur', 'UTF8') || '\xeda080'::bytea
         || convert_to('", "metadata": {"k": "esc\"aped ', 'UTF8') || '\xc0af'::bytea
         || convert_to('"}, "address": {"city": "', 'UTF8') || '\xf4908080'::bytea
         || convert_to('"}}]}', 'UTF8') $$;
SELECT q, after_bytes('/v1/customers?', bad_utf8_page(), 200, q)
  FROM unnest(ARRAY['SELECT id || email FROM stripe.customers',
                    'SELECT octet_length(name) FROM stripe.customers',
                    'SELECT octet_length(description) FROM stripe.customers',
                    'SELECT octet_length(phone) FROM stripe.customers',
                    'SELECT metadata IS NULL FROM stripe.customers',
                    'SELECT address IS NULL FROM stripe.customers',
                    'SELECT attrs IS NULL FROM stripe.customers']) q;
-- an escape elsewhere sends attrs through jsonb_in: checked as well
SELECT after_bytes('/v1/customers?',
                   convert_to('{"object": "list", "has_more": false, "data": [{"id": "cus_\u0075", "object": "customer", "name": "', 'UTF8')
                   || '\xfe'::bytea || convert_to('"}]}', 'UTF8'),
                   200, 'SELECT attrs IS NULL FROM stripe.customers');
-- a retrieve too
SELECT after_bytes('/v1/customers/cus_u',
                   convert_to('{"id": "cus_u", "object": "customer", "name": "', 'UTF8')
                   || '\xff'::bytea || convert_to('"}', 'UTF8'),
                   200, $$SELECT octet_length(name) FROM stripe.customers WHERE id = 'cus_u'$$);

-- an object of another type than the table's is refused
SELECT o, after_answer('/v1/customers?', page(o), 200, 'SELECT string_agg(id, '','') FROM stripe.customers')
  FROM unnest(ARRAY['{"id": "cus_1", "object": "customer"}, {"id": "ch_1", "object": "charge"}',
                    '{"id": "cus_1", "object": null}',
                    '{"id": "cus_1", "object": "customer\u0000"}',
                    '{"id": "cus_1", "object": "customers"}',
                    '{"id": "cus_1", "object": ["customer"]}',
                    -- without "object" (or a deleted one) it is taken as Stripe sends it
                    '{"id": "cus_2"}, {"id": "cus_3", "object": "customer", "deleted": true}']) o;
SELECT after_answer('/v1/customers/cus_x', '{"object": "list", "data": [], "has_more": false}', 200,
                    $$SELECT id FROM stripe.customers WHERE id = 'cus_x'$$);
-- a table of no catalogued object takes any object
CREATE FOREIGN TABLE value_lists (id text, attrs jsonb) SERVER stripe OPTIONS (object 'radar/value_lists');
SELECT after_answer('/v1/radar/value_lists?', page('{"id": "rsl_1", "object": "anything"}'), 200,
                    'SELECT attrs FROM value_lists');
DROP FOREIGN TABLE value_lists;
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
