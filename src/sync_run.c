/*-------------------------------------------------------------------------
 * sync_run.c
 *		One sync of a source: the account, the events cursor, the backfill of
 *		the objects not yet backfilled, the events since the cursor, then the
 *		changes Stripe sends no event for (sync_relist.c); the
 *		run's row in stripe_sync.runs; stripe_sync.sync_now(); and the life of
 *		a backfill helper, which runs one part of a sync's backfill.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "account.h"
#include "backfill.h"
#include "bf_parents.h"
#include "bgw.h"
#include "children.h"
#include "connect.h"
#include "events.h"
#include "run.h"
#include "text.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(stripe_sync_now);

#define ADVISORY_CLASS			0x53545250	/* "STRP" */
#define RUNS_KEPT_DAYS			30

/*
 * One sync at a time per source: a session advisory lock, which a crash
 * releases.  With wait, a lock held elsewhere is waited for (cancel and
 * lock_timeout end the wait).
 */
static bool
lock_source(const char *name, bool lock, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, ADVISORY_CLASS,
						 DatumGetUInt32(hash_any((const unsigned char *) name, strlen(name))), 2);
	if (lock)
		return LockAcquire(&tag, ExclusiveLock, true, !wait) != LOCKACQUIRE_NOT_AVAIL;
	LockRelease(&tag, ExclusiveLock, true);
	return true;
}

static int64
run_rows(SyncRun *run)
{
	int64		rows = 0;
	ListCell   *lc;

	foreach(lc, run->tables)
		rows += ((LocalTable *) lfirst(lc))->rows;
	return rows;
}

static void
record_run(SyncRun *run, const char *status, const char *error)
{
	Oid			types[7] = {INT8OID, TEXTOID, INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', error ? ' ' : 'n', ' ', ' '};

	values[0] = Int64GetDatum(run->src.run_id);
	values[1] = CStringGetTextDatum(status);
	values[2] = Int64GetDatum(run->stats.requests);
	values[3] = Int64GetDatum(run_rows(run));
	values[4] = error ? CStringGetTextDatum(error) : (Datum) 0;
	values[5] = Int64GetDatum(run->events_applied);
	values[6] = Int64GetDatum(run->events_skipped);
	stripe_spi("UPDATE stripe_sync.runs SET status = $2, requests = $3, rows = $4, error = $5, "
			   "events = $6, events_skipped = $7, finished_at = clock_timestamp() WHERE id = $1",
			   7, types, values, nulls, SPI_OK_UPDATE);
}

/* the summary sync_now returns */
static Jsonb *
run_summary(SyncRun *run)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"source\": ");
	escape_json(&buf, run->src.name);
	appendStringInfoString(&buf, ", \"objects\": {");
	foreach(lc, run->tables)
	{
		LocalTable *lt = lfirst(lc);

		appendStringInfo(&buf, "%s\"%s\": {\"rows\": " INT64_FORMAT ", \"pages\": " INT64_FORMAT "}",
						 foreach_current_index(lc) ? ", " : "", lt->def ? lt->def->table : "?",
						 lt->rows, lt->pages);
	}
	appendStringInfo(&buf, "}, \"rows\": " INT64_FORMAT ", \"events\": " INT64_FORMAT
					 ", \"events_skipped\": " INT64_FORMAT
					 ", \"rejected\": " INT64_FORMAT ", \"requests\": " INT64_FORMAT
					 ", \"retries\": " INT64_FORMAT ", \"seconds\": %.3f}",
					 run_rows(run), run->events_applied, run->events_skipped, run->rejected, run->stats.requests,
					 run->stats.retries, (double) (GetCurrentTimestamp() - run->started) / USECS_PER_SEC);
	if (run->src.connected_accounts)
	{
		buf.len--;				/* the closing brace */
		appendStringInfo(&buf, ", \"connected_accounts\": {\"listed\": %d, \"synced\": %d, "
						 "\"deauthorized\": %d, \"rounds\": %d}}", run->connect.listed, run->connect.synced,
						 run->connect.deauthorized, run->connect.rounds);
	}
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * The events cursor, set before the first backfill so that nothing that
 * happens during it is lost; past Stripe's 30-day event retention, every
 * object is listed again (in a transaction).
 */
static void
run_cursor(SyncRun *run)
{
	bool		relist = false;

	if (run->src.has_cursor && run->src.events_cursor < stripe_now_unix() - STRIPE_EVENT_RETENTION_SECS)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(run->src.name)};

		ereport(LOG,
				(errmsg("stripe_sync: source \"%s\": events cursor %s is older than Stripe's 30-day event retention; listing every object again",
						run->src.name,
						timestamptz_to_str(time_t_to_timestamptz((pg_time_t) run->src.events_cursor)))));
		stripe_spi("UPDATE stripe_sync.object_state SET backfill_done = false, backfill_cursor = NULL, "
				   "state = 'relisting', last_error = 'events cursor past the 30-day retention: full re-list' "
				   "WHERE source = $1", 1, types, values, NULL, SPI_OK_UPDATE);
		run->src.has_cursor = false;
		relist = true;
	}
	if (run->src.has_cursor)
		return;

	/*
	 * A re-list also reads the events Stripe still has (a day short of the
	 * limit, so that a re-list cut short resumes instead of starting over):
	 * deletions in the gap, and the gap's events for the outbox.  observed_at
	 * keeps them from undoing the newer listed state.
	 */
	stripe_set_cursor(run, relist ? stripe_now_unix() - (STRIPE_EVENT_RETENTION_SECS - 86400)
					  : stripe_now_unix());
	/* the first backfill's cut between history and live events; a re-list keeps it */
	if (run->src.history_until == 0)
	{
		stripe_source_update(run, "history_until = $2", INT8OID, Int64GetDatum(run->src.events_cursor));
		run->src.history_until = run->src.events_cursor;
	}
}

/* The objects not yet backfilled (BfPending), their tables opened (in a transaction). */
static List *
run_pending(SyncRun *run, bool *need_account)
{
	List	   *pending = NIL;
	ListCell   *lc;

	*need_account = false;
	stripe_children_prepare(run);
	foreach(lc, run->src.objects)
	{
		char	   *object = lfirst(lc);
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object)};
		LocalTable *lt = stripe_open_local_table(run, object);
		char	   *cursor;
		BfPending  *p;

		stripe_spi("SELECT EXISTS (SELECT 1 FROM stripe_sync.rejected WHERE source = $1 AND object = $2)",
				   2, types, values, NULL, SPI_OK_SELECT);
		lt->has_rejects = stripe_spi_bool(0, 1);
		/* a child table is written with its parent's objects */
		if (stripe_is_child(object))
			continue;
		stripe_spi("SELECT backfill_done, backfill_cursor "
				   "FROM stripe_sync.object_state WHERE source = $1 AND object = $2",
				   2, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed != 1)
			continue;
		if (stripe_spi_bool(0, 1))
			continue;
		cursor = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		p = MemoryContextAllocZero(run->cxt, sizeof(BfPending));
		p->object = MemoryContextStrdup(run->cxt, object);
		p->lt = lt;
		p->cursor = cursor ? MemoryContextStrdup(run->cxt, cursor) : NULL;
		pending = lappend(pending, p);
		/* a first round of windows spans the account's life (a walk of customers has none) */
		if (cursor == NULL && !run->src.has_sync_from && !stripe_listed_per_parent(object))
			*need_account = true;
	}
	return pending;
}

/*
 * The account behind the key, asked for at most once a run (no transaction
 * open while waiting).  The source's account_id is the local tables' key
 * (their distribution column under Citus), decided once, before its first
 * row is written, and never changed: a row's key must not move.  A key
 * Stripe refuses the account (a restricted key) syncs under the placeholder
 * "unknown:<source>", kept even if the key may read the account later; its
 * backfill reaches back to Stripe's beginning instead of the account's (see
 * stripe_backfill_init).
 */
void
stripe_run_account(SyncRun *run, bool need_created)
{
	char	   *acct;
	char	   *refused;

	if (run->account_asked ||
		(run->src.account_id != NULL && (!need_created || run->account_created != 0)))
		return;
	run->account_asked = true;
	acct = stripe_fetch_account_id(run->conn, &run->stats, &run->account_created, &refused);
	stripe_run_account_answer(run, acct, refused);
}

static char *
text_join(List *parts, const char *sep)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, parts)
		appendStringInfo(&buf, "%s%s", foreach_current_index(lc) ? sep : "", (char *) lfirst(lc));
	return buf.data;
}

/*
 * The rejected objects retry_rejected() asked for: each fetched again and
 * stored, or set aside again with the new error; one gone from Stripe is
 * forgotten.  A thousand per run.
 */
static void
run_retry_rejected(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};
	List	   *todo = NIL;
	ListCell   *lc;

	stripe_run_begin(run);
	stripe_spi("SELECT object, object_id FROM stripe_sync.rejected WHERE source = $1 AND retry "
			   "ORDER BY object, object_id LIMIT 1000", 1, types, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
		todo = lappend(todo, list_make2(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
										SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2)));
	stripe_run_commit(run);
	foreach(lc, todo)
	{
		char	   *object = linitial(lfirst(lc));
		char	   *id = lsecond(lfirst(lc));
		LocalTable *lt = stripe_table_find(run, object, true);
		char	   *segment = stripe_path_segment(id);
		StripePage	page;
		PageCheck	pc = {NULL, &page, false};
		StripeResponse resp;
		bool		found;
		Datum		forget[3] = {values[0], CStringGetTextDatum(object), CStringGetTextDatum(id)};
		Oid			ftypes[3] = {TEXTOID, TEXTOID, TEXTOID};

		if (lt == NULL || lt->def == NULL || segment == NULL)
			continue;
		pc.fs = lt->rc->fs;
		found = stripe_request(run->conn, "GET", psprintf("/v1/%s/%s", lt->def->path, segment), NULL,
							   NULL, true, stripe_check_page, &pc, &resp, &run->stats);
		stripe_run_begin(run);
		if (found && !page.rows[0].deleted)
			lt->rows += stripe_upsert_rows(run, lt, page.rows, 1, GetCurrentTimestamp(), 0);
		else					/* no longer at Stripe: nothing to store */
			stripe_spi("DELETE FROM stripe_sync.rejected WHERE source = $1 AND object = $2 AND object_id = $3",
					   3, ftypes, forget, NULL, SPI_OK_DELETE);
		stripe_run_commit(run);
	}
}

static void
run_source(SyncRun *run)
{
	char	   *failed;
	List	   *pending;
	List	   *per_parent;
	bool		need_account;
	bool		first;
	ListCell   *lc;

	/* what lives across the run's transactions goes in run->cxt */
	MemoryContextSwitchTo(run->cxt);
	stripe_run_begin(run);
	stripe_check_usage(run);
	run->conn = stripe_conn_for_server(run->src.serverid, run->src.owner);
	stripe_run_commit(run);
	/* a connected account's source reads its account with the platform's key */
	if (run->src.platform != NULL)
		run->conn->on_behalf = run->src.account_id;
	first = run->src.account_id == NULL;

	/*
	 * A sync_now's first run asks for its account before run_cursor writes
	 * the source's row: its steps are its caller's transaction, which holds
	 * that row's lock until it ends, and a request waits in between.
	 */
	if (first && !run->own)
		stripe_run_account(run, false);
	stripe_run_begin(run);
	run_cursor(run);
	pending = run_pending(run, &need_account);
	stripe_run_commit(run);

	/* what Stripe lists only per customer follows the customers' backfill */
	per_parent = NIL;
	foreach(lc, pending)
		if (stripe_listed_per_parent(((BfPending *) lfirst(lc))->object))
		{
			per_parent = lappend(per_parent, lfirst(lc));
			pending = foreach_delete_current(pending, lc);
		}

	/*
	 * The source's first run learns its account, later ones when a backfill
	 * would span the account's life.  A worker with objects to backfill and
	 * no account yet (a first run, or one whose run ended before the account
	 * came) asks for it beside its first pages (backfill.c), which then start
	 * from Stripe's floor and wait for the answer before they are written:
	 * no round trip of its own before them.
	 */
	if (run->own && pending != NIL && first && !run->account_asked)
		run->account_in_stream = true;
	else if (first || need_account)
		stripe_run_account(run, need_account);
	stripe_backfill_set(run, pending, per_parent == NIL);
	stripe_backfill_parents(run, per_parent);
	run_retry_rejected(run);
	stripe_outbox_history(run);
	stripe_sync_events(run);
	stripe_parents_relist(run);
	stripe_sync_relist(run);
	/* a platform's connected accounts, each its own sync; a failed listing fails the run */
	if (run->src.connected_accounts && run->src.platform == NULL)
		stripe_connect_fanout(run, &run->connect);

	stripe_run_begin(run);
	foreach(lc, run->src.objects)
		if (!stripe_run_object_failed(run, lfirst(lc)))
			stripe_state_update(run, lfirst(lc),
								"state = 'synced', last_success_at = now(), last_error = NULL", NULL);
	/* objects Stripe refused keep their error; the rest of the run counts */
	failed = run->failed ? text_join(run->failed, "; ") : NULL;
	stripe_source_update(run, "next_sync_at = now() + sync_interval, failures = 0, last_error = $2",
						 TEXTOID, failed ? CStringGetTextDatum(failed) : (Datum) 0);
	record_run(run, failed ? "partial" : "ok", failed);
	stripe_run_commit(run);
}

static void
run_end(SyncRun *run)
{
	stripe_close_local_tables(run);
	MemoryContextDelete(run->cxt);
}

static void
run_source_fn(void *arg)
{
	run_source((SyncRun *) arg);
}

/*
 * A worker's failed run: kept in status, and the source tried again after the
 * backoff set when the run began.  The error is logged when it differs from
 * the last one; a source that keeps failing the same way logs it once.
 */
static void
run_failed(SyncRun *run, ErrorData *edata)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	char	   *error = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
	Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(error)};
	bool		installed;

	/* the extension was dropped under the run: nothing to record, nothing to say */
	stripe_xact_begin(true);
	installed = OidIsValid(get_extension_oid("stripe_sync", true));
	stripe_xact_commit(true);
	if (!installed)
		return;
	stripe_run_begin(run);
	record_run(run, "error", edata->message);
	stripe_spi("UPDATE stripe_sync.object_state SET state = 'error', last_error = $2 WHERE source = $1",
			   2, types, values, NULL, SPI_OK_UPDATE);
	stripe_spi("UPDATE stripe_sync.sources SET last_error = $2 WHERE name = $1",
			   2, types, values, NULL, SPI_OK_UPDATE);
	stripe_run_commit(run);
	if (run->src.last_error == NULL || strcmp(run->src.last_error, error) != 0)
	{
		edata->elevel = LOG;
		edata->message = psprintf("stripe_sync: sync of source \"%s\" failed: %s", run->src.name,
								  edata->message);
		ThrowErrorData(edata);
	}
}

/* a worker logs a failure itself, once per change (run_failed) */
static bool
run_report(ErrorData *edata, void *arg)
{
	return false;
}

/*
 * Waits for the sync of source that holds it, then says what that run did:
 * sync_now right after create_source or a due time meets the worker's run.
 */
static Jsonb *
run_joined(SyncRun *run, const char *source)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(source)};
	char	   *json;

	ereport(NOTICE,
			(errmsg("a sync of source \"%s\" is running: waiting for it", source)));
	(void) lock_source(source, true, true);
	lock_source(source, false, false);
	stripe_run_begin(run);
	stripe_spi("SELECT jsonb_build_object('source', r.source, 'joined', true, 'run', r.id, "
			   "'status', r.status, 'rows', r.rows, 'events', r.events, 'events_skipped', r.events_skipped, "
			   "'requests', r.requests, 'error', r.error, "
			   "'seconds', round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 3))::text "
			   "FROM stripe_sync.runs r WHERE r.source = $1 ORDER BY r.id DESC LIMIT 1",
			   1, types, values, NULL, SPI_OK_SELECT);
	json = SPI_processed ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	stripe_run_commit(run);
	if (json == NULL)
		json = psprintf("{\"source\": \"%s\", \"joined\": true}", source);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/*
 * Starts a run: the source loaded, its lock taken and its runs row written.
 * NULL when another sync of the source holds it; then, for sync_now, *joined
 * is what that sync did, once it has ended.
 */
static SyncRun *
run_start(const char *source, bool own, MemoryContext parent, Jsonb **joined)
{
	SyncRun    *run = stripe_run_open(source, own, parent);
	MemoryContext cxt = run->cxt;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(source)};

	if (!lock_source(source, true, false))
	{
		ereport(DEBUG1, (errmsg("a sync of source \"%s\" is already running", source)));
		stripe_run_commit(run);
		if (joined != NULL)
			*joined = run_joined(run, source);
		MemoryContextDelete(cxt);
		return NULL;
	}
	/* the history of runs is kept for RUNS_KEPT_DAYS */
	stripe_spi("DELETE FROM stripe_sync.runs WHERE source = $1 AND finished_at < now() - "
			   "make_interval(days => " CppAsString2(RUNS_KEPT_DAYS) ")", 1, types, values, NULL,
			   SPI_OK_DELETE);
	stripe_spi("INSERT INTO stripe_sync.runs (source) VALUES ($1) RETURNING id", 1, types, values,
			   NULL, SPI_OK_INSERT_RETURNING);
	run->src.run_id = stripe_spi_int64(0, 1, 0);

	/*
	 * A worker's run counts as failed until it succeeds: should it crash, the
	 * source is tried again only after the backoff, 1 minute doubling with
	 * each failure, at most its interval or an hour.
	 */
	if (own)
		stripe_source_update(run, "failures = failures + 1, next_sync_at = now() + "
							 "least(interval '1 minute' * power(2, least(failures, 20)), "
							 "sync_interval, interval '1 hour')", InvalidOid, (Datum) 0);
	stripe_run_commit(run);
	return run;
}

/* a worker's run; turn_end, turn_over: see stripe_sync_account */
static bool
run_own(const char *source, TimestampTz turn_end, bool *turn_over)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync worker run",
											  ALLOCSET_DEFAULT_SIZES);
	SyncRun    *run;
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	run = run_start(source, true, cxt, NULL);
	if (run == NULL)
	{
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextDelete(cxt);
		return false;
	}
	run->turn_end = turn_end;
	edata = stripe_try(run_source_fn, run, cxt, run_report);
	*turn_over = edata == NULL && run->turn_over;
	if (edata != NULL)
	{
		MemoryContextSwitchTo(cxt);
		run_failed(run, edata);
	}
	lock_source(source, false, false);
	MemoryContextSwitchTo(TopMemoryContext);
	run_end(run);
	MemoryContextDelete(cxt);
	return true;
}

bool
stripe_sync_run(const char *source)
{
	bool		turn_over;

	return run_own(source, 0, &turn_over);
}

/* a run in this session's transaction: an error goes on up, the lock released */
static void
run_here(SyncRun *run, const char *name)
{
	PG_TRY();
	{
		run_source(run);
	}
	PG_FINALLY();
	{
		lock_source(name, false, false);
	}
	PG_END_TRY();
}

/* stripe_sync.sync_now(name): one sync in this session, with NOTICE progress */
Datum
stripe_sync_now(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	MemoryContext caller = CurrentMemoryContext;
	Jsonb	   *summary = NULL;
	SyncRun    *run = run_start(name, false, caller, &summary);

	if (run == NULL)
		PG_RETURN_JSONB_P(summary);
	run_here(run, name);
	MemoryContextSwitchTo(caller);
	summary = run_summary(run);
	run_end(run);
	PG_RETURN_JSONB_P(summary);
}

bool
stripe_sync_account(const char *source, bool own, TimestampTz turn_end, bool *turn_over)
{
	MemoryContext caller = CurrentMemoryContext;
	SyncRun    *run;

	*turn_over = false;
	if (own)
		return run_own(source, turn_end, turn_over);
	run = run_start(source, false, caller, NULL);
	if (run == NULL)
		return false;
	run->turn_end = turn_end;
	run_here(run, source);
	*turn_over = run->turn_over;
	MemoryContextSwitchTo(caller);
	run_end(run);
	return true;
}

/* ---------- a backfill helper ---------- */

/* the helper's view of the run, from its sync */
static SyncRun *
helper_run(HelperShared *hs, MemoryContext cxt)
{
	SyncRun    *run = MemoryContextAllocZero(cxt, sizeof(SyncRun));

	run->cxt = cxt;
	run->own = true;
	run->started = GetCurrentTimestamp();
	run->src.name = MemoryContextStrdup(cxt, hs->source);
	run->src.serverid = hs->serverid;
	run->src.target_schema = MemoryContextStrdup(cxt, hs->target_schema);
	run->src.has_sync_from = hs->has_sync_from;
	run->src.sync_from = hs->sync_from;
	run->src.has_cursor = true;
	run->src.events_cursor = hs->top;
	run->src.account_id = hs->account_id[0] ? MemoryContextStrdup(cxt, hs->account_id) : NULL;
	run->src.owner = hs->userid;
	run->src.run_id = hs->run_id;
	run->caller = hs->userid;
	return run;
}

typedef struct HelperWork
{
	HelperShared *hs;
	MemoryContext cxt;
} HelperWork;

static void
helper_work(void *arg)
{
	HelperWork *hw = arg;
	HelperShared *hs = hw->hs;
	SyncRun    *run = helper_run(hs, hw->cxt);
	LocalTable *lt;
	Backfill	bf;

	stripe_run_begin(run);
	run->conn = stripe_conn_for_server(run->src.serverid, run->src.owner);
	if (hs->on_behalf)
		run->conn->on_behalf = run->src.account_id;
	lt = stripe_open_local_table(run, hs->object);
	stripe_run_commit(run);
	stripe_backfill_init(&bf, run, lt, MemoryContextStrdup(hw->cxt, hs->object), hs->part, hw->cxt);
	bf.win.top = hs->top;
	bf.win.base = hs->base;
	bf.slots = hs->slots;
	bf.win.maxdepth = hs->slots;
	bf.mine = hs;
	stripe_backfill_part_work(&bf, hs->cursor);
	/* the sync may count the part done only once that is committed */
	hs->done = !bf.failed && stripe_windows_all_done(&bf.win);
	if (bf.failed)
		strlcpy(hs->error, bf.failed, sizeof(hs->error));
}

/* A helper's life: one part of one backfill, then exit. */
void
stripe_backfill_helper_main(Datum main_arg)
{
	dsm_segment *seg;
	HelperWork	hw;
	ErrorData  *edata;

	stripe_bgw_start();
	stripe_bgw_keep_memory();
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);			/* the sync is gone */
	hw.hs = dsm_segment_address(seg);
	BackgroundWorkerInitializeConnectionByOid(hw.hs->dbid, hw.hs->userid, 0);
	SetConfigOption("application_name", psprintf("stripe_sync %s helper", hw.hs->source),
					PGC_USERSET, PGC_S_SESSION);
	/* the sync waits for us, so we must not wait long for it: fail, and it takes over */
	SetConfigOption("lock_timeout", "10s", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION);
	pgstat_report_activity(STATE_RUNNING, psprintf("backfill of %s for source \"%s\"",
													hw.hs->object, hw.hs->source));
	hw.cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync backfill helper",
								   ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(hw.cxt);
	edata = stripe_try(helper_work, &hw, hw.cxt, NULL);
	if (edata != NULL)
		strlcpy(hw.hs->error, edata->message, sizeof(hw.hs->error));
	proc_exit(0);
}
