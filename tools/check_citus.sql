-- check_citus.sql: can Citus distribute a source's local tables by account_id?
--
--   psql -X -v ON_ERROR_STOP=1 -v source=main -f tools/check_citus.sql
--
-- Reads the catalog only (Citus need not be installed) and checks every table
-- of the source's target schema against what create_distributed_table(…,
-- 'account_id', colocate_with => …) requires of a set of co-located tables:
--   - an account_id column of type text, NOT NULL (Citus refuses a NULL
--     distribution value, and co-locates tables whose columns share a type);
--   - a primary key (the shard rebalancer moves shards by logical replication);
--   - every unique index, primary key and unique constraint includes account_id
--     (uniqueness is enforced shard by shard);
--   - every exclusion constraint includes account_id with =;
--   - foreign keys only between tables of the set, and with account_id on both
--     sides (a key to or from a table that is not distributed with them is
--     refused, unless it is made a reference table).
-- Prints one row per problem and fails (exit status 3) when there is any.

\set QUIET 1
\pset footer off
CREATE TEMP TABLE citus_tables ON COMMIT PRESERVE ROWS AS
SELECT c.oid::regclass AS rel, c.oid AS relid,
       (SELECT a.attnum FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS acct,
       (SELECT a.attnotnull FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS acct_not_null,
       (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS acct_type
  FROM stripe_sync.sources s
  JOIN pg_namespace n ON n.nspname = s.target_schema
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 WHERE s.name = :'source';

CREATE TEMP TABLE citus_problems ON COMMIT PRESERVE ROWS AS
SELECT t.rel::text AS "table", 'no account_id column' AS problem
  FROM citus_tables t WHERE t.acct IS NULL
UNION ALL
SELECT t.rel::text, 'account_id may be NULL'
  FROM citus_tables t WHERE t.acct IS NOT NULL AND NOT t.acct_not_null
UNION ALL
SELECT t.rel::text, format('account_id is %s, not text (co-located tables share one type)', t.acct_type)
  FROM citus_tables t WHERE t.acct_type <> 'text'
UNION ALL
SELECT t.rel::text, 'no primary key'
  FROM citus_tables t
 WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.relid AND i.indisprimary)
UNION ALL
SELECT t.rel::text, format('unique index %s does not include account_id', i.indexrelid::regclass)
  FROM citus_tables t JOIN pg_index i ON i.indrelid = t.relid AND i.indisunique
 WHERE t.acct IS NULL OR NOT t.acct = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])
UNION ALL
SELECT t.rel::text, format('exclusion constraint %s does not include account_id with =', k.conname)
  FROM citus_tables t JOIN pg_constraint k ON k.conrelid = t.relid AND k.contype = 'x'
 WHERE NOT EXISTS (SELECT 1 FROM unnest(k.conkey, k.conexclop) e(att, op)
                    WHERE e.att = t.acct AND e.op::regoper::text = '=')
UNION ALL
SELECT t.rel::text, format('foreign key %s references %s, which is not distributed with it',
                           k.conname, k.confrelid::regclass)
  FROM citus_tables t JOIN pg_constraint k ON k.conrelid = t.relid AND k.contype = 'f'
 WHERE NOT EXISTS (SELECT 1 FROM citus_tables r WHERE r.relid = k.confrelid)
UNION ALL
SELECT t.rel::text, format('foreign key %s does not pair account_id with account_id', k.conname)
  FROM citus_tables t JOIN pg_constraint k ON k.conrelid = t.relid AND k.contype = 'f'
  JOIN citus_tables r ON r.relid = k.confrelid
 WHERE NOT EXISTS (SELECT 1 FROM unnest(k.conkey, k.confkey) p(a, b) WHERE p.a = t.acct AND p.b = r.acct)
UNION ALL
SELECT t.rel::text, format('foreign key %s of %s, which is not distributed with it, references it',
                           k.conname, k.conrelid::regclass)
  FROM citus_tables t JOIN pg_constraint k ON k.confrelid = t.relid AND k.contype = 'f'
 WHERE NOT EXISTS (SELECT 1 FROM citus_tables r WHERE r.relid = k.conrelid);

SELECT * FROM citus_problems ORDER BY 1, 2;
DO $$
DECLARE
  n bigint := (SELECT count(*) FROM citus_problems);
  tables bigint := (SELECT count(*) FROM citus_tables);
BEGIN
  IF tables = 0 THEN
    RAISE EXCEPTION 'no local tables found: is the source''s name right?';
  ELSIF n > 0 THEN
    RAISE EXCEPTION '% problem(s) keep Citus from distributing these tables by account_id', n;
  END IF;
  RAISE NOTICE 'ok: % tables can be distributed by account_id', tables;
END $$;
