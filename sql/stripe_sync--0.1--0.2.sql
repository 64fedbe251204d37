/* stripe_sync--0.1--0.2.sql: version 0.2.  A new install runs 0.1, then this. */

\echo Use "ALTER EXTENSION stripe_sync UPDATE TO '0.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- State: a source's failures and its last error, each object's history
-- ---------------------------------------------------------------------------

-- failures in a row set the backoff (1 minute doubling, at most the interval or
-- an hour); last_error is logged only when it changes
ALTER TABLE stripe_sync.sources
  ADD COLUMN failures integer NOT NULL DEFAULT 0,
  ADD COLUMN last_error text;

-- Connect (see the Connect section below): a platform's source syncs its
-- connected accounts too; each is a source of its own, its platform set, named
-- '<platform>/<acct_…>'; one no longer listed is deauthorized since deauthorized_at
ALTER TABLE stripe_sync.sources
  ADD COLUMN connected_accounts boolean NOT NULL DEFAULT false,
  ADD COLUMN platform text REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
  ADD COLUMN deauthorized_at timestamptz,
  DROP CONSTRAINT sources_name_check,
  ADD CONSTRAINT sources_name_check
    CHECK (name ~ '^[a-z_][a-z0-9_]*$' OR (platform IS NOT NULL AND name = platform || '/' || account_id));
CREATE INDEX sources_platform_idx ON stripe_sync.sources (platform) WHERE platform IS NOT NULL;

-- a run's events: applied to the local tables, and skipped, changing none (a
-- preview such as invoice.upcoming, a type the source does not sync, an object
-- Stripe no longer has, one created before sync_from)
ALTER TABLE stripe_sync.runs
  ADD COLUMN events bigint NOT NULL DEFAULT 0,
  ADD COLUMN events_skipped bigint NOT NULL DEFAULT 0;

-- history: 'owed' until the object's first backfill has sent its historical
-- events to a destination ('sent'), 'none' without emit_history; history_after
-- is the last id sent, so that a sync cut short resumes there
ALTER TABLE stripe_sync.object_state
  ADD COLUMN history text NOT NULL DEFAULT 'owed' CHECK (history IN ('owed', 'sent', 'none')),
  ADD COLUMN history_after text;
-- 0.1 sent an object's history with its first backfill when the source had a
-- destination, and from the local tables when a destination came later
UPDATE stripe_sync.object_state o
   SET history = CASE WHEN NOT s.emit_history THEN 'none'
                      WHEN s.destination IS NOT NULL AND o.last_success_at IS NOT NULL THEN 'sent'
                      ELSE 'owed' END
  FROM stripe_sync.sources s WHERE s.name = o.source;

-- objects that could not be stored (a value out of range, \u0000, a constraint
-- or trigger of the owner's): set aside with why and their text, while the
-- sync goes on; retry_rejected() has the next sync fetch them again
CREATE TABLE stripe_sync.rejected (
    source          text NOT NULL REFERENCES stripe_sync.sources ON DELETE CASCADE ON UPDATE CASCADE,
    object          text NOT NULL,
    object_id       text NOT NULL,
    error           text NOT NULL,
    raw             text,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 1,
    retry           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (source, object, object_id)
);
REVOKE ALL ON stripe_sync.rejected FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Privileges: a role with USAGE on a server (and on the intempt destination)
-- and a user mapping may create sources; it owns them and sees and manages
-- only its own.  The management tables are written by the extension's
-- functions only (as the extension's owner); every role reads its own rows.
-- ---------------------------------------------------------------------------

ALTER TABLE stripe_sync.sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_sync.object_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_sync.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_sync.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_sync.backfill_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_sync.rejected ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_sources ON stripe_sync.sources FOR SELECT
  USING (pg_catalog.pg_has_role(owner, 'USAGE'));
CREATE POLICY own_sources ON stripe_sync.object_state FOR SELECT
  USING (source IN (SELECT s.name FROM stripe_sync.sources s));
CREATE POLICY own_sources ON stripe_sync.runs FOR SELECT
  USING (source IN (SELECT s.name FROM stripe_sync.sources s));
CREATE POLICY own_sources ON stripe_sync.outbox FOR SELECT
  USING (source IN (SELECT s.name FROM stripe_sync.sources s));
CREATE POLICY own_sources ON stripe_sync.backfill_parts FOR SELECT
  USING (source IN (SELECT s.name FROM stripe_sync.sources s));
CREATE POLICY own_sources ON stripe_sync.rejected FOR SELECT
  USING (source IN (SELECT s.name FROM stripe_sync.sources s));
GRANT SELECT ON stripe_sync.sources, stripe_sync.object_state, stripe_sync.runs,
                stripe_sync.outbox, stripe_sync.backfill_parts, stripe_sync.rejected,
                stripe_sync.event_map TO PUBLIC;

-- rows and requests include a running backfill's helpers (their part rows);
-- as the caller, so that a role sees its own sources only
DROP VIEW stripe_sync.status;
CREATE VIEW stripe_sync.status WITH (security_invoker = true) AS
SELECT s.name AS source, o.object, o.state, o.rows + coalesce(p.rows, 0) AS rows, o.backfill_done,
       o.last_success_at, s.enabled, s.next_sync_at, to_timestamp(s.events_cursor) AS events_cursor,
       o.requests + coalesce(p.requests, 0) AS requests, o.last_error, s.failures,
       o.history, d.pending_events, d.delivery_error,
       (SELECT count(*) FROM stripe_sync.rejected r WHERE r.source = s.name AND r.object = o.object) AS rejected
  FROM stripe_sync.sources s JOIN stripe_sync.object_state o ON o.source = s.name
  -- the source's delivery: events not yet delivered, and why the oldest waits
  CROSS JOIN LATERAL (
    SELECT count(*) AS pending_events,
           (SELECT ob.last_error FROM stripe_sync.outbox ob
             WHERE ob.source = s.name AND ob.state IN ('pending', 'sending') ORDER BY ob.id LIMIT 1) AS delivery_error
      FROM stripe_sync.outbox ob WHERE ob.source = s.name AND ob.state IN ('pending', 'sending')) d
  LEFT JOIN (SELECT source, object, sum(rows)::bigint AS rows, sum(requests)::bigint AS requests
               FROM stripe_sync.backfill_parts GROUP BY source, object) p
         ON p.source = o.source AND p.object = o.object
 -- a platform's connected accounts: stripe_sync.account_status
 WHERE s.platform IS NULL;
GRANT SELECT ON stripe_sync.status TO PUBLIC;

-- ---------------------------------------------------------------------------
-- The catalogue: every object, what it supports, and how a source keeps it
-- current
-- ---------------------------------------------------------------------------

CREATE FUNCTION stripe_sync.catalog_objects(
    OUT object text, OUT path text, OUT stripe_object text, OUT list_filters text[], OUT retrieve boolean,
    OUT listed_under text, OUT writable text, OUT syncable boolean, OUT stays_current text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_catalog_objects'
LANGUAGE C STRICT STABLE;

CREATE VIEW stripe_sync.objects AS SELECT * FROM stripe_sync.catalog_objects();
GRANT SELECT ON stripe_sync.objects TO PUBLIC;

CREATE OR REPLACE FUNCTION stripe_sync.check_objects(objects text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  o text;
  ch record;
BEGIN
  FOREACH o IN ARRAY objects LOOP
    IF NOT EXISTS (SELECT 1 FROM stripe_sync.catalog_objects() c WHERE c.object = o AND c.syncable) THEN
      RAISE EXCEPTION 'unknown object "%"', o
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'A source syncs: ' || (SELECT string_agg(c.object, ', ' ORDER BY c.object)
                                                FROM stripe_sync.catalog_objects() c WHERE c.syncable) || '.',
              HINT = 'SELECT * FROM stripe_sync.objects shows what each object supports.';
    END IF;
    -- listed per customer: the walk goes over the source's own customers table
    IF EXISTS (SELECT 1 FROM stripe_sync.catalog_objects() c WHERE c.object = o AND c.listed_under = 'customer')
       AND NOT 'customers' = ANY (objects) THEN
      RAISE EXCEPTION 'object "%" needs "customers" in the same source', o
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'Stripe lists ' || o || ' only per customer: a source lists them for each customer of its own customers table.',
              HINT = 'Add customers to the source''s objects.';
    END IF;
  END LOOP;
  -- a child table is written from its parent's objects: no requests of its own
  FOR ch IN SELECT * FROM stripe_sync.catalog_children() k
             WHERE k.object = ANY (objects) AND k.parent <> ALL (objects) LOOP
    RAISE EXCEPTION 'object "%" is synced with its parent "%"', ch.object, ch.parent
      USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('The rows of %s are the elements of %s.%s.', ch.object, ch.parent, ch.list_field),
            HINT = format('Add %s to the objects.', ch.parent);
  END LOOP;
END $$;

-- the database the workers use, or NULL when the library is not preloaded
CREATE FUNCTION stripe_sync.worker_database() RETURNS text
AS 'MODULE_PATHNAME', 'stripe_worker_database'
LANGUAGE C STABLE;

-- the installed version of the library, for the workers' check of the schema
CREATE FUNCTION stripe_sync.library_version() RETURNS text
AS 'MODULE_PATHNAME', 'stripe_library_version'
LANGUAGE C IMMUTABLE;

-- ---------------------------------------------------------------------------
-- Management functions.  Each public one is a C front door (stripe_manage) that
-- learns who calls it, then runs the private _<name>(caller, …) below as the
-- extension's owner (SECURITY DEFINER, pinned search_path), and creates the
-- source's schema and local tables as the source's owner.
-- ---------------------------------------------------------------------------

-- refuses a caller without USAGE on a server or without a user mapping for it
CREATE FUNCTION stripe_sync._check_server(caller regrole, server name, fdw name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
                  WHERE s.srvname = server AND w.fdwname = fdw) THEN
    RAISE EXCEPTION 'server "%" does not exist or does not use the % foreign data wrapper', server, fdw
      USING ERRCODE = 'undefined_object',
            HINT = CASE fdw WHEN 'intempt'
                   THEN 'CREATE SERVER … FOREIGN DATA WRAPPER intempt OPTIONS (org …, project …, source_id …), and a user mapping with api_key.'
                   ELSE 'CREATE SERVER … FOREIGN DATA WRAPPER stripe_sync, and a user mapping with api_key.' END;
  END IF;
  IF NOT has_server_privilege(caller, server, 'USAGE') THEN
    RAISE EXCEPTION 'permission denied for server "%"', server
      USING ERRCODE = 'insufficient_privilege',
            DETAIL = format('Role %s has no USAGE on server %I.', caller, server),
            HINT = format('GRANT USAGE ON FOREIGN SERVER %I TO %s;', server, caller);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_user_mapping m JOIN pg_foreign_server s ON s.oid = m.umserver
                  WHERE s.srvname = server AND m.umuser IN (caller, 0)) THEN
    RAISE EXCEPTION 'role % has no user mapping for server "%"', caller, server
      USING ERRCODE = 'undefined_object',
            HINT = format('CREATE USER MAPPING FOR %s SERVER %I OPTIONS (api_key ''…'');', caller, server);
  END IF;
END $$;

-- refuses a caller that neither owns the source nor is a member of its owner
CREATE FUNCTION stripe_sync._owned_source(caller regrole, source text) RETURNS stripe_sync.sources
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  src stripe_sync.sources;
  holder int;
BEGIN
  SELECT * INTO src FROM stripe_sync.sources s WHERE s.name = source;
  IF NOT FOUND OR NOT pg_has_role(caller, src.owner, 'USAGE') THEN
    -- another role's source is not there, for this caller
    RAISE EXCEPTION 'source "%" does not exist', source USING ERRCODE = 'undefined_object';
  END IF;
  -- a worker holds the row for one page's step; a sync_now, for its caller's
  -- whole transaction: wait out the first, name the second at once
  FOR i IN 1..50 LOOP
    BEGIN
      SELECT * INTO src FROM stripe_sync.sources s WHERE s.name = source FOR UPDATE NOWAIT;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'source "%" does not exist', source USING ERRCODE = 'undefined_object';
      END IF;
      RETURN src;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(0.1);
    END;
  END LOOP;
  -- the sync's advisory lock (sync_run.c: class "STRP", the name's hash, 2)
  SELECT l.pid INTO holder FROM pg_locks l
   WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1398035024::oid
     AND l.objid = (hashtext(source)::bigint & 4294967295)::oid AND l.objsubid = 2
     AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
  RAISE EXCEPTION 'source "%" is busy', source USING ERRCODE = 'lock_not_available',
    DETAIL = 'Another transaction holds it' || CASE WHEN holder IS NOT NULL
             THEN format(': process %s is syncing it', holder) ELSE '' END
             || '. A sync_now keeps its source until the transaction it runs in ends.',
    HINT = 'Try again when that transaction ends' || CASE WHEN holder IS NOT NULL
           THEN format(', or cancel it with SELECT pg_cancel_backend(%s)', holder) ELSE '' END || '.';
END $$;

CREATE FUNCTION stripe_sync._check_interval(sync_interval interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF sync_interval < interval '1 second' THEN
    RAISE EXCEPTION 'sync_interval % is under one second', sync_interval
      USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 1 hour.';
  END IF;
END $$;

CREATE FUNCTION stripe_sync._check_sync_from(sync_from timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF sync_from > now() THEN
    RAISE EXCEPTION 'sync_from % is in the future', sync_from
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use NULL for all history, or a past time.';
  END IF;
END $$;

-- where a source of this database would not run, and why
CREATE FUNCTION stripe_sync._warn_unscheduled(source text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  db text := stripe_sync.worker_database();
BEGIN
  IF db IS NULL THEN
    RAISE WARNING 'source "%" will not sync on a schedule: stripe_sync is not preloaded', source
      USING DETAIL = 'Its background workers start only with shared_preload_libraries = ''stripe_sync''.',
            HINT = 'Add stripe_sync to shared_preload_libraries and restart; until then, SELECT stripe_sync.sync_now(…) syncs it.';
  ELSIF db <> current_database() THEN
    RAISE WARNING 'source "%" will not sync on a schedule: the workers use database "%"', source, db
      USING DETAIL = format('stripe_sync.database is %s, and this is database %s.', db, current_database()),
            HINT = format('Set stripe_sync.database = %L and restart, or create the source in database %s.',
                          current_database(), db);
  END IF;
END $$;

CREATE FUNCTION stripe_sync._create_source(caller regrole, name text, server name,
    sync_interval interval, sync_from timestamptz, objects text[], target_schema name,
    emit_history boolean, destination name)
RETURNS regrole LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  objs text[] := coalesce(objects, stripe_sync.default_objects());
  o text;
BEGIN
  IF name IS NULL OR server IS NULL OR target_schema IS NULL OR emit_history IS NULL THEN
    RAISE EXCEPTION 'name, server, target_schema and emit_history must not be NULL'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM stripe_sync._check_server(caller, server, 'stripe_sync');
  IF destination IS NOT NULL THEN
    PERFORM stripe_sync._check_server(caller, destination, 'intempt');
  END IF;
  PERFORM stripe_sync._check_interval(coalesce(sync_interval, '1 hour'));
  PERFORM stripe_sync._check_sync_from(sync_from);
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = target_schema) THEN
    IF NOT has_schema_privilege(caller, target_schema, 'CREATE') THEN
      RAISE EXCEPTION 'permission denied for schema %', target_schema
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('The local tables of the source go in schema %I, where role %s may not create tables.',
                              target_schema, caller);
    END IF;
  ELSIF NOT has_database_privilege(caller, current_database(), 'CREATE') THEN
    RAISE EXCEPTION 'permission denied to create schema %', target_schema
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Create the schema first, or use one where you may create tables.';
  END IF;
  PERFORM stripe_sync.check_objects(objs);
  INSERT INTO stripe_sync.sources (name, server, owner, sync_interval, sync_from, objects, target_schema,
                                   emit_history, destination)
  VALUES (_create_source.name, _create_source.server, caller, coalesce(_create_source.sync_interval, '1 hour'),
          _create_source.sync_from, objs, _create_source.target_schema, _create_source.emit_history,
          _create_source.destination);
  FOREACH o IN ARRAY objs LOOP
    INSERT INTO stripe_sync.object_state (source, object, history)
    VALUES (_create_source.name, o, CASE WHEN _create_source.emit_history THEN 'owed' ELSE 'none' END)
    ON CONFLICT DO NOTHING;
  END LOOP;
  PERFORM stripe_sync._warn_unscheduled(_create_source.name);
  -- the first sync is due now: the launcher hears of it at commit
  PERFORM stripe_sync.wake();
  RETURN caller;
END $$;

CREATE FUNCTION stripe_sync._alter_source(caller regrole, name text, sync_interval interval,
    sync_from timestamptz, objects text[], enabled boolean, destination name)
RETURNS regrole LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  src stripe_sync.sources := stripe_sync._owned_source(caller, name);
  o text;
BEGIN
  IF sync_interval IS NOT NULL THEN
    PERFORM stripe_sync._check_interval(sync_interval);
    -- the new interval counts from the last sync, so a shorter one can be due at once
    UPDATE stripe_sync.sources s SET sync_interval = _alter_source.sync_interval,
           next_sync_at = least(s.next_sync_at, now() + _alter_source.sync_interval)
     WHERE s.name = src.name;
  END IF;
  IF sync_from IS NOT NULL THEN
    PERFORM stripe_sync._check_sync_from(sync_from);
    -- an earlier start needs the backfill again (the upserts keep it idempotent), at once
    UPDATE stripe_sync.sources s SET sync_from = _alter_source.sync_from, next_sync_at = now()
     WHERE s.name = src.name;
    UPDATE stripe_sync.object_state os SET backfill_done = false, backfill_cursor = NULL, state = 'pending'
     WHERE os.source = src.name;
  END IF;
  IF objects IS NOT NULL THEN
    PERFORM stripe_sync.check_objects(objects);
    UPDATE stripe_sync.sources s SET objects = _alter_source.objects WHERE s.name = src.name;
    FOREACH o IN ARRAY objects LOOP
      INSERT INTO stripe_sync.object_state (source, object, history)
      VALUES (src.name, o, CASE WHEN src.emit_history THEN 'owed' ELSE 'none' END)
      ON CONFLICT DO NOTHING;
    END LOOP;
    DELETE FROM stripe_sync.object_state os WHERE os.source = src.name AND os.object <> ALL (objects);
    -- an added object is backfilled at once
    IF EXISTS (SELECT 1 FROM unnest(objects) n WHERE n <> ALL (src.objects)) THEN
      UPDATE stripe_sync.sources s SET next_sync_at = now() WHERE s.name = src.name;
    END IF;
  END IF;
  IF enabled IS NOT NULL THEN
    UPDATE stripe_sync.sources s SET enabled = _alter_source.enabled WHERE s.name = src.name;
  END IF;
  IF destination IS NOT NULL THEN
    PERFORM stripe_sync._check_server(src.owner, destination, 'intempt');
    UPDATE stripe_sync.sources s SET destination = _alter_source.destination WHERE s.name = src.name;
    -- a destination given after the first backfill gets the history the next sync
    -- sends from the local tables (those still owed it): at once
    IF src.destination IS NULL THEN
      UPDATE stripe_sync.sources s SET next_sync_at = now() WHERE s.name = src.name;
    END IF;
  END IF;
  PERFORM stripe_sync.wake();
  RETURN CASE WHEN objects IS NOT NULL THEN src.owner END;
END $$;

CREATE FUNCTION stripe_sync._drop_source(caller regrole, name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM stripe_sync._owned_source(caller, name);
  DELETE FROM stripe_sync.sources s WHERE s.name = _drop_source.name;
  -- a running sync of it stops when the launcher hears
  PERFORM stripe_sync.wake();
END $$;

CREATE FUNCTION stripe_sync._retry_dead(caller regrole, source text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  IF source IS NOT NULL THEN
    PERFORM stripe_sync._owned_source(caller, source);
  END IF;
  UPDATE stripe_sync.outbox o SET state = 'pending', attempts = 0, next_attempt_at = NULL
    FROM stripe_sync.sources s
   WHERE s.name = o.source AND o.state = 'dead'
     AND (_retry_dead.source IS NULL OR o.source = _retry_dead.source)
     AND pg_has_role(caller, s.owner, 'USAGE');
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM stripe_sync.wake();
  RETURN n;
END $$;

CREATE FUNCTION stripe_sync._retry_rejected(caller regrole, source text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  IF source IS NOT NULL THEN
    PERFORM stripe_sync._owned_source(caller, source);
  END IF;
  UPDATE stripe_sync.rejected r SET retry = true
    FROM stripe_sync.sources s
   WHERE s.name = r.source AND (_retry_rejected.source IS NULL OR r.source = _retry_rejected.source)
     AND pg_has_role(caller, s.owner, 'USAGE');
  GET DIAGNOSTICS n = ROW_COUNT;
  -- the next sync fetches them again: at once
  UPDATE stripe_sync.sources s SET next_sync_at = now()
   WHERE s.name IN (SELECT r.source FROM stripe_sync.rejected r WHERE r.retry);
  PERFORM stripe_sync.wake();
  RETURN n;
END $$;

-- the schema and local tables of a source, created as its owner
CREATE FUNCTION stripe_sync._local_tables(source text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  src stripe_sync.sources;
  o text;
BEGIN
  SELECT * INTO src FROM stripe_sync.sources s WHERE s.name = source;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = src.target_schema) THEN
    EXECUTE format('CREATE SCHEMA %I', src.target_schema);
  END IF;
  FOREACH o IN ARRAY src.objects LOOP
    PERFORM stripe_sync.create_local_table(src.target_schema, o);
  END LOOP;
END $$;

REVOKE ALL ON FUNCTION stripe_sync._check_server(regrole, name, name),
                       stripe_sync._owned_source(regrole, text),
                       stripe_sync._create_source(regrole, text, name, interval, timestamptz, text[], name, boolean, name),
                       stripe_sync._alter_source(regrole, text, interval, timestamptz, text[], boolean, name),
                       stripe_sync._drop_source(regrole, text),
                       stripe_sync._retry_dead(regrole, text),
                       stripe_sync._retry_rejected(regrole, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION stripe_sync.create_source(name text, server name,
    sync_interval interval DEFAULT '1 hour',
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    target_schema name DEFAULT 'stripe_data',
    emit_history boolean DEFAULT true,
    destination name DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION stripe_sync.alter_source(name text,
    sync_interval interval DEFAULT NULL,
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    destination name DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION stripe_sync.drop_source(name text) RETURNS void
AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION stripe_sync.retry_dead(source text DEFAULT NULL) RETURNS bigint
AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION stripe_sync.retry_rejected(source text DEFAULT NULL) RETURNS bigint
AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

-- sync_now checks the caller itself, and runs as the source's owner
CREATE OR REPLACE FUNCTION stripe_sync.sync_now(name text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'stripe_sync_now'
LANGUAGE C STRICT VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION stripe_sync.create_local_table(target_schema name, object text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cols text;
  pcol text := (SELECT c.parent_column FROM stripe_sync.catalog_children() c WHERE c.object = create_local_table.object);
BEGIN
  -- lz4 for every jsonb column: attrs is most of a row, and pglz on the nested
  -- ones cost a tenth of a backfill's time, more than lz4 on attrs.  Keyed by
  -- account too, never NULL: Citus can distribute the tables by account_id,
  -- co-located (its keys must hold the distribution column).  A child's element
  -- id is unique within its parent: its key is (parent, id, account_id).
  SELECT string_agg(format('%I %s%s', column_name, column_type,
                           CASE WHEN column_type = 'jsonb' THEN ' COMPRESSION lz4' ELSE '' END), ', ')
    INTO cols FROM stripe_sync.catalog_columns(object);
  -- livemode on every table: the object's own, or the key's mode for objects without it
  IF NOT EXISTS (SELECT 1 FROM stripe_sync.catalog_columns(object) WHERE column_name = 'livemode') THEN
    cols := cols || ', livemode boolean';
  END IF;
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I (%s, attrs jsonb COMPRESSION lz4 NOT NULL, account_id text NOT NULL, '
                 'synced_at timestamptz NOT NULL, observed_at timestamptz NOT NULL, deleted_at timestamptz, '
                 'PRIMARY KEY (%s))',
                 target_schema, object, cols,
                 CASE WHEN pcol IS NULL THEN 'id, account_id' ELSE format('%I, id, account_id', pcol) END);
  IF EXISTS (SELECT 1 FROM stripe_sync.catalog_columns(object) WHERE column_name = 'customer') THEN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (customer)', object || '_customer_idx', target_schema, object);
  END IF;
  IF EXISTS (SELECT 1 FROM stripe_sync.catalog_columns(object) WHERE column_name = 'created') THEN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (created)', object || '_created_idx', target_schema, object);
  END IF;
END $$;

-- what any role may call: the tables it creates are its own
GRANT EXECUTE ON FUNCTION stripe_sync.create_source(text, name, interval, timestamptz, text[], name, boolean, name),
                          stripe_sync.alter_source(text, interval, timestamptz, text[], boolean, name),
                          stripe_sync.drop_source(text), stripe_sync.sync_now(text),
                          stripe_sync.retry_dead(text), stripe_sync.retry_rejected(text),
                          stripe_sync.create_local_table(name, text),
                          stripe_sync._local_tables(text), stripe_sync.check_objects(text[])
  TO PUBLIC;
DROP FUNCTION stripe_sync.check_destination(name);

-- ---------------------------------------------------------------------------
-- Outbox rows: computed as the source's owner (they read its local tables),
-- written as the extension's owner.  One Intempt identity per customer: its
-- email (else its id), found in the batch itself, else in the local customers
-- table, for every event of the customer.
-- ---------------------------------------------------------------------------

/*
 * The outbox rows of Stripe events (event_ids and types given) or of
 * backfilled objects (NULL: their historical events, for objects created
 * before history_until).
 */
CREATE FUNCTION stripe_sync.outbox_rows(source text, event_ids text[], event_types text[],
                                        times bigint[], objects jsonb[], history_until bigint,
    OUT event_id text, OUT event_name text, OUT stripe_event text, OUT object_id text,
    OUT occurred_at timestamptz, OUT payload jsonb)
RETURNS SETOF record LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  sch name;
  acct text;
  customers_known text := 'SELECT NULL::text AS id, NULL::text AS email WHERE false';
  charges_known text := 'SELECT NULL::text AS id, NULL::text AS cust, NULL::text AS email WHERE false';
BEGIN
  SELECT s.target_schema, s.account_id INTO sch, acct FROM stripe_sync.sources s WHERE s.name = outbox_rows.source;
  -- the source's own tables answer who an object belongs to, when it syncs them:
  -- its own rows, by the whole key, in queries of their own (not correlated
  -- subqueries), so that Citus runs each on the account's shard
  IF to_regclass(format('%I.charges', sch)) IS NOT NULL THEN
    charges_known := format('SELECT ch.id, ch.attrs->>''customer'' AS cust, '
                            'nullif(ch.attrs->''billing_details''->>''email'', '''') AS email FROM %I.charges ch '
                            'WHERE ch.account_id = $6 AND ch.id IN (SELECT r.charge FROM refs r)', sch);
  END IF;
  IF to_regclass(format('%I.customers', sch)) IS NOT NULL THEN
    customers_known := format('SELECT c.id, nullif(c.attrs->>''email'', '''') AS email FROM %I.customers c '
                              'WHERE c.account_id = $6 AND c.id IN (SELECT r.cust FROM refs r WHERE NOT r.own_email '
                              'UNION SELECT k.cust FROM charges_known k)', sch);
  END IF;
  -- every lookup is a hash join or an index probe: a batch costs in proportion to its size
  RETURN QUERY EXECUTE format($q$
    WITH objs AS MATERIALIZED (
      SELECT r.id, r.type, r.t, r.obj, r.ord
        FROM unnest($1, $2, $3, $4) WITH ORDINALITY r(id, type, t, obj, ord)),
    -- the customers of the batch itself: a customer listed with its charges is known
    batch_customers AS MATERIALIZED (
      SELECT DISTINCT ON (o.obj->>'id') o.obj->>'id' AS id, nullif(o.obj->>'email', '') AS email
        FROM objs o WHERE o.obj->>'object' = 'customer' ORDER BY o.obj->>'id', o.ord DESC),
    hist AS MATERIALIZED (SELECT * FROM stripe_sync.history_map()),
    -- the customer and the charge each object names itself
    refs AS MATERIALIZED (
      SELECT o.ord,
             CASE WHEN o.obj->>'object' = 'customer' THEN o.obj->>'id'
                  WHEN jsonb_typeof(o.obj->'customer') = 'object' THEN o.obj->'customer'->>'id'
                  ELSE o.obj->>'customer' END AS cust,
             CASE WHEN jsonb_typeof(o.obj->'charge') = 'object' THEN o.obj->'charge'->>'id'
                  ELSE coalesce(o.obj->>'charge', o.obj->>'latest_charge') END AS charge,
             o.obj->>'object' = 'customer' AND nullif(o.obj->>'email', '') IS NOT NULL AS own_email
        FROM objs o),
    charges_known AS MATERIALIZED (%2$s),
    customers_known AS MATERIALIZED (%1$s)
    SELECT e.event_id, m.intempt_event, e.event_type, e.obj->>'id', to_timestamp(e.t),
           jsonb_build_object('eventId', e.event_id, 'timestamp', e.t * 1000,
                              'userId', u.user_id,
                              -- the Stripe account the event is of, when known (Connect: which
                              -- connected account; not a restricted key's placeholder)
                              'data', stripe_sync.intempt_data(e.obj, e.event_id, e.event_type, u.cust)
                                      || CASE WHEN $6::text LIKE 'acct\_%%'
                                              THEN jsonb_build_object('stripeAccount', $6::text)
                                              ELSE '{}' END)
      FROM (SELECT coalesce(i.id, 'hist_' || h.event_type || '_' || (i.obj->>'id')) AS event_id,
                   coalesce(i.type, h.event_type) AS event_type, i.t, i.obj, i.ord
              FROM objs i
              LEFT JOIN hist h ON i.type IS NULL AND h.object = i.obj->>'object'
                              AND (h.status IS NULL OR h.status = i.obj->>'status')
             WHERE i.type IS NOT NULL
                OR (h.event_type IS NOT NULL AND (i.obj->>'created')::bigint < $5)) e
      JOIN stripe_sync.event_map m ON m.stripe_event = e.event_type AND m.enabled
      JOIN refs x0 ON x0.ord = e.ord
      LEFT JOIN charges_known ch ON ch.id = x0.charge
      CROSS JOIN LATERAL (SELECT coalesce(x0.cust, ch.cust) AS cust) x
      LEFT JOIN batch_customers b ON b.id = x.cust
      LEFT JOIN customers_known c ON c.id = x.cust
      CROSS JOIN LATERAL (
        -- a customer is one identity: its email, from the batch or the local table,
        -- else its id; the customer's own events use the same rule
        SELECT x.cust,
               coalesce(CASE WHEN x.cust IS NOT NULL THEN
                          coalesce(CASE WHEN e.obj->>'object' = 'customer' THEN nullif(e.obj->>'email', '') END,
                                   b.email, c.email, x.cust) END,
                        nullif(e.obj->'billing_details'->>'email', ''), nullif(e.obj->>'customer_email', ''),
                        nullif(e.obj->>'receipt_email', ''), ch.email,
                        e.obj->>'id') AS user_id) u
     ORDER BY e.ord, e.event_type $q$, customers_known, charges_known)
    USING event_ids, event_types, times, objects, coalesce(history_until, 0), acct;
END $$;
GRANT EXECUTE ON FUNCTION stripe_sync.outbox_rows(text, text[], text[], bigint[], jsonb[], bigint) TO PUBLIC;

-- the same rows written to the outbox in the caller's transaction (superusers:
-- the sync writes its rows itself, computing them as the source's owner)
CREATE OR REPLACE FUNCTION stripe_sync.outbox_add(source text, event_ids text[], event_types text[],
                                                  times bigint[], objects text[], history_until bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  INSERT INTO stripe_sync.outbox (source, event_id, event_name, stripe_event, object_id, occurred_at, payload)
  SELECT outbox_add.source, r.event_id, r.event_name, r.stripe_event, r.object_id, r.occurred_at, r.payload
    FROM stripe_sync.outbox_rows(outbox_add.source, event_ids, event_types, times, objects::jsonb[], history_until) r
  ON CONFLICT ON CONSTRAINT outbox_source_event_id_key DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- the events a backfilled object stands for, with the status each needs
CREATE FUNCTION stripe_sync.history_map(OUT object text, OUT event_type text, OUT status text)
RETURNS SETOF record LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  VALUES ('customer', 'customer.created', NULL),
         ('charge', 'charge.succeeded', 'succeeded'),
         ('charge', 'charge.failed', 'failed'),
         ('invoice', 'invoice.created', NULL),
         ('payment_intent', 'payment_intent.created', NULL),
         ('payment_intent', 'payment_intent.succeeded', 'succeeded'),
         ('refund', 'refund.created', NULL),
         ('subscription', 'customer.subscription.created', NULL)
$$;
GRANT EXECUTE ON FUNCTION stripe_sync.history_map() TO PUBLIC;

CREATE OR REPLACE FUNCTION stripe_sync.history_events(obj jsonb) RETURNS SETOF text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT v.event_type FROM stripe_sync.history_map() v
   WHERE v.object = obj->>'object' AND (v.status IS NULL OR v.status = obj->>'status')
$$;

-- ---------------------------------------------------------------------------
-- Backups: pg_dump keeps every source, its state and cursors, the undelivered
-- outbox and the event map with its edits.  A restore's CREATE EXTENSION seeds
-- the default map first; an inserted row whose type is there replaces it, so
-- the dumped (edited) rows win.
-- ---------------------------------------------------------------------------

CREATE FUNCTION stripe_sync._event_map_replace() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM stripe_sync.event_map m WHERE m.stripe_event = NEW.stripe_event;
  RETURN NEW;
END $$;
CREATE TRIGGER event_map_replace BEFORE INSERT ON stripe_sync.event_map
  FOR EACH ROW EXECUTE FUNCTION stripe_sync._event_map_replace();

SELECT pg_catalog.pg_extension_config_dump('stripe_sync.sources', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.object_state', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.backfill_parts', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.applied_events', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.runs', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.runs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.outbox', 'WHERE state <> ''delivered''');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.event_map', '');
SELECT pg_catalog.pg_extension_config_dump('stripe_sync.rejected', '');

-- ---------------------------------------------------------------------------
-- Webhooks: an event Stripe delivered to an endpoint, verified with the
-- endpoint's signing secret (the webhook_secret of the source owner's user
-- mapping) and applied as the poll applies it.  Like sync_now, the C function
-- checks the caller itself (the source's owner, a member of its role, or a
-- superuser) and writes as the extension's owner and the source's owner.
-- ---------------------------------------------------------------------------
CREATE FUNCTION stripe_sync.ingest_webhook(source text, payload text, signature text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'stripe_ingest_webhook'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;
GRANT EXECUTE ON FUNCTION stripe_sync.ingest_webhook(text, text, text) TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Rate limits: what the caller's requests through a server go by (the key's
-- mode, the settings, 429s' slowdowns), no request made.
-- ---------------------------------------------------------------------------

CREATE FUNCTION stripe_sync.rate_limits(server name,
    OUT endpoint text, OUT mode text, OUT requests_per_second integer,
    OUT current_requests_per_second integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_rate_limits'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION stripe_sync.rate_limits(name) IS
  'Requests a second allowed to the account behind a server (endpoint NULL) and to each endpoint tracked';

-- ---------------------------------------------------------------------------
-- The catalogue says which of an object's fields hold a list Stripe inlines a
-- first page of (invoices: lines), which scans and syncs read whole.
-- ---------------------------------------------------------------------------

DROP VIEW stripe_sync.objects;
DROP FUNCTION stripe_sync.catalog_objects();
CREATE FUNCTION stripe_sync.catalog_objects(
    OUT object text, OUT path text, OUT stripe_object text, OUT list_filters text[], OUT retrieve boolean,
    OUT listed_under text, OUT writable text, OUT syncable boolean, OUT stays_current text,
    OUT nested_lists text[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_catalog_objects'
LANGUAGE C STRICT STABLE;

CREATE VIEW stripe_sync.objects AS SELECT * FROM stripe_sync.catalog_objects();
GRANT SELECT ON stripe_sync.objects TO PUBLIC;

-- ---------------------------------------------------------------------------
-- The changes Stripe sends no event for: the catalogue says what each sync
-- lists again (relist: none, recent, full or parent; sync_relist.c and
-- bf_parents.c), and
-- object_state.listed_at when the object's last full listing (its backfill's
-- end, or a full re-list's beginning) was.
-- ---------------------------------------------------------------------------

DROP VIEW stripe_sync.objects;
DROP FUNCTION stripe_sync.catalog_objects();
CREATE FUNCTION stripe_sync.catalog_objects(
    OUT object text, OUT path text, OUT stripe_object text, OUT list_filters text[], OUT retrieve boolean,
    OUT listed_under text, OUT writable text, OUT syncable boolean, OUT stays_current text,
    OUT nested_lists text[], OUT relist text, OUT relist_from text, OUT relist_filter text,
    OUT relist_window interval)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_catalog_objects'
LANGUAGE C STRICT STABLE;

CREATE VIEW stripe_sync.objects AS SELECT * FROM stripe_sync.catalog_objects();
GRANT SELECT ON stripe_sync.objects TO PUBLIC;

ALTER TABLE stripe_sync.object_state ADD COLUMN listed_at timestamptz;

-- ---------------------------------------------------------------------------
-- Child tables (children.c): one row per element of a parent's nested list
-- (invoice_line_items of invoices.lines, subscription_items of
-- subscriptions.items, credit_note_lines of credit_notes.lines), kept with
-- the parent, keyed by (parent, id).  And a livemode column on every local
-- table.
-- ---------------------------------------------------------------------------

CREATE FUNCTION stripe_sync.catalog_children(
    OUT object text, OUT parent text, OUT list_field text, OUT parent_column text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'stripe_catalog_children'
LANGUAGE C STRICT STABLE;
GRANT EXECUTE ON FUNCTION stripe_sync.catalog_children() TO PUBLIC;

-- a child comes with its parent: the default set has invoices' and subscriptions'
CREATE OR REPLACE FUNCTION stripe_sync.default_objects() RETURNS text[]
LANGUAGE sql IMMUTABLE AS
$$ SELECT ARRAY['customers', 'charges', 'invoices', 'payment_intents', 'refunds',
                'subscriptions', 'products', 'prices', 'invoice_line_items', 'subscription_items'] $$;

-- the local tables of 0.1's sources get their livemode column (NULL until synced again)
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT DISTINCT s.target_schema, o
             FROM stripe_sync.sources s, unnest(s.objects) o
            WHERE to_regclass(format('%I.%I', s.target_schema, o)) IS NOT NULL LOOP
    EXECUTE format('ALTER TABLE %I.%I ADD COLUMN IF NOT EXISTS livemode boolean', t.target_schema, t.o);
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- Keys Citus can distribute: a local table's key is (id, account_id), and
-- account_id is never NULL.  A source whose key could not read the account
-- writes the placeholder 'unknown:<source>' (sync_run.c), fixed for its life:
-- a row's distribution column never changes.  0.1's tables (id PRIMARY KEY,
-- account_id NULL for such a source) are brought to it here.
-- ---------------------------------------------------------------------------

DO $$
DECLARE
  src record;
  o text;
  rel regclass;
  pk name;
BEGIN
  -- a source that has synced keeps what it wrote under; one that has not learns its account
  UPDATE stripe_sync.sources SET account_id = 'unknown:' || name
   WHERE account_id IS NULL AND events_cursor IS NOT NULL;
  FOR src IN SELECT name, target_schema, objects, account_id FROM stripe_sync.sources ORDER BY name LOOP
    FOREACH o IN ARRAY src.objects LOOP
      rel := to_regclass(format('%I.%I', src.target_schema, o));
      CONTINUE WHEN rel IS NULL;
      EXECUTE format('UPDATE %s SET account_id = $1 WHERE account_id IS NULL', rel)
        USING coalesce(src.account_id, 'unknown:' || src.name);
      SELECT c.conname INTO pk FROM pg_constraint c
       WHERE c.conrelid = rel AND c.contype = 'p'
         AND c.conkey = ARRAY[(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'id')];
      CONTINUE WHEN pk IS NULL;
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ALTER COLUMN account_id SET NOT NULL, '
                     'ADD PRIMARY KEY (id, account_id)', rel, pk);
    END LOOP;
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- Connect: a source with connected_accounts syncs the platform's own account
-- and every connected account its key can list (GET /v1/accounts), into the
-- same local tables, told apart by account_id.  Each connected account is a
-- source of its own, named '<platform>/<acct_…>' (platform set): its own
-- backfill state, events cursor, runs and outbox rows.  The platform's run
-- syncs them (the launcher never schedules one); they take the platform's
-- settings; one the platform can no longer list, or that Stripe refuses, is
-- deauthorized: it stops syncing, its rows stay (deauthorized_at says since when).
-- ---------------------------------------------------------------------------


-- a connected account's source, made or authorized again by the platform's run
CREATE FUNCTION stripe_sync._connect_account(platform text, account text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  p stripe_sync.sources;
  child text := platform || '/' || account;
BEGIN
  SELECT * INTO p FROM stripe_sync.sources s WHERE s.name = _connect_account.platform;
  INSERT INTO stripe_sync.sources (name, server, owner, sync_interval, sync_from, objects, target_schema,
                                   enabled, destination, emit_history, account_id, platform)
  VALUES (child, p.server, p.owner, p.sync_interval, p.sync_from, p.objects, p.target_schema,
          true, p.destination, p.emit_history, account, p.name)
  ON CONFLICT (name) DO UPDATE SET enabled = true, deauthorized_at = NULL
    WHERE stripe_sync.sources.deauthorized_at IS NOT NULL OR NOT stripe_sync.sources.enabled;
  INSERT INTO stripe_sync.object_state (source, object, history)
  SELECT child, o, CASE WHEN p.emit_history THEN 'owed' ELSE 'none' END FROM unnest(p.objects) o
  ON CONFLICT DO NOTHING;
END $$;

-- the platform's settings, as alter_source changes them, are its accounts' too
CREATE FUNCTION stripe_sync._connect_settings() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  UPDATE stripe_sync.sources c
     SET server = NEW.server, owner = NEW.owner, sync_interval = NEW.sync_interval,
         sync_from = NEW.sync_from, objects = NEW.objects, target_schema = NEW.target_schema,
         destination = NEW.destination, emit_history = NEW.emit_history
   WHERE c.platform = NEW.name;
  IF OLD.sync_from IS DISTINCT FROM NEW.sync_from THEN
    UPDATE stripe_sync.object_state os SET backfill_done = false, backfill_cursor = NULL, state = 'pending'
      FROM stripe_sync.sources c WHERE c.platform = NEW.name AND os.source = c.name;
  END IF;
  IF OLD.objects IS DISTINCT FROM NEW.objects THEN
    INSERT INTO stripe_sync.object_state (source, object, history)
    SELECT c.name, o, CASE WHEN NEW.emit_history THEN 'owed' ELSE 'none' END
      FROM stripe_sync.sources c CROSS JOIN unnest(NEW.objects) o WHERE c.platform = NEW.name
    ON CONFLICT DO NOTHING;
    DELETE FROM stripe_sync.object_state os USING stripe_sync.sources c
     WHERE c.platform = NEW.name AND os.source = c.name AND os.object <> ALL (NEW.objects);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER connect_settings AFTER UPDATE ON stripe_sync.sources FOR EACH ROW
  WHEN (NEW.platform IS NULL AND (OLD.server, OLD.owner, OLD.sync_interval, OLD.sync_from, OLD.objects,
        OLD.target_schema, OLD.destination, OLD.emit_history) IS DISTINCT FROM
       (NEW.server, NEW.owner, NEW.sync_interval, NEW.sync_from, NEW.objects,
        NEW.target_schema, NEW.destination, NEW.emit_history))
  EXECUTE FUNCTION stripe_sync._connect_settings();

REVOKE ALL ON FUNCTION stripe_sync._connect_account(text, text),
                       stripe_sync._connect_settings() FROM PUBLIC;

-- create_source and alter_source take connected_accounts
DROP FUNCTION stripe_sync.create_source(text, name, interval, timestamptz, text[], name, boolean, name);
DROP FUNCTION stripe_sync.alter_source(text, interval, timestamptz, text[], boolean, name);
-- (the functions before them do the work; these add connected_accounts)

CREATE FUNCTION stripe_sync._create_source(caller regrole, name text, server name,
    sync_interval interval, sync_from timestamptz, objects text[], target_schema name,
    emit_history boolean, destination name, connected_accounts boolean)
RETURNS regrole LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r regrole := stripe_sync._create_source(caller, name, server, sync_interval, sync_from, objects,
                                            target_schema, emit_history, destination);
BEGIN
  UPDATE stripe_sync.sources s SET connected_accounts = coalesce(_create_source.connected_accounts, false)
   WHERE s.name = _create_source.name;
  RETURN r;
END $$;

CREATE FUNCTION stripe_sync._alter_source(caller regrole, name text, sync_interval interval,
    sync_from timestamptz, objects text[], enabled boolean, destination name, connected_accounts boolean)
RETURNS regrole LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r regrole := stripe_sync._alter_source(caller, name, sync_interval, sync_from, objects, enabled, destination);
BEGIN
  IF connected_accounts IS NOT NULL THEN
    UPDATE stripe_sync.sources s SET connected_accounts = _alter_source.connected_accounts, next_sync_at = now()
     WHERE s.name = _alter_source.name AND s.connected_accounts IS DISTINCT FROM _alter_source.connected_accounts;
    -- turned off: the accounts stop syncing, their rows and state stay
    IF NOT connected_accounts THEN
      UPDATE stripe_sync.sources c SET enabled = false WHERE c.platform = _alter_source.name;
    END IF;
  END IF;
  RETURN r;
END $$;

REVOKE ALL ON FUNCTION stripe_sync._create_source(regrole, text, name, interval, timestamptz, text[], name, boolean, name, boolean),
                       stripe_sync._alter_source(regrole, text, interval, timestamptz, text[], boolean, name, boolean)
  FROM PUBLIC;

CREATE FUNCTION stripe_sync.create_source(name text, server name,
    sync_interval interval DEFAULT '1 hour',
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    target_schema name DEFAULT 'stripe_data',
    emit_history boolean DEFAULT true,
    destination name DEFAULT NULL,
    connected_accounts boolean DEFAULT false)
RETURNS void AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION stripe_sync.alter_source(name text,
    sync_interval interval DEFAULT NULL,
    sync_from timestamptz DEFAULT NULL,
    objects text[] DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    destination name DEFAULT NULL,
    connected_accounts boolean DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'stripe_manage'
LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;

GRANT EXECUTE ON FUNCTION stripe_sync.create_source(text, name, interval, timestamptz, text[], name, boolean, name, boolean),
                          stripe_sync.alter_source(text, interval, timestamptz, text[], boolean, name, boolean)
  TO PUBLIC;

-- one row per account of a source: its own (the source itself) and each
-- connected account.  state: deauthorized, error (its last run failed, or an
-- object did), backfilling (an object not yet listed in full), synced.  At a
-- glance: SELECT state, count(*) FROM stripe_sync.account_status GROUP BY 1.
CREATE VIEW stripe_sync.account_status WITH (security_invoker = true) AS
SELECT coalesce(s.platform, s.name) AS source, s.account_id, s.platform IS NULL AS is_platform,
       CASE WHEN s.deauthorized_at IS NOT NULL THEN 'deauthorized'
            WHEN s.last_error IS NOT NULL OR o.errors > 0 THEN 'error'
            WHEN o.pending > 0 THEN 'backfilling'
            ELSE 'synced' END AS state,
       o.objects, o.objects - o.pending AS objects_backfilled, o.rows, o.last_success_at,
       to_timestamp(s.events_cursor) AS events_cursor, s.deauthorized_at,
       coalesce(s.last_error, o.last_error) AS last_error
  FROM stripe_sync.sources s
  CROSS JOIN LATERAL (
    SELECT count(*) AS objects, count(*) FILTER (WHERE NOT os.backfill_done) AS pending,
           count(*) FILTER (WHERE os.state = 'error') AS errors,
           coalesce(sum(os.rows), 0)::bigint AS rows, min(os.last_success_at) AS last_success_at,
           min(os.last_error) AS last_error
      FROM stripe_sync.object_state os WHERE os.source = s.name) o
 WHERE s.platform IS NOT NULL OR s.connected_accounts;
GRANT SELECT ON stripe_sync.account_status TO PUBLIC;
