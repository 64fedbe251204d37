/*-------------------------------------------------------------------------
 * bf_parents.c
 *		Objects Stripe lists only per customer (payment methods, tax ids,
 *		customer balance transactions): a walk over the source's own
 *		customers table, one list per customer, resumable after a crash.
 *
 * The walk reads the customers table in id order, PARENT_BATCH ids at a
 * time, and lists each customer's children (GET /v1/customers/{id}/<child>,
 * page after page) with up to stripe_sync.max_concurrent_requests lists in
 * flight for all the walked objects together, under the shared rate limit.
 * Each page commits with the object's cursor: the last customer id up to
 * which every customer's list is done.  After a crash the walk goes on from
 * there; the customers after it are listed again, and the upsert leaves what
 * they already wrote as it is.  Memory holds at most PARENT_QUEUE customers
 * a walk, however many the account has.
 *
 * The walk follows the customers' backfill, so it sees every customer the
 * backfill wrote.  Payment methods and tax ids then stay current by their own
 * events (sync_events.c).  Stripe sends no event of a customer balance
 * transaction, but every one changes its customer's balance, which is a
 * customer.updated event: those are listed again for each customer whose
 * local row changed since the last walk (its synced_at), in the same way,
 * in (synced_at, id) order, after the events are applied.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bf_parents.h"
#include "bgw.h"
#include "guc.h"
#include "json_page.h"
#include "text.h"
#include "xact.h"

/* customers read from the table at a time, and held by a walk at most */
#define PARENT_BATCH	100
#define PARENT_QUEUE	(2 * PARENT_BATCH)
#define PARENT_ID_LEN	256
/* walks in one stream; a request's tag carries its walk's index */
#define WALKS_MAX		8


typedef struct Parent
{
	char		id[PARENT_ID_LEN];
	TimestampTz synced;			/* its row's synced_at (a re-list's order) */
	char		after[PARENT_ID_LEN];	/* its list's cursor, "" at the start */
	int64		seq;			/* its place in the walk: the request's tag */
	bool		in_flight;
	bool		done;
} Parent;

typedef struct Walk
{
	SyncRun    *run;
	LocalTable *lt;
	const char *object;
	const char *child;			/* the list's segment under /v1/customers/{id}/ */
	bool		relist;			/* customers changed since the last walk, not all */
	bool		relist_on_change;
	TimestampTz since;			/* full walk: when it began (a re-list's start) */
	/* committed: every customer up to it is done */
	char		cursor[PARENT_ID_LEN];
	TimestampTz cursor_synced;
	/* read from the table so far */
	char		loaded[PARENT_ID_LEN];
	TimestampTz loaded_synced;
	bool		exhausted;
	char	   *load_sql;
	Parent	   *q;				/* PARENT_QUEUE, in seq order */
	int			n;
	int64		next_seq;
	int			in_flight;
	char	   *failed;
	int64		parents,
				pages;
	MemoryContext cxt;
	MemoryContext tmp;			/* reset after each read of the table */
} Walk;

typedef struct WalkSet
{
	SyncRun    *run;
	Walk	   *w[WALKS_MAX];
	int			n;
	int			rr;				/* the walk fed next, in turn */
	int			in_flight;
} WalkSet;

bool
stripe_listed_per_parent(const char *object)
{
	const StripeObjectDef *def = stripe_object_by_table(object);

	/* the catalogue's objects listed under /v1/customers/{id}/ */
	return def != NULL && def->parent_path != NULL && strcmp(def->parent_path, "customers") == 0;
}

/* ---------- the cursor: "walk:<since>:<synced>:<id>" or "since:<since>:<synced>:<id>" ---------- */

static char *
walk_cursor_text(Walk *w, bool done)
{
	return psprintf("%s:" INT64_FORMAT ":" INT64_FORMAT ":%s", done || w->relist ? "since" : "walk",
					(int64) w->since, (int64) w->cursor_synced, w->cursor);
}

/* false when text is not a cursor of ours (a walk then starts over) */
static bool
walk_cursor_parse(Walk *w, const char *text)
{
	const char *p = strchr(text, ':');
	char	   *end;
	int64		since,
				synced;

	if (p == NULL)
		return false;
	w->relist = strncmp(text, "since:", 6) == 0;
	if (!w->relist && strncmp(text, "walk:", 5) != 0)
		return false;
	since = strtoi64(p + 1, &end, 10);
	if (*end != ':')
		return false;
	synced = strtoi64(end + 1, &end, 10);
	if (*end != ':' || strlen(end + 1) >= PARENT_ID_LEN)
		return false;
	w->since = since;
	w->cursor_synced = synced;
	strlcpy(w->cursor, end + 1, sizeof(w->cursor));
	return true;
}

/* ---------- the customers, read a batch at a time ---------- */

static void
walk_load(Walk *w)
{
	SyncRun    *run = w->run;
	MemoryContext old = MemoryContextSwitchTo(w->tmp);
	Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, INT4OID, TEXTOID};
	Datum		values[4];
	int			want = Min(PARENT_BATCH, PARENT_QUEUE - w->n);

	values[0] = CStringGetTextDatum(w->loaded);
	values[1] = TimestampTzGetDatum(w->loaded_synced);
	values[2] = Int32GetDatum(want);
	values[3] = CStringGetTextDatum(run->src.account_id);
	stripe_run_begin(run);
	stripe_run_as_owner(run, true);
	stripe_spi(w->load_sql, 4, types, values, NULL, SPI_OK_SELECT);
	stripe_run_as_owner(run, false);
	w->exhausted = SPI_processed < (uint64) want;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		bool		isnull;
		Datum		synced = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);
		Parent	   *p;

		if (id == NULL || strlen(id) >= PARENT_ID_LEN)
			continue;			/* no Stripe id is so long: no list to read */
		strlcpy(w->loaded, id, sizeof(w->loaded));
		w->loaded_synced = isnull ? 0 : DatumGetTimestampTz(synced);
		p = &w->q[w->n++];
		memset(p, 0, sizeof(Parent));
		strlcpy(p->id, id, sizeof(p->id));
		p->synced = w->loaded_synced;
		p->seq = w->next_seq++;
	}
	stripe_run_commit(run);
	MemoryContextSwitchTo(old);
	MemoryContextReset(w->tmp);
}

/* the committed cursor moves past the customers done, which leave the queue */
static void
walk_advance(Walk *w)
{
	int			k = 0;

	while (k < w->n && w->q[k].done)
	{
		strlcpy(w->cursor, w->q[k].id, sizeof(w->cursor));
		w->cursor_synced = w->q[k].synced;
		w->parents++;
		k++;
	}
	if (k > 0)
	{
		memmove(w->q, w->q + k, sizeof(Parent) * (w->n - k));
		w->n -= k;
	}
}

/* ---------- the requests ---------- */

static bool
walk_feed(Walk *w, StripeManyReq *req)
{
	Parent	   *p = NULL;
	char	   *segment = NULL;
	PageCheck  *pc;
	MemoryContext old;

	if (w->failed)
		return false;
	while (p == NULL)
	{
		for (int i = 0; i < w->n && p == NULL; i++)
			if (!w->q[i].done && !w->q[i].in_flight)
				p = &w->q[i];
		if (p == NULL)
		{
			if (w->exhausted || w->n > PARENT_QUEUE - PARENT_BATCH)
				return false;
			walk_load(w);
			continue;
		}
		/* an id that is not one path segment names no customer of Stripe's */
		segment = stripe_path_segment(p->id);
		if (segment == NULL)
		{
			p->done = true;
			walk_advance(w);
			p = NULL;
		}
	}
	req->cxt = AllocSetContextCreate(w->cxt, "stripe_sync per-customer page", ALLOCSET_DEFAULT_SIZES);
	req->tag = (int) (p->seq % (INT_MAX / WALKS_MAX));
	old = MemoryContextSwitchTo(req->cxt);
	req->path = psprintf("/v1/customers/%s/%s?limit=%d%s%s", segment, w->child, STRIPE_PAGE_SIZE,
						 p->after[0] ? "&starting_after=" : "",
						 p->after[0] ? stripe_urlencode(p->after) : "");
	pc = palloc0(sizeof(PageCheck));
	pc->fs = w->lt->rc->fs;
	pc->page = palloc0(sizeof(StripePage));
	pc->is_list = true;
	req->check = stripe_check_page;
	req->check_arg = pc;
	/* Stripe refusing one object's lists fails that object, not the sync */
	req->soft = true;
	MemoryContextSwitchTo(old);
	p->in_flight = true;
	w->in_flight++;
	return true;
}

/* Stripe refused a list of the object: it fails in status, the others go on */
static void
walk_fail(Walk *w, const char *why)
{
	SyncRun    *run = w->run;

	w->failed = MemoryContextStrdup(run->cxt, why);
	stripe_run_begin(run);
	stripe_state_update(run, w->object, "state = 'error', last_error = $3", w->failed);
	stripe_run_commit(run);
	ereport(run->own ? LOG : WARNING,
			(errmsg("stripe_sync: source \"%s\": listing %s per customer failed; the other objects go on",
					run->src.name, w->object),
			 errdetail("%s", w->failed)));
}

/* One page of a customer's list came: its rows and the walk's cursor commit together. */
static void
walk_done(Walk *w, StripeManyReq *req, int64 seq)
{
	SyncRun    *run = w->run;
	StripePage *page = ((PageCheck *) req->check_arg)->page;
	MemoryContext caller = MemoryContextSwitchTo(req->cxt);
	Parent	   *p = NULL;
	int64		changed = 0;

	w->in_flight--;
	for (int i = 0; i < w->n && p == NULL; i++)
		if (w->q[i].seq % (INT_MAX / WALKS_MAX) == seq)
			p = &w->q[i];
	Assert(p != NULL);
	p->in_flight = false;
	if (w->failed)
		;						/* nothing more of it is written in this run */
	else if (req->error != NULL && req->refusal.status == 404)
	{
		p->done = true;			/* the customer is gone: it has nothing to list */
		walk_advance(w);
	}
	else if (req->error != NULL)
		walk_fail(w, req->error->detail ? psprintf("%s: %s", req->error->message, req->error->detail)
				  : req->error->message);
	else
	{
		const char *why;

		if (page->has_more)
		{
			char	   *next = stripe_page_next_cursor(page, w->lt->rc->id_slot,
													   p->after[0] ? p->after : NULL, &why);

			if (next == NULL || strlen(next) >= PARENT_ID_LEN)
				walk_fail(w, psprintf("the list of customer %s cannot be followed past this page: %s",
									  p->id, next == NULL ? why : "its last id is too long"));
			else
				strlcpy(p->after, next, sizeof(p->after));
		}
		else
			p->done = true;
		if (!w->failed)
		{
			walk_advance(w);
			stripe_run_begin(run);
			/* as a backfill page: seen just before the events of its second */
			changed = stripe_upsert_rows(run, w->lt, page->rows, page->nrows,
										 time_t_to_timestamptz(timestamptz_to_time_t(req->sent) - 1), 0);
			w->lt->rows += changed;
			w->lt->pages++;
			w->pages++;
			stripe_state_update(run, w->object,
								psprintf("rows = rows + " INT64_FORMAT ", requests = requests + 1, "
										 "backfill_cursor = $3", changed),
								walk_cursor_text(w, false));
			stripe_run_progress(run, changed);
			stripe_run_commit(run);
		}
	}
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(req->cxt);
	CHECK_FOR_INTERRUPTS();
	stripe_bgw_reload_config();
}

static bool
set_feed(void *arg, StripeManyReq *req)
{
	WalkSet    *set = arg;

	if (set->in_flight >= Max(stripe_max_concurrent_requests, 1))
		return false;
	/* in turn: each object's list is an endpoint with a rate limit of its own */
	for (int k = 0; k < set->n; k++)
	{
		int			i = (set->rr + k) % set->n;

		if (walk_feed(set->w[i], req))
		{
			req->tag = req->tag * WALKS_MAX + i;
			set->rr = i + 1;
			set->in_flight++;
			return true;
		}
	}
	return false;
}

static void
set_done(void *arg, StripeManyReq *req)
{
	WalkSet    *set = arg;

	set->in_flight--;
	walk_done(set->w[req->tag % WALKS_MAX], req, req->tag / WALKS_MAX);
}

/* ---------- the walks ---------- */

/* A walk of object from its stored cursor (NULL: from the start), in a transaction. */
static Walk *
walk_begin(SyncRun *run, LocalTable *customers, const char *object, const char *cursor, bool relist)
{
	Walk	   *w = MemoryContextAllocZero(run->cxt, sizeof(Walk));

	w->run = run;
	w->object = object;
	w->lt = stripe_table_find(run, object, true);
	w->child = w->lt->def->child_path ? w->lt->def->child_path : w->lt->def->path;
	w->relist_on_change = w->lt->def->relist == STRIPE_RELIST_PARENT;
	w->cxt = AllocSetContextCreate(run->cxt, "stripe_sync per-customer walk", ALLOCSET_DEFAULT_SIZES);
	w->tmp = AllocSetContextCreate(w->cxt, "stripe_sync per-customer read", ALLOCSET_SMALL_SIZES);
	w->q = MemoryContextAllocZero(w->cxt, sizeof(Parent) * PARENT_QUEUE);
	if (cursor == NULL || !walk_cursor_parse(w, cursor) || w->relist != relist)
	{
		/* a walk from the start sees the customers as they are now */
		w->relist = false;
		w->since = GetCurrentTimestamp();
		w->cursor[0] = '\0';
		w->cursor_synced = 0;
	}
	strlcpy(w->loaded, w->cursor, sizeof(w->loaded));
	w->loaded_synced = w->cursor_synced;
	/* the source's account's customers only: the tables may hold other accounts' (Connect) */
	if (w->relist)
		w->load_sql = MemoryContextStrdup(w->cxt, psprintf(
			"SELECT id, synced_at FROM %s WHERE (synced_at, id) > ($2, $1) AND account_id = $4 "
			"AND deleted_at IS NULL ORDER BY synced_at, id LIMIT $3", customers->qualified));
	else
		w->load_sql = MemoryContextStrdup(w->cxt, psprintf(
			"SELECT id, synced_at FROM %s WHERE id > $1 AND account_id = $4 AND deleted_at IS NULL "
			"ORDER BY id LIMIT $3", customers->qualified));
	if (!relist)
		stripe_state_update(run, object, "state = 'backfilling', last_error = NULL", NULL);
	return w;
}

/* the walk's end: a full walk is the object's backfill done; a re-list keeps its place */
static void
walk_finish(Walk *w)
{
	SyncRun    *run = w->run;

	if (w->failed)
	{
		MemoryContext old = MemoryContextSwitchTo(run->cxt);

		run->failed = lappend(run->failed, psprintf("%s: %s", w->object, w->failed));
		MemoryContextSwitchTo(old);
	}
	else if (w->relist)
	{
		stripe_run_begin(run);
		stripe_state_update(run, w->object, "backfill_cursor = $3", walk_cursor_text(w, true));
		stripe_run_commit(run);
	}
	else
	{
		/*
		 * What changes later: the events bring it, or (relist_on_change) the
		 * customers changed since the walk began are listed again.
		 */
		w->cursor[0] = '\0';
		w->cursor_synced = w->since;
		stripe_run_begin(run);
		stripe_state_update(run, w->object, "backfill_done = true, backfill_cursor = $3, state = 'synced'",
							w->relist_on_change ? walk_cursor_text(w, true) : NULL);
		stripe_run_commit(run);
	}
	ereport(run->own ? DEBUG1 : NOTICE,
			(errmsg("%s: %s of %s per customer: " INT64_FORMAT " customers, " INT64_FORMAT " pages%s",
					run->src.name, w->relist ? "re-list" : "backfill", w->object, w->parents, w->pages,
					w->failed ? " (failed)" : " (done)")));
	MemoryContextDelete(w->cxt);
}

static void
walks_run(SyncRun *run, WalkSet *set)
{
	MemoryContext old = MemoryContextSwitchTo(run->cxt);

	if (set->n > 0)
		stripe_request_stream(run->conn, set_feed, set_done, set, &run->stats);
	MemoryContextSwitchTo(old);
	for (int i = 0; i < set->n; i++)
	{
		/* the stream ended with every customer done, unless a walk failed */
		Assert(set->w[i]->failed || (set->w[i]->exhausted && set->w[i]->n == 0));
		walk_finish(set->w[i]);
	}
}

/* the source's customers table, when its backfill is done; else NULL (in a transaction) */
static LocalTable *
parents_ready(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};

	stripe_spi("SELECT backfill_done FROM stripe_sync.object_state WHERE source = $1 AND object = 'customers'",
			   1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1 || !stripe_spi_bool(0, 1))
		return NULL;
	return stripe_table_find(run, "customers", true);
}

/*
 * The backfills of pending (BfPending) objects listed per customer: one walk
 * each over the customers, all in one stream.  They wait for the customers'
 * backfill: until it is done (it failed in this run), they are not begun.
 */
void
stripe_backfill_parents(SyncRun *run, List *pending)
{
	WalkSet		set;
	LocalTable *customers;
	ListCell   *lc;

	if (pending == NIL)
		return;
	memset(&set, 0, sizeof(set));
	set.run = run;
	stripe_run_begin(run);
	customers = parents_ready(run);
	foreach(lc, pending)
	{
		BfPending  *p = lfirst(lc);

		if (customers == NULL || set.n == WALKS_MAX)
		{
			MemoryContext old = MemoryContextSwitchTo(run->cxt);

			run->failed = lappend(run->failed,
								  psprintf("%s: waits for the backfill of customers, whose customers it lists",
										   p->object));
			MemoryContextSwitchTo(old);
			continue;
		}
		set.w[set.n++] = walk_begin(run, customers, p->object, p->cursor, false);
	}
	stripe_run_commit(run);
	walks_run(run, &set);
}

/*
 * After the events: the objects listed again when their customer changes
 * (customer balance transactions, which have no events of their own), for
 * each customer whose row changed since the last walk of them.
 */
void
stripe_parents_relist(SyncRun *run)
{
	WalkSet		set;
	LocalTable *customers;
	ListCell   *lc;
	bool		any = false;

	/* most sources have none: not a query more for them, every sync */
	foreach(lc, run->src.objects)
	{
		const StripeObjectDef *def = stripe_object_by_table(lfirst(lc));

		any |= def != NULL && def->relist == STRIPE_RELIST_PARENT;
	}
	if (!any)
		return;
	memset(&set, 0, sizeof(set));
	set.run = run;
	stripe_run_begin(run);
	customers = parents_ready(run);
	foreach(lc, run->src.objects)
	{
		const char *object = lfirst(lc);
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object)};
		const StripeObjectDef *def = stripe_object_by_table(object);
		char	   *cursor;

		if (def == NULL || def->relist != STRIPE_RELIST_PARENT || customers == NULL || set.n == WALKS_MAX ||
			stripe_run_object_failed(run, object))
			continue;
		stripe_spi("SELECT backfill_cursor FROM stripe_sync.object_state "
				   "WHERE source = $1 AND object = $2 AND backfill_done",
				   2, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed != 1)
			continue;
		cursor = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (cursor == NULL || strncmp(cursor, "since:", 6) != 0)
			continue;
		set.w[set.n++] = walk_begin(run, customers, MemoryContextStrdup(run->cxt, object),
									cursor, true);
	}
	stripe_run_commit(run);
	walks_run(run, &set);
}
