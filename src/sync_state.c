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
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "sync.h"
#include "xact.h"

void
stripe_run_begin(SyncRun *run)
{
	stripe_xact_begin(run->own);
	if (!OidIsValid(run->admin))
		run->admin = stripe_extension_owner();
	GetUserIdAndSecContext(&run->save_user, &run->save_sec);
	SetUserIdAndSecContext(run->admin, run->save_sec | SECURITY_LOCAL_USERID_CHANGE);
}

void
stripe_run_commit(SyncRun *run)
{
	SetUserIdAndSecContext(run->save_user, run->save_sec);
	stripe_xact_commit(run->own);
}

/* inside a step: as the source's owner (restricted), or back to the extension's */
void
stripe_run_as_owner(SyncRun *run, bool owner)
{
	if (owner)
		SetUserIdAndSecContext(run->src.owner, run->save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
	else
		SetUserIdAndSecContext(run->admin, run->save_sec | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * The run's row shows its rows and requests as they commit, in the step's
 * transaction (a run cut short shows what it did).
 */
void
stripe_run_progress(SyncRun *run, int64 rows)
{
	Oid			types[3] = {INT8OID, INT8OID, INT8OID};
	Datum		values[3] = {Int64GetDatum(run->src.run_id), Int64GetDatum(rows),
	Int64GetDatum(run->stats.requests - run->reported_requests)};

	if (run->src.run_id == 0)
		return;
	stripe_spi("UPDATE stripe_sync.runs SET rows = rows + $2, requests = requests + $3 WHERE id = $1",
			   3, types, values, NULL, SPI_OK_UPDATE);
	run->reported_requests = run->stats.requests;
}

/* whether an object failed in this run (run->failed holds "object: why") */
bool
stripe_run_object_failed(SyncRun *run, const char *object)
{
	ListCell   *lc;
	size_t		n = strlen(object);

	foreach(lc, run->failed)
		if (strncmp(lfirst(lc), object, n) == 0 && ((char *) lfirst(lc))[n] == ':')
			return true;
	return false;
}

int64
stripe_now_unix(void)
{
	return (int64) timestamptz_to_time_t(GetCurrentTimestamp());
}

/* its owner may no longer use a server the source needs: the run stops */
static void
check_usage(SyncRun *run, const char *server, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the owner of source \"%s\" has no USAGE on its %s server \"%s\"", run->src.name,
					what, server),
			 errdetail("A source syncs as its owner, who must be able to use its servers."),
			 errhint("GRANT USAGE ON FOREIGN SERVER %s TO %s;", quote_identifier(server),
					 GetUserNameFromId(run->src.owner, false))));
}

/* Each run checks that the owner may still use the source's servers (in a step). */
void
stripe_check_usage(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};

	stripe_spi("SELECT s.server::text, has_server_privilege(s.owner, s.server, 'USAGE'), "
			   "s.destination::text, s.destination IS NULL OR has_server_privilege(s.owner, s.destination, 'USAGE') "
			   "FROM stripe_sync.sources s WHERE s.name = $1", 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	if (!stripe_spi_bool(0, 2))
		check_usage(run, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "Stripe");
	if (!stripe_spi_bool(0, 4))
		check_usage(run, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), "destination");
}

/*
 * Reads the source into run->src (in run->cxt); false when there is no such
 * source, or none the caller may sync: its owner, a member of the owner's
 * role, or a superuser.
 */
bool
stripe_load_source(SyncRun *run, const char *name)
{
	Oid			types[2] = {TEXTOID, OIDOID};
	Datum		values[2] = {CStringGetTextDatum(name), ObjectIdGetDatum(run->caller)};
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
			   "NULL, s.destination::text, s.emit_history, s.history_until, s.owner::text, s.owner::oid, "
			   "s.failures, s.last_error, s.platform, s.connected_accounts, "
			   /* a connected account's source this transaction made (sync_now): no helper sees it */
			   "CASE WHEN s.platform IS NOT NULL THEN s.xmin::text::bigint = txid_current() & 4294967295 END "
			   "FROM stripe_sync.sources s WHERE s.name = $1 AND pg_has_role($2, s.owner, 'USAGE')",
			   2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	run->src.name = MemoryContextStrdup(run->cxt, name);

	old = MemoryContextSwitchTo(run->cxt);
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
	run->src.owner = DatumGetObjectId(SPI_getbinval(tup, td, 12, &isnull));
	run->src.failures = DatumGetInt32(SPI_getbinval(tup, td, 13, &isnull));
	run->src.last_error = SPI_getvalue(tup, td, 14);
	run->src.platform = SPI_getvalue(tup, td, 15);
	run->src.connected_accounts = stripe_spi_bool(0, 16);
	run->src.created_here = stripe_spi_bool(0, 17);
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * A run of a source for the calling role, its first step begun: its memory
 * context (a child of parent), the source loaded.  Another role's source
 * does not exist for the caller.
 */
SyncRun *
stripe_run_open(const char *source, bool own, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "stripe_sync run", ALLOCSET_DEFAULT_SIZES);
	SyncRun    *run = MemoryContextAllocZero(cxt, sizeof(SyncRun));

	run->cxt = cxt;
	run->own = own;
	run->started = GetCurrentTimestamp();
	run->caller = GetUserId();
	stripe_run_begin(run);
	(void) stripe_schema_current(true);
	if (!stripe_load_source(run, source))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", source)));
	return run;
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
	char		nulls[2] = {' ', arg == (Datum) 0 && argtype == TEXTOID ? 'n' : ' '};

	stripe_spi(psprintf("UPDATE stripe_sync.sources SET %s WHERE name = $1", set_clause),
			   OidIsValid(argtype) ? 2 : 1, types, values, nulls, SPI_OK_UPDATE);
}

void
stripe_set_cursor(SyncRun *run, int64 cursor)
{
	stripe_source_update(run, "events_cursor = $2", INT8OID, Int64GetDatum(cursor));
	run->src.events_cursor = cursor;
	run->src.has_cursor = true;
}

/*
 * What GET /v1/account said (acct, or NULL and Stripe's refusal), asked
 * before the run's requests or beside a backfill's (stripe_account_request):
 * the source's account_id, set once, before its first row (sync_run.c,
 * stripe_run_account).  A key refused the account syncs under the
 * placeholder "unknown:<source>".
 */
void
stripe_run_account_answer(SyncRun *run, const char *acct, const char *refused)
{
	if (acct == NULL && run->src.account_id == NULL)
	{
		acct = psprintf("unknown:%s", run->src.name);
		ereport(run->own ? LOG : NOTICE,
				(errmsg("stripe_sync: source \"%s\": the API key cannot read the account; syncing without it",
						run->src.name),
				 errdetail("%s", refused),
				 errhint("account_id is \"%s\" in the local tables, and a backfill lists from %s.",
						 acct, "2010-01-01")));
	}
	if (run->src.account_id == NULL)
	{
		stripe_run_begin(run);
		stripe_source_update(run, "account_id = $2", TEXTOID, CStringGetTextDatum(acct));
		stripe_run_commit(run);
		run->src.account_id = MemoryContextStrdup(run->cxt, acct);
	}
}
