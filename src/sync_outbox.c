/*-------------------------------------------------------------------------
 * sync_outbox.c
 *		The outbox rows a sync writes: for the Stripe events it applies (in the
 *		transaction of their batch, so they commit with the rows they describe
 *		or not at all), and the history of what an object's first backfill
 *		listed, sent from the local table once the backfill is done, when
 *		every customer it names is there to give its identity.  The shipper
 *		(shipper.c) delivers them.
 *
 * The rows are computed by stripe_sync.outbox_rows() as the source's owner,
 * since it reads the owner's local tables, and written as the extension's
 * owner, since the outbox is the extension's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "bgw.h"
#include "sync.h"
#include "xact.h"

#define HISTORY_BATCH	1000
#define OUTBOX_COLS		6

/*
 * Outbox rows for Stripe events (ids and types given) or for backfilled
 * objects' history (ids NULL), in the current step's transaction.  The
 * objects are text (an event's JSON) or jsonb (a local table's attrs), as
 * objtype says.  Returns how many were new.
 */
static int64
outbox_write(SyncRun *run, Datum ids, Datum types, Datum *times, Datum *objects, Oid objtype, int n)
{
	Oid			argtypes[7] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ids ? ' ' : 'n', types ? ' ' : 'n', ' ', ' ', ' ', ' '};
	Oid			coltypes[OUTBOX_COLS] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};
	Datum	   *cols[OUTBOX_COLS];
	int			rows;

	if (n == 0)
		return 0;
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = ids;
	values[2] = types;
	values[3] = PointerGetDatum(construct_array(times, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(objects, n, objtype, -1, false, TYPALIGN_INT));
	argtypes[4] = get_array_type(objtype);
	values[5] = Int64GetDatum(run->src.history_until);
	stripe_run_as_owner(run, true);
	stripe_spi("SELECT * FROM stripe_sync.outbox_rows($1, $2, $3, $4, $5::jsonb[], $6)", 6, argtypes, values,
			   nulls, SPI_OK_SELECT);
	stripe_run_as_owner(run, false);
	rows = (int) SPI_processed;
	if (rows == 0)
		return 0;
	for (int c = 0; c < OUTBOX_COLS; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		cols[c] = palloc(sizeof(Datum) * rows);
		for (int r = 0; r < rows; r++)
		{
			bool		isnull;

			cols[c][r] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1, &isnull);
		}
		get_typlenbyvalalign(coltypes[c], &typlen, &typbyval, &typalign);
		values[c + 1] = PointerGetDatum(construct_array(cols[c], rows, coltypes[c], typlen, typbyval, typalign));
		argtypes[c + 1] = get_array_type(coltypes[c]);
	}
	stripe_spi("INSERT INTO stripe_sync.outbox (source, event_id, event_name, stripe_event, object_id, "
			   "occurred_at, payload) SELECT $1, r.* FROM unnest($2, $3, $4, $5, $6, $7) r "
			   "ON CONFLICT (source, event_id) DO NOTHING", 7, argtypes, values, NULL, SPI_OK_INSERT);
	if (SPI_processed > 0)
		stripe_bgw_wake_at_commit();	/* the shipper */
	return (int64) SPI_processed;
}

/*
 * An event's JSON text with each \u0000 escape made \ufffd: jsonb, which
 * the payloads are computed from, refuses NUL, and one such object would
 * otherwise fail its whole batch at every sync.  The local table refuses the
 * object on its own (stripe_sync.rejected); its event still reaches Intempt.
 */
static Datum
without_nul_escapes(Datum object)
{
	text	   *t = DatumGetTextPP(object);
	const char *p = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	char	   *copy = NULL;

	/* nearly every event has none: one fast search, not a walk of its escapes */
	if (memmem(p, len, "\\u0000", 6) == NULL)
		return object;
	for (int i = 0; i + 1 < len; i++)
	{
		if (p[i] != '\\')
			continue;
		/* an escape: \u0000 is the one to change; the others are skipped whole */
		if (p[i + 1] == 'u' && i + 5 < len && memcmp(p + i + 2, "0000", 4) == 0)
		{
			if (copy == NULL)
			{
				copy = palloc(len);
				memcpy(copy, p, len);
			}
			memcpy(copy + i + 2, "fffd", 4);
		}
		i++;
	}
	return copy == NULL ? object : PointerGetDatum(cstring_to_text_with_len(copy, len));
}

void
stripe_outbox_add(SyncRun *run, Datum ids, Datum types, Datum *times, Datum *objects, int n)
{
	for (int i = 0; i < n; i++)
		objects[i] = without_nul_escapes(objects[i]);
	(void) outbox_write(run, ids, types, times, objects, TEXTOID, n);
}

/*
 * One batch of an object's history, from its local table after the id last
 * sent; returns the last id of the batch, or NULL when there was none.  In
 * the step's transaction, with the progress it records.
 */
static char *
history_batch(SyncRun *run, LocalTable *lt, const char *object, const char *after)
{
	Oid			types[3] = {TEXTOID, INT8OID, TEXTOID};
	Datum		values[3] = {CStringGetTextDatum(after ? after : ""), Int64GetDatum(run->src.history_until),
	CStringGetTextDatum(run->src.account_id)};
	Datum	   *times;
	Datum	   *objects;
	char	   *last;
	int			n;

	stripe_run_as_owner(run, true);
	/* the typed created column: attrs, toasted, is read once per object */
	stripe_spi(psprintf("SELECT id, extract(epoch FROM created)::bigint, attrs FROM %s "
						"WHERE account_id = $3 AND deleted_at IS NULL AND id > $1 AND created < to_timestamp($2) "
						"ORDER BY id LIMIT %d", lt->qualified, HISTORY_BATCH),
			   3, types, values, NULL, SPI_OK_SELECT);
	stripe_run_as_owner(run, false);
	n = (int) SPI_processed;
	if (n == 0)
		return NULL;
	times = palloc(sizeof(Datum) * n);
	objects = palloc(sizeof(Datum) * n);
	for (int r = 0; r < n; r++)
	{
		bool		isnull;

		times[r] = Int64GetDatum(stripe_spi_int64(r, 2, 0));
		/* an array holds its elements inline: a toasted value is fetched first */
		objects[r] = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(SPI_tuptable->vals[r],
																		 SPI_tuptable->tupdesc, 3, &isnull)));
	}
	last = SPI_getvalue(SPI_tuptable->vals[n - 1], SPI_tuptable->tupdesc, 1);
	(void) outbox_write(run, (Datum) 0, (Datum) 0, times, objects, JSONBOID, n);
	stripe_state_update(run, object, "history_after = $3", last);
	return last;
}

/* the objects owed their history, backfilled, of types that have any (in a step) */
static List *
history_owed(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};
	List	   *owed = NIL;

	/* objects of a type with no history are done with at once */
	stripe_spi("UPDATE stripe_sync.object_state o SET history = 'sent' WHERE o.source = $1 "
			   "AND o.history = 'owed' AND o.backfill_done AND NOT EXISTS (SELECT 1 FROM "
			   "stripe_sync.history_map() m, stripe_sync.catalog_objects() c "
			   "WHERE c.object = o.object AND m.object = c.stripe_object)",
			   1, types, values, NULL, SPI_OK_UPDATE);
	stripe_spi("SELECT o.object, o.history_after FROM stripe_sync.object_state o "
			   "WHERE o.source = $1 AND o.history = 'owed' AND o.backfill_done ORDER BY o.object",
			   1, types, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *after = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);

		owed = lappend(owed, list_make2(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
										after ? after : NULL));
	}
	return owed;
}

/*
 * The history of every object owed it whose backfill is done: the historical
 * events of what existed before the first backfill began (history_until),
 * from the local tables, a batch per transaction.  It runs when the source
 * has a destination; until then the history stays owed (a destination given
 * later gets it).  Every customer is in its table by now, so each event
 * carries its customer's one identity.
 */
void
stripe_outbox_history(SyncRun *run)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "stripe_sync history",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MemoryContext batch = AllocSetContextCreate(cxt, "stripe_sync history batch", ALLOCSET_DEFAULT_SIZES);
	List	   *owed;
	ListCell   *lc;

	if (run->src.destination == NULL || !run->src.emit_history || run->src.history_until == 0)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return;
	}
	stripe_run_begin(run);
	owed = history_owed(run);
	stripe_run_commit(run);
	foreach(lc, owed)
	{
		char	   *object = linitial(lfirst(lc));
		char	   *after = lsecond(lfirst(lc));
		LocalTable *lt = NULL;
		ListCell   *tc;

		foreach(tc, run->tables)
			if (((LocalTable *) lfirst(tc))->def &&
				strcmp(((LocalTable *) lfirst(tc))->def->table, object) == 0)
				lt = lfirst(tc);
		if (lt == NULL)
			continue;
		for (;;)
		{
			char	   *last;

			MemoryContextSwitchTo(batch);
			stripe_run_begin(run);
			last = history_batch(run, lt, object, after);
			if (last == NULL)
				stripe_state_update(run, object, "history = 'sent', history_after = NULL", NULL);
			stripe_run_commit(run);
			MemoryContextSwitchTo(cxt);
			after = last ? pstrdup(last) : NULL;
			MemoryContextReset(batch);
			CHECK_FOR_INTERRUPTS();
			if (last == NULL)
				break;
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
