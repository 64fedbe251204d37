/*-------------------------------------------------------------------------
 * backfill.c
 *		The backfill of a source's objects into their local tables, resumable
 *		from the last committed page (the words are in bf_windows.h).
 *
 * Each object's created range is cut into windows, each listed newest first
 * with its own cursor, with up to stripe_sync.max_concurrent_requests of
 * their pages in flight.  Each page's upserts commit together with every
 * window's cursor, in a short transaction of its own: nothing is held open
 * while the requests are out.  When a request slot is free, a window with
 * pages left gives its older part to a new window, which keeps the
 * concurrency up however unevenly the objects are spread over time.
 *
 * Parsing and writing pages takes a core, so when the sync spends half its
 * time or more on its pages (at zero latency; waiting on the network another
 * core gains nothing), it deals parts to helper processes (bf_deal.c): once the first
 * pages have shown how dense each window is, and whenever a helper is idle,
 * a new part takes the older quarter of every window with two pages or more
 * left, carved off the sync's own (a quarter of what is left each time, so
 * that sync and helper end together).  Windows are disjoint ranges of
 * created: two processes never write the same row.  A part has an id never
 * used before (the run's id and a count), and its progress is a row of
 * stripe_sync.backfill_parts.  The sync's cursor lists the parts not known to
 * be done with their first windows; it commits with the carving, so after a
 * crash every part restarts from its row or from its first windows.  The
 * sync waits for its helpers, finishes every part not done (its helper could
 * not start, failed or died), and only then marks the backfill done.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "account.h"
#include "backfill.h"
#include "bgw.h"
#include "events.h"
#include "guc.h"
#include "json_page.h"
#include "text.h"
#include "xact.h"

/* objects in one stream; a request's tag carries its object's index */
#define BFSET_MAX	64


/*
 * 2010-01-01, before Stripe's first account: the oldest a backfill looks when
 * the account's creation is unknown (a restricted key cannot read it).  Its
 * first round is then one window, whatever the object, so the empty years
 * cost nothing unless the pages show a density that carves toward them
 * (bf_windows.c bounds how far an unmeasured chain of carvings runs).
 */
#define STRIPE_FLOOR	INT64CONST(1262304000)

/* tag of the events request a backfill's tail carries */
#define EVENTS_TAG	(-1)
/* tag of the account's request a first sync's stream starts with */
#define ACCOUNT_TAG	(-2)


/* ---------- pages ---------- */

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
	if (bf->failed)
		return false;
	/*
	 * A connected account's turn is over: the pages in flight land, the
	 * cursor keeps the rest.  Each object gets a page a turn at least, so
	 * that turns always move on.
	 */
	if (bf->run->turn_end != 0 && (bf->pages > 0 || bf->in_flight > 0) &&
		GetCurrentTimestamp() >= bf->run->turn_end)
	{
		bf->run->turn_over = true;
		return false;
	}
	if (bf->dealing)
		stripe_bf_deal(bf);
	/* a set shares its requests in flight out itself */
	if (bf->set == NULL && bf->in_flight >= bf->slots)
		return false;
	for (int i = 0; i < bf->win.n && w == NULL; i++)
		if (!bf->win.w[i].done && !bf->win.w[i].in_flight)
			w = &bf->win.w[i];
	if (w == NULL)
		w = stripe_windows_split(&bf->win);
	if (w == NULL)
		return false;

	req->cxt = AllocSetContextCreate(bf->cxt, "stripe_sync backfill page", ALLOCSET_DEFAULT_SIZES);
	req->tag = w - bf->win.w;
	old = MemoryContextSwitchTo(req->cxt);
	initStringInfo(&path);
	appendStringInfo(&path, "/v1/%s?limit=%d", bf->lt->def->path, STRIPE_PAGE_SIZE);
	if (w->lo)
		appendStringInfo(&path, "&created%%5Bgte%%5D=" INT64_FORMAT, w->lo);
	if (w->hi)
		appendStringInfo(&path, "&created%%5Blt%%5D=" INT64_FORMAT, w->hi);
	appendStringInfoString(&path, w->query);
	if (w->after[0])
		appendStringInfo(&path, "&starting_after=%s", stripe_urlencode(w->after));
	pc = palloc0(sizeof(PageCheck));
	pc->fs = bf->lt->rc->fs;
	pc->page = palloc0(sizeof(StripePage));
	pc->is_list = true;
	req->path = path.data;
	req->check = stripe_check_page;
	req->check_arg = pc;
	/* Stripe refusing this object's pages fails this object, not the sync */
	req->soft = true;
	MemoryContextSwitchTo(old);
	w->in_flight = true;
	bf->in_flight++;
	return true;
}

/*
 * Stripe refused a page of this object (a restricted key without its read
 * permission, a 404, a persistent 400): the object fails, in status, and
 * the other objects go on.  Nothing more of it is written in this run: its
 * pages in flight are dropped, and the next run resumes from its last
 * committed cursor.
 */
static void
bf_fail(Backfill *bf, ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(bf->run->cxt);

	bf->failed = edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
		: pstrdup(edata->message);
	MemoryContextSwitchTo(old);
	if (bf->part != 0)
		return;					/* its sync says it, when it finishes the part */
	stripe_run_begin(bf->run);
	stripe_state_update(bf->run, bf->object, "state = 'error', last_error = $3", bf->failed);
	stripe_run_commit(bf->run);
	ereport(bf->run->own ? LOG : WARNING,
			(errmsg("stripe_sync: source \"%s\": the backfill of %s failed; the other objects go on",
					bf->run->src.name, bf->object),
			 errdetail("%s", bf->failed)));
}

/*
 * Stripe no longer knows the object the window's cursor names (deleted since
 * the page that named it: 400 resource_missing on starting_after).  The
 * window goes on from that object's second without a cursor, created[lt] =
 * its created + 1 (a list without created filters, from its top): the rows
 * of that second already written come again, and the upsert leaves them as
 * they are.  The page that follows asks for no cursor, so Stripe cannot
 * refuse it so; each recovery costs a page, and they end with the deletions.
 */
static void
bf_resume_gone_cursor(Backfill *bf, BfWindow *w, ErrorData *edata)
{
	ereport(bf->run->own ? DEBUG1 : NOTICE,
			(errmsg("%s: backfill of %s: the object its cursor named is gone; going on from its second",
					bf->run->src.name, bf->object),
			 errdetail("%s", edata->detail ? edata->detail : edata->message)));
	if (bf->win.ranged && w->last_created > 0 && w->last_created >= w->lo)
		w->hi = w->last_created + 1;
	w->after[0] = '\0';
	w->last_created = 0;
	bf->resumed++;
}

/* progress of the object's backfill here and in the helpers */
void
stripe_bf_progress(Backfill *bf, bool done)
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

		if (p->proc.hs != NULL)
		{
			rows += pg_atomic_read_u64(&p->proc.hs->rows);
			pages += pg_atomic_read_u64(&p->proc.hs->pages);
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
	values[3] = done ? (Datum) 0 : CStringGetTextDatum(stripe_windows_json(&bf->win, bf->part, bf->parts));
	values[4] = Int64GetDatum(changed);
	stripe_spi("INSERT INTO stripe_sync.backfill_parts AS p (source, object, part, cursor, rows, requests) "
			   "VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (source, object, part) DO UPDATE SET "
			   "cursor = EXCLUDED.cursor, rows = p.rows + EXCLUDED.rows, requests = p.requests + 1",
			   5, types, values, nulls, SPI_OK_INSERT);
}

/* One page arrived: its rows and every window's cursor commit together. */
static void
bf_done(void *arg, StripeManyReq *req)
{
	Backfill   *bf = arg;
	SyncRun    *run = bf->run;
	LocalTable *lt = bf->lt;
	BfWindow   *w = &bf->win.w[req->tag];
	StripePage *page = ((PageCheck *) req->check_arg)->page;
	MemoryContext caller = MemoryContextSwitchTo(req->cxt);
	int			nkeep = page->nrows;
	int64		changed;

	bf->in_flight--;
	w->in_flight = false;
	if (req->error != NULL || bf->failed)
	{
		if (bf->failed == NULL && w->after[0] && bf->resumed < 1000 &&
			stripe_refusal_cursor_gone(&req->refusal))
			bf_resume_gone_cursor(bf, w, req->error);
		else if (bf->failed == NULL)
			bf_fail(bf, req->error);
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(req->cxt);
		return;
	}
	/* rows older than the window's (possibly split-off) range are another's */
	if (w->lo && lt->created_slot >= 0)
		while (nkeep > 0 && stripe_row_created(lt, &page->rows[nkeep - 1]) < w->lo)
			nkeep--;

	stripe_run_begin(run);

	/*
	 * The state Stripe gave is at least as new as the moment we asked.
	 * Events carry whole seconds: one in the second of this fetch, or the
	 * second before, may be newer than the page, so the page counts as seen
	 * just before them.  Applying such an event is right even when it is
	 * older: any later change has an event of its own, applied after.
	 */
	changed = stripe_upsert_rows(run, lt, page->rows, nkeep,
								 time_t_to_timestamptz(timestamptz_to_time_t(req->sent) - 1), 0);
	stripe_window_advance(w, page, nkeep, lt->rc->id_slot, lt->created_slot);
	bf->pages++;
	lt->rows += changed;
	lt->pages++;
	if (bf->part != 0)
		part_update(bf, changed, stripe_windows_all_done(&bf->win));
	else if (bf->relist)
		stripe_state_update(run, bf->object,
							psprintf("rows = rows + " INT64_FORMAT ", requests = requests + 1", changed),
							NULL);
	else
		/* done only when every dealt part is too: bf_finish says so */
		stripe_state_update(run, bf->object,
							psprintf("rows = rows + " INT64_FORMAT ", requests = requests + 1, "
									 "backfill_cursor = $3", changed),
							stripe_windows_json(&bf->win, bf->part, bf->parts));
	stripe_run_progress(run, changed);
	stripe_run_commit(run);
	if (bf->mine != NULL)
	{
		pg_atomic_add_fetch_u64(&bf->mine->rows, changed);
		pg_atomic_add_fetch_u64(&bf->mine->pages, 1);
		pg_atomic_write_u64(&bf->mine->requests, run->stats.requests);
	}
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(req->cxt);
	CHECK_FOR_INTERRUPTS();
	stripe_bgw_reload_config();
	if (bf->mine == NULL && bf->pages % 20 == 0)
		stripe_bf_progress(bf, false);
	bf->t_last = GetCurrentTimestamp();
}

void
stripe_backfill_init(Backfill *bf, SyncRun *run, LocalTable *lt, const char *object, int64 part,
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
	bf->win.cxt = bf->cxt;
	/*
	 * An unmeasured chain of carvings stops after a few windows: past the
	 * end of the data each costs an empty page, and a window that comes back
	 * measured can be carved again one round trip later.
	 */
	bf->win.maxdepth = Min(bf->slots, 4);
	bf->win.deep_quarters = 4 * 4;
	/* nothing created after the events cursor is missed: the events bring it */
	bf->win.top = run->src.events_cursor;
	/* the oldest an object can be; Stripe's beginning when the account cannot be read */
	bf->win.base = run->src.has_sync_from ? run->src.sync_from
		: run->account_created > 0 ? run->account_created : STRIPE_FLOOR;
	bf->win.ranged = col != NULL && (col->flags & STRIPE_FILTER_RANGE) != 0;
}

/* Runs the windows to their end, each page in its own transaction. */
static void
bf_stream(Backfill *bf)
{
	MemoryContext old = MemoryContextSwitchTo(bf->cxt);

	stripe_request_stream(bf->run->conn, bf_feed, bf_done, bf, &bf->run->stats);
	MemoryContextSwitchTo(old);
}

/*
 * Lists the objects created since lo (0: all) again, with the list's own
 * filter query ("status=open", or ""), as a backfill's window: each page
 * commits on its own, under the same limits, an older state never over a
 * newer one.  Nothing resumes it: the next sync lists the range again.
 * Returns why Stripe refused it, or NULL.
 */
char *
stripe_backfill_range(SyncRun *run, LocalTable *lt, const char *object, int64 lo, const char *query)
{
	Backfill	bf;
	BfWindow   *w;

	stripe_backfill_init(&bf, run, lt, object, 0, run->cxt);
	bf.relist = true;
	bf.win.top = stripe_now_unix();
	if (lo > 0)
		bf.win.base = lo;

	/*
	 * One window, page after page, never split: a recent range has its
	 * objects bunched at its newest end, where a density measured there
	 * would carve the empty rest into a request each.  So a re-list costs a
	 * request per 100 objects, and one when there are none.
	 */
	bf.win.ranged = false;
	w = stripe_windows_add(&bf.win, lo, 0);
	if (query[0])
		snprintf(w->query, sizeof(w->query), "&%s", query);
	bf_stream(&bf);
	MemoryContextDelete(bf.cxt);
	return bf.failed;
}


/* ---------- an object's backfill, and the set ---------- */

/*
 * An object's backfill joins the set (in a transaction): its windows, and
 * helpers for parts a crash left.  The set's first object starts with a
 * window per request slot.  The others start with one: most are small, and
 * an empty window costs a request; a big one is carved up as soon as its
 * first page has shown its density (bf_split), while the objects before it
 * keep the slots busy.
 */
static Backfill *
bf_begin(BfSet *set, BfPending *pend)
{
	SyncRun    *run = set->run;
	Backfill   *bf = MemoryContextAllocZero(run->cxt, sizeof(Backfill));
	MemoryContext old;
	ListCell   *lc;
	List	   *lists;

	stripe_backfill_init(bf, run, pend->lt, pend->object, 0, run->cxt);
	bf->set = set;
	stripe_state_update(run, pend->object, "state = 'backfilling', last_error = NULL", NULL);
	old = MemoryContextSwitchTo(bf->cxt);
	lists = stripe_backfill_lists(bf, set->clocks);
	if (pend->cursor == NULL || !stripe_windows_load(&bf->win, pend->cursor, &bf->parts))
	{
		/*
		 * A window per request slot for the set's first list (unless the
		 * account's creation is unknown), one for the others
		 */
		foreach(lc, lists)
			stripe_windows_first(&bf->win, foreach_current_index(lc) == 0 ? pend->cursor : NULL,
								 set->n == 0 && foreach_current_index(lc) == 0 &&
								 bf->win.base != STRIPE_FLOOR
								 ? Max(stripe_max_concurrent_requests, 1) : 1,
								 run->src.has_sync_from ? run->src.sync_from : 0, lfirst(lc));
	}
	else if (bf->win.unlisted)
		stripe_backfill_add_lists(bf, lists, run->src.has_sync_from ? run->src.sync_from : 0);
	/* parts come back as BfPartRef: give each its helper's place */
	foreach(lc, bf->parts)
	{
		BfPart	   *p = palloc0(sizeof(BfPart));

		p->ref = *(BfPartRef *) lfirst(lc);
		lfirst(lc) = p;
	}
	MemoryContextSwitchTo(old);
	/* a table this transaction created or truncated would keep helpers waiting */
	/*
	 * Nor in a connected account's turn, which helpers would outlast, nor
	 * for a source a helper cannot see yet
	 */
	bf->dealing = bf->win.ranged && stripe_backfill_helpers > 0 && stripe_max_concurrent_requests > 1 &&
		!pend->lt->locked_here && run->turn_end == 0 && !run->src.created_here;
	foreach(lc, bf->parts)
	{
		BfPart	   *p = lfirst(lc);
		char	   *pc = stripe_bf_part_cursor(bf, p);

		if (pc == NULL)
			bf->parts = foreach_delete_current(bf->parts, lc);
		else if (bf->dealing && set->running < stripe_backfill_helpers &&
				 stripe_bf_helper_start(bf, p, pc, stripe_bf_helper_slots(set)))
		{
			set->helper_slots += p->proc.hs->slots;
			set->running++;
		}
	}
	return bf;
}

/*
 * Works a dealt part from cursor to its end, in pb's own transactions, as a
 * helper or as the sync finishing a helper's part: one process at a time.
 */
void
stripe_backfill_part_work(Backfill *pb, const char *cursor)
{
	MemoryContext old = MemoryContextSwitchTo(pb->cxt);

	stripe_windows_load(&pb->win, cursor, NULL);
	/* a part of 0.1 names no list: its windows are the object's first list's */
	for (int i = 0; pb->win.unlisted && i < pb->win.n; i++)
		strlcpy(pb->win.w[i].query, linitial(stripe_list_all_queries(pb->lt->def)),
				sizeof(pb->win.w[i].query));
	MemoryContextSwitchTo(old);
	stripe_bf_part_lock(pb, true);
	PG_TRY();
	{
		bf_stream(pb);
		/* nothing was left to fetch: say so (a helper told to stop says nothing) */
		if (pb->pages == 0 && (pb->mine == NULL || !pb->mine->abandoned))
		{
			stripe_run_begin(pb->run);
			part_update(pb, 0, true);
			stripe_run_commit(pb->run);
		}
	}
	PG_FINALLY();
	{
		stripe_bf_part_lock(pb, false);
	}
	PG_END_TRY();
}

/*
 * every part done: the backfill is, and the object was listed in full (when
 * a full re-list is next due: sync_relist.c); the parts' figures join the
 * object's
 */
static void
bf_mark_done(Backfill *bf)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(bf->run->src.name), CStringGetTextDatum(bf->object)};

	stripe_run_begin(bf->run);
	/* a part of a run that failed wrote its rows too (a rewrite of one counts nothing) */
	stripe_spi("UPDATE stripe_sync.object_state o SET rows = o.rows + p.rows, "
			   "requests = o.requests + p.requests, backfill_done = true, backfill_cursor = NULL, "
			   "state = 'synced', listed_at = now() FROM (SELECT coalesce(sum(rows), 0) AS rows, "
			   "coalesce(sum(requests), 0) AS requests FROM stripe_sync.backfill_parts "
			   "WHERE source = $1 AND object = $2) p "
			   "WHERE o.source = $1 AND o.object = $2", 2, types, values, NULL, SPI_OK_UPDATE);
	stripe_spi("DELETE FROM stripe_sync.backfill_parts WHERE source = $1 AND object = $2",
			   2, types, values, NULL, SPI_OK_DELETE);
	stripe_run_commit(bf->run);
}

/* Once the stream has ended: the object's helpers, the parts none finished, and done. */
static void
bf_finish(Backfill *bf)
{
	SyncRun    *run = bf->run;
	ListCell   *lc;

	stripe_bf_helpers_wait(bf);
	/* the account's turn ended first: its next turn resumes from the cursor */
	if (run->turn_over && !bf->failed && !stripe_windows_all_done(&bf->win))
	{
		stripe_bf_progress(bf, false);
		MemoryContextDelete(bf->cxt);
		return;
	}
	/* the parts no helper finished */
	foreach(lc, bf->parts)
	{
		BfPart	   *p = lfirst(lc);
		char	   *pc;
		Backfill	pb;

		(void) stripe_bf_helper_account(bf, p);
		stripe_run_begin(run);
		pc = stripe_bf_part_cursor(bf, p);
		stripe_run_commit(run);
		if (pc == NULL)
			continue;
		if (bf->failed)
			continue;			/* the next run finishes it */
		stripe_backfill_init(&pb, run, bf->lt, bf->object, p->ref.id, bf->cxt);
		pb.win.top = bf->win.top;
		pb.win.base = bf->win.base;
		stripe_backfill_part_work(&pb, pc);
		if (pb.failed)
		{
			ErrorData	e = {.message = pb.failed};

			bf_fail(bf, &e);
		}
	}
	if (bf->failed)
		run->failed = lappend(run->failed, psprintf("%s: %s", bf->object, bf->failed));
	else
		bf_mark_done(bf);
	stripe_bf_progress(bf, true);
	MemoryContextDelete(bf->cxt);
}

/* the set's object with the k-th fewest requests in flight (ties: in order) */
static int
fewest_out(BfSet *set, int k)
{
	int			order[BFSET_MAX];

	for (int i = 0; i < set->n; i++)
	{
		int			j = i;

		for (; j > 0 && set->bf[order[j - 1]]->in_flight > set->bf[i]->in_flight; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	return order[k];
}

static bool
set_feed(void *arg, StripeManyReq *req)
{
	BfSet	   *set = arg;
	bool		waits = false;

	set->running = stripe_bf_set_running(set, &set->helper_slots);
	/* a part to deal waits for the sync's requests to drain to what leaves room for it */
	for (int i = 0; i < set->n && !waits; i++)
		waits = stripe_bf_wants_deal(set->bf[i]);
	/* the requests in flight are shared out with the helpers, not multiplied */
	if (set->in_flight >= Max(stripe_max_concurrent_requests - set->helper_slots -
							  (waits ? stripe_bf_helper_slots(set) : 0), 1))
		return false;

	/* a first sync's account, beside the first pages rather than before them */
	if (set->account_pending && !set->run->account_asked)
	{
		stripe_account_request(set->run->conn, req, set->cxt);
		req->tag = ACCOUNT_TAG;
		set->run->account_asked = true;
		set->in_flight++;
		return true;
	}

	/*
	 * An object that has not asked for anything yet goes first: its first
	 * page tells whether it has more (most do not) and how dense it is.
	 * Then the object with the fewest requests out: each object's list is an
	 * endpoint of its own, with a rate limit of its own (ratelimit.c), so
	 * slots shared out between objects add up their endpoints' rates where
	 * one object's requests would queue behind their own.
	 */
	for (int pass = 0; pass < 2; pass++)
		for (int k = 0; k < set->n; k++)
		{
			int			i = pass == 0 ? k : fewest_out(set, k);
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
	if (!set->last || !stripe_events_feed_first(set->run, set->cxt, req))
		return false;
	set->in_flight++;
	return true;
}

static void set_page_done(BfSet *set, StripeManyReq *req);

/*
 * The account came: the source's account_id (the placeholder for a key
 * refused it), then the pages that came before it, which waited because a
 * row's account_id is its key (and Citus's distribution column): none is
 * written without it, nor changed after.  A run that ends before the answer
 * has written nothing, and the next asks again.
 */
static void
set_account_done(BfSet *set, StripeManyReq *req)
{
	SyncRun    *run = set->run;
	int64		created;
	char	   *refused;
	char	   *acct = stripe_account_answer(req, &created, &refused);
	List	   *deferred = set->deferred;
	ListCell   *lc;

	set->account_pending = false;
	set->deferred = NIL;
	run->account_created = created;
	stripe_run_account_answer(run, acct, refused);
	MemoryContextDelete(req->cxt);
	foreach(lc, deferred)
	{
		set_page_done(set, lfirst(lc));
		pfree(lfirst(lc));
	}
	list_free(deferred);
}

/* a backfill's page came: its object's */
static void
set_page_done(BfSet *set, StripeManyReq *req)
{
	TimestampTz began = GetCurrentTimestamp();
	Backfill   *bf = set->bf[req->tag % BFSET_MAX];

	req->tag /= BFSET_MAX;
	bf_done(bf, req);
	set->busy += GetCurrentTimestamp() - began;
}

static void
set_done(void *arg, StripeManyReq *req)
{
	BfSet	   *set = arg;

	set->in_flight--;
	if (req->tag == ACCOUNT_TAG)
		set_account_done(set, req);
	else if (req->tag == EVENTS_TAG)
		stripe_events_first_done(set->run, req);
	else if (set->account_pending)
	{
		/* the stream frees req after this: a copy waits, its body in its own cxt */
		MemoryContext old = MemoryContextSwitchTo(set->cxt);
		StripeManyReq *copy = palloc(sizeof(StripeManyReq));

		memcpy(copy, req, sizeof(StripeManyReq));
		set->deferred = lappend(set->deferred, copy);
		MemoryContextSwitchTo(old);
	}
	else
		set_page_done(set, req);
}

/* Backfills the objects of pending (BfPending) in one stream; BFSET_MAX at most. */
static void
backfill_one_set(SyncRun *run, List *pending, bool last)
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
	set.account_pending = run->account_in_stream && !run->account_asked;
	set.bf = MemoryContextAllocZero(cxt, sizeof(Backfill *) * Max(list_length(pending), 1));
	PG_TRY();
	{
		MemoryContext old;

		set.clocks = stripe_backfill_test_clocks(run, pending, cxt);
		stripe_run_begin(run);
		foreach(lc, pending)
			set.bf[set.n++] = bf_begin(&set, lfirst(lc));
		stripe_run_commit(run);
		old = MemoryContextSwitchTo(cxt);
		stripe_request_stream(run->conn, set_feed, set_done, &set, &run->stats);
		MemoryContextSwitchTo(old);
		for (int i = 0; i < set.n; i++)
			bf_finish(set.bf[i]);
	}
	PG_CATCH();
	{
		for (int i = 0; i < set.n; i++)
			foreach(lc, set.bf[i]->parts)
				stripe_helper_release(&((BfPart *) lfirst(lc))->proc, true, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextDelete(cxt);
}

/*
 * Backfills the objects of pending (BfPending), in streams of BFSET_MAX;
 * last: these are the run's last backfills, which the events step follows.
 */
void
stripe_backfill_set(SyncRun *run, List *pending, bool last)
{
	for (int i = 0; i < list_length(pending); i += BFSET_MAX)
		backfill_one_set(run, list_copy_head(list_copy_tail(pending, i), BFSET_MAX),
						 last && i + BFSET_MAX >= list_length(pending));
}
