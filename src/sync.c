/*-------------------------------------------------------------------------
 * sync.c
 *		The sync engine: a source's objects copied into local tables, first by
 *		a backfill of every object (resumable from the last committed page),
 *		then incrementally from /v1/events since a cursor.
 *
 * Every local row carries observed_at: when Stripe's state was seen (the
 * fetch time of a backfill page, or the event's time).  An upsert only wins
 * over a row observed no later, so an older state never overwrites a newer
 * one, whatever order pages and events arrive in; and it writes nothing when
 * the object did not change.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "stripe_sync.h"

PG_FUNCTION_INFO_V1(stripe_sync_now);
PG_FUNCTION_INFO_V1(stripe_catalog_columns);

/* events older than Stripe keeps (30 days), with a day's margin */
#define EVENT_RETENTION_SECS	(29 * 86400)
/* re-read this much before the cursor; applied ids are dropped */
#define EVENT_OVERLAP_SECS		300
#define ADVISORY_CLASS			0x53545250	/* "STRP" */
#define RUNS_KEPT_DAYS			30

typedef struct SourceInfo
{
	char	   *name;
	Oid			serverid;
	char	   *target_schema;
	List	   *objects;		/* text */
	bool		has_sync_from;
	int64		sync_from;		/* unix seconds */
	bool		has_cursor;
	int64		events_cursor;
	char	   *account_id;
	int64		run_id;
	char	   *destination;	/* intempt server, or NULL: no outbox rows */
	bool		emit_history;
	int64		history_until;	/* unix seconds; 0 = first backfill not begun */
} SourceInfo;

/* One local table being written */
typedef struct LocalTable
{
	const StripeObjectDef *def;
	char	   *qualified;		/* "schema"."table" */
	StripeRowConv *rc;
	TupleDesc	tupdesc;
	TupleTableSlot *slot;
	SPIPlanPtr	upsert;			/* one statement for a whole page: unnest of arrays */
	Oid		   *argtypes;		/* array type of each column */
	int16	   *typlen;
	bool	   *typbyval;
	char	   *typalign;
	int			created_slot;	/* field slot of "created", or -1 */
	int			att_account,
				att_synced,
				att_observed,
				att_deleted;
	int64		rows;
	int64		pages;
	bool		history;		/* the object's first backfill: it writes history */
	bool		locked_here;	/* created or truncated in this transaction */
} LocalTable;

typedef struct SyncRun
{
	SourceInfo	src;
	StripeConn *conn;
	bool		own;
	MemoryContext cxt;			/* lives across the run's transactions */
	List	   *tables;			/* LocalTable */
	StripeStats stats;
	int64		events_applied;
	TimestampTz started;
	int64		account_created;	/* unix seconds; 0 = not known */
	bool		events_early;	/* the events' first page was asked for */
	char	   *events_page;	/* its body, in cxt, when it came */
	size_t		events_len;
} SyncRun;

/* ---------- transactions ---------- */

static void
begin_xact(SyncRun *run)
{
	if (run->own)
	{
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/* Commits what the page wrote (workers only; sync_now keeps one transaction). */
static void
commit_xact(SyncRun *run)
{
	SPI_finish();
	if (run->own)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
}

static void
page_boundary(SyncRun *run)
{
	if (!run->own)
	{
		CommandCounterIncrement();
		return;
	}
	commit_xact(run);
	CHECK_FOR_INTERRUPTS();
	stripe_worker_reload_config();
	begin_xact(run);
}

static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI failed (%d): %s", rc, sql);
}

static void
state_update(SyncRun *run, const char *object, const char *set_clause, const char *text_arg)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', text_arg ? ' ' : 'n'};

	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = CStringGetTextDatum(object);
	values[2] = text_arg ? CStringGetTextDatum(text_arg) : (Datum) 0;
	spi_exec(psprintf("UPDATE stripe_sync.object_state SET %s WHERE source = $1 AND object = $2",
					  set_clause), 3, types, values, nulls);
}

static int64
now_unix(void)
{
	return (int64) timestamptz_to_time_t(GetCurrentTimestamp());
}

/* ---------- source and tables ---------- */

static bool
load_source(SyncRun *run, const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	Datum		d;
	MemoryContext old;
	ArrayType  *arr;
	Datum	   *elems;
	int			n;

	spi_exec("SELECT s.server::text, s.target_schema::text, s.objects, "
			 "extract(epoch FROM s.sync_from)::bigint, s.events_cursor, s.account_id, "
			 "pg_has_role(s.owner, 'USAGE') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
			 "s.destination::text, s.emit_history, s.history_until "
			 "FROM stripe_sync.sources s WHERE s.name = $1",
			 1, types, values, NULL);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	if (!DatumGetBool(SPI_getbinval(tup, td, 7, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to sync source \"%s\"", name),
				 errhint("A source syncs as its owner; run it as that role.")));

	old = MemoryContextSwitchTo(run->cxt);
	run->src.name = pstrdup(name);
	run->src.serverid = GetForeignServerByName(SPI_getvalue(tup, td, 1), false)->serverid;
	run->src.target_schema = pstrdup(SPI_getvalue(tup, td, 2));
	arr = DatumGetArrayTypeP(SPI_getbinval(tup, td, 3, &isnull));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
	run->src.objects = NIL;
	for (int i = 0; i < n; i++)
		run->src.objects = lappend(run->src.objects, TextDatumGetCString(elems[i]));
	d = SPI_getbinval(tup, td, 4, &isnull);
	run->src.has_sync_from = !isnull;
	run->src.sync_from = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, td, 5, &isnull);
	run->src.has_cursor = !isnull;
	run->src.events_cursor = isnull ? 0 : DatumGetInt64(d);
	run->src.account_id = SPI_getvalue(tup, td, 6) ? pstrdup(SPI_getvalue(tup, td, 6)) : NULL;
	run->src.destination = SPI_getvalue(tup, td, 8) ? pstrdup(SPI_getvalue(tup, td, 8)) : NULL;
	run->src.emit_history = DatumGetBool(SPI_getbinval(tup, td, 9, &isnull));
	d = SPI_getbinval(tup, td, 10, &isnull);
	run->src.history_until = isnull ? 0 : DatumGetInt64(d);
	MemoryContextSwitchTo(old);
	return true;
}

static int
attno_of(TupleDesc td, const char *name)
{
	for (int i = 0; i < td->natts; i++)
		if (strcmp(NameStr(TupleDescAttr(td, i)->attname), name) == 0)
			return i;
	elog(ERROR, "local table has no column \"%s\"", name);
	return -1;
}

/* Opens the local table of an object and prepares its upsert. */
static LocalTable *
open_local_table(SyncRun *run, const char *object)
{
	LocalTable *lt;
	Oid			nsp = get_namespace_oid(run->src.target_schema, false);
	Oid			relid = get_relname_relid(object, nsp);
	Relation	rel;
	MemoryContext old;
	StringInfoData sql,
				cols,
				vals,
				sets;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("local table %s.%s of source \"%s\" does not exist",
						run->src.target_schema, object, run->src.name),
				 errhint("alter_source(objects => …) creates the tables it needs.")));
	old = MemoryContextSwitchTo(run->cxt);
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
	lt->att_account = attno_of(lt->tupdesc, "account_id");
	lt->att_synced = attno_of(lt->tupdesc, "synced_at");
	lt->att_observed = attno_of(lt->tupdesc, "observed_at");
	lt->att_deleted = attno_of(lt->tupdesc, "deleted_at");
	lt->argtypes = palloc(sizeof(Oid) * lt->tupdesc->natts);
	lt->typlen = palloc(sizeof(int16) * lt->tupdesc->natts);
	lt->typbyval = palloc(sizeof(bool) * lt->tupdesc->natts);
	lt->typalign = palloc(sizeof(char) * lt->tupdesc->natts);

	initStringInfo(&sql);
	initStringInfo(&cols);
	initStringInfo(&vals);
	initStringInfo(&sets);
	for (int i = 0; i < lt->tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(lt->tupdesc, i);
		const char *c = quote_identifier(NameStr(att->attname));

		if (att->attisdropped)
		{
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
		if (strcmp(NameStr(att->attname), "id") != 0)
			appendStringInfo(&sets, "%s%s = EXCLUDED.%s", sets.len ? ", " : "", c, c);
	}
	/* newer-or-equal observations win, and only when something changed */
	appendStringInfo(&sql,
					 "INSERT INTO %s AS t (%s) SELECT * FROM unnest(%s) ON CONFLICT (id) DO UPDATE SET %s "
					 "WHERE t.observed_at <= EXCLUDED.observed_at AND "
					 "(t.attrs IS DISTINCT FROM EXCLUDED.attrs OR t.deleted_at IS DISTINCT FROM EXCLUDED.deleted_at)",
					 lt->qualified, cols.data, vals.data, sets.data);
	run->tables = lappend(run->tables, lt);
	MemoryContextSwitchTo(old);
	lt->upsert = SPI_prepare(sql.data, lt->tupdesc->natts, lt->argtypes);
	if (lt->upsert == NULL)
		elog(ERROR, "SPI_prepare failed: %s", sql.data);
	SPI_keepplan(lt->upsert);
	return lt;
}

static LocalTable *
table_for_object_type(SyncRun *run, const char *object_type)
{
	ListCell   *lc;

	foreach(lc, run->tables)
	{
		LocalTable *lt = lfirst(lc);

		if (lt->def && strcmp(lt->def->object, object_type) == 0)
			return lt;
	}
	return NULL;
}

/*
 * Writes objects, a whole page in one statement; returns how many rows were
 * inserted or changed.  Values are built in the current memory context.
 */
static int64
upsert_rows(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
			TimestampTz observed, TimestampTz deleted_at)
{
	TupleTableSlot *slot = lt->slot;
	int			natts = lt->tupdesc->natts;
	Datum	  **values = palloc(sizeof(Datum *) * natts);
	bool	  **nulls = palloc(sizeof(bool *) * natts);
	Datum	   *args = palloc(sizeof(Datum) * natts);
	TimestampTz now = GetCurrentTimestamp();
	int			dims[1] = {nrows};
	int			lbs[1] = {1};

	if (nrows == 0)
		return 0;
	for (int a = 0; a < natts; a++)
	{
		values[a] = palloc(sizeof(Datum) * nrows);
		nulls[a] = palloc(sizeof(bool) * nrows);
	}
	for (int r = 0; r < nrows; r++)
	{
		stripe_row_to_slot(lt->rc, &rows[r], slot);
		slot->tts_values[lt->att_account] = run->src.account_id
			? CStringGetTextDatum(run->src.account_id) : (Datum) 0;
		slot->tts_isnull[lt->att_account] = run->src.account_id == NULL;
		slot->tts_values[lt->att_synced] = TimestampTzGetDatum(now);
		slot->tts_isnull[lt->att_synced] = false;
		slot->tts_values[lt->att_observed] = TimestampTzGetDatum(observed);
		slot->tts_isnull[lt->att_observed] = false;
		slot->tts_values[lt->att_deleted] = TimestampTzGetDatum(deleted_at);
		slot->tts_isnull[lt->att_deleted] = deleted_at == 0;
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
	if (SPI_execute_plan(lt->upsert, args, NULL, false, 0) < 0)
		elog(ERROR, "upsert into %s failed", lt->qualified);
	return (int64) SPI_processed;
}

static int64 row_created(LocalTable *lt, StripeRow *row);

/*
 * Outbox rows for Stripe events (ids and types given) or for backfilled
 * objects' history (ids NULL), in the page's transaction: they commit with
 * the rows they describe or not at all.
 */
static void
outbox_add(SyncRun *run, Datum ids, Datum types, Datum *times, Datum *objects, int n)
{
	Oid			argtypes[6] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ids ? ' ' : 'n', types ? ' ' : 'n', ' ', ' ', ' '};

	if (n == 0)
		return;
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = ids;
	values[2] = types;
	values[3] = PointerGetDatum(construct_array(times, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(objects, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = Int64GetDatum(run->src.history_until);
	spi_exec("SELECT stripe_sync.outbox_add($1, $2, $3, $4, $5, $6)", 6, argtypes, values, nulls);
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){false})) > 0)
		stripe_worker_wake_at_commit();	/* the shipper */
}

/* the historical events of a backfilled page's objects */
static void
outbox_history(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows)
{
	Datum	   *times;
	Datum	   *objects;
	int			n = 0;

	/* a re-list (30-day gap, earlier sync_from) sent its history before */
	if (run->src.destination == NULL || !run->src.emit_history || run->src.history_until == 0 ||
		lt->created_slot < 0 || !lt->history)
		return;
	times = palloc(sizeof(Datum) * Max(nrows, 1));
	objects = palloc(sizeof(Datum) * Max(nrows, 1));
	for (int r = 0; r < nrows; r++)
	{
		int64		created = row_created(lt, &rows[r]);

		if (created >= run->src.history_until)
			continue;			/* newer objects have events of their own */
		times[n] = Int64GetDatum(created);
		objects[n] = PointerGetDatum(cstring_to_text_with_len(rows[r].object.start, rows[r].object.len));
		n++;
	}
	outbox_add(run, (Datum) 0, (Datum) 0, times, objects, n);
}

/* ---------- backfill ---------- */

typedef struct PageCheck
{
	StripeFieldSet *fs;
	StripePage *page;
	bool		is_list;
} PageCheck;

static bool
check_page(StripeResponse *resp, void *arg, const char **why)
{
	PageCheck  *pc = arg;

	return stripe_parse_page(resp->body, resp->len, pc->is_list, pc->fs, pc->page, why);
}

/*
 * The backfill of one object splits its created range into windows, each
 * listed newest first with its own starting_after cursor, and keeps up to
 * stripe_sync.max_concurrent_requests of their pages in flight.  Each page's
 * upserts commit together with every window's committed cursor (as JSON in
 * object_state.backfill_cursor), so a restart resumes each window from its
 * last committed page.  When a window ends while a request slot is free, the
 * window with the most time left is split in two, which keeps the concurrency
 * up however unevenly the objects are spread over time.
 */
typedef struct BfWindow
{
	int64		lo;				/* created >= lo; 0: unbounded */
	int64		hi;				/* created < hi; 0: unbounded */
	char		after[256];		/* starting_after; "" for the first page */
	int64		last_created;	/* created of the row "after" names */
	int64		span;			/* seconds of created per page; 0 = unknown */
	int			depth;			/* carvings since a page showed this density */
	bool		in_flight;
	bool		done;
} BfWindow;

/* what a helper worker is given, and tells back (see "a backfill shared with helpers") */
typedef struct HelperShared
{
	/* from the sync: its view of the run, which sync_now commits only at its end */
	Oid			dbid;
	Oid			userid;
	Oid			serverid;
	int64		part;
	int			slots;
	int64		top;
	int64		base;
	bool		has_sync_from;
	int64		sync_from;
	int64		history_until;
	bool		emit_history;
	bool		history;
	char		source[STRIPE_SOURCE_MAXLEN];
	char		object[NAMEDATALEN];
	char		target_schema[NAMEDATALEN];
	char		destination[NAMEDATALEN];	/* "": none */
	char		account_id[NAMEDATALEN];
	volatile bool abandoned;	/* the sync stopped waiting: stop feeding pages */
	/* from the helper */
	pg_atomic_uint64 rows;
	pg_atomic_uint64 pages;
	pg_atomic_uint64 requests;
	volatile bool done;			/* the part is done and committed */
	char		error[256];		/* why it stopped short */
	char		cursor[FLEXIBLE_ARRAY_MEMBER];	/* the part's windows */
} HelperShared;

/* a part dealt to a helper, as the sync knows it */
typedef struct BfPart
{
	int64		id;				/* stripe_sync.backfill_parts.part */
	char	   *first;			/* its first windows, cursor JSON with its id */
	dsm_segment *seg;			/* while a helper of this run works it */
	HelperShared *hs;
	BackgroundWorkerHandle *handle;
} BfPart;

typedef struct Backfill
{
	SyncRun    *run;
	LocalTable *lt;
	const char *object;
	int64		part;			/* 0: the sync's own windows; else a dealt part's id */
	int			slots;			/* requests in flight at most (outside a set: see bf_feed) */
	int			in_flight;
	/* the sync's own (part 0) only */
	List	   *parts;			/* BfPart: dealt and not known to be done */
	int			dealt;			/* parts dealt in this run */
	bool		dealing;		/* it may deal windows to helpers */
	/* in a helper: where its progress goes */
	HelperShared *mine;
	struct BfSet *set;			/* the sync's objects streamed together, or NULL */
	MemoryContext cxt;			/* the windows; outlives the page commits */
	BfWindow   *w;
	int			nwin;
	int			cap;
	int64		base;			/* oldest created we expect, for splitting */
	int64		top;			/* the backfill's start, for splitting */
	bool		ranged;			/* the list takes created[gte] and created[lt] */
	int64		pages;
	TimestampTz t0;
	TimestampTz t_last;			/* when its last page was written */
	MemoryContext spi_cxt;		/* where the last page_boundary left us */
} Backfill;

/*
 * The sync's objects backfilled in one stream: the first object with a page
 * to ask for gets the next free slot, so the next object's windows fill the
 * slots the one before leaves free instead of waiting for its last round
 * trip.  Each page still commits on its own with its object's cursor.
 */
#define BFSET_MAX	64			/* objects in one stream; tags carry the index */

typedef struct BfSet
{
	SyncRun    *run;
	Backfill  **bf;
	int			n;
	bool		last;			/* the events' first page rides the tail */
	int			in_flight;
	int			running;		/* helpers at work, as of the last feed */
	MemoryContext cxt;			/* the stream's, and the events page's */
	int64		busy;			/* microseconds spent on pages since t0 */
	TimestampTz t0;
	MemoryContext spi_cxt;		/* where the last page's commit left us */
} BfSet;

/* tag of the events request a backfill's tail carries */
#define EVENTS_TAG	(-1)

/* smallest window worth splitting, in seconds of created */
#define MIN_SPLIT_SECS	2

static BfWindow *
bf_add_window(Backfill *bf, int64 lo, int64 hi)
{
	BfWindow   *w;

	if (bf->nwin == bf->cap)
	{
		bf->cap = Max(bf->cap * 2, 16);
		bf->w = bf->w ? repalloc(bf->w, sizeof(BfWindow) * bf->cap)
			: MemoryContextAlloc(bf->cxt, sizeof(BfWindow) * bf->cap);
	}
	w = &bf->w[bf->nwin++];
	memset(w, 0, sizeof(BfWindow));
	w->lo = lo;
	w->hi = hi;
	return w;
}

/* every unfinished window, as stored in object_state.backfill_cursor */
static char *
bf_cursor_json(Backfill *bf)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"windows\": [", bf->part);
	for (int i = 0; i < bf->nwin; i++)
	{
		BfWindow   *w = &bf->w[i];

		if (w->done)
			continue;
		appendStringInfo(&buf, "%s{\"gte\": " INT64_FORMAT ", \"lt\": " INT64_FORMAT ", \"after\": ",
						 first ? "" : ", ", w->lo, w->hi);
		if (w->after[0])
		{
			escape_json(&buf, w->after);
			appendStringInfo(&buf, ", \"last\": " INT64_FORMAT "}", w->last_created);
		}
		else
			appendStringInfoString(&buf, "null}");
		first = false;
	}
	appendStringInfoChar(&buf, ']');
	if (bf->parts != NIL)
	{
		ListCell   *lc;

		/* where the dealt parts start, should their rows not say more */
		appendStringInfoString(&buf, ", \"parts\": [");
		foreach(lc, bf->parts)
			appendStringInfo(&buf, "%s%s", foreach_current_index(lc) ? ", " : "",
							 ((BfPart *) lfirst(lc))->first);
		appendStringInfoChar(&buf, ']');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* int64 member of a jsonb object, or dflt */
static int64
jsonb_int_member(JsonbContainer *c, const char *key, int64 dflt)
{
	JsonbValue *v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);

	if (v == NULL || v->type != jbvNumeric)
		return dflt;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

/* Windows from a stored cursor; false if it is not ours (a bare id from 0.1). */
static bool
bf_load_cursor(Backfill *bf, const char *cursor)
{
	Jsonb	   *jb;
	JsonbValue *arr;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (cursor[0] != '{')
		return false;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(cursor)));
	arr = getKeyJsonValueFromContainer(&jb->root, "windows", 7, NULL);
	if (arr == NULL || arr->type != jbvBinary)
		return false;
	if (bf->part == 0)
	{
		JsonbValue *parts = getKeyJsonValueFromContainer(&jb->root, "parts", 5, NULL);

		if (parts != NULL && parts->type == jbvBinary)
		{
			it = JsonbIteratorInit(parts->val.binary.data);
			while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
				if (tok == WJB_ELEM && v.type == jbvBinary)
				{
					BfPart	   *p = palloc0(sizeof(BfPart));

					p->id = jsonb_int_member(v.val.binary.data, "id", 0);
					p->first = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
					bf->parts = lappend(bf->parts, p);
				}
		}
	}
	it = JsonbIteratorInit(arr->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		BfWindow   *w;
		JsonbValue *after;

		if (tok != WJB_ELEM || v.type != jbvBinary)
			continue;
		w = bf_add_window(bf, jsonb_int_member(v.val.binary.data, "gte", 0),
						  jsonb_int_member(v.val.binary.data, "lt", 0));
		after = getKeyJsonValueFromContainer(v.val.binary.data, "after", 5, NULL);
		if (after != NULL && after->type == jbvString)
		{
			/* a jsonb string is not NUL-terminated */
			int			len = Min(after->val.string.len, (int) sizeof(w->after) - 1);

			memcpy(w->after, after->val.string.val, len);
			w->after[len] = '\0';
			w->last_created = jsonb_int_member(v.val.binary.data, "last", bf->top);
		}
	}
	return true;
}

/*
 * Pages in a carved-off chunk: small, because the last chunks set the tail
 * of the backfill, when fewer windows than slots are left.
 */
#define CHUNK_PAGES		2

/*
 * Carves a chunk off a window so that a free request slot has work.  The
 * window keeps its cursor and about CHUNK_PAGES pages of created time below
 * it (at the density its last page showed; half of what is left when that is
 * less, so that the last windows share out too); a new window takes the rest
 * of the range below.  That new window inherits the density, so it can be carved
 * in turn at once and the concurrency ramps up within one round trip.  Time
 * alone would not do: objects are often bunched in a small part of the
 * account's life, and halving empty years costs a request per half.  depth
 * bounds how far an unmeasured chain can run past the data (to the number of
 * slots), since the chunks past its end come back empty.
 *
 * A page of the carved window already in flight may bring rows of the range
 * given away; bf_done drops them.  Returns the new window, or NULL if nothing
 * is worth carving.
 */
/* the created range a window has left: [window_lo, window_top) */
static int64
window_top(Backfill *bf, BfWindow *w)
{
	return w->after[0] ? w->last_created : (w->hi ? w->hi : bf->top);
}

static int64
window_lo(Backfill *bf, BfWindow *w)
{
	return w->lo ? w->lo : bf->base;
}

/* the pages a window has left, in quarters, at the density its last page showed */
static int64
window_quarters(Backfill *bf, BfWindow *w)
{
	if (w->done || w->span <= 0)
		return 0;
	return Max(window_top(bf, w) - window_lo(bf, w), 0) * 4 / w->span;
}

static BfWindow *
bf_split(Backfill *bf)
{
	int			best = -1;
	int64		best_pages = 4;		/* in quarters: 1.25 pages or more */
	int64		mid;
	int64		old_lo;
	int			maxdepth = Max(bf->slots, 1);
	BfWindow   *w;
	BfWindow   *nw;

	for (int i = 0; i < bf->nwin; i++)
	{
		BfWindow   *c = &bf->w[i];
		int64		pages;

		if (c->depth >= maxdepth || !bf->ranged)
			continue;
		/* in quarters: a window of 1.5 pages is two round trips, worth sharing */
		pages = window_quarters(bf, c);
		if (pages > best_pages)
		{
			best = i;
			best_pages = pages;
		}
	}
	if (best < 0)
		return NULL;
	w = &bf->w[best];
	mid = window_top(bf, w) - Min(CHUNK_PAGES, Max(best_pages / 8, 1)) * w->span;
	old_lo = w->lo;
	w->lo = mid;
	/* bf_add_window may move the array */
	nw = bf_add_window(bf, old_lo, mid);
	w = &bf->w[best];
	nw->span = w->span;
	nw->depth = w->depth + 1;
	return nw;
}

static char *
events_path(SyncRun *run, const char *after)
{
	return psprintf("/v1/events?limit=%d&created%%5Bgte%%5D=" INT64_FORMAT "%s%s",
					STRIPE_PAGE_SIZE, run->src.events_cursor - EVENT_OVERLAP_SECS,
					after[0] ? "&starting_after=" : "", after);
}

/*
 * The first free slot the run's last backfills have no page for asks for the
 * first page of events, which sync_events would otherwise ask for alone, one
 * round trip after the backfill.  Asking early loses nothing: the cursor only
 * moves up to the events applied, so what happens after this request is read
 * by the next sync, and observed_at orders these events and the pages.
 */
static bool
feed_events(SyncRun *run, MemoryContext parent, StripeManyReq *req)
{
	PageCheck  *pc;
	StripeFieldSet *fs;
	MemoryContext old;

	if (run->events_early)
		return false;
	req->cxt = AllocSetContextCreate(parent, "stripe_sync events page", ALLOCSET_DEFAULT_SIZES);
	req->tag = EVENTS_TAG;
	old = MemoryContextSwitchTo(req->cxt);
	fs = stripe_fieldset_create(1);
	stripe_fieldset_add(fs, "id", 0);
	stripe_fieldset_finish(fs);
	pc = palloc0(sizeof(PageCheck));
	pc->fs = fs;
	pc->page = palloc0(sizeof(StripePage));
	pc->is_list = true;
	req->path = events_path(run, "");
	req->check = check_page;
	req->check_arg = pc;
	MemoryContextSwitchTo(old);
	run->events_early = true;
	return true;
}

/* the events' first page came: kept for sync_events, which parses the body in place */
static void
events_done(SyncRun *run, StripeManyReq *req)
{
	run->events_page = MemoryContextAlloc(run->cxt, req->resp.len + 1);
	memcpy(run->events_page, req->resp.body, req->resp.len + 1);
	run->events_len = req->resp.len;
	MemoryContextDelete(req->cxt);
}

static void bf_deal(Backfill *bf);

static bool
bf_feed(void *arg, StripeManyReq *req)
{
	Backfill   *bf = arg;
	BfWindow   *w = NULL;
	StringInfoData path;
	PageCheck  *pc;
	MemoryContext old;

	/* a helper whose sync stopped waiting for it ends with the pages in flight */
	if (bf->mine != NULL && bf->mine->abandoned)
		return false;
	if (bf->dealing)
		bf_deal(bf);
	/* a set shares its requests in flight out itself */
	if (bf->set == NULL && bf->in_flight >= bf->slots)
		return false;
	for (int i = 0; i < bf->nwin && w == NULL; i++)
		if (!bf->w[i].done && !bf->w[i].in_flight)
			w = &bf->w[i];
	if (w == NULL)
		w = bf_split(bf);
	if (w == NULL)
		return false;

	req->cxt = AllocSetContextCreate(bf->cxt, "stripe_sync backfill page", ALLOCSET_DEFAULT_SIZES);
	req->tag = w - bf->w;
	old = MemoryContextSwitchTo(req->cxt);
	initStringInfo(&path);
	appendStringInfo(&path, "/v1/%s?limit=%d", bf->lt->def->path, STRIPE_PAGE_SIZE);
	if (w->lo)
		appendStringInfo(&path, "&created%%5Bgte%%5D=" INT64_FORMAT, w->lo);
	if (w->hi)
		appendStringInfo(&path, "&created%%5Blt%%5D=" INT64_FORMAT, w->hi);
	if (strcmp(bf->lt->def->path, "subscriptions") == 0)
		appendStringInfoString(&path, "&status=all");
	if (w->after[0])
		appendStringInfo(&path, "&starting_after=%s", stripe_urlencode(w->after));
	pc = palloc0(sizeof(PageCheck));
	pc->fs = bf->lt->rc->fs;
	pc->page = palloc0(sizeof(StripePage));
	pc->is_list = true;
	req->path = path.data;
	req->check = check_page;
	req->check_arg = pc;
	MemoryContextSwitchTo(old);
	w->in_flight = true;
	bf->in_flight++;
	return true;
}

static int64
row_created(LocalTable *lt, StripeRow *row)
{
	if (lt->created_slot < 0 || stripe_span_is_null(&row->fields[lt->created_slot]))
		return 0;
	return pg_strtoint64(stripe_span_text(&row->fields[lt->created_slot]));
}

static void part_update(Backfill *bf, int64 changed, bool done);
static void bf_progress(Backfill *bf, bool done);

/* One page arrived: its rows and every window's cursor commit together. */
static void
bf_done(void *arg, StripeManyReq *req)
{
	Backfill   *bf = arg;
	SyncRun    *run = bf->run;
	LocalTable *lt = bf->lt;
	BfWindow   *w;
	StripePage *page = ((PageCheck *) req->check_arg)->page;
	MemoryContext caller = CurrentMemoryContext;
	int			nkeep = page->nrows;
	int64		changed;
	bool		all_done = true;

	bf->in_flight--;
	w = &bf->w[req->tag];
	w->in_flight = false;
	/* rows older than the window's (possibly split-off) range are another's */
	if (w->lo && lt->created_slot >= 0)
		while (nkeep > 0 && row_created(lt, &page->rows[nkeep - 1]) < w->lo)
			nkeep--;

	MemoryContextSwitchTo(req->cxt);

	/*
	 * The state Stripe gave is at least as new as the moment we asked.
	 * Events carry whole seconds: one in the second of this fetch, or the
	 * second before, may be newer than the page, so the page counts as seen
	 * just before them.  Applying such an event is right even when it is
	 * older: any later change has an event of its own, applied after.
	 */
	changed = upsert_rows(run, lt, page->rows, nkeep,
						  time_t_to_timestamptz(timestamptz_to_time_t(req->sent) - 1), 0);
	outbox_history(run, lt, page->rows, nkeep);
	if (nkeep > 0)
	{
		StripeRow  *last = &page->rows[nkeep - 1];

		strlcpy(w->after, stripe_span_text(&last->fields[lt->rc->id_slot]), sizeof(w->after));
		w->last_created = row_created(lt, last);
		/* a full page measures how much created time a page covers here */
		if (nkeep == page->nrows && page->has_more && lt->created_slot >= 0)
		{
			w->span = Max((row_created(lt, &page->rows[0]) - w->last_created) *
						  STRIPE_PAGE_SIZE / nkeep, 1);
			w->depth = 0;
		}
	}
	if (!page->has_more || nkeep < page->nrows)
		w->done = true;
	for (int i = 0; i < bf->nwin; i++)
		if (!bf->w[i].done)
			all_done = false;

	bf->pages++;
	lt->rows += changed;
	lt->pages++;
	if (bf->part != 0)
		part_update(bf, changed, all_done);
	else
		/* done only when every dealt part is too: backfill_object says so */
		state_update(run, bf->object,
					 psprintf("rows = rows + " INT64_FORMAT ", requests = requests + 1, "
							  "backfill_cursor = $3", changed),
					 bf_cursor_json(bf));
	if (bf->mine != NULL)
	{
		pg_atomic_add_fetch_u64(&bf->mine->rows, changed);
		pg_atomic_add_fetch_u64(&bf->mine->pages, 1);
		pg_atomic_write_u64(&bf->mine->requests, run->stats.requests);
	}
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(req->cxt);
	page_boundary(run);
	/* a worker's commit leaves us in the new SPI connection's context */
	if (CurrentMemoryContext != caller)
		bf->spi_cxt = CurrentMemoryContext;
	MemoryContextSwitchTo(caller);

	if (bf->mine == NULL && bf->pages % 20 == 0)
		bf_progress(bf, false);
	bf->t_last = GetCurrentTimestamp();
}

/* ---------- a backfill shared with helper workers ---------- */

/*
 * Parsing and writing pages takes a core, so the sync deals part of its
 * backfill out to helper background workers (stripe_sync.backfill_helpers),
 * each of which runs this same loop over its own windows in its own
 * transactions.  When the sync spends half its time or more on its pages
 * (at zero latency; waiting on the network, another core gains nothing),
 * once the first pages have shown how dense each window is and whenever a
 * helper is idle, it gives a new part the older quarter of every window with
 * two pages or more left, which it carves off its own: a quarter of what is
 * left each time, so that the sync and its helper end together.
 * Windows are disjoint ranges of created, so two processes never write the
 * same row.
 *
 * A part has a new id, never used before (the run's id and a count), and its
 * progress is a row of stripe_sync.backfill_parts.  The sync's cursor lists
 * the parts not known to be done with their first windows: it is committed
 * with the carving, so a crash either keeps the carved windows in the sync's
 * own list or has the part listed; a part row no cursor lists is left over
 * (its rows are still counted in status, as rows written).  The sync waits for its helpers, finishes every listed part
 * not done itself (its helper could not start, failed or died), and only
 * then marks the backfill done.  The requests in flight are shared out
 * between the sync and its helpers, not multiplied.  A helper never waits
 * long on the sync's locks (lock_timeout: it fails and the sync finishes its
 * part), and it stops at its next page when the sync stops waiting for it.
 */

/* fewer pages than this left: not worth a helper */
#define DEAL_MIN_PAGES	16
/* a part takes this fraction of each window: 1/4, then 1/4 of what is left... */
#define DEAL_SHARE		4
/* how long the sync watches its own pace before it deals */
#define DEAL_AFTER_USECS	100000

static void
bf_init(Backfill *bf, SyncRun *run, LocalTable *lt, const char *object, int64 part,
		MemoryContext parent)
{
	const StripeColumn *col = lt->def ? stripe_object_column(lt->def, "created") : NULL;

	memset(bf, 0, sizeof(Backfill));
	bf->run = run;
	bf->lt = lt;
	bf->object = object;
	bf->part = part;
	bf->slots = Max(stripe_max_concurrent_requests, 1);
	bf->cxt = AllocSetContextCreate(parent, "stripe_sync backfill", ALLOCSET_DEFAULT_SIZES);
	bf->t0 = GetCurrentTimestamp();
	/* nothing created after the events cursor is missed: the events bring it */
	bf->top = run->src.events_cursor;
	bf->base = run->src.has_sync_from ? run->src.sync_from : run->account_created;
	bf->ranged = col != NULL && (col->flags & STRIPE_FILTER_RANGE) != 0;
}

/* Runs the windows to their end; call it in the SPI connection's context. */
static void
bf_stream(Backfill *bf)
{
	MemoryContext old = MemoryContextSwitchTo(bf->cxt);

	bf->spi_cxt = NULL;
	stripe_request_stream(bf->run->conn, bf_feed, bf_done, bf, &bf->run->stats);
	/* a worker's page commits replaced the SPI connection we were called in */
	MemoryContextSwitchTo(bf->spi_cxt ? bf->spi_cxt : old);
}

/* progress of the object's backfill here and in the helpers */
static void
bf_progress(Backfill *bf, bool done)
{
	int64		rows = bf->lt->rows;
	int64		pages = bf->lt->pages;
	/* done, and all its own: its rate up to its last page, not to the set's end */
	TimestampTz end = done && bf->dealt == 0 && bf->t_last > 0 ? bf->t_last : GetCurrentTimestamp();
	double		secs = (double) (end - bf->t0) / USECS_PER_SEC;
	ListCell   *lc;

	foreach(lc, bf->parts)
	{
		BfPart	   *p = lfirst(lc);

		if (p->hs != NULL)
		{
			rows += pg_atomic_read_u64(&p->hs->rows);
			pages += pg_atomic_read_u64(&p->hs->pages);
		}
	}
	ereport(bf->run->own ? DEBUG1 : NOTICE,
			(errmsg("%s: backfill of %s: " INT64_FORMAT " rows in " INT64_FORMAT " pages, %.0f rows/s%s",
					bf->run->src.name, bf->object, rows, pages,
					secs > 0 ? rows / secs : 0.0, done ? " (done)" : "")));
}

/* a dealt part's progress row (done: no cursor) */
static void
part_update(Backfill *bf, int64 changed, bool done)
{
	Oid			types[5] = {TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', done ? 'n' : ' ', ' '};

	values[0] = CStringGetTextDatum(bf->run->src.name);
	values[1] = CStringGetTextDatum(bf->object);
	values[2] = Int64GetDatum(bf->part);
	values[3] = done ? (Datum) 0 : CStringGetTextDatum(bf_cursor_json(bf));
	values[4] = Int64GetDatum(changed);
	spi_exec("INSERT INTO stripe_sync.backfill_parts AS p (source, object, part, cursor, rows, requests) "
			 "VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (source, object, part) DO UPDATE SET "
			 "cursor = EXCLUDED.cursor, rows = p.rows + EXCLUDED.rows, requests = p.requests + 1",
			 5, types, values, nulls);
}

/* Where a dealt part goes on: its committed progress, else its first windows; NULL when done. */
static char *
part_cursor(Backfill *bf, BfPart *p)
{
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	Datum		values[3];
	char	   *cursor;

	values[0] = CStringGetTextDatum(bf->run->src.name);
	values[1] = CStringGetTextDatum(bf->object);
	values[2] = Int64GetDatum(p->id);
	spi_exec("SELECT cursor FROM stripe_sync.backfill_parts WHERE source = $1 AND object = $2 AND part = $3",
			 3, types, values, NULL);
	if (SPI_processed == 0)
		return p->first;
	cursor = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return cursor ? MemoryContextStrdup(bf->cxt, cursor) : NULL;
}

/* one process at a time works a part: a helper of a sync that died may linger a page */
static void
part_lock(Backfill *bf, bool lock)
{
	const char *s = bf->run->src.name;
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
						 DatumGetUInt32(hash_any((const unsigned char *) s, strlen(s))),
						 DatumGetUInt32(hash_any((const unsigned char *) bf->object, strlen(bf->object)) ^
										hash_bytes_uint32((uint32) bf->part ^ (uint32) (bf->part >> 32))),
						 3);
	if (lock)
		(void) LockAcquire(&tag, ExclusiveLock, true, false);
	else
		LockRelease(&tag, ExclusiveLock, true);
}

/* the sync gone (ERROR, or its process exiting): its helpers stop */
static void
helper_abandon(dsm_segment *seg, Datum arg)
{
	((HelperShared *) DatumGetPointer(arg))->abandoned = true;
}

/* Starts a helper on part p from cursor; false if none could be registered. */
static bool
helper_start(Backfill *bf, BfPart *p, const char *cursor, int slots)
{
	SyncRun    *run = bf->run;
	BackgroundWorker worker;
	HelperShared *hs;
	MemoryContext old;

	if (strlen(run->src.name) >= sizeof(hs->source) ||
		(run->src.account_id && strlen(run->src.account_id) >= sizeof(hs->account_id)))
		return false;
	p->seg = dsm_create(offsetof(HelperShared, cursor) + strlen(cursor) + 1,
						DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (p->seg == NULL)
		return false;
	/* it outlives the page commits */
	dsm_pin_mapping(p->seg);
	hs = dsm_segment_address(p->seg);
	memset(hs, 0, offsetof(HelperShared, cursor));
	hs->dbid = MyDatabaseId;
	hs->userid = GetUserId();
	hs->serverid = run->src.serverid;
	hs->part = p->id;
	hs->slots = slots;
	hs->top = bf->top;
	hs->base = bf->base;
	hs->has_sync_from = run->src.has_sync_from;
	hs->sync_from = run->src.sync_from;
	hs->history_until = run->src.history_until;
	hs->emit_history = run->src.emit_history;
	hs->history = bf->lt->history;
	strlcpy(hs->source, run->src.name, sizeof(hs->source));
	strlcpy(hs->object, bf->object, sizeof(hs->object));
	strlcpy(hs->target_schema, run->src.target_schema, sizeof(hs->target_schema));
	strlcpy(hs->destination, run->src.destination ? run->src.destination : "", sizeof(hs->destination));
	strlcpy(hs->account_id, run->src.account_id ? run->src.account_id : "", sizeof(hs->account_id));
	pg_atomic_init_u64(&hs->rows, 0);
	pg_atomic_init_u64(&hs->pages, 0);
	pg_atomic_init_u64(&hs->requests, 0);
	strcpy(hs->cursor, cursor);
	on_dsm_detach(p->seg, helper_abandon, PointerGetDatum(hs));

	stripe_worker_prepare(&worker, "stripe_backfill_helper_main", "stripe_sync backfill helper");
	snprintf(worker.bgw_name, BGW_MAXLEN, "stripe_sync backfill helper for source %s", run->src.name);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(p->seg));
	/* the postmaster sets our latch when it stops */
	worker.bgw_notify_pid = MyProcPid;
	old = MemoryContextSwitchTo(bf->cxt);
	if (!RegisterDynamicBackgroundWorker(&worker, &p->handle))
	{
		/* no free slot of max_worker_processes */
		MemoryContextSwitchTo(old);
		p->handle = NULL;
		dsm_detach(p->seg);
		p->seg = NULL;
		return false;
	}
	MemoryContextSwitchTo(old);
	p->hs = hs;
	return true;
}

/* its process, not only its part: the next helper needs the slot it holds */
static bool
helper_running(BfPart *p)
{
	pid_t		pid;

	return p->hs != NULL && GetBackgroundWorkerPid(p->handle, &pid) != BGWH_STOPPED;
}

/*
 * A helper stopped: what it did goes to the run's figures.  With stop, one
 * still running is told to end instead.  Returns whether its part is done.
 */
static bool
helper_release(Backfill *bf, BfPart *p, bool stop)
{
	HelperShared *hs = p->hs;
	bool		done;

	if (hs == NULL)
		return false;
	if (stop)
	{
		hs->abandoned = true;
		TerminateBackgroundWorker(p->handle);
	}
	else
	{
		bf->lt->rows += pg_atomic_read_u64(&hs->rows);
		bf->lt->pages += pg_atomic_read_u64(&hs->pages);
		bf->run->stats.requests += pg_atomic_read_u64(&hs->requests);
		if (!hs->done)
			ereport(bf->run->own ? LOG : NOTICE,
					(errmsg("stripe_sync: a backfill helper of source \"%s\" stopped short on %s: %s",
							bf->run->src.name, bf->object, hs->error[0] ? hs->error : "it exited"),
					 errdetail("The sync finishes its part.")));
	}
	done = hs->done;
	p->hs = NULL;
	dsm_detach(p->seg);
	p->seg = NULL;
	return done;
}

/* helpers at work for any of the set's objects */
static int
set_running(BfSet *set)
{
	int			n = 0;

	for (int i = 0; i < set->n; i++)
	{
		ListCell   *lc;

		foreach(lc, set->bf[i]->parts)
			if (helper_running(lfirst(lc)))
				n++;
	}
	return n;
}

/*
 * The sync's own feed calls this: its helpers that stopped are accounted
 * for, and while fewer than stripe_sync.backfill_helpers run (for all the
 * set's objects) and enough is left, a new part gets the older quarter of
 * each window that has two pages or more.
 */
static void
bf_deal(Backfill *bf)
{
	BfSet	   *set = bf->set;
	int64		quarters = 0;
	Backfill	t;
	BfPart	   *p;
	int64	   *cut;
	int64		elapsed;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(bf->cxt);

	foreach(lc, bf->parts)
	{
		BfPart	   *q = lfirst(lc);

		if (q->hs != NULL && !helper_running(q))
		{
			if (helper_release(bf, q, false))
				bf->parts = foreach_delete_current(bf->parts, lc);
			else
				bf->dealing = false;	/* one failed: the next would too, likely */
		}
	}
	for (int i = 0; i < bf->nwin; i++)
		quarters += window_quarters(bf, &bf->w[i]);
	elapsed = GetCurrentTimestamp() - set->t0;
	/* a helper adds a core: it helps a sync busy with its pages, not one waiting on the network */
	if (!bf->dealing || set->running >= stripe_backfill_helpers || elapsed < DEAL_AFTER_USECS ||
		set->busy * 2 < elapsed || quarters < DEAL_MIN_PAGES * 4 || bf->dealt >= 999)
	{
		MemoryContextSwitchTo(old);
		return;
	}

	memset(&t, 0, sizeof(t));
	t.cxt = bf->cxt;
	/* new in this run, so no row left over from an earlier one has its id */
	t.part = bf->run->src.run_id * 1000 + bf->dealt + 1;
	cut = palloc(sizeof(int64) * bf->nwin);
	for (int i = 0; i < bf->nwin; i++)
	{
		BfWindow   *w = &bf->w[i];
		int64		lo = window_lo(bf, w);
		BfWindow   *nw;

		cut[i] = 0;
		if (window_quarters(bf, w) < 8)
			continue;
		cut[i] = lo + (window_top(bf, w) - lo) / DEAL_SHARE;
		nw = bf_add_window(&t, w->lo, cut[i]);
		nw->span = w->span;
		nw->depth = w->depth + 1;
	}
	p = palloc0(sizeof(BfPart));
	p->id = t.part;
	p->first = bf_cursor_json(&t);
	if (t.nwin == 0 ||
		!helper_start(bf, p, p->first,
					  Max(stripe_max_concurrent_requests / (set->running + 2), 1)))
	{
		/* no helper to be had: the sync keeps its windows, and stops dealing */
		bf->dealing = t.nwin == 0;
		MemoryContextSwitchTo(old);
		return;
	}
	/* a page of ours in flight may bring rows below a cut: bf_done drops them */
	for (int i = 0; i < bf->nwin; i++)
		if (cut[i] != 0)
			bf->w[i].lo = cut[i];
	bf->parts = lappend(bf->parts, p);
	bf->dealt++;
	set->running++;
	MemoryContextSwitchTo(old);
}

/* Waits for the helpers to stop, with progress every second. */
static void
helpers_wait(Backfill *bf)
{
	for (;;)
	{
		bool		running = false;
		ListCell   *lc;

		foreach(lc, bf->parts)
			if (helper_running(lfirst(lc)))
				running = true;
		if (!running)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		bf_progress(bf, false);
	}
}

/*
 * The windows a backfill starts from: its stored cursor's, or a first round
 * of n equal spans of created.  Call it in bf->cxt.
 */
static void
bf_first_windows(Backfill *bf, char *cursor, int n)
{
	SyncRun    *run = bf->run;

	if (cursor == NULL || !bf_load_cursor(bf, cursor))
	{
		int64		lo = bf->base;

		if (bf->ranged && !run->src.has_sync_from && run->account_created == 0 && cursor == NULL)
		{
			/* the account's creation bounds its objects: one cheap request */
			(void) stripe_fetch_account_id(run->conn, &run->stats, &run->account_created);
			lo = bf->base = run->account_created;
		}
		/* a list without created filters is one window, as is an odd range */
		if (!bf->ranged || lo <= 0 || lo >= bf->top || cursor != NULL)
			n = 1;
		/*
		 * Equal spans of time.  The oldest window stays open below (unless
		 * sync_from bounds it) and the newest open above, so an object
		 * outside the expected range is still listed.  Newest first: most
		 * accounts have most of their objects late in their life, and the
		 * windows that find some are the ones whose pages get split.
		 */
		for (int i = n - 1; i >= 0; i--)
		{
			BfWindow   *w = bf_add_window(bf,
										  i == 0 ? (run->src.has_sync_from ? run->src.sync_from : 0)
										  : lo + (bf->top - lo) * i / n,
										  i == n - 1 ? 0 : lo + (bf->top - lo) * (i + 1) / n);

			/* a bare id: the cursor of the one window of an older version */
			if (cursor != NULL)
			{
				strlcpy(w->after, cursor, sizeof(w->after));
				w->last_created = bf->top;
			}
		}
	}
	if (bf->base <= 0)
		bf->base = bf->top;		/* unknown: split only what pages reveal */
}

/*
 * An object's backfill joins the set: its windows, and helpers for parts a
 * crash left.  The set's first object starts with a window per request slot.
 * The others start with one: most are small, and an empty window costs a
 * request; a big one is carved up as soon as its first page has shown its
 * density (bf_split), while the objects before it keep the slots busy.
 */
static Backfill *
bf_begin(BfSet *set, LocalTable *lt, const char *object, char *cursor)
{
	SyncRun    *run = set->run;
	Backfill   *bf = MemoryContextAllocZero(run->cxt, sizeof(Backfill));
	MemoryContext spi = CurrentMemoryContext;
	ListCell   *lc;

	bf_init(bf, run, lt, object, 0, run->cxt);
	bf->set = set;
	state_update(run, object, "state = 'backfilling', last_error = NULL", NULL);
	MemoryContextSwitchTo(bf->cxt);
	bf_first_windows(bf, cursor, set->n == 0 ? Max(stripe_max_concurrent_requests, 1) : 1);
	MemoryContextSwitchTo(spi);
	/* a table this transaction created or truncated would keep helpers waiting */
	bf->dealing = bf->ranged && stripe_backfill_helpers > 0 && stripe_max_concurrent_requests > 1 &&
		!lt->locked_here;
	foreach(lc, bf->parts)
	{
		BfPart	   *p = lfirst(lc);
		char	   *pc = part_cursor(bf, p);

		if (pc == NULL)
			bf->parts = foreach_delete_current(bf->parts, lc);
		else if (bf->dealing && set->running < stripe_backfill_helpers &&
				 helper_start(bf, p, pc, Max(stripe_max_concurrent_requests / (set->running + 2), 1)))
			set->running++;
	}
	return bf;
}

/*
 * Works a dealt part from cursor to its end, in pb's own transactions, as a
 * helper or as the sync finishing a helper's part: one process at a time.
 */
static void
part_work(Backfill *pb, const char *cursor)
{
	MemoryContext spi = MemoryContextSwitchTo(pb->cxt);

	bf_load_cursor(pb, cursor);
	MemoryContextSwitchTo(spi);
	part_lock(pb, true);
	PG_TRY();
	{
		bf_stream(pb);
		/* nothing was left to fetch: say so (a helper told to stop says nothing) */
		if (pb->pages == 0 && (pb->mine == NULL || !pb->mine->abandoned))
			part_update(pb, 0, true);
	}
	PG_FINALLY();
	{
		part_lock(pb, false);
	}
	PG_END_TRY();
}

/* Once the stream has ended: the object's helpers, the parts none finished, and done. */
static void
bf_finish(Backfill *bf)
{
	SyncRun    *run = bf->run;
	const char *object = bf->object;
	ListCell   *lc;

	helpers_wait(bf);
	/* the parts no helper finished */
	foreach(lc, bf->parts)
	{
		BfPart	   *p = lfirst(lc);
		char	   *pc;
		Backfill	pb;

		(void) helper_release(bf, p, false);
		if ((pc = part_cursor(bf, p)) == NULL)
			continue;
		bf_init(&pb, run, bf->lt, object, p->id, bf->cxt);
		pb.top = bf->top;
		pb.base = bf->base;
		part_work(&pb, pc);
	}

	/* every part done: the backfill is; the parts' figures join the object's */
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object)};

		/* a part of a run that failed wrote its rows too (a rewrite of one counts nothing) */
		spi_exec("UPDATE stripe_sync.object_state o SET rows = o.rows + p.rows, "
				 "requests = o.requests + p.requests, backfill_done = true, backfill_cursor = NULL, "
				 "state = 'synced' FROM (SELECT coalesce(sum(rows), 0) AS rows, "
				 "coalesce(sum(requests), 0) AS requests FROM stripe_sync.backfill_parts "
				 "WHERE source = $1 AND object = $2) p "
				 "WHERE o.source = $1 AND o.object = $2", 2, types, values, NULL);
		spi_exec("DELETE FROM stripe_sync.backfill_parts WHERE source = $1 AND object = $2",
				 2, types, values, NULL);
	}
	page_boundary(run);
	bf_progress(bf, true);
	MemoryContextDelete(bf->cxt);
}

static bool
set_feed(void *arg, StripeManyReq *req)
{
	BfSet	   *set = arg;

	set->running = set_running(set);
	/* the requests in flight are shared out with the helpers, not multiplied */
	if (set->in_flight >= Max(stripe_max_concurrent_requests / (1 + set->running), 1))
		return false;
	/*
	 * An object that has not asked for anything yet goes first: its first
	 * page tells whether it has more (most do not) and how dense it is.
	 * Then the objects in order.
	 */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < set->n; i++)
		{
			Backfill   *bf = set->bf[i];
			bool		fresh = bf->pages == 0 && bf->in_flight == 0;

			if (fresh != (pass == 0))
				continue;
			if (bf_feed(bf, req))
			{
				req->tag = req->tag * BFSET_MAX + i;
				set->in_flight++;
				return true;
			}
		}
	if (!set->last || !feed_events(set->run, set->cxt, req))
		return false;
	set->in_flight++;
	return true;
}

static void
set_done(void *arg, StripeManyReq *req)
{
	BfSet	   *set = arg;
	TimestampTz began = GetCurrentTimestamp();
	Backfill   *bf;

	set->in_flight--;
	if (req->tag == EVENTS_TAG)
	{
		events_done(set->run, req);
		return;
	}
	bf = set->bf[req->tag % BFSET_MAX];
	req->tag /= BFSET_MAX;
	bf->spi_cxt = NULL;
	bf_done(bf, req);
	if (bf->spi_cxt != NULL)
		set->spi_cxt = bf->spi_cxt;
	set->busy += GetCurrentTimestamp() - began;
}

/*
 * Backfills the objects of pending (lists of object, local table, cursor),
 * all in one stream; last: the run's last backfill, which sync_events follows.
 */
static void
backfill_set(SyncRun *run, List *pending, bool last)
{
	BfSet		set;
	MemoryContext cxt = AllocSetContextCreate(run->cxt, "stripe_sync backfill set",
											  ALLOCSET_SMALL_SIZES);
	ListCell   *lc;

	memset(&set, 0, sizeof(set));
	set.run = run;
	set.cxt = cxt;
	set.last = last;
	set.t0 = GetCurrentTimestamp();
	set.bf = MemoryContextAllocZero(cxt, sizeof(Backfill *) * Max(list_length(pending), 1));
	PG_TRY();
	{
		MemoryContext spi;

		foreach(lc, pending)
		{
			List	   *p = lfirst(lc);

			set.bf[set.n] = bf_begin(&set, list_nth(p, 1), linitial(p), lthird(p));
			set.n++;
		}
		spi = MemoryContextSwitchTo(cxt);
		stripe_request_stream(run->conn, set_feed, set_done, &set, &run->stats);
		/* a worker's page commits replaced the SPI connection we were called in */
		MemoryContextSwitchTo(set.spi_cxt ? set.spi_cxt : spi);
		for (int i = 0; i < set.n; i++)
			bf_finish(set.bf[i]);
	}
	PG_CATCH();
	{
		for (int i = 0; i < set.n; i++)
			foreach(lc, set.bf[i]->parts)
				helper_release(set.bf[i], lfirst(lc), true);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextDelete(cxt);
}

/* A helper's life: one part of one backfill, then exit. */
void
stripe_backfill_helper_main(Datum main_arg)
{
	dsm_segment *seg;
	HelperShared *hs;
	SyncRun    *run;
	MemoryContext cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	stripe_worker_keep_memory();
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);			/* the sync is gone */
	hs = dsm_segment_address(seg);
	BackgroundWorkerInitializeConnectionByOid(hs->dbid, hs->userid, 0);
	SetConfigOption("application_name", psprintf("stripe_sync %s helper", hs->source),
					PGC_USERSET, PGC_S_SESSION);
	/* the sync waits for us, so we must not wait long for it: fail, and it takes over */
	SetConfigOption("lock_timeout", "10s", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION);
	pgstat_report_activity(STATE_RUNNING, psprintf("backfill of %s for source \"%s\"",
													hs->object, hs->source));

	cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync backfill helper",
								ALLOCSET_DEFAULT_SIZES);
	run = MemoryContextAllocZero(cxt, sizeof(SyncRun));
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
	run->src.destination = hs->destination[0] ? MemoryContextStrdup(cxt, hs->destination) : NULL;
	run->src.emit_history = hs->emit_history;
	run->src.history_until = hs->history_until;

	PG_TRY();
	{
		LocalTable *lt;
		Backfill	bf;
		MemoryContext spi;

		begin_xact(run);
		spi = MemoryContextSwitchTo(cxt);
		run->conn = stripe_conn_for_server(run->src.serverid, GetUserId());
		MemoryContextSwitchTo(spi);
		lt = open_local_table(run, hs->object);
		lt->history = hs->history;
		bf_init(&bf, run, lt, MemoryContextStrdup(cxt, hs->object), hs->part, cxt);
		bf.top = hs->top;
		bf.base = hs->base;
		bf.slots = hs->slots;
		bf.mine = hs;
		part_work(&bf, hs->cursor);
		commit_xact(run);
		/* the sync may count the part done only once that is committed */
		hs->done = true;
		for (int i = 0; i < bf.nwin; i++)
			if (!bf.w[i].done)
				hs->done = false;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		strlcpy(hs->error, edata->message, sizeof(hs->error));
		PG_RE_THROW();
	}
	PG_END_TRY();
	proc_exit(0);
}

/* ---------- incremental from events ---------- */

typedef struct EventRef
{
	char	   *id;
	int64		created;
	char	   *type;
	char	   *object_json;	/* data.object, NUL-terminated copy */
	int			object_len;
} EventRef;

static int
event_cmp(const void *a, const void *b)
{
	const EventRef *x = a;
	const EventRef *y = b;

	/* oldest first; within a second, Stripe's list order reversed (kept by index) */
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return 0;
}

static void
load_applied(SyncRun *run, int64 since, HTAB *seen)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(run->src.name), Int64GetDatum(since)};

	spi_exec("SELECT event_id FROM stripe_sync.applied_events WHERE source = $1 AND created >= $2",
			 2, types, values, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char		key[NAMEDATALEN * 2] = {0};

		strlcpy(key, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), sizeof(key));
		hash_search(seen, key, HASH_ENTER, NULL);
	}
}

/* the Stripe event types the outbox takes (stripe_sync.event_map, enabled) */
static HTAB *
load_event_map(MemoryContext cxt)
{
	HASHCTL		ctl;
	HTAB	   *map;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = NAMEDATALEN * 2;
	ctl.hcxt = cxt;
	map = hash_create("stripe_sync event map", 32, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	spi_exec("SELECT stripe_event FROM stripe_sync.event_map WHERE enabled", 0, NULL, NULL, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char		key[NAMEDATALEN * 2] = {0};

		strlcpy(key, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), sizeof(key));
		hash_search(map, key, HASH_ENTER, NULL);
	}
	return map;
}

/* the outbox rows of a batch of applied events, in the batch's transaction */
static void
outbox_flush(SyncRun *run, MemoryContext cxt, Datum *ids, Datum *types, Datum *times,
			 Datum *objects, int *n)
{
	if (*n == 0)
		return;
	outbox_add(run, PointerGetDatum(construct_array(ids, *n, TEXTOID, -1, false, TYPALIGN_INT)),
			   PointerGetDatum(construct_array(types, *n, TEXTOID, -1, false, TYPALIGN_INT)),
			   times, objects, *n);
	*n = 0;
	MemoryContextReset(cxt);
}

static void
sync_events(SyncRun *run)
{
	MemoryContext ev_cxt = AllocSetContextCreate(run->cxt, "stripe_sync events",
												 ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(ev_cxt);
	StripeFieldSet *efs = stripe_fieldset_create(4);
	StripeFieldSet *dfs = stripe_fieldset_create(1);
	StripeFieldSet *ofs = stripe_fieldset_create(1);
	int64		since = run->src.events_cursor - EVENT_OVERLAP_SECS;
	List	   *events = NIL;
	char		last_id[256] = "";
	EventRef   *arr;
	int			n;
	int64		cursor = run->src.events_cursor;
	HASHCTL		ctl;
	HTAB	   *seen;
	int			since_commit = 0;
	HTAB	   *mapped;
	MemoryContext ob_cxt = AllocSetContextCreate(ev_cxt, "stripe_sync outbox batch",
												 ALLOCSET_SMALL_SIZES);
	Datum		ob_ids[STRIPE_PAGE_SIZE],
				ob_types[STRIPE_PAGE_SIZE],
				ob_times[STRIPE_PAGE_SIZE],
				ob_objects[STRIPE_PAGE_SIZE];
	int			nob = 0;

	stripe_fieldset_add(efs, "id", 0);
	stripe_fieldset_add(efs, "created", 1);
	stripe_fieldset_add(efs, "type", 2);
	stripe_fieldset_add(efs, "data", 3);
	stripe_fieldset_finish(efs);
	stripe_fieldset_add(dfs, "object", 0);
	stripe_fieldset_finish(dfs);
	stripe_fieldset_add(ofs, "object", 0);
	stripe_fieldset_finish(ofs);

	/* every event since the cursor; the list comes newest first */
	for (;;)
	{
		StripePage	page;
		PageCheck	pc = {efs, &page, true};
		StripeResponse resp;
		const char *why;

		/* the first page may have come with the backfill's tail */
		if (run->events_page == NULL ||
			!stripe_parse_page(run->events_page, run->events_len, true, efs, &page, &why))
			stripe_request(run->conn, "GET", events_path(run, last_id), NULL, NULL, false,
						   check_page, &pc, &resp, &run->stats);
		run->events_page = NULL;
		for (int i = 0; i < page.nrows; i++)
		{
			StripeRow  *r = &page.rows[i];
			EventRef   *e = palloc0(sizeof(EventRef));
			StripePage	data;
			const char *why;

			e->id = stripe_span_text(&r->fields[0]);
			e->created = pg_strtoint64(stripe_span_text(&r->fields[1]));
			e->type = stripe_span_text(&r->fields[2]);
			if (r->fields[3].start == NULL ||
				!stripe_parse_page(r->fields[3].start, r->fields[3].len, false, dfs, &data, &why) ||
				data.rows[0].fields[0].start == NULL)
				continue;		/* an event without an object changes nothing here */
			e->object_len = data.rows[0].fields[0].len;
			e->object_json = pnstrdup(data.rows[0].fields[0].start, e->object_len);
			events = lappend(events, e);
		}
		if (page.nrows > 0)
			strlcpy(last_id, stripe_span_text(&page.rows[page.nrows - 1].fields[0]), sizeof(last_id));
		if (!page.has_more || page.nrows == 0)
			break;
	}

	n = list_length(events);
	arr = palloc(sizeof(EventRef) * Max(n, 1));
	/* reverse Stripe's newest-first order, then a stable sort keeps ties in order */
	for (int i = 0; i < n; i++)
		arr[n - 1 - i] = *(EventRef *) list_nth(events, i);
	for (int i = 1; i < n; i++)
	{
		EventRef	key = arr[i];
		int			j = i - 1;

		while (j >= 0 && event_cmp(&arr[j], &key) > 0)
		{
			arr[j + 1] = arr[j];
			j--;
		}
		arr[j + 1] = key;
	}

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = NAMEDATALEN * 2;
	ctl.hcxt = ev_cxt;
	seen = hash_create("stripe_sync applied events", 1024, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	load_applied(run, since, seen);
	mapped = run->src.destination ? load_event_map(ev_cxt) : NULL;

	/*
	 * Applying commits (in a worker) at every batch, which frees SPI's memory:
	 * from here on nothing may keep pointing at the context we came in with.
	 */
	MemoryContextSwitchTo(old);

	for (int i = 0; i < n; i++)
	{
		EventRef   *e = &arr[i];
		char		key[NAMEDATALEN * 2] = {0};
		StripePage	obj;
		const char *why;
		char	   *otype;
		LocalTable *lt;
		Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
		Datum		values[3];
		bool		before_sync_from = false;

		strlcpy(key, e->id, sizeof(key));
		if (hash_search(seen, key, HASH_FIND, NULL) != NULL)
			continue;			/* delivered twice, or re-read in the overlap */
		hash_search(seen, key, HASH_ENTER, NULL);

		if (stripe_parse_page(e->object_json, e->object_len, false, ofs, &obj, &why) &&
			obj.rows[0].fields[0].start != NULL)
		{
			otype = stripe_span_text(&obj.rows[0].fields[0]);
			lt = table_for_object_type(run, otype);
			if (lt != NULL)
			{
				StripePage	row;
				TimestampTz at = time_t_to_timestamptz((pg_time_t) e->created);
				size_t		tl = strlen(e->type);
				bool		deleted = tl > 8 && strcmp(e->type + tl - 8, ".deleted") == 0;

				if (!stripe_parse_page(e->object_json, e->object_len, false, lt->rc->fs, &row, &why))
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
							 errmsg("event %s carries a malformed object: %s", e->id, why)));
				/* objects created before sync_from are not this source's */
				if (run->src.has_sync_from && lt->created_slot >= 0 &&
					!stripe_span_is_null(&row.rows[0].fields[lt->created_slot]) &&
					pg_strtoint64(stripe_span_text(&row.rows[0].fields[lt->created_slot])) < run->src.sync_from)
					before_sync_from = true;
				/* a deleted object keeps its last full state, marked deleted */
				else if (deleted && row.rows[0].deleted)
				{
					Oid			dt[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};
					Datum		dv[3] = {TimestampTzGetDatum(at), TimestampTzGetDatum(GetCurrentTimestamp()),
						CStringGetTextDatum(stripe_span_text(&row.rows[0].fields[lt->rc->id_slot]))};

					spi_exec(psprintf("UPDATE %s SET deleted_at = $1, observed_at = $1, synced_at = $2 "
									  "WHERE id = $3 AND observed_at <= $1 AND deleted_at IS NULL",
									  lt->qualified), 3, dt, dv, NULL);
				}
				else
					lt->rows += upsert_rows(run, lt, &row.rows[0], 1, at, deleted ? at : 0);
			}
		}
		/* mapped events go to the outbox; older ones are the backfill's history */
		if (run->src.destination != NULL && e->created >= run->src.history_until &&
			!before_sync_from && hash_search(mapped, e->type, HASH_FIND, NULL) != NULL)
		{
			MemoryContext o = MemoryContextSwitchTo(ob_cxt);

			ob_ids[nob] = CStringGetTextDatum(e->id);
			ob_types[nob] = CStringGetTextDatum(e->type);
			ob_times[nob] = Int64GetDatum(e->created);
			ob_objects[nob] = PointerGetDatum(cstring_to_text_with_len(e->object_json, e->object_len));
			nob++;
			MemoryContextSwitchTo(o);
		}
		values[0] = CStringGetTextDatum(run->src.name);
		values[1] = CStringGetTextDatum(e->id);
		values[2] = Int64GetDatum(e->created);
		spi_exec("INSERT INTO stripe_sync.applied_events (source, event_id, created) VALUES ($1, $2, $3) "
				 "ON CONFLICT DO NOTHING", 3, types, values, NULL);
		run->events_applied++;
		cursor = Max(cursor, e->created);
		/* the applied events and the cursor that passes them commit together */
		if (++since_commit == STRIPE_PAGE_SIZE || i == n - 1)
		{
			Oid			ct[2] = {TEXTOID, INT8OID};
			Datum		cv[2] = {CStringGetTextDatum(run->src.name), Int64GetDatum(cursor)};

			outbox_flush(run, ob_cxt, ob_ids, ob_types, ob_times, ob_objects, &nob);
			spi_exec("UPDATE stripe_sync.sources SET events_cursor = $2 WHERE name = $1",
					 2, ct, cv, NULL);
			page_boundary(run);
			since_commit = 0;
		}
	}
	/* the last events may have been re-reads, which commit nothing of their own */
	outbox_flush(run, ob_cxt, ob_ids, ob_types, ob_times, ob_objects, &nob);
	run->src.events_cursor = cursor;
	{
		Oid			ct[2] = {TEXTOID, INT8OID};
		Datum		cv[2] = {CStringGetTextDatum(run->src.name), Int64GetDatum(cursor - 2 * EVENT_OVERLAP_SECS)};

		spi_exec("DELETE FROM stripe_sync.applied_events WHERE source = $1 AND created < $2",
				 2, ct, cv, NULL);
	}
	MemoryContextDelete(ev_cxt);
}

/* ---------- the run ---------- */

static void
set_cursor(SyncRun *run, int64 cursor)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(run->src.name), Int64GetDatum(cursor)};

	spi_exec("UPDATE stripe_sync.sources SET events_cursor = $2 WHERE name = $1", 2, types, values, NULL);
	run->src.events_cursor = cursor;
	run->src.has_cursor = true;
}

static void
run_source(SyncRun *run)
{
	ListCell   *lc;
	List	   *pending = NIL;
	MemoryContext old;
	bool		relist;

	/*
	 * What lives across pages goes in run->cxt: a worker commits (and SPI
	 * frees its memory) at every page.
	 */
	old = MemoryContextSwitchTo(run->cxt);
	run->conn = stripe_conn_for_server(run->src.serverid, GetUserId());
	MemoryContextSwitchTo(old);
	if (run->src.account_id == NULL)
	{
		char	   *acct = stripe_fetch_account_id(run->conn, &run->stats,
												   &run->account_created);
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(acct)};

		spi_exec("UPDATE stripe_sync.sources SET account_id = $2 WHERE name = $1", 2, types, values, NULL);
		run->src.account_id = MemoryContextStrdup(run->cxt, acct);
	}

	/* Stripe keeps 30 days of events: past that, list everything again */
	relist = false;
	if (run->src.has_cursor && run->src.events_cursor < now_unix() - EVENT_RETENTION_SECS)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(run->src.name)};

		ereport(LOG,
				(errmsg("stripe_sync: source \"%s\": events cursor %s is older than Stripe's 30-day event retention; listing every object again",
						run->src.name,
						timestamptz_to_str(time_t_to_timestamptz((pg_time_t) run->src.events_cursor)))));
		spi_exec("UPDATE stripe_sync.object_state SET backfill_done = false, backfill_cursor = NULL, "
				 "state = 'relisting', last_error = 'events cursor past the 30-day retention: full re-list' "
				 "WHERE source = $1", 1, types, values, NULL);
		run->src.has_cursor = false;
		relist = true;
	}
	/* the cursor is set before the backfill, so nothing that happens during it is lost */
	if (!run->src.has_cursor)
	{
		/*
		 * A re-list also reads the events Stripe still has (a day short of
		 * the limit, so that a re-list cut short resumes instead of starting
		 * over): deletions in the gap, and the gap's events for the outbox.
		 * observed_at keeps them from undoing the newer listed state.
		 */
		set_cursor(run, relist ? now_unix() - (EVENT_RETENTION_SECS - 86400) : now_unix());
		/* the first backfill's cut between history and live events; a re-list keeps it */
		if (run->src.history_until == 0)
		{
			Oid			types[2] = {TEXTOID, INT8OID};
			Datum		values[2] = {CStringGetTextDatum(run->src.name), Int64GetDatum(run->src.events_cursor)};

			spi_exec("UPDATE stripe_sync.sources SET history_until = $2 WHERE name = $1", 2, types, values, NULL);
			run->src.history_until = run->src.events_cursor;
		}
		page_boundary(run);
	}

	foreach(lc, run->src.objects)
	{
		char	   *object = lfirst(lc);
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object)};
		LocalTable *lt = open_local_table(run, object);

		spi_exec("SELECT backfill_done, backfill_cursor, last_success_at IS NULL "
				 "FROM stripe_sync.object_state WHERE source = $1 AND object = $2",
				 2, types, values, NULL);
		if (SPI_processed == 1)
		{
			bool		isnull;
			bool		done = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			char	   *cursor = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

			/* never synced yet: this backfill is the object's first */
			lt->history = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

			if (!done)
			{
				old = MemoryContextSwitchTo(run->cxt);
				pending = lappend(pending, list_make3(object, lt, cursor ? pstrdup(cursor) : NULL));
				MemoryContextSwitchTo(old);
			}
		}
	}
	/* BFSET_MAX objects at a time: a request's tag carries its object */
	for (int i = 0; i < list_length(pending); i += BFSET_MAX)
		backfill_set(run, list_copy_head(list_copy_tail(pending, i), BFSET_MAX),
					 i + BFSET_MAX >= list_length(pending));

	sync_events(run);

	foreach(lc, run->src.objects)
		state_update(run, lfirst(lc),
					 "state = 'synced', last_success_at = now(), last_error = NULL", NULL);
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(run->src.name)};

		spi_exec("UPDATE stripe_sync.sources SET next_sync_at = now() + sync_interval WHERE name = $1",
				 1, types, values, NULL);
	}
}

static void
record_run(SyncRun *run, const char *status, const char *error)
{
	Oid			types[5] = {INT8OID, TEXTOID, INT8OID, INT8OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', error ? ' ' : 'n'};
	int64		rows = 0;
	ListCell   *lc;

	foreach(lc, run->tables)
		rows += ((LocalTable *) lfirst(lc))->rows;
	values[0] = Int64GetDatum(run->src.run_id);
	values[1] = CStringGetTextDatum(status);
	values[2] = Int64GetDatum(run->stats.requests);
	values[3] = Int64GetDatum(rows);
	values[4] = error ? CStringGetTextDatum(error) : (Datum) 0;
	spi_exec("UPDATE stripe_sync.runs SET status = $2, requests = $3, rows = $4, error = $5, "
			 "finished_at = clock_timestamp() WHERE id = $1", 5, types, values, nulls);
}

static bool
lock_source(const char *name, bool lock)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, ADVISORY_CLASS,
						 DatumGetUInt32(hash_any((const unsigned char *) name, strlen(name))), 2);
	if (lock)
		return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
	LockRelease(&tag, ExclusiveLock, true);
	return true;
}

/* the summary sync_now returns */
static Jsonb *
run_summary(SyncRun *run)
{
	StringInfoData buf;
	ListCell   *lc;
	int64		rows = 0;

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
		rows += lt->rows;
	}
	appendStringInfo(&buf, "}, \"rows\": " INT64_FORMAT ", \"events\": " INT64_FORMAT
					 ", \"requests\": " INT64_FORMAT ", \"retries\": " INT64_FORMAT ", \"seconds\": %.3f}",
					 rows, run->events_applied, run->stats.requests, run->stats.retries,
					 (double) (GetCurrentTimestamp() - run->started) / USECS_PER_SEC);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * One sync of a source; see stripe_sync.h.  Returns the summary (in the
 * caller's context) or NULL when another sync of the source is running.
 */
static Jsonb *
sync_source(const char *source, bool own)
{
	SyncRun    *run;
	MemoryContext cxt = AllocSetContextCreate(own ? TopMemoryContext : CurrentMemoryContext,
											  "stripe_sync run", ALLOCSET_DEFAULT_SIZES);
	MemoryContext caller = CurrentMemoryContext;
	Jsonb	   *summary = NULL;
	volatile bool locked = false;

	run = MemoryContextAllocZero(cxt, sizeof(SyncRun));
	run->cxt = cxt;
	run->own = own;
	run->started = GetCurrentTimestamp();

	begin_xact(run);
	if (!load_source(run, source))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("source \"%s\" does not exist", source)));
	if (!lock_source(source, true))
	{
		ereport(own ? DEBUG1 : NOTICE,
				(errmsg("a sync of source \"%s\" is already running", source)));
		commit_xact(run);
		MemoryContextDelete(cxt);
		return NULL;
	}
	locked = true;
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(source)};

		/* the history of runs is kept for RUNS_KEPT_DAYS */
		spi_exec("DELETE FROM stripe_sync.runs WHERE source = $1 AND finished_at < now() - "
				 "make_interval(days => " CppAsString2(RUNS_KEPT_DAYS) ")", 1, types, values, NULL);
		spi_exec("INSERT INTO stripe_sync.runs (source) VALUES ($1) RETURNING id", 1, types, values, NULL);
		run->src.run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
													  &(bool){false}));
	}
	page_boundary(run);

	PG_TRY();
	{
		run_source(run);
		record_run(run, "ok", NULL);
		if (!own)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			summary = run_summary(run);
			MemoryContextSwitchTo(old);
		}
		commit_xact(run);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		MemoryContext old;

		if (!own)
		{
			lock_source(source, false);
			PG_RE_THROW();
		}
		/* a worker keeps the error in status and tries again at the next tick */
		old = MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		MemoryContextSwitchTo(old);
		if (edata->elevel >= FATAL || ProcDiePending || QueryCancelPending)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		begin_xact(run);
		record_run(run, "error", edata->message);
		{
			Oid			types[2] = {TEXTOID, TEXTOID};
			Datum		values[2] = {CStringGetTextDatum(source),
			CStringGetTextDatum(edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message)};

			spi_exec("UPDATE stripe_sync.object_state SET state = 'error', last_error = $2 WHERE source = $1",
					 2, types, values, NULL);
			spi_exec("UPDATE stripe_sync.sources SET next_sync_at = now() + least(sync_interval, interval '1 minute') "
					 "WHERE name = $1", 1, types, values, NULL);
		}
		commit_xact(run);
		ereport(LOG,
				(errmsg("stripe_sync: sync of source \"%s\" failed: %s", source, edata->message)));
	}
	PG_END_TRY();
	if (locked)
		lock_source(source, false);
	MemoryContextDelete(cxt);
	return summary;
}

void
stripe_sync_run(const char *source, bool own_transactions)
{
	(void) sync_source(source, own_transactions);
}

/* stripe_sync.sync_now(name): one sync in this session, with NOTICE progress */
Datum
stripe_sync_now(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *summary = sync_source(name, false);

	if (summary == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(summary);
}

/* stripe_sync.catalog_columns(object): the typed columns of a catalogued object */
Datum
stripe_catalog_columns(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const StripeObjectDef *def = stripe_object_by_table(object);

	if (def == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown Stripe object \"%s\"", object),
				 errdetail("Known objects: %s.", stripe_object_table_names())));
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < def->ncolumns; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(def->columns[i].name);
		values[1] = CStringGetTextDatum(stripe_coltype_sql(def->columns[i].type));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
