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

/* the objects of a sync streamed together (backfill.c), and dealt from (bf_deal.c) */
struct BfSet
{
	SyncRun    *run;
	Backfill  **bf;
	int			n;
	bool		last;			/* the events' first page rides the tail */
	int			in_flight;
	int			running;		/* helpers at work, as of the last feed */
	int			helper_slots;	/* their requests in flight at most */
	MemoryContext cxt;			/* the stream's, and the events page's */
	int64		busy;			/* microseconds spent on pages since t0 */
	TimestampTz t0;
	List	   *clocks;			/* the account's test clocks (ids), in test mode */
	bool		account_pending;	/* GET /v1/account rides the stream, unanswered */
	List	   *deferred;		/* pages answered before it (copies, in cxt) */
};


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

/* backfill.c */
extern void stripe_bf_progress(Backfill *bf, bool done);

/* bf_deal.c */
extern char *stripe_bf_part_cursor(Backfill *bf, BfPart *p);
extern void stripe_bf_part_lock(Backfill *bf, bool lock);
extern bool stripe_bf_helper_start(Backfill *bf, BfPart *p, const char *cursor, int slots);
extern bool stripe_bf_helper_account(Backfill *bf, BfPart *p);
extern int	stripe_bf_set_running(BfSet *set, int *slots);
extern int	stripe_bf_helper_slots(BfSet *set);
extern bool stripe_bf_wants_deal(Backfill *bf);
extern void stripe_bf_deal(Backfill *bf);
extern void stripe_bf_helpers_wait(Backfill *bf);

/* bf_lists.c */
extern List *stripe_backfill_test_clocks(SyncRun *run, List *pending, MemoryContext cxt);
extern List *stripe_backfill_lists(Backfill *bf, List *clocks);
extern void stripe_backfill_add_lists(Backfill *bf, List *lists, int64 floor);

#endif							/* STRIPE_BACKFILL_H */
