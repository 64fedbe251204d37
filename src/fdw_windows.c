/*-------------------------------------------------------------------------
 * fdw_windows.c
 *		The rest of a long FDW list scan, read several pages at a time.
 *
 *		A list scan's first page says whether there is more; when there is,
 *		the rest of the list (created at most that page's oldest second, less
 *		the rows of that second it returned) is read as the backfill reads an
 *		object: windows of created (bf_windows.h), carved by the density the
 *		pages show, each followed by its own cursor, up to
 *		stripe_sync.max_concurrent_requests requests in flight under the
 *		shared rate limit (http.h's streams).  The windows are disjoint, so
 *		handing their pages out newest window first, each window's in its
 *		order, gives Stripe's newest-first order, as a one-page-at-a-time
 *		scan would.  Pages in flight or arrived and not yet handed out are
 *		at most three times max_concurrent_requests: a free slot prefers the
 *		window handed out next, and asks nothing more once that many are
 *		held.  (The window handed out is read a page per round trip while
 *		the next ones arrive: twice stalled the requests at times.)
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#include "bf_windows.h"
#include "fdw_windows.h"
#include "guc.h"
#include "text.h"

/*
 * The pages a window is carved to, in quarters: a little under a whole
 * number, so that a window of the density its neighbour showed costs no
 * request for a few rows more; and small, since the window handed out now
 * is read one page per round trip while the others wait for it.
 */
#define WINDOW_QUARTERS		11

/* a page of the scan: asked for, arrived, or being handed out */
typedef struct WinPage
{
	StripeWinScan *sc;
	int			win;			/* its window; -1: the slot is free */
	int			seq;			/* its place in the window */
	bool		ready;			/* arrived, and not yet handed out */
	MemoryContext cxt;			/* its request, body and rows */
	StripePage	page;
} WinPage;

/* what the scan keeps of a window besides the BfWindow */
typedef struct WinOrder
{
	int			next;			/* the next older window; -1: none */
	int			asked;			/* pages asked for */
	int			handed;			/* pages handed out */
	ScanPlace	place;			/* to go on from, should Stripe lose its cursor */
} WinOrder;

struct StripeWinScan
{
	StripeWinSpec spec;
	MemoryContext cxt;
	BfWindows	ws;
	WinOrder   *order;			/* per window of ws */
	int			order_cap;
	WinPage    *pages;
	int			npages;
	int			limit;			/* pages waiting or in flight at most */
	int			head;			/* the window handed out now */
	int			current;		/* the page handed out now, or -1 */
	int			ready_peak;
	StripeStream *stream;
};

/* a WinOrder for each window ws has, the new ones set up */
static void
order_grow(StripeWinScan *sc)
{
	if (sc->order_cap < sc->ws.n)
	{
		int			cap = Max(sc->order_cap * 2, Max(sc->ws.n, 16));

		sc->order = sc->order ? repalloc(sc->order, sizeof(WinOrder) * cap)
			: MemoryContextAlloc(sc->cxt, sizeof(WinOrder) * cap);
		for (int i = sc->order_cap; i < cap; i++)
		{
			memset(&sc->order[i], 0, sizeof(WinOrder));
			sc->order[i].next = -1;
		}
		sc->order_cap = cap;
	}
}

static bool
win_check(StripeResponse *resp, void *arg, const char **why)
{
	WinPage    *p = arg;

	return stripe_parse_page(resp->body, resp->len, true, p->sc->spec.fs, &p->page, why);
}

static void
page_release(WinPage *p)
{
	MemoryContextReset(p->cxt);
	memset(&p->page, 0, sizeof(StripePage));
	p->win = -1;
	p->ready = false;
}

typedef enum SendResult
{
	SEND_NO_SLOT,
	SEND_EMPTY,					/* nothing of the plan's range is in the window */
	SEND_OK
} SendResult;

/* Asks for the next page of window i into req. */
static SendResult
win_send(StripeWinScan *sc, int i, StripeManyReq *req)
{
	BfWindow   *w = &sc->ws.w[i];
	WinPage    *p = NULL;
	char	   *rest;
	MemoryContext old;

	for (int s = 0; s < sc->npages && p == NULL; s++)
		if (sc->pages[s].win < 0)
			p = &sc->pages[s];
	if (p == NULL)
		return SEND_NO_SLOT;
	old = MemoryContextSwitchTo(p->cxt);
	rest = stripe_list_rest_window(sc->spec.rp, sc->spec.suffix, w->lo, w->hi);
	if (rest == NULL)
	{
		MemoryContextSwitchTo(old);
		w->done = true;
		return SEND_EMPTY;
	}
	req->path = stripe_list_request(sc->spec.rp->base_path, STRIPE_PAGE_SIZE, rest,
									w->after[0] ? stripe_urlencode(w->after) : NULL);
	MemoryContextSwitchTo(old);
	req->check = win_check;
	req->check_arg = p;
	req->cxt = p->cxt;
	req->tag = p - sc->pages;
	/* a cursor Stripe no longer knows is gone on with (win_done) */
	req->soft = w->after[0] != '\0';
	p->win = i;
	p->seq = sc->order[i].asked++;
	w->in_flight = true;
	return SEND_OK;
}

/* the window whose older part split carved off into nw: it ends where nw begins */
static void
link_carved(StripeWinScan *sc, BfWindow *nw)
{
	int			n = nw - sc->ws.w;

	order_grow(sc);
	stripe_place_init(&sc->order[n].place, sc->cxt);
	for (int i = 0; i < sc->ws.n; i++)
		if (i != n && sc->ws.w[i].lo == nw->hi && !sc->ws.w[i].done)
		{
			sc->order[n].next = sc->order[i].next;
			sc->order[i].next = n;
			return;
		}
	elog(ERROR, "stripe_sync: a carved window has no window above it");
}

/*
 * The window to ask a page of: the first, in the order pages are handed out,
 * that has none in flight; else one carved off the window with the most
 * pages left.  None (-1) once limit pages wait or fly, except for the window
 * handed out now, whose pages everything else waits for.
 */
static int
next_window(StripeWinScan *sc)
{
	int			held = 0;
	BfWindow   *nw;

	for (int s = 0; s < sc->npages; s++)
		if (sc->pages[s].win >= 0 && s != sc->current)
			held++;
	for (int i = sc->head; i >= 0; i = sc->order[i].next)
		if (!sc->ws.w[i].done && !sc->ws.w[i].in_flight)
			return held < sc->limit || i == sc->head ? i : -1;
	if (held >= sc->limit || (nw = stripe_windows_split(&sc->ws)) == NULL)
		return -1;
	link_carved(sc, nw);
	return nw - sc->ws.w;
}

/* A StripeManyFeed: the next page of next_window's */
static bool
win_feed(void *arg, StripeManyReq *req)
{
	StripeWinScan *sc = arg;

	for (;;)
	{
		int			i = next_window(sc);
		SendResult	r;

		if (i < 0)
			return false;
		/* an empty window is done: look again */
		if ((r = win_send(sc, i, req)) != SEND_EMPTY)
			return r == SEND_OK;
	}
}

/*
 * Stripe no longer knows the object window i's cursor names: the window goes
 * on from the second of the last row it has, skipping that second's rows it
 * has (as fdw.c's scan does, see ScanPlace).  False when it cannot.
 */
static bool
win_resume(StripeWinScan *sc, int i)
{
	BfWindow   *w = &sc->ws.w[i];
	ScanPlace  *pl = &sc->order[i].place;

	if (!pl->known || pl->resumptions >= 1000)
		return false;
	w->after[0] = '\0';
	w->hi = pl->second + 1;
	pl->resumed = true;
	pl->resumptions++;
	return true;
}

/*
 * A window carved at a density no page of its own measured came back empty:
 * past the oldest object, or a gap.  The windows below it, as unmeasured, are
 * carved no further until a page of theirs shows a density, so that the tail
 * of a list does not cost a request per empty chunk.
 */
static void
stop_carving(StripeWinScan *sc, int i)
{
	for (int j = sc->order[i].next; j >= 0; j = sc->order[j].next)
		if (sc->ws.w[j].depth > 0)
			sc->ws.w[j].depth = sc->ws.maxdepth;
}

/* whether the first n rows of the page were all created in one second */
static bool
one_second(StripeWinScan *sc, StripePage *page, int n)
{
	int64		newest;
	int64		oldest;

	return n > 0 &&
		stripe_span_int64(&page->rows[0].fields[sc->spec.created_slot], &newest) &&
		stripe_span_int64(&page->rows[n - 1].fields[sc->spec.created_slot], &oldest) &&
		newest == oldest;
}

/*
 * A StripeManyDone: the page is its window's, down to the window's lower
 * bound (a window carved while the request flew gave the rest away); rows
 * its window had before it went on from a second are dropped.
 */
static void
win_done(void *arg, StripeManyReq *req)
{
	StripeWinScan *sc = arg;
	WinPage    *p = &sc->pages[req->tag];
	BfWindow   *w = &sc->ws.w[p->win];
	WinOrder   *o = &sc->order[p->win];
	int			nkeep = 0;
	int			ready = 0;

	w->in_flight = false;
	if (req->error != NULL)
	{
		if (stripe_refusal_cursor_gone(&req->refusal) && win_resume(sc, p->win))
		{
			o->asked--;
			page_release(p);
			return;
		}
		if (stripe_refusal_cursor_gone(&req->refusal))
			req->error->hint = psprintf("The object the scan's cursor names was deleted while it read %s; run the query again.",
										sc->spec.path);
		ReThrowError(req->error);
	}
	if (req->resp.status == 404)
		memset(&p->page, 0, sizeof(StripePage));
	sc->spec.stats->pages++;
	for (; nkeep < p->page.nrows; nkeep++)
	{
		StripeRow  *row = &p->page.rows[nkeep];
		int64		created;

		if (w->lo != 0 && stripe_span_int64(&row->fields[sc->spec.created_slot], &created) &&
			created < w->lo)
			break;
		if (stripe_place_returned(&o->place, row, sc->spec.id_slot, sc->spec.created_slot))
			row->deleted = true;
	}
	if (p->page.nrows == 0 && w->depth > 0)
		stop_carving(sc, p->win);
	stripe_window_advance(w, &p->page, nkeep, sc->spec.id_slot, sc->spec.created_slot);
	if (!w->done && one_second(sc, &p->page, nkeep))
		w->span = 0;			/* no density: carving it would probe empty seconds */
	p->page.nrows = nkeep;
	stripe_place_note(&o->place, &p->page, sc->spec.id_slot, sc->spec.created_slot);
	p->ready = true;
	for (int s = 0; s < sc->npages; s++)
		ready += sc->pages[s].ready;
	sc->ready_peak = Max(sc->ready_peak, ready);
}

/*
 * Sets up the rest of a list whose first page (of spec's list) is first: NULL
 * when it is not worth it (one request at a time) or cannot be done (the page
 * shows no created).  The page itself is the caller's to hand out.
 */
StripeWinScan *
stripe_winscan_start(StripeWinSpec *spec, StripePage *first, MemoryContext parent)
{
	int			n = Min(Max(stripe_max_concurrent_requests, 1), 256);
	int64		newest;
	int64		oldest;
	int64		lower = spec->rp->created.have_lower ? spec->rp->created.lower : 0;
	StripeWinScan *sc;
	BfWindow   *w;
	MemoryContext cxt;
	MemoryContext old;

	if (n < 2 || first->nrows == 0 || spec->created_slot < 0 ||
		!stripe_span_int64(&first->rows[0].fields[spec->created_slot], &newest) ||
		!stripe_span_int64(&first->rows[first->nrows - 1].fields[spec->created_slot], &oldest) ||
		newest < oldest || oldest < lower || oldest >= PG_INT64_MAX / 4)
		return NULL;
	cxt = AllocSetContextCreate(parent, "stripe_sync scan windows", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	sc = palloc0(sizeof(StripeWinScan));
	sc->spec = *spec;
	sc->cxt = cxt;
	sc->ws.cxt = cxt;
	sc->ws.ranged = true;
	sc->ws.maxdepth = n;
	sc->ws.base = lower;
	sc->ws.top = oldest + 1;
	sc->ws.chunk_quarters = WINDOW_QUARTERS;
	sc->limit = 3 * n;
	sc->current = -1;

	/* one window for the rest: the first page's oldest second and below */
	w = stripe_windows_add(&sc->ws, lower, oldest + 1);
	/* a page of one second tells no density: the window's own pages will */
	w->span = one_second(sc, first, first->nrows) ? 0 :
		Max((newest - oldest) * STRIPE_PAGE_SIZE / first->nrows, 1);
	order_grow(sc);
	stripe_place_init(&sc->order[0].place, cxt);
	stripe_place_note(&sc->order[0].place, first, spec->id_slot, spec->created_slot);
	sc->order[0].place.resumed = true;

	/* in flight or waiting, the one handed out, and one more for the head's turn */
	sc->npages = sc->limit + 2;
	sc->pages = palloc0(sizeof(WinPage) * sc->npages);
	for (int s = 0; s < sc->npages; s++)
	{
		sc->pages[s].sc = sc;
		sc->pages[s].win = -1;
		sc->pages[s].cxt = AllocSetContextCreate(cxt, "stripe_sync scan window page",
												 ALLOCSET_DEFAULT_SIZES);
	}
	sc->stream = stripe_stream_open(spec->conn, win_feed, win_done, sc, spec->stats);
	MemoryContextSwitchTo(old);
	return sc;
}

/*
 * The next page in Stripe's order into *page (valid until the next call), or
 * false when the list is done.
 */
bool
stripe_winscan_next(StripeWinScan *sc, StripePage *page)
{
	if (sc->current >= 0)
		page_release(&sc->pages[sc->current]);
	sc->current = -1;
	while (sc->head >= 0)
	{
		WinOrder   *o = &sc->order[sc->head];
		bool		pending = false;

		for (int s = 0; s < sc->npages; s++)
		{
			WinPage    *p = &sc->pages[s];

			if (p->win != sc->head)
				continue;
			pending = true;
			if (p->ready && p->seq == o->handed)
			{
				o->handed++;
				p->ready = false;
				sc->current = s;
				*page = p->page;
				return true;
			}
		}
		if (!pending && sc->ws.w[sc->head].done)
		{
			/* the window is over: its place goes, the next older one is handed out */
			MemoryContextDelete(o->place.cxt);
			o->place.cxt = NULL;
			sc->head = o->next;
			continue;
		}
		CHECK_FOR_INTERRUPTS();
		if (!stripe_stream_step(sc->stream))
			elog(ERROR, "stripe_sync: the windows of the scan of %s stalled", sc->spec.path);
	}
	stripe_stream_close(sc->stream);
	return false;
}

/* Ends the scan's windows (done or not); says how many there were and the most pages waiting. */
void
stripe_winscan_end(StripeWinScan *sc, int *windows, int *ready_peak)
{
	*windows = sc->ws.n;
	*ready_peak = sc->ready_peak;
	stripe_stream_close(sc->stream);
	MemoryContextDelete(sc->cxt);
}
