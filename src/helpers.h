/*-------------------------------------------------------------------------
 * helpers.h
 *		Backfill helper processes (helpers.c): a background worker that works
 *		one part of a backfill (see backfill.h) for the sync that dealt it,
 *		and what the two share while it runs.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_HELPERS_H
#define STRIPE_HELPERS_H

#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"

#include "bgw.h"

/* what a helper is given, and tells back, in a DSM segment of the sync's */
typedef struct HelperShared
{
	/* from the sync: its view of the run, which sync_now commits only at its end */
	Oid			dbid;
	Oid			userid;			/* the source's owner */
	Oid			serverid;
	int64		run_id;
	int64		part;
	int			slots;
	int64		top;
	int64		base;
	bool		has_sync_from;
	int64		sync_from;
	char		source[STRIPE_SOURCE_MAXLEN];
	char		object[NAMEDATALEN];
	char		target_schema[NAMEDATALEN];
	char		account_id[STRIPE_SOURCE_MAXLEN + 8];	/* acct_…, or "unknown:<source>" */
	bool		on_behalf;		/* a connected account's: account_id is Stripe-Account */
	volatile bool abandoned;	/* the sync stopped waiting: stop feeding pages */
	/* from the helper */
	pg_atomic_uint64 rows;
	pg_atomic_uint64 pages;
	pg_atomic_uint64 requests;
	volatile bool done;			/* the part is done and committed */
	char		error[256];		/* why it stopped short */
	char		cursor[FLEXIBLE_ARRAY_MEMBER];	/* the part's windows */
} HelperShared;

/* a helper process, as the sync that started it knows it */
typedef struct HelperProc
{
	dsm_segment *seg;			/* while it works for this run; else NULL */
	HelperShared *hs;
	BackgroundWorkerHandle *handle;
} HelperProc;

/* what a helper did, as the sync accounts for it */
typedef struct HelperTally
{
	int64		rows;
	int64		pages;
	int64		requests;
	bool		done;			/* its part is done */
	const char *error;			/* why it stopped short, when it did */
} HelperTally;

extern bool stripe_helper_start(HelperProc *p, int64 part, const HelperShared *spec,
								const char *cursor, MemoryContext cxt);
extern bool stripe_helper_running(HelperProc *p);
extern bool stripe_helper_release(HelperProc *p, bool stop, HelperTally *tally);

/* a helper's entry point (sync_run.c) */
extern PGDLLEXPORT void stripe_backfill_helper_main(Datum main_arg);

#endif							/* STRIPE_HELPERS_H */
