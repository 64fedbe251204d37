/*-------------------------------------------------------------------------
 * bf_windows.h
 *		A backfill's windows and its cursor (bf_windows.c).
 *
 * Words of the backfill:
 *	window	a range of "created" [lo, hi) listed newest first with its own
 *			starting_after cursor; one page of it is in flight at a time.
 *	round	the first requests of a backfill, one per window it starts with:
 *			equal spans of the object's life, newest first.
 *	split	a free request slot carves the older part of a window off into a
 *			new window, judged by the density its pages showed.
 *	cursor	every unfinished window as JSON, committed with each page in
 *			object_state.backfill_cursor (or, for a part, backfill_parts): a
 *			restart resumes every window from its last committed page.
 *	part	the older quarter of the windows with pages left, dealt by the
 *			sync to a helper process (helpers.h); the sync's cursor lists
 *			the parts not known to be done, with their first windows.
 *	set		the objects of one sync, backfilled in one stream of requests
 *			(backfill.c): a free slot goes to whichever has a page to ask for.
 *	list	what a window lists besides its range: most objects have one list,
 *			but prices are two (active=true, active=false) and objects on test
 *			clocks are listed per clock (test_clock=clock_…); a window's list is
 *			in its query, and the first round has windows for every list.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_BF_WINDOWS_H
#define STRIPE_BF_WINDOWS_H

#include "nodes/pg_list.h"

#include "json_page.h"

typedef struct BfWindow
{
	int64		lo;				/* created >= lo; 0: unbounded */
	int64		hi;				/* created < hi; 0: unbounded */
	char		after[256];		/* starting_after; "" for the first page */
	int64		last_created;	/* created of the row "after" names */
	int64		span;			/* seconds of created per page; 0 = unknown */
	int			depth;			/* carvings since a page showed this density */
	char		query[160];		/* its list's filters: "&active=false" or "" */
	bool		in_flight;
	bool		done;
} BfWindow;

typedef struct BfWindows
{
	MemoryContext cxt;			/* the windows' own: outlives the page commits */
	BfWindow   *w;
	int			n;
	int			cap;
	int64		base;			/* oldest created we expect, for splitting */
	int64		top;			/* the backfill's start, for splitting */
	bool		ranged;			/* the list takes created[gte] and created[lt] */
	int			maxdepth;		/* carvings of an unmeasured chain at most */
	int			deep_quarters;	/* past maxdepth, a window bounded below and this
								 * small is still carved; 0: none */
	bool		unlisted;		/* a loaded cursor's windows name no list (0.2's) */
	int			chunk_quarters; /* pages a split carves off, in quarters; 0: CHUNK_PAGES */
} BfWindows;

/* a part as a cursor lists it: its id and its first windows (cursor JSON) */
typedef struct BfPartRef
{
	int64		id;
	char	   *first;
} BfPartRef;

extern BfWindow *stripe_windows_add(BfWindows *ws, int64 lo, int64 hi);
extern char *stripe_windows_json(BfWindows *ws, int64 part, List *parts);
extern bool stripe_windows_load(BfWindows *ws, const char *cursor, List **parts);
extern void stripe_windows_first(BfWindows *ws, char *cursor, int n, int64 floor,
								 const char *query);
extern BfWindow *stripe_windows_split(BfWindows *ws);
extern int64 stripe_window_top(BfWindows *ws, BfWindow *w);
extern int64 stripe_window_lo(BfWindows *ws, BfWindow *w);
extern int64 stripe_window_quarters(BfWindows *ws, BfWindow *w);
extern bool stripe_windows_all_done(BfWindows *ws);
extern void stripe_window_advance(BfWindow *w, StripePage *page, int nkeep, int id_slot,
								  int created_slot);

#endif							/* STRIPE_BF_WINDOWS_H */
