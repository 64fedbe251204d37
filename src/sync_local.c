/*-------------------------------------------------------------------------
 * sync_local.c
 *		A source's local tables: opening one for a run, and writing objects
 *		into it, a whole page in one statement (see sync.h for the rule that
 *		orders them).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "children.h"
#include "json_page.h"
#include "nested.h"
#include "ratelimit.h"
#include "sync.h"
#include "text.h"
#include "xact.h"

/* a StripeBodyCheck: the page is parsed as it arrives, so a malformed one is retried */
bool
stripe_check_page(StripeResponse *resp, void *arg, const char **why)
{
	PageCheck  *pc = arg;

	return stripe_parse_page(resp->body, resp->len, pc->is_list, pc->fs, pc->page, why);
}

static int
attno_of(TupleDesc td, const char *name, bool missing_ok)
{
	for (int i = 0; i < td->natts; i++)
		if (strcmp(NameStr(TupleDescAttr(td, i)->attname), name) == 0)
			return i;
	if (!missing_ok)
		elog(ERROR, "local table has no column \"%s\"", name);
	return -1;
}

/*
 * The upsert of a whole page: INSERT … SELECT * FROM unnest($1, …, $n), one
 * array per column.  Newer-or-equal observations win, and only when something
 * changed.
 */
static char *
upsert_sql(LocalTable *lt)
{
	StringInfoData cols,
				vals,
				sets;
	/*
	 * The table's key: (id, account_id), and (parent, id, account_id) for a
	 * child table, whose element ids are unique within their parent
	 * (children.c)
	 */
	char	   *key = lt->def && lt->def->child_of
		? psprintf("%s, id, account_id", quote_identifier(lt->def->parent_column)) : "id, account_id";

	initStringInfo(&cols);
	initStringInfo(&vals);
	initStringInfo(&sets);
	for (int i = 0; i < lt->tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(lt->tupdesc, i);
		const char *c = quote_identifier(NameStr(att->attname));

		if (att->attisdropped)
		{
			/* an array argument still stands in its place */
			lt->argtypes[i] = INT4ARRAYOID;
			lt->typlen[i] = sizeof(int32);
			lt->typbyval[i] = true;
			lt->typalign[i] = TYPALIGN_INT;
			continue;
		}
		lt->argtypes[i] = get_array_type(att->atttypid);
		get_typlenbyvalalign(att->atttypid, &lt->typlen[i], &lt->typbyval[i], &lt->typalign[i]);
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", c);
		appendStringInfo(&vals, "%s$%d", vals.len ? ", " : "", i + 1);
		/* the key's columns are equal in a conflict; Citus refuses to set its distribution column */
		if (strcmp(NameStr(att->attname), "id") != 0 && strcmp(NameStr(att->attname), "account_id") != 0)
			appendStringInfo(&sets, "%s%s = EXCLUDED.%s", sets.len ? ", " : "", c, c);
	}
	return psprintf("INSERT INTO %s AS t (%s) SELECT * FROM unnest(%s) ON CONFLICT (%s) DO UPDATE SET %s "
					"WHERE t.observed_at <= EXCLUDED.observed_at AND "
					"(t.attrs IS DISTINCT FROM EXCLUDED.attrs OR t.deleted_at IS DISTINCT FROM EXCLUDED.deleted_at)",
					lt->qualified, cols.data, vals.data, key, sets.data);
}

/* Opens the local table of an object for the run and prepares its upsert (in a transaction). */
LocalTable *
stripe_open_local_table(SyncRun *run, const char *object)
{
	LocalTable *lt;
	Oid			nsp = get_namespace_oid(run->src.target_schema, false);
	Oid			relid = get_relname_relid(object, nsp);
	Relation	rel;
	MemoryContext old;
	char	   *sql;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("local table %s.%s of source \"%s\" does not exist",
						run->src.target_schema, object, run->src.name),
				 errhint("alter_source(objects => …) creates the tables it needs.")));
	old = MemoryContextSwitchTo(run->cxt);
	/* the owner's table: opened, and its statement planned, as the owner */
	stripe_run_as_owner(run, true);
	lt = palloc0(sizeof(LocalTable));
	lt->def = stripe_object_by_table(object);
	lt->qualified = psprintf("%s.%s", quote_identifier(run->src.target_schema),
							 quote_identifier(object));
	rel = table_open(relid, AccessShareLock);
	lt->tupdesc = CreateTupleDescCopy(RelationGetDescr(rel));
	lt->rc = stripe_rowconv_create(rel, true, NULL);
	/* other sessions (a backfill's helpers) would wait for this transaction */
	lt->locked_here = rel->rd_createSubid != InvalidSubTransactionId ||
		rel->rd_newRelfilenodeSubid != InvalidSubTransactionId;
	table_close(rel, AccessShareLock);
	lt->slot = MakeSingleTupleTableSlot(lt->tupdesc, &TTSOpsVirtual);
	lt->created_slot = -1;
	for (int i = 0; i < lt->tupdesc->natts; i++)
		if (strcmp(NameStr(TupleDescAttr(lt->tupdesc, i)->attname), "created") == 0)
			lt->created_slot = lt->rc->att_slot[i];
	lt->att_account = attno_of(lt->tupdesc, "account_id", false);
	lt->att_synced = attno_of(lt->tupdesc, "synced_at", false);
	lt->att_observed = attno_of(lt->tupdesc, "observed_at", false);
	lt->att_deleted = attno_of(lt->tupdesc, "deleted_at", false);
	lt->att_livemode = attno_of(lt->tupdesc, "livemode", true);
	lt->argtypes = palloc(sizeof(Oid) * lt->tupdesc->natts);
	lt->typlen = palloc(sizeof(int16) * lt->tupdesc->natts);
	lt->typbyval = palloc(sizeof(bool) * lt->tupdesc->natts);
	lt->typalign = palloc(sizeof(char) * lt->tupdesc->natts);
	sql = upsert_sql(lt);
	run->tables = lappend(run->tables, lt);
	MemoryContextSwitchTo(old);
	lt->upsert = SPI_prepare(sql, lt->tupdesc->natts, lt->argtypes);
	if (lt->upsert == NULL)
		elog(ERROR, "SPI_prepare failed: %s", sql);
	SPI_keepplan(lt->upsert);
	stripe_run_as_owner(run, false);
	/* SPI leaves us in its own context, which the commit frees */
	MemoryContextSwitchTo(old);
	return lt;
}

/* the run's kept plans and slots, which its memory context does not free */
void
stripe_close_local_tables(SyncRun *run)
{
	ListCell   *lc;

	foreach(lc, run->tables)
	{
		LocalTable *lt = lfirst(lc);

		if (lt->upsert)
			SPI_freeplan(lt->upsert);
		lt->upsert = NULL;
		if (lt->slot)
			ExecDropSingleTupleTableSlot(lt->slot);
		lt->slot = NULL;
	}
}

/*
 * The run's table for Stripe objects of this "object" type (customer), or
 * with by_name, of this table name (customers); NULL when it has none.
 */
LocalTable *
stripe_table_find(SyncRun *run, const char *name, bool by_name)
{
	ListCell   *lc;

	foreach(lc, run->tables)
	{
		LocalTable *lt = lfirst(lc);

		if (lt->def && strcmp(by_name ? lt->def->table : lt->def->object, name) == 0)
			return lt;
	}
	return NULL;
}

/*
 * An object's created (unix seconds), 0 when it has none or not an integer
 * (the row's conversion then says what is wrong with it, naming the field).
 */
int64
stripe_row_created(LocalTable *lt, StripeRow *row)
{
	int64		created;

	if (lt->created_slot < 0 || !stripe_span_int64(&row->fields[lt->created_slot], &created))
		return 0;
	return created;
}

/*
 * Writes objects, a whole page in one statement, each observed at
 * observed[r] (and deleted at deleted_at[r], 0 when not); returns how many
 * rows were inserted or changed.  Values are built in the current memory
 * context.
 */
static int64
upsert_batch(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
			 const TimestampTz *observed, const TimestampTz *deleted_at)
{
	MemoryContext cxt = CurrentMemoryContext;
	TupleTableSlot *slot = lt->slot;
	int			natts = lt->tupdesc->natts;
	Datum	  **values = palloc(sizeof(Datum *) * natts);
	bool	  **nulls = palloc(sizeof(bool *) * natts);
	Datum	   *args = palloc(sizeof(Datum) * natts);
	TimestampTz now = GetCurrentTimestamp();
	int			dims[1] = {nrows};
	int			lbs[1] = {1};
	Datum		account;

	if (nrows == 0)
		return 0;
	/* learned before any row is written (stripe_run_account) */
	if (run->src.account_id == NULL)
		elog(ERROR, "source \"%s\" has no account_id to key its rows by", run->src.name);
	account = CStringGetTextDatum(run->src.account_id);
	for (int a = 0; a < natts; a++)
	{
		values[a] = palloc(sizeof(Datum) * nrows);
		nulls[a] = palloc(sizeof(bool) * nrows);
	}
	for (int r = 0; r < nrows; r++)
	{
		stripe_row_to_slot(lt->rc, &rows[r], slot);
		slot->tts_values[lt->att_account] = account;
		slot->tts_isnull[lt->att_account] = false;
		slot->tts_values[lt->att_synced] = TimestampTzGetDatum(now);
		slot->tts_isnull[lt->att_synced] = false;
		slot->tts_values[lt->att_observed] = TimestampTzGetDatum(observed[r]);
		slot->tts_isnull[lt->att_observed] = false;
		slot->tts_values[lt->att_deleted] = TimestampTzGetDatum(deleted_at[r]);
		slot->tts_isnull[lt->att_deleted] = deleted_at[r] == 0;
		/* an object without livemode of its own (a refund) is in the key's mode */
		if (lt->att_livemode >= 0 && slot->tts_isnull[lt->att_livemode] && run->conn != NULL)
		{
			slot->tts_values[lt->att_livemode] = BoolGetDatum(stripe_key_is_live(run->conn->api_key));
			slot->tts_isnull[lt->att_livemode] = false;
		}
		for (int a = 0; a < natts; a++)
		{
			values[a][r] = slot->tts_values[a];
			nulls[a][r] = slot->tts_isnull[a];
		}
	}
	for (int a = 0; a < natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(lt->tupdesc, a);

		if (att->attisdropped)
			for (int r = 0; r < nrows; r++)
				nulls[a][r] = true;
		args[a] = PointerGetDatum(construct_md_array(values[a], nulls[a], 1, dims, lbs,
													 att->attisdropped ? INT4OID : att->atttypid,
													 lt->typlen[a], lt->typbyval[a], lt->typalign[a]));
	}
	/* the owner's table, and its triggers, with the owner's rights */
	stripe_run_as_owner(run, true);
	if (SPI_execute_plan(lt->upsert, args, NULL, false, 0) < 0)
		elog(ERROR, "upsert into %s failed", lt->qualified);
	stripe_run_as_owner(run, false);
	/* SPI leaves us in its own context, which the commit frees */
	MemoryContextSwitchTo(cxt);
	return (int64) SPI_processed;
}

/*
 * An object that cannot be stored: a value out of range or not UTF-8, a
 * \u0000 in jsonb, or a constraint or trigger of the owner's that refuses it.
 * Anything else (cancel, lack of memory, a lock timeout) is not the object's.
 */
static bool
rejectable(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
		ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		sqlerrcode == ERRCODE_DATATYPE_MISMATCH || sqlerrcode == ERRCODE_RAISE_EXCEPTION ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
}

/*
 * upsert_batch in a subtransaction: false, with *edata, when an object of
 * the batch cannot be stored (the subtransaction undone); other errors go on.
 */
static bool
try_upsert(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows, const TimestampTz *observed,
		   const TimestampTz *deleted_at, int64 *changed, ErrorData **edata)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*changed = upsert_batch(run, lt, rows, nrows, observed, deleted_at);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		*edata = CopyErrorData();
		if (!rejectable((*edata)->sqlerrcode))
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* an object's id for stripe_sync.rejected: its own, made fit to keep */
static char *
row_id(SyncRun *run, LocalTable *lt, StripeRow *row)
{
	StripeSpan *id = &row->fields[lt->rc->id_slot];

	if (id->start == NULL || id->len < 2 || id->start[0] != '"')
		return "(no id)";
	return stripe_safe_text(id->start + 1, id->len - 2, 255, run->conn ? run->conn->api_key : NULL);
}

/* Sets an object aside in stripe_sync.rejected, with why and its text, and goes on. */
static void
reject(SyncRun *run, LocalTable *lt, StripeRow *row, ErrorData *edata)
{
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	const char *key = run->conn ? run->conn->api_key : NULL;
	char	   *why = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;

	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = CStringGetTextDatum(lt->def ? lt->def->table : "?");
	values[2] = CStringGetTextDatum(row_id(run, lt, row));
	values[3] = CStringGetTextDatum(stripe_safe_text(why, strlen(why), 2000, key));
	values[4] = CStringGetTextDatum(stripe_safe_text(row->object.start, row->object.len,
													 1024 * 1024, key));
	stripe_spi("INSERT INTO stripe_sync.rejected AS r (source, object, object_id, error, raw) "
			   "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, object, object_id) DO UPDATE SET "
			   "error = EXCLUDED.error, raw = EXCLUDED.raw, last_seen = now(), "
			   "attempts = r.attempts + 1, retry = false",
			   5, types, values, NULL, SPI_OK_INSERT);
	run->rejected++;
}

/* objects of the batch stored at last: no longer rejected */
static void
forget_rejects(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTARRAYOID};
	Datum		values[3];
	Datum	   *ids = palloc(sizeof(Datum) * nrows);

	for (int r = 0; r < nrows; r++)
		ids[r] = CStringGetTextDatum(row_id(run, lt, &rows[r]));
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = CStringGetTextDatum(lt->def ? lt->def->table : "?");
	values[2] = PointerGetDatum(construct_array(ids, nrows, TEXTOID, -1, false, TYPALIGN_INT));
	stripe_spi("DELETE FROM stripe_sync.rejected WHERE source = $1 AND object = $2 AND object_id = ANY ($3)",
			   3, types, values, NULL, SPI_OK_DELETE);
}

/*
 * The rows' nested lists made whole (nested.c), in place; an object whose
 * list cannot be read whole is set aside in rejected like one that cannot be
 * stored, and the others move up.  Returns how many rows are left.
 */
static int
complete_nested(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
				const TimestampTz **observed, const TimestampTz **deleted_at)
{
	ErrorData **errors = palloc0(sizeof(ErrorData *) * nrows);
	TimestampTz *obs = palloc(sizeof(TimestampTz) * nrows);
	TimestampTz *del = palloc(sizeof(TimestampTz) * nrows);
	int			kept = 0;

	stripe_nested_complete(run->conn, lt->def, lt->rc->fs, rows, nrows, errors, &run->stats);
	for (int r = 0; r < nrows; r++)
	{
		if (errors[r] != NULL)
		{
			reject(run, lt, &rows[r], errors[r]);
			continue;
		}
		obs[kept] = (*observed)[r];
		del[kept] = (*deleted_at)[r];
		rows[kept++] = rows[r];
	}
	*observed = obs;
	*deleted_at = del;
	return kept;
}

/*
 * Writes objects of distinct ids, each with its own observed_at and
 * deleted_at (see upsert_batch), in the step's transaction; an object that
 * cannot be stored goes to stripe_sync.rejected and the others are written.
 * Returns how many rows were inserted or changed.
 */
int64
stripe_upsert_rows_at(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
					  const TimestampTz *observed, const TimestampTz *deleted_at)
{
	int64		changed = 0;
	int64		one;
	ErrorData  *edata;

	if (nrows == 0)
		return 0;
	if (run->conn != NULL && stripe_nested_pending(lt->def, rows, nrows))
		nrows = complete_nested(run, lt, rows, nrows, &observed, &deleted_at);
	if (nrows == 0)
		return 0;
	if (try_upsert(run, lt, rows, nrows, observed, deleted_at, &changed, &edata))
	{
		if (lt->has_rejects)
			forget_rejects(run, lt, rows, nrows);
		stripe_children_write(run, lt, rows, nrows, observed, deleted_at);
		return changed;
	}
	/* one of them cannot be stored: each alone, and the ones that fail set aside */
	changed = 0;
	for (int r = 0; r < nrows; r++)
	{
		if (try_upsert(run, lt, &rows[r], 1, &observed[r], &deleted_at[r], &one, &edata))
		{
			changed += one;
			if (lt->has_rejects)
				forget_rejects(run, lt, &rows[r], 1);
			stripe_children_write(run, lt, &rows[r], 1, &observed[r], &deleted_at[r]);
		}
		else
			reject(run, lt, &rows[r], edata);
	}
	return changed;
}

/* Writes objects of distinct ids observed (and deleted, when not 0) at one time. */
int64
stripe_upsert_rows(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
				   TimestampTz observed, TimestampTz deleted_at)
{
	TimestampTz *obs = palloc(sizeof(TimestampTz) * Max(nrows, 1));
	TimestampTz *del = palloc(sizeof(TimestampTz) * Max(nrows, 1));
	int64		changed;

	for (int r = 0; r < nrows; r++)
	{
		obs[r] = observed;
		del[r] = deleted_at;
	}
	changed = stripe_upsert_rows_at(run, lt, rows, nrows, obs, del);
	pfree(obs);
	pfree(del);
	return changed;
}
