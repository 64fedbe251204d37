/*-------------------------------------------------------------------------
 * backfill.h
 *		The backfill: a source's objects listed in full into its local
 *		tables (backfill.c).
 *
 * The words (window, round, split, cursor, part, set) are in bf_windows.h.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_BACKFILL_H
#define STRIPE_BACKFILL_H

#include "bf_windows.h"
#include "helpers.h"
#include "sync.h"

/* a part dealt to a helper, as the sync knows it */
typedef struct BfPart
{
	BfPartRef	ref;			/* first: the cursor lists parts as BfPartRef */
	HelperProc	proc;			/* while a helper of this run works it */
} BfPart;

typedef struct BfSet BfSet;

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
	BfSet	   *set;			/* the sync's objects streamed together, or NULL */
	MemoryContext cxt;			/* outlives the page commits */
	BfWindows	win;
	int64		pages;
	char	   *failed;			/* Stripe refused one of its pages: why (see bf_fail) */
	int			resumed;		/* windows gone on past a cursor Stripe lost */
	bool		relist;			/* a re-list of a range: no cursor kept (stripe_backfill_range) */
	TimestampTz t0;
	TimestampTz t_last;			/* when its last page was written */
} Backfill;

/* one object's backfill to run: its table and its stored cursor (or NULL) */
typedef struct BfPending
{
	const char *object;
	LocalTable *lt;
	char	   *cursor;
} BfPending;

extern void stripe_backfill_set(SyncRun *run, List *pending, bool last);
extern void stripe_backfill_init(Backfill *bf, SyncRun *run, LocalTable *lt,
								 const char *object, int64 part, MemoryContext parent);
extern void stripe_backfill_part_work(Backfill *pb, const char *cursor);
extern char *stripe_backfill_range(SyncRun *run, LocalTable *lt, const char *object, int64 lo,
								   const char *query);

/* bf_lists.c */
extern List *stripe_backfill_test_clocks(SyncRun *run, List *pending, MemoryContext cxt);
extern List *stripe_backfill_lists(Backfill *bf, List *clocks);
extern void stripe_backfill_add_lists(Backfill *bf, List *lists, int64 floor);

#endif							/* STRIPE_BACKFILL_H */
