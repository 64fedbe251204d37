/*-------------------------------------------------------------------------
 * bf_deal.c
 *		Parts of a backfill dealt to helper processes (see backfill.c's header
 *		comment): carving them off the sync's windows, starting, accounting
 *		for and waiting on their helpers.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/wait_event.h"

#include "backfill.h"
#include "guc.h"
#include "xact.h"

/* fewer pages than this left: not worth a helper */
#define DEAL_MIN_PAGES	16
/* a part takes this fraction of each window: 1/4, then 1/4 of what is left... */
#define DEAL_SHARE		4
/* how long the sync watches its own pace before it deals */
#define DEAL_AFTER_USECS	100000


/* ---------- parts dealt to helpers ---------- */

/* Where a dealt part goes on: its committed progress, else its first windows; NULL when done. */
char *
stripe_bf_part_cursor(Backfill *bf, BfPart *p)
{
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	Datum		values[3];
	char	   *cursor;

	values[0] = CStringGetTextDatum(bf->run->src.name);
	values[1] = CStringGetTextDatum(bf->object);
	values[2] = Int64GetDatum(p->ref.id);
	stripe_spi("SELECT cursor FROM stripe_sync.backfill_parts WHERE source = $1 AND object = $2 AND part = $3",
			   3, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return p->ref.first;
	cursor = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return cursor ? MemoryContextStrdup(bf->cxt, cursor) : NULL;
}

/* one process at a time works a part: a helper of a sync that died may linger a page */
void
stripe_bf_part_lock(Backfill *bf, bool lock)
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

/* what a helper of this backfill is told of the run */
static void
helper_spec(Backfill *bf, HelperShared *hs, int slots)
{
	SyncRun    *run = bf->run;

	memset(hs, 0, offsetof(HelperShared, cursor));
	hs->dbid = MyDatabaseId;
	hs->userid = run->src.owner;
	hs->serverid = run->src.serverid;
	hs->run_id = run->src.run_id;
	hs->slots = slots;
	hs->top = bf->win.top;
	hs->base = bf->win.base;
	hs->has_sync_from = run->src.has_sync_from;
	hs->sync_from = run->src.sync_from;
	strlcpy(hs->source, run->src.name, sizeof(hs->source));
	strlcpy(hs->object, bf->object, sizeof(hs->object));
	strlcpy(hs->target_schema, run->src.target_schema, sizeof(hs->target_schema));
	strlcpy(hs->account_id, run->src.account_id ? run->src.account_id : "", sizeof(hs->account_id));
	hs->on_behalf = run->conn->on_behalf != NULL;
}

/* Starts a helper on part p from cursor; false if none could be had. */
bool
stripe_bf_helper_start(Backfill *bf, BfPart *p, const char *cursor, int slots)
{
	HelperShared spec;
	SyncRun    *run = bf->run;

	if (strlen(run->src.name) >= sizeof(spec.source) ||
		(run->src.account_id && strlen(run->src.account_id) >= sizeof(spec.account_id)))
		return false;
	helper_spec(bf, &spec, slots);
	return stripe_helper_start(&p->proc, p->ref.id, &spec, cursor, bf->cxt);
}

/* A helper stopped: what it did joins the run's figures; returns whether its part is done. */
bool
stripe_bf_helper_account(Backfill *bf, BfPart *p)
{
	HelperTally t;

	if (p->proc.hs == NULL)
		return false;
	(void) stripe_helper_release(&p->proc, false, &t);
	bf->lt->rows += t.rows;
	bf->lt->pages += t.pages;
	bf->run->stats.requests += t.requests;
	if (!t.done)
		ereport(bf->run->own ? LOG : NOTICE,
				(errmsg("stripe_sync: a backfill helper of source \"%s\" stopped short on %s: %s",
						bf->run->src.name, bf->object, t.error),
				 errdetail("The sync finishes its part.")));
	return t.done;
}

/* helpers at work for any of the set's objects; *slots gets their requests in flight at most */
int
stripe_bf_set_running(BfSet *set, int *slots)
{
	int			n = 0;

	*slots = 0;
	for (int i = 0; i < set->n; i++)
	{
		ListCell   *lc;

		foreach(lc, set->bf[i]->parts)
		{
			BfPart	   *p = lfirst(lc);

			if (stripe_helper_running(&p->proc))
			{
				n++;
				*slots += p->proc.hs->slots;
			}
		}
	}
	return n;
}

/* requests a new helper may keep in flight: a share of the whole */
int
stripe_bf_helper_slots(BfSet *set)
{
	return Max(stripe_max_concurrent_requests / (set->running + 2), 1);
}

/*
 * Whether the sync should deal a part (see the header comment): a helper adds
 * a core, which helps a sync busy with its pages, not one waiting on the
 * network.
 */
bool
stripe_bf_wants_deal(Backfill *bf)
{
	BfSet	   *set = bf->set;
	int64		elapsed = GetCurrentTimestamp() - set->t0;
	int64		quarters = 0;

	if (!bf->dealing || set->account_pending || set->running >= stripe_backfill_helpers || bf->dealt >= 999 ||
		elapsed < DEAL_AFTER_USECS || set->busy * 2 < elapsed)
		return false;
	for (int i = 0; i < bf->win.n; i++)
		quarters += stripe_window_quarters(&bf->win, &bf->win.w[i]);
	return quarters >= DEAL_MIN_PAGES * 4;
}

/*
 * The sync's own feed calls this: its helpers that stopped are accounted
 * for, and while fewer than stripe_sync.backfill_helpers run (for all the
 * set's objects) and enough is left, a new part gets the older quarter of
 * each window that has two pages or more.
 */
void
stripe_bf_deal(Backfill *bf)
{
	Backfill	t;
	BfPart	   *p;
	int64	   *cut;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(bf->cxt);

	foreach(lc, bf->parts)
	{
		BfPart	   *q = lfirst(lc);

		if (q->proc.hs != NULL && !stripe_helper_running(&q->proc))
		{
			if (stripe_bf_helper_account(bf, q))
				bf->parts = foreach_delete_current(bf->parts, lc);
			else
				bf->dealing = false;	/* one failed: the next would too, likely */
		}
	}
	/*
	 * The sync's requests in flight, its helpers' and the new one's stay
	 * within the bound: until they would, the sync sends fewer (set_feed).
	 */
	if (!stripe_bf_wants_deal(bf) ||
		bf->set->in_flight + bf->set->helper_slots + stripe_bf_helper_slots(bf->set) > stripe_max_concurrent_requests)
	{
		MemoryContextSwitchTo(old);
		return;
	}

	memset(&t, 0, sizeof(t));
	t.cxt = bf->cxt;
	t.win = bf->win;
	t.win.w = NULL;
	t.win.n = t.win.cap = 0;
	/* new in this run, so no row left over from an earlier one has its id */
	t.part = bf->run->src.run_id * 1000 + bf->dealt + 1;
	cut = palloc(sizeof(int64) * bf->win.n);
	for (int i = 0; i < bf->win.n; i++)
	{
		BfWindow   *w = &bf->win.w[i];
		int64		lo = stripe_window_lo(&bf->win, w);
		BfWindow   *nw;

		cut[i] = 0;
		if (stripe_window_quarters(&bf->win, w) < 8)
			continue;
		cut[i] = lo + (stripe_window_top(&bf->win, w) - lo) / DEAL_SHARE;
		nw = stripe_windows_add(&t.win, w->lo, cut[i]);
		memcpy(nw->query, w->query, sizeof(nw->query));
		nw->span = w->span;
		nw->depth = w->depth + 1;
	}
	p = palloc0(sizeof(BfPart));
	p->ref.id = t.part;
	p->ref.first = stripe_windows_json(&t.win, t.part, NIL);
	if (t.win.n == 0 ||
		!stripe_bf_helper_start(bf, p, p->ref.first, stripe_bf_helper_slots(bf->set)))
	{
		/* no helper to be had: the sync keeps its windows, and stops dealing */
		bf->dealing = t.win.n == 0;
		MemoryContextSwitchTo(old);
		return;
	}
	/* a page of ours in flight may bring rows below a cut: bf_done drops them */
	for (int i = 0; i < bf->win.n; i++)
		if (cut[i] != 0)
			bf->win.w[i].lo = cut[i];
	bf->parts = lappend(bf->parts, p);
	bf->dealt++;
	bf->set->helper_slots += p->proc.hs->slots;
	bf->set->running++;
	MemoryContextSwitchTo(old);
}

/* Waits for the helpers to stop, with progress every second. */
void
stripe_bf_helpers_wait(Backfill *bf)
{
	for (;;)
	{
		bool		running = false;
		ListCell   *lc;

		foreach(lc, bf->parts)
			if (stripe_helper_running(&((BfPart *) lfirst(lc))->proc))
				running = true;
		if (!running)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		stripe_bf_progress(bf, false);
	}
}
