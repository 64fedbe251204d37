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
    -- the first backfill's cut (unix seconds): objects created before it get
    -- historical events, events from it on are shipped as they are
    history_until   bigint,
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

-- a backfill shared with helper workers: the progress of each part dealt to
-- one (the sync's own cursor, in object_state, lists the parts it dealt)
CREATE TABLE stripe_sync.backfill_parts (
    source          text NOT NULL,
    object          text NOT NULL,
    part            bigint NOT NULL,
    cursor          text,                -- NULL: the part is done
    rows            bigint NOT NULL DEFAULT 0,
    requests        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source, object, part),
    FOREIGN KEY (source, object) REFERENCES stripe_sync.object_state ON DELETE CASCADE ON UPDATE CASCADE
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
REVOKE ALL ON stripe_sync.sources, stripe_sync.object_state, stripe_sync.backfill_parts,
              stripe_sync.applied_events, stripe_sync.runs FROM PUBLIC;

-- rows and requests include a running backfill's helpers (their part rows)
CREATE VIEW stripe_sync.status AS
SELECT s.name AS source, o.object, o.state, o.rows + coalesce(p.rows, 0) AS rows, o.backfill_done,
       o.last_success_at, s.next_sync_at, to_timestamp(s.events_cursor) AS events_cursor,
       o.requests + coalesce(p.requests, 0) AS requests, o.last_error
  FROM stripe_sync.sources s JOIN stripe_sync.object_state o ON o.source = s.name
  LEFT JOIN (SELECT source, object, sum(rows)::bigint AS rows, sum(requests)::bigint AS requests
               FROM stripe_sync.backfill_parts GROUP BY source, object) p
         ON p.source = o.source AND p.object = o.object;
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
  -- lz4 for every jsonb column: attrs is most of a row, and pglz on the nested
  -- ones cost a tenth of a backfill's time, more than lz4 on attrs
  SELECT string_agg(format('%I %s%s%s', column_name, column_type,
                           CASE WHEN column_type = 'jsonb' THEN ' COMPRESSION lz4' ELSE '' END,
                           CASE WHEN column_name = 'id' THEN ' PRIMARY KEY' ELSE '' END), ', ')
    INTO cols FROM stripe_sync.catalog_columns(object);
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

CREATE FUNCTION stripe_sync.check_destination(destination name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF destination IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
       WHERE s.srvname = destination AND w.fdwname = 'intempt') THEN
    RAISE EXCEPTION 'destination "%" is not an intempt server', destination
      USING ERRCODE = 'undefined_object',
            HINT = 'CREATE SERVER … FOREIGN DATA WRAPPER intempt OPTIONS (org …, project …, source_id …), and a user mapping with api_key.';
  END IF;
END $$;

CREATE FUNCTION stripe_sync.create_source(name text, server name,
    sync_interval interval DEFAULT '1 hour',
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    target_schema name DEFAULT 'stripe_data',
    emit_history boolean DEFAULT true,
    destination name DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  objs text[] := coalesce(objects, stripe_sync.default_objects());
  o text;
BEGIN
  PERFORM stripe_sync.check_destination(destination);
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
  INSERT INTO stripe_sync.sources (name, server, sync_interval, sync_from, objects, target_schema,
                                   emit_history, destination)
  VALUES (create_source.name, create_source.server, create_source.sync_interval,
          create_source.sync_from, objs, create_source.target_schema, create_source.emit_history,
          create_source.destination);
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
    PERFORM stripe_sync.check_destination(destination);
    UPDATE stripe_sync.sources s SET destination = alter_source.destination WHERE s.name = alter_source.name;
    -- a destination given after the first backfill still gets the history
    IF src.destination IS NULL AND src.emit_history AND src.history_until IS NOT NULL THEN
      FOREACH o IN ARRAY src.objects LOOP
        EXECUTE format('SELECT stripe_sync.outbox_add($1, NULL, NULL, array_agg(t.created_unix ORDER BY t.created_unix, t.id), '
                       'array_agg(t.attrs::text ORDER BY t.created_unix, t.id), $2) '
                       'FROM (SELECT id, attrs, (attrs->>''created'')::bigint AS created_unix FROM %I.%I '
                       'WHERE deleted_at IS NULL) t', src.target_schema, o)
          USING alter_source.name, src.history_until;
      END LOOP;
    END IF;
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

REVOKE ALL ON FUNCTION stripe_sync.create_source(text, name, interval, timestamptz, text[], name, boolean, name),
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

-- ---------------------------------------------------------------------------
-- Outbox and Intempt (SPEC §5; outbox.c ships it)
-- ---------------------------------------------------------------------------

-- which Stripe events become which Intempt events; users may edit it
CREATE TABLE stripe_sync.event_map (
    stripe_event    text PRIMARY KEY,
    intempt_event   text NOT NULL CHECK (intempt_event <> ''),
    enabled         boolean NOT NULL DEFAULT true
);
INSERT INTO stripe_sync.event_map (stripe_event, intempt_event) VALUES
  ('charge.succeeded', 'Charge succeeded'),
  ('charge.failed', 'Charge failed'),
  ('customer.created', 'Customer created'),
  ('customer.updated', 'Customer updated'),
  ('invoice.created', 'Invoice created'),
  ('invoice.updated', 'Invoice updated'),
  ('invoice.paid', 'Invoice paid'),
  ('invoice.voided', 'Invoice voided'),
  ('invoice.marked_uncollectible', 'Invoice marked uncollectible'),
  ('payment_intent.created', 'Payment intent created'),
  ('payment_intent.succeeded', 'Payment intent succeeded'),
  ('refund.created', 'Refund issued'),
  ('application_fee.refunded', 'Refund issued'),
  ('customer.subscription.created', 'Subscription created'),
  ('customer.subscription.updated', 'Subscription updated'),
  ('customer.subscription.paused', 'Subscription updated'),
  ('customer.subscription.resumed', 'Subscription updated');

CREATE TABLE stripe_sync.outbox (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
    event_id        text NOT NULL,          -- Intempt's eventId: Stripe's event id, or hist_… for history
    event_name      text NOT NULL,          -- Intempt's event name
    stripe_event    text NOT NULL,          -- the Stripe event type (or its historical equivalent)
    object_id       text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    payload         jsonb NOT NULL,         -- one element of the request's payload array
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    response        text,                   -- Intempt's answer that made the row dead
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (source, event_id)
);
-- the shipper reads each source's undelivered rows in order
CREATE INDEX outbox_undelivered_idx ON stripe_sync.outbox (source, id) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_delivered_idx ON stripe_sync.outbox (delivered_at) WHERE state = 'delivered';

REVOKE ALL ON stripe_sync.event_map, stripe_sync.outbox FROM PUBLIC;

-- Stripe's amounts are integers in the currency's minor unit: digits after the point
CREATE FUNCTION stripe_sync.currency_exponent(currency text) RETURNS integer
AS 'MODULE_PATHNAME', 'stripe_currency_exponent_sql'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION stripe_sync.major_units(minor numeric, currency text) RETURNS numeric
AS 'MODULE_PATHNAME', 'stripe_major_units_sql'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- the "data" of an Intempt event: ids, status, currency, every top-level amount
-- twice (major units under its name, Stripe's integer under <name>_minor) and a
-- few telling fields (payload.c)
CREATE FUNCTION stripe_sync.intempt_data(obj jsonb, event_id text, event_type text, customer_id text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'stripe_intempt_data'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- the events a backfilled object stands for, with the status each needs
CREATE FUNCTION stripe_sync.history_events(obj jsonb) RETURNS SETOF text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT v.event_type
    FROM (VALUES ('customer', 'customer.created', NULL),
                 ('charge', 'charge.succeeded', 'succeeded'),
                 ('charge', 'charge.failed', 'failed'),
                 ('invoice', 'invoice.created', NULL),
                 ('payment_intent', 'payment_intent.created', NULL),
                 ('payment_intent', 'payment_intent.succeeded', 'succeeded'),
                 ('refund', 'refund.created', NULL),
                 ('subscription', 'customer.subscription.created', NULL)) v(object, event_type, status)
   WHERE v.object = obj->>'object' AND (v.status IS NULL OR v.status = obj->>'status')
$$;

/*
 * Writes the outbox rows of Stripe events (event_ids and types given) or of
 * backfilled objects (NULL: their historical events, for objects created
 * before history_until), in the caller's transaction.  A row already there
 * (a page fetched again after a crash, an event re-read) is left alone.
 */
CREATE FUNCTION stripe_sync.outbox_add(source text, event_ids text[], event_types text[],
                                       times bigint[], objects text[], history_until bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  sch name;
  customer_email text := 'NULL::text';
  charge_customer text := 'NULL::text';
  charge_email text := 'NULL::text';
  n bigint;
BEGIN
  SELECT s.target_schema INTO sch FROM stripe_sync.sources s WHERE s.name = outbox_add.source;
  -- the source's own tables answer who an object belongs to, when it syncs them
  IF to_regclass(format('%I.customers', sch)) IS NOT NULL THEN
    customer_email := format('(SELECT nullif(c.attrs->>''email'', '''') FROM %I.customers c WHERE c.id = x.cust)', sch);
  END IF;
  IF to_regclass(format('%I.charges', sch)) IS NOT NULL THEN
    charge_customer := format('(SELECT ch.attrs->>''customer'' FROM %I.charges ch WHERE ch.id = x0.charge)', sch);
    charge_email := format('(SELECT nullif(ch.attrs->''billing_details''->>''email'', '''') FROM %I.charges ch WHERE ch.id = x.charge)', sch);
  END IF;
  EXECUTE format($q$
    WITH objs AS MATERIALIZED (  -- each object's text is parsed once, not per reference
      SELECT r.id, r.type, r.t, r.o::jsonb AS obj, r.ord
        FROM unnest($2, $3, $4, $5) WITH ORDINALITY r(id, type, t, o, ord))
    INSERT INTO stripe_sync.outbox (source, event_id, event_name, stripe_event, object_id, occurred_at, payload)
    SELECT $1, e.event_id, m.intempt_event, e.event_type, e.obj->>'id', to_timestamp(e.t),
           jsonb_build_object('eventId', e.event_id, 'timestamp', e.t * 1000,
                              'userId', u.user_id,
                              'data', stripe_sync.intempt_data(e.obj, e.event_id, e.event_type, u.cust))
      FROM (SELECT coalesce(i.id, 'hist_' || h.h || '_' || (i.obj->>'id')) AS event_id,
                   coalesce(i.type, h.h) AS event_type, i.t, i.obj, i.ord
              FROM objs i
              LEFT JOIN LATERAL stripe_sync.history_events(i.obj) h(h) ON i.type IS NULL
             WHERE i.type IS NOT NULL
                OR (h.h IS NOT NULL AND (i.obj->>'created')::bigint < $6)) e
      JOIN stripe_sync.event_map m ON m.stripe_event = e.event_type AND m.enabled
      CROSS JOIN LATERAL (
        SELECT CASE WHEN e.obj->>'object' = 'customer' THEN e.obj->>'id'
                    WHEN jsonb_typeof(e.obj->'customer') = 'object' THEN e.obj->'customer'->>'id'
                    ELSE e.obj->>'customer' END AS cust,
               CASE WHEN jsonb_typeof(e.obj->'charge') = 'object' THEN e.obj->'charge'->>'id'
                    ELSE coalesce(e.obj->>'charge', e.obj->>'latest_charge') END AS charge) x0
      CROSS JOIN LATERAL (SELECT coalesce(x0.cust, %2$s) AS cust, x0.charge) x
      CROSS JOIN LATERAL (
        SELECT x.cust,
               coalesce(CASE WHEN e.obj->>'object' = 'customer' THEN nullif(e.obj->>'email', '') END,
                        %1$s, x.cust,
                        nullif(e.obj->'billing_details'->>'email', ''), nullif(e.obj->>'customer_email', ''),
                        nullif(e.obj->>'receipt_email', ''), %3$s,
                        e.obj->>'id') AS user_id) u
     ORDER BY e.ord, e.event_type
    ON CONFLICT (source, event_id) DO NOTHING $q$, customer_email, charge_customer, charge_email)
    USING source, event_ids, event_types, times, objects, coalesce(history_until, 0);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- requeues dead rows; returns how many
CREATE FUNCTION stripe_sync.retry_dead(source text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE stripe_sync.outbox o SET state = 'pending', attempts = 0, next_attempt_at = NULL
   WHERE o.state = 'dead' AND (retry_dead.source IS NULL OR o.source = retry_dead.source);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM stripe_sync.wake();
  RETURN n;
END $$;

REVOKE ALL ON FUNCTION stripe_sync.outbox_add(text, text[], text[], bigint[], text[], bigint),
                       stripe_sync.retry_dead(text), stripe_sync.check_destination(name) FROM PUBLIC;
