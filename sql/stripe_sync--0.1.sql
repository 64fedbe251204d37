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

-- ---------------------------------------------------------------------------
-- Sync: sources, per-object state, local tables (SPEC §4)
-- ---------------------------------------------------------------------------

CREATE FUNCTION stripe_sync.catalog_columns(object text,
    OUT column_name text, OUT column_type text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_catalog_columns'
LANGUAGE C STRICT STABLE;

CREATE TABLE stripe_sync.sources (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    server          name NOT NULL,
    owner           regrole NOT NULL DEFAULT current_user::regrole,
    sync_interval   interval NOT NULL DEFAULT '1 hour' CHECK (sync_interval >= '1 second'),
    sync_from       timestamptz,
    objects         text[] NOT NULL,
    target_schema   name NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    destination     name,
    emit_history    boolean NOT NULL DEFAULT true,
    next_sync_at    timestamptz NOT NULL DEFAULT now(),
    -- events with created >= events_cursor (unix seconds) are read by the next sync
    events_cursor   bigint,
    -- the Stripe account behind the server's key, learnt on the first sync
    account_id      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stripe_sync.object_state (
    source          text NOT NULL REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
    object          text NOT NULL,
    state           text NOT NULL DEFAULT 'pending',
    rows            bigint NOT NULL DEFAULT 0,
    backfill_done   boolean NOT NULL DEFAULT false,
    backfill_cursor text,
    last_success_at timestamptz,
    last_error      text,
    requests        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source, object)
);

-- events applied recently, so that the overlap re-read never applies one twice
CREATE TABLE stripe_sync.applied_events (
    source          text NOT NULL REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
    event_id        text NOT NULL,
    created         bigint NOT NULL,
    PRIMARY KEY (source, event_id)
);

CREATE TABLE stripe_sync.runs (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    status          text NOT NULL DEFAULT 'running',   -- running, ok, error, interrupted
    requests        bigint NOT NULL DEFAULT 0,
    rows            bigint NOT NULL DEFAULT 0,
    error           text
);

-- management tables are not for PUBLIC
REVOKE ALL ON stripe_sync.sources, stripe_sync.object_state, stripe_sync.applied_events,
              stripe_sync.runs FROM PUBLIC;

CREATE VIEW stripe_sync.status AS
SELECT s.name AS source, o.object, o.state, o.rows, o.backfill_done, o.last_success_at,
       s.next_sync_at, to_timestamp(s.events_cursor) AS events_cursor, o.requests, o.last_error
  FROM stripe_sync.sources s JOIN stripe_sync.object_state o ON o.source = s.name;
REVOKE ALL ON stripe_sync.status FROM PUBLIC;

-- the default set of SPEC §4
CREATE FUNCTION stripe_sync.default_objects() RETURNS text[]
LANGUAGE sql IMMUTABLE AS
$$ SELECT ARRAY['customers', 'charges', 'invoices', 'payment_intents', 'refunds',
                'subscriptions', 'products', 'prices'] $$;

-- creates <schema>.<object> with the FDW's typed columns plus sync bookkeeping
CREATE FUNCTION stripe_sync.create_local_table(target_schema name, object text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  cols text;
BEGIN
  SELECT string_agg(format('%I %s%s', column_name, column_type,
                           CASE WHEN column_name = 'id' THEN ' PRIMARY KEY' ELSE '' END), ', ')
    INTO cols FROM stripe_sync.catalog_columns(object);
  -- lz4: attrs is most of a row, and pglz costs more than the rest of the insert
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I (%s, attrs jsonb COMPRESSION lz4 NOT NULL, account_id text, '
                 'synced_at timestamptz NOT NULL, observed_at timestamptz NOT NULL, deleted_at timestamptz)',
                 target_schema, object, cols);
  IF EXISTS (SELECT 1 FROM stripe_sync.catalog_columns(object) WHERE column_name = 'customer') THEN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (customer)', object || '_customer_idx', target_schema, object);
  END IF;
  IF EXISTS (SELECT 1 FROM stripe_sync.catalog_columns(object) WHERE column_name = 'created') THEN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (created)', object || '_created_idx', target_schema, object);
  END IF;
END $$;

CREATE FUNCTION stripe_sync.check_objects(objects text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  o text;
BEGIN
  FOREACH o IN ARRAY objects LOOP
    IF o NOT IN ('customers', 'charges', 'invoices', 'payment_intents', 'refunds', 'subscriptions',
                 'products', 'prices', 'plans', 'coupons', 'promotion_codes', 'balance_transactions',
                 'disputes', 'payouts', 'transfers', 'topups', 'setup_intents', 'checkout_sessions',
                 'credit_notes', 'invoice_items', 'subscription_schedules', 'tax_rates',
                 'application_fees', 'early_fraud_warnings', 'files', 'file_links') THEN
      RAISE EXCEPTION 'unknown object "%"', o
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'A source syncs objects Stripe can list with created ranges and events.',
              HINT = 'Use objects among ' || array_to_string(stripe_sync.default_objects(), ', ') || ', plans, coupons, disputes, payouts, …';
    END IF;
  END LOOP;
END $$;

CREATE FUNCTION stripe_sync.create_source(name text, server name,
    sync_interval interval DEFAULT '1 hour',
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    target_schema name DEFAULT 'stripe_data',
    emit_history boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  objs text[] := coalesce(objects, stripe_sync.default_objects());
  o text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
                  WHERE s.srvname = create_source.server AND w.fdwname = 'stripe_sync') THEN
    RAISE EXCEPTION 'server "%" does not exist or is not a stripe_sync server', server
      USING ERRCODE = 'undefined_object',
            HINT = 'CREATE SERVER … FOREIGN DATA WRAPPER stripe_sync, and a user mapping with api_key.';
  END IF;
  IF sync_interval < interval '1 second' THEN
    RAISE EXCEPTION 'sync_interval % is under one second', sync_interval
      USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 1 hour.';
  END IF;
  IF sync_from > now() THEN
    RAISE EXCEPTION 'sync_from % is in the future', sync_from
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use NULL for all history, or a past time.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = target_schema) THEN
    RAISE EXCEPTION 'schema "%" does not exist', target_schema
      USING ERRCODE = 'invalid_schema_name', HINT = format('CREATE SCHEMA %I;', target_schema);
  END IF;
  PERFORM stripe_sync.check_objects(objs);
  INSERT INTO stripe_sync.sources (name, server, sync_interval, sync_from, objects, target_schema, emit_history)
  VALUES (create_source.name, create_source.server, create_source.sync_interval,
          create_source.sync_from, objs, create_source.target_schema, create_source.emit_history);
  FOREACH o IN ARRAY objs LOOP
    PERFORM stripe_sync.create_local_table(target_schema, o);
    INSERT INTO stripe_sync.object_state (source, object) VALUES (create_source.name, o);
  END LOOP;
  -- the first sync is due now: let the launcher know when this commits
  PERFORM stripe_sync.wake();
END $$;

CREATE FUNCTION stripe_sync.alter_source(name text,
    sync_interval interval DEFAULT NULL,
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    destination name DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  src stripe_sync.sources;
  o text;
BEGIN
  SELECT * INTO src FROM stripe_sync.sources s WHERE s.name = alter_source.name FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'source "%" does not exist', name USING ERRCODE = 'undefined_object';
  END IF;
  IF sync_interval IS NOT NULL THEN
    IF sync_interval < interval '1 second' THEN
      RAISE EXCEPTION 'sync_interval % is under one second', sync_interval
        USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 1 hour.';
    END IF;
    -- the new interval counts from the last sync, so a shorter one can be due at once
    UPDATE stripe_sync.sources s SET sync_interval = alter_source.sync_interval,
           next_sync_at = least(s.next_sync_at, now() + alter_source.sync_interval)
     WHERE s.name = alter_source.name;
  END IF;
  IF sync_from IS NOT NULL THEN
    IF sync_from > now() THEN
      RAISE EXCEPTION 'sync_from % is in the future', sync_from
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a past time.';
    END IF;
    -- an earlier start needs the backfill again; the upserts keep it idempotent
    UPDATE stripe_sync.sources s SET sync_from = alter_source.sync_from WHERE s.name = alter_source.name;
    UPDATE stripe_sync.object_state os SET backfill_done = false, backfill_cursor = NULL, state = 'pending'
     WHERE os.source = alter_source.name;
  END IF;
  IF objects IS NOT NULL THEN
    PERFORM stripe_sync.check_objects(objects);
    UPDATE stripe_sync.sources s SET objects = alter_source.objects WHERE s.name = alter_source.name;
    FOREACH o IN ARRAY objects LOOP
      PERFORM stripe_sync.create_local_table(src.target_schema, o);
      INSERT INTO stripe_sync.object_state (source, object) VALUES (alter_source.name, o)
        ON CONFLICT DO NOTHING;
    END LOOP;
    DELETE FROM stripe_sync.object_state os WHERE os.source = alter_source.name AND os.object <> ALL (objects);
  END IF;
  IF enabled IS NOT NULL THEN
    UPDATE stripe_sync.sources s SET enabled = alter_source.enabled WHERE s.name = alter_source.name;
  END IF;
  IF destination IS NOT NULL THEN
    UPDATE stripe_sync.sources s SET destination = alter_source.destination WHERE s.name = alter_source.name;
  END IF;
  PERFORM stripe_sync.wake();
END $$;

CREATE FUNCTION stripe_sync.drop_source(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM stripe_sync.sources s WHERE s.name = drop_source.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'source "%" does not exist', name USING ERRCODE = 'undefined_object';
  END IF;
END $$;

CREATE FUNCTION stripe_sync.sync_now(name text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'stripe_sync_now'
LANGUAGE C STRICT VOLATILE;

REVOKE ALL ON FUNCTION stripe_sync.create_source(text, name, interval, timestamptz, text[], name, boolean),
                       stripe_sync.alter_source(text, interval, timestamptz, text[], boolean, name),
                       stripe_sync.drop_source(text), stripe_sync.sync_now(text),
                       stripe_sync.create_local_table(name, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Background workers (worker.c)
-- ---------------------------------------------------------------------------

-- The launcher re-reads the sources when the caller's transaction commits,
-- so a change takes effect without waiting for stripe_sync.naptime.  It can
-- do no more than an early tick, so PUBLIC keeps it, as with pg_notify.
CREATE FUNCTION stripe_sync.wake() RETURNS void
AS 'MODULE_PATHNAME', 'stripe_wake'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION stripe_sync.wake() IS
  'Wakes the sync launcher when the current transaction commits';
