/*-------------------------------------------------------------------------
 * helpers.c
 *		Backfill helper processes: starting a background worker on a part of
 *		a backfill, watching it, and taking its figures back when it stops.
 *
 * The sync and its helper share a DSM segment (HelperShared): the sync's
 * view of the run and the part's first windows go one way, the helper's
 * figures and outcome the other.  When the sync goes away (an ERROR, or its
 * process exiting), the segment's detach callback marks the part abandoned
 * and the helper stops at its next page.  What a helper runs is in
 * sync_run.c (stripe_backfill_helper_main).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#include "helpers.h"

/* the sync gone (ERROR, or its process exiting): its helpers stop */
static void
helper_abandon(dsm_segment *seg, Datum arg)
{
	((HelperShared *) DatumGetPointer(arg))->abandoned = true;
}

/*
 * Starts a helper on part "part" from cursor, with spec's view of the run
 * (its figures and outcome fields are not read); false if no DSM segment or
 * background worker slot could be had.  The handle lives in cxt.
 */
bool
stripe_helper_start(HelperProc *p, int64 part, const HelperShared *spec, const char *cursor,
					MemoryContext cxt)
{
	BackgroundWorker worker;
	HelperShared *hs;
	MemoryContext old;

	p->seg = dsm_create(offsetof(HelperShared, cursor) + strlen(cursor) + 1,
						DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (p->seg == NULL)
		return false;
	/* it outlives the page commits */
	dsm_pin_mapping(p->seg);
	hs = dsm_segment_address(p->seg);
	memcpy(hs, spec, offsetof(HelperShared, cursor));
	hs->part = part;
	hs->abandoned = false;
	hs->done = false;
	hs->error[0] = '\0';
	pg_atomic_init_u64(&hs->rows, 0);
	pg_atomic_init_u64(&hs->pages, 0);
	pg_atomic_init_u64(&hs->requests, 0);
	strcpy(hs->cursor, cursor);
	on_dsm_detach(p->seg, helper_abandon, PointerGetDatum(hs));

	stripe_bgw_prepare(&worker, "stripe_backfill_helper_main", "stripe_sync backfill helper");
	snprintf(worker.bgw_name, BGW_MAXLEN, "stripe_sync backfill helper for source %s", hs->source);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(p->seg));
	/* the postmaster sets our latch when it stops */
	worker.bgw_notify_pid = MyProcPid;
	old = MemoryContextSwitchTo(cxt);
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
bool
stripe_helper_running(HelperProc *p)
{
	pid_t		pid;

	return p->hs != NULL && GetBackgroundWorkerPid(p->handle, &pid) != BGWH_STOPPED;
}

/*
 * A helper stopped: its figures go to *tally.  With stop, one still running
 * is told to end instead (and tally is left alone).  Returns whether its
 * part is done.
 */
bool
stripe_helper_release(HelperProc *p, bool stop, HelperTally *tally)
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
	else if (tally != NULL)
	{
		tally->rows = pg_atomic_read_u64(&hs->rows);
		tally->pages = pg_atomic_read_u64(&hs->pages);
		tally->requests = pg_atomic_read_u64(&hs->requests);
		tally->done = hs->done;
		tally->error = hs->done ? NULL : pstrdup(hs->error[0] ? hs->error : "it exited");
	}
	done = hs->done;
	p->hs = NULL;
	dsm_detach(p->seg);
	p->seg = NULL;
	return done;
}
