/* stripe_sync--0.1.sql */

\echo Use "CREATE EXTENSION stripe_sync" to load this file. \quit

-- management objects live in schema stripe_sync; nothing in it is for PUBLIC
REVOKE ALL ON SCHEMA stripe_sync FROM PUBLIC;

CREATE FUNCTION stripe_sync.stripe_fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'stripe_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION stripe_sync.stripe_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'stripe_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER stripe_sync
  HANDLER stripe_sync.stripe_fdw_handler
  VALIDATOR stripe_sync.stripe_fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER stripe_sync IS 'Stripe objects as foreign tables';

-- Intempt: credentials only (server options and a user mapping), as dblink_fdw does
CREATE FUNCTION stripe_sync.intempt_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'intempt_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER intempt
  VALIDATOR stripe_sync.intempt_fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER intempt IS 'Intempt tracking API credentials for stripe_sync';

CREATE FUNCTION stripe_sync.test_connection(server name,
    OUT account_id text, OUT account_name text, OUT api_version text)
RETURNS record
AS 'MODULE_PATHNAME', 'stripe_test_connection'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION stripe_sync.test_connection(name) IS
  'Asks Stripe for the account behind a server and the caller''s user mapping';

GRANT USAGE ON SCHEMA stripe_sync TO PUBLIC;
