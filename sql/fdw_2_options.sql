-- Option validation, privileges and clear errors
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
\set VERBOSITY default

-- unknown options list the valid ones
CREATE SERVER bad1 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_uri 'https://x');
\echo :LAST_ERROR_SQLSTATE
CREATE FOREIGN TABLE bad_t (id text) SERVER stripe OPTIONS (objekt 'customers');
-- keys belong in user mappings only
CREATE SERVER bad2 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_key 'sk_test_in_the_wrong_place');
-- malformed values are rejected at CREATE/ALTER time, and keys are never echoed
CREATE SERVER bad3 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url 'ftp://api.stripe.com');
CREATE SERVER bad4 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url 'https://user@evil.example');
CREATE SERVER bad5 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_version 'yesterday');
CREATE SERVER bad6 FOREIGN DATA WRAPPER stripe_sync OPTIONS (account 'bob');
ALTER SERVER stripe OPTIONS (ADD api_version '2026-13-01');
CREATE USER MAPPING FOR PUBLIC SERVER stripe OPTIONS (api_key 'sk test with spaces');
CREATE FOREIGN TABLE bad_t (id text) SERVER stripe OPTIONS (object '../account');
CREATE FOREIGN TABLE bad_t (id text OPTIONS (field 'a-b')) SERVER stripe OPTIONS (object 'customers');
CREATE SERVER intempt_bad FOREIGN DATA WRAPPER intempt OPTIONS (org 'acme', projekt 'web');
CREATE SERVER intempt_ok FOREIGN DATA WRAPPER intempt OPTIONS (org 'acme', project 'web', source_id '123456789');
CREATE USER MAPPING FOR CURRENT_USER SERVER intempt_ok OPTIONS (api_key 'no_dot_here');
CREATE USER MAPPING FOR CURRENT_USER SERVER intempt_ok OPTIONS (api_key 'prefix.secret');
DROP SERVER intempt_ok CASCADE;

-- a valid version and account are accepted
CREATE SERVER ok1 FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_version '2024-06-20', account 'acct_1A2b3C');
DROP SERVER ok1;

-- api_url is for superusers only (no SSRF for ordinary roles)
CREATE ROLE regress_stripe_user;
GRANT USAGE ON FOREIGN DATA WRAPPER stripe_sync TO regress_stripe_user;
SET ROLE regress_stripe_user;
CREATE SERVER mine FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url 'http://127.0.0.1:1/');
\echo :LAST_ERROR_SQLSTATE
CREATE SERVER mine FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_version '2026-10-28.endive');
ALTER SERVER mine OPTIONS (ADD api_url 'http://169.254.169.254');
-- test_connection uses the caller's own user mapping
SELECT stripe_sync.test_connection('mine');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP SERVER mine;
DROP OWNED BY regress_stripe_user;
DROP ROLE regress_stripe_user;

-- no user mapping, or one without a key
CREATE SERVER nokey FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE FOREIGN TABLE nokey_customers (id text) SERVER nokey OPTIONS (object 'customers');
SELECT * FROM nokey_customers;
CREATE USER MAPPING FOR CURRENT_USER SERVER nokey;
SELECT * FROM nokey_customers;
\echo :LAST_ERROR_SQLSTATE
SELECT stripe_sync.test_connection('nokey');
-- a wrong key: a clear error that never shows the key or a part of it
ALTER USER MAPPING FOR CURRENT_USER SERVER nokey OPTIONS (ADD api_key 'sk_test_wrong_secret_9876');
SELECT * FROM nokey_customers;
\echo :LAST_ERROR_SQLSTATE
SELECT stripe_sync.test_connection('nokey');
DROP SERVER nokey CASCADE;
-- test_connection of a server of another wrapper
CREATE SERVER other FOREIGN DATA WRAPPER intempt;
SELECT stripe_sync.test_connection('other');
DROP SERVER other;
