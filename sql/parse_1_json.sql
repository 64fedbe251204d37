-- The page scanner (src/json_page.c) accepts exactly the documents that
-- PostgreSQL's json type accepts, and refuses the others as malformed JSON
\set SHOW_CONTEXT never
\set VERBOSITY default
SET stripe_sync.max_retries = 0;

CREATE FUNCTION pg_accepts(doc text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM doc::json;
  RETURN true;
EXCEPTION WHEN invalid_text_representation THEN
  RETURN false;
END $$;
-- the scan's verdict on a body: any answer but a malformed (or empty) one
CREATE FUNCTION scan_accepts(body text) RETURNS boolean
LANGUAGE sql AS $$
  SELECT after_answer('/v1/customers?', body, 200, 'SELECT count(*) FROM stripe.customers')
         !~ 'malformed JSON|empty response body' $$;
-- a value v in a customer of a list page
CREATE FUNCTION in_page(v text) RETURNS text
LANGUAGE sql AS $$
  SELECT '{"object": "list", "has_more": false, "data": [{"id": "cus_1", "object": "customer", "x": '
         || v || '}]}' $$;

-- values: numbers, keywords, strings and their escapes, structures
CREATE TABLE docs (doc text);
INSERT INTO docs SELECT in_page(v) FROM unnest(ARRAY[
  '0', '-0', '1', '-1', '1.5', '-0.5', '0.0', '1e5', '1E-7', '-1.5e+10', '1e999',
  '123456789012345678901234567890', '01', '-01', '-', '--1', '+1', '1.', '.5', '1e', '1e+',
  '1.5.3', '1x', '1_', '0x10', '1é', 'NaN', 'Infinity', '-Infinity',
  'true', 'false', 'null', 'tru', 'truee', 'True', 'nul', 'null_', 'truefalse', 'é', '_',
  '""', '"x"', '"é ✓ 😀"', '"\"\\\/\b\f\n\r\t"', '"\u00e9"', '"\u0000"', '"\ud800"',
  '"\udc00\ud800"', '"\uD83D\uDE00"', '"\uDE00x"', '"\x"', '"\a"', '"\U0041"', '"\u"', '"\u12"',
  '"\u12G4"', '"\u00e"', '"\''"', '"abc', '"\', '"\"', E'"a\tb"', E'"a\nb"', E'"\x01"',
  E'"\x1f"', E'"\x7f"', E'"a\\\tb"', '''a''',
  '[]', '{}', '[[[]]]', '[1, [2, [3]]]', '{"a": {"b": [1, {"c": null}]}}', '{"a": 1, "a": 2}',
  '[1,]', '[,1]', '[1 2]', '[1]]', '[', ']', '{', '}', '{"a": 1,}', '{"a" 1}', '{a: 1}',
  '{"a":}', '{,}', '{"a": 1 "b": 2}', '{"a": 1}}', '{1: 2}', '{"a": 1, "b"}', '{"a"::1}',
  '[1:2]', '{"a", 1}', E'[\f1]', E'[\x0b1]', E'[\u00a01]', E' \t\n\r 1 \t\n\r ',
  repeat('[', 999) || repeat(']', 999), repeat('{"a": ', 999) || '1' || repeat('}', 999),
  repeat('[', 999) || repeat(']', 998)]) v;
-- whole documents: empty, blank, trailing text, other JSON than a list
INSERT INTO docs VALUES (''), ('   '), (E'\n'),
  ('{"object": "list", "has_more": false, "data": []}'),
  (E'{"object": "list", "has_more": false, "data": []} \n\t'),
  ('{"object": "list", "has_more": false, "data": []} x'),
  ('{"object": "list", "has_more": false, "data": []}{}'),
  ('{"object": "list", "has_more": false, "data": []},'),
  ('[1]'), ('"x"'), ('1'), ('null'), ('{"data": 5}'), ('{"data": [1, "x", null, []]}'),
  ('{"object": "list", "has_more": false, "data": [{"id": "cus_1"'),
  ('{"object": "list", "has_more": false, "data": [{"id": "cus_1"}'),
  ('{"object": "list", "has_more": false, "data": [{"id": "cus_1"}]');
-- every length of a string around the scanner's 8-byte steps, with the byte
-- that ends it (or breaks it) at each place
INSERT INTO docs
SELECT in_page('"' || repeat('a', n) || s || repeat('é', n % 3) || '"')
  FROM generate_series(0, 17) n,
       unnest(ARRAY['', '\"', '\\', '\n', '\u0041', E'\x1f', E'\x01', E'\t', '\', '"', '\q', E'\x7f']) s;

SELECT count(*) AS docs,
       count(*) FILTER (WHERE pg_accepts(doc)) AS valid,
       count(*) FILTER (WHERE NOT pg_accepts(doc)) AS invalid
  FROM docs;
-- the property: the scan accepts a document exactly when PostgreSQL does
SELECT doc, pg_accepts(doc) AS postgresql, scan_accepts(doc) AS scan
  FROM docs WHERE pg_accepts(doc) IS DISTINCT FROM scan_accepts(doc);
-- the errors are PostgreSQL's words
SELECT after_answer('/v1/customers?', in_page(v), 200, 'SELECT count(*) FROM stripe.customers') AS answer
  FROM unnest(ARRAY['01', '"\x"', E'"a\tb"', '[1,]', '{"a" 1}', 'tru']) v;
SELECT after_answer('/v1/customers?', '', 200, 'SELECT count(*) FROM stripe.customers') AS answer;
-- deeper than the scanner goes (6400 levels): refused, without PostgreSQL's recursion
SELECT after_answer('/v1/customers?', in_page(repeat('[', 7000) || repeat(']', 7000)), 200,
                    'SELECT count(*) FROM stripe.customers') AS answer;
SELECT after_answer('/v1/customers?', in_page(repeat('[', 6000) || repeat(']', 6000)), 200,
                    'SELECT count(*) FROM stripe.customers') AS answer;

-- what a valid page holds is read in any layout
SELECT after_answer('/v1/customers?',
  E'\n{ "data" :\t[ {"metadata":{"id":"no","email":["x"]} ,\r\n"id" : "cus_ws" , "email":"a\\"b@x" ,'
  || E'"x\\"id":"cus_fake","\\u0069d":"cus_esc"} ] , "has_more" : false , "object" : "list" }\n', 200,
  $$SELECT id || ' ' || email || ' ' || metadata::text || ' ' || (attrs->>'x"id') FROM stripe.customers$$)
  AS answer;
-- a repeated key: the last one counts, a later "data" that is no array unmakes the list
SELECT after_answer('/v1/customers?',
  '{"object": "list", "has_more": true, "data": [{"id": "cus_a", "email": "1", "email": "2"}], "has_more": false, "data": [{"id": "cus_b"}]}',
  200, $$SELECT string_agg(id || '=' || coalesce(email, '-'), ',') FROM stripe.customers$$) AS answer;
SELECT after_answer('/v1/customers?', '{"object": "list", "has_more": false, "data": [{"id": "cus_a"}], "data": 5}',
  200, 'SELECT count(*) FROM stripe.customers') AS answer;
SELECT fake('DELETE', '/_control/faults') IS NOT NULL AS cleared;
DROP TABLE docs;
DROP FUNCTION pg_accepts(text), scan_accepts(text), in_page(text);
