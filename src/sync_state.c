/*-------------------------------------------------------------------------
 * sync_state.c
 *		A source's rows in the management tables, as a sync reads and moves
 *		them: its configuration and cursor (stripe_sync.sources) and each
 *		object's state (stripe_sync.object_state).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "foreign/foreign.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "sync.h"
#include "xact.h"

int64
stripe_now_unix(void)
{
	return (int64) timestamptz_to_time_t(GetCurrentTimestamp());
}

/*
 * Reads the source into run->src (in run->cxt); false when there is no such
 * source.  The caller must be the owner (or a member of its role) or a
 * superuser.
 */
bool
stripe_load_source(SyncRun *run, const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	MemoryContext old;
	ArrayType  *arr;
	Datum	   *elems;
	int			n;
	char	   *s;

	stripe_spi("SELECT s.server::text, s.target_schema::text, s.objects, "
			   "extract(epoch FROM s.sync_from)::bigint, s.events_cursor, s.account_id, "
			   "pg_has_role(s.owner, 'USAGE') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
			   "s.destination::text, s.emit_history, s.history_until "
			   "FROM stripe_sync.sources s WHERE s.name = $1",
			   1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	if (!stripe_spi_bool(0, 7))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to sync source \"%s\"", name),
				 errhint("A source syncs as its owner; run it as that role.")));

	old = MemoryContextSwitchTo(run->cxt);
	run->src.name = pstrdup(name);
	run->src.serverid = GetForeignServerByName(SPI_getvalue(tup, td, 1), false)->serverid;
	run->src.target_schema = SPI_getvalue(tup, td, 2);
	arr = DatumGetArrayTypeP(SPI_getbinval(tup, td, 3, &isnull));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
	run->src.objects = NIL;
	for (int i = 0; i < n; i++)
		run->src.objects = lappend(run->src.objects, TextDatumGetCString(elems[i]));
	run->src.sync_from = stripe_spi_int64(0, 4, PG_INT64_MIN);
	run->src.has_sync_from = run->src.sync_from != PG_INT64_MIN;
	if (!run->src.has_sync_from)
		run->src.sync_from = 0;
	run->src.events_cursor = stripe_spi_int64(0, 5, PG_INT64_MIN);
	run->src.has_cursor = run->src.events_cursor != PG_INT64_MIN;
	if (!run->src.has_cursor)
		run->src.events_cursor = 0;
	run->src.account_id = SPI_getvalue(tup, td, 6);
	s = SPI_getvalue(tup, td, 8);
	run->src.destination = s;
	run->src.emit_history = stripe_spi_bool(0, 9);
	run->src.history_until = stripe_spi_int64(0, 10, 0);
	MemoryContextSwitchTo(old);
	return true;
}

/* UPDATE stripe_sync.object_state SET <set_clause> for one object; $3 is text_arg */
void
stripe_state_update(SyncRun *run, const char *object, const char *set_clause,
					const char *text_arg)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', text_arg ? ' ' : 'n'};

	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = CStringGetTextDatum(object);
	values[2] = text_arg ? CStringGetTextDatum(text_arg) : (Datum) 0;
	stripe_spi(psprintf("UPDATE stripe_sync.object_state SET %s WHERE source = $1 AND object = $2",
						set_clause), 3, types, values, nulls, SPI_OK_UPDATE);
}

/* UPDATE stripe_sync.sources SET <set_clause> for the run's source; $2 is arg */
void
stripe_source_update(SyncRun *run, const char *set_clause, Oid argtype, Datum arg)
{
	Oid			types[2] = {TEXTOID, argtype};
	Datum		values[2] = {CStringGetTextDatum(run->src.name), arg};

	stripe_spi(psprintf("UPDATE stripe_sync.sources SET %s WHERE name = $1", set_clause),
			   OidIsValid(argtype) ? 2 : 1, types, values, NULL, SPI_OK_UPDATE);
}

void
stripe_set_cursor(SyncRun *run, int64 cursor)
{
	stripe_source_update(run, "events_cursor = $2", INT8OID, Int64GetDatum(cursor));
	run->src.events_cursor = cursor;
	run->src.has_cursor = true;
}
