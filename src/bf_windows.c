/*-------------------------------------------------------------------------
 * bf_windows.c
 *		A backfill's windows of "created" and the cursor that stores them
 *		(the words are in bf_windows.h): the first round, the splits that
 *		keep the request slots busy, and the JSON a restart resumes from.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "bf_windows.h"
#include "catalog.h"

/*
 * Pages in a carved-off chunk.  Each chunk ends in a page that is not full
 * (or empty), a request more than its rows need, so a chunk of 2 costs a
 * quarter more requests than the pages; but the last chunks set the tail of
 * the backfill, when fewer windows than slots are left.  4 pages: measured
 * with test/bench/e2e (b), where requests are what the rate limit counts.
 */
#define CHUNK_PAGES		4

BfWindow *
stripe_windows_add(BfWindows *ws, int64 lo, int64 hi)
{
	BfWindow   *w;

	if (ws->n == ws->cap)
	{
		ws->cap = Max(ws->cap * 2, 16);
		ws->w = ws->w ? repalloc(ws->w, sizeof(BfWindow) * ws->cap)
			: MemoryContextAlloc(ws->cxt, sizeof(BfWindow) * ws->cap);
	}
	w = &ws->w[ws->n++];
	memset(w, 0, sizeof(BfWindow));
	w->lo = lo;
	w->hi = hi;
	return w;
}

/* every unfinished window, and the parts (BfPartRef) not known to be done */
char *
stripe_windows_json(BfWindows *ws, int64 part, List *parts)
{
	StringInfoData buf;
	bool		first = true;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"windows\": [", part);
	for (int i = 0; i < ws->n; i++)
	{
		BfWindow   *w = &ws->w[i];

		if (w->done)
			continue;
		appendStringInfo(&buf, "%s{\"gte\": " INT64_FORMAT ", \"lt\": " INT64_FORMAT ", \"q\": ",
						 first ? "" : ", ", w->lo, w->hi);
		escape_json(&buf, w->query);
		appendStringInfoString(&buf, ", \"after\": ");
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
	if (parts != NIL)
	{
		/* where the dealt parts start, should their rows not say more */
		appendStringInfoString(&buf, ", \"parts\": [");
		foreach(lc, parts)
			appendStringInfo(&buf, "%s%s", foreach_current_index(lc) ? ", " : "",
							 ((BfPartRef *) lfirst(lc))->first);
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

/* the parts a stored cursor lists (BfPartRef), with their first windows */
static List *
load_parts(JsonbContainer *root)
{
	JsonbValue *parts = getKeyJsonValueFromContainer(root, "parts", 5, NULL);
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *out = NIL;

	if (parts == NULL || parts->type != jbvBinary)
		return NIL;
	it = JsonbIteratorInit(parts->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_ELEM && v.type == jbvBinary)
		{
			BfPartRef  *p = palloc0(sizeof(BfPartRef));

			p->id = jsonb_int_member(v.val.binary.data, "id", 0);
			p->first = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
			out = lappend(out, p);
		}
	return out;
}

/*
 * Windows from a stored cursor; false if it is not ours (a bare id from an
 * older version).  With parts, the parts it lists are returned there.
 * Allocates in the current context.
 */
bool
stripe_windows_load(BfWindows *ws, const char *cursor, List **parts)
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
	if (parts != NULL)
		*parts = load_parts(&jb->root);
	it = JsonbIteratorInit(arr->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		BfWindow   *w;
		JsonbValue *after;
		JsonbValue *query;

		if (tok != WJB_ELEM || v.type != jbvBinary)
			continue;
		w = stripe_windows_add(ws, jsonb_int_member(v.val.binary.data, "gte", 0),
							   jsonb_int_member(v.val.binary.data, "lt", 0));
		query = getKeyJsonValueFromContainer(v.val.binary.data, "q", 1, NULL);
		if (query != NULL && query->type == jbvString &&
			query->val.string.len < (int) sizeof(w->query))
		{
			memcpy(w->query, query->val.string.val, query->val.string.len);
			w->query[query->val.string.len] = '\0';
		}
		else
			ws->unlisted = true;
		after = getKeyJsonValueFromContainer(v.val.binary.data, "after", 5, NULL);
		if (after != NULL && after->type == jbvString)
		{
			/* a jsonb string is not NUL-terminated */
			int			len = Min(after->val.string.len, (int) sizeof(w->after) - 1);

			memcpy(w->after, after->val.string.val, len);
			w->after[len] = '\0';
			w->last_created = jsonb_int_member(v.val.binary.data, "last", ws->top);
		}
	}
	return true;
}

/*
 * The first round when there is no stored cursor (or a bare id from an older
 * version): n equal spans of created from ws->base to ws->top.  floor bounds
 * the oldest window below (sync_from), 0 for none.  Call it in ws->cxt.
 */
void
stripe_windows_first(BfWindows *ws, char *cursor, int n, int64 floor, const char *query)
{
	int64		lo = ws->base;

	/* a list without created filters is one window, as is an odd range */
	if (!ws->ranged || lo <= 0 || lo >= ws->top || cursor != NULL)
		n = 1;

	/*
	 * Equal spans of time.  The oldest window stays open below (unless
	 * sync_from bounds it) and the newest open above, so an object outside
	 * the expected range is still listed.  Newest first: most accounts have
	 * most of their objects late in their life, and the windows that find
	 * some are the ones whose pages get split.
	 */
	for (int i = n - 1; i >= 0; i--)
	{
		BfWindow   *w = stripe_windows_add(ws, i == 0 ? floor : lo + (ws->top - lo) * i / n,
										   i == n - 1 ? 0 : lo + (ws->top - lo) * (i + 1) / n);

		strlcpy(w->query, query, sizeof(w->query));
		/* a bare id: the cursor of the one window of an older version */
		if (cursor != NULL)
		{
			strlcpy(w->after, cursor, sizeof(w->after));
			w->last_created = ws->top;
		}
	}
}

/* the created range a window has left: [window_lo, window_top) */
int64
stripe_window_top(BfWindows *ws, BfWindow *w)
{
	return w->after[0] ? w->last_created : (w->hi ? w->hi : ws->top);
}

int64
stripe_window_lo(BfWindows *ws, BfWindow *w)
{
	return w->lo ? w->lo : ws->base;
}

/* the pages a window has left, in quarters, at the density its last page showed */
int64
stripe_window_quarters(BfWindows *ws, BfWindow *w)
{
	if (w->done || w->span <= 0)
		return 0;
	return Max(stripe_window_top(ws, w) - stripe_window_lo(ws, w), 0) * 4 / w->span;
}

bool
stripe_windows_all_done(BfWindows *ws)
{
	for (int i = 0; i < ws->n; i++)
		if (!ws->w[i].done)
			return false;
	return true;
}

/*
 * Carves a chunk off a window so that a free request slot has work.  The
 * window keeps its cursor and about CHUNK_PAGES pages of created time below
 * it (at the density its last page showed; half of what is left when that is
 * less, so that the last windows share out too); a new window takes the rest
 * of the range below.  That new window inherits the density, so it can be
 * carved in turn at once and the concurrency ramps up within one round trip.
 * Time alone would not do: objects are often bunched in a small part of the
 * account's life, and halving empty years costs a request per half.  depth
 * bounds how far an unmeasured chain can run past the data (to
 * ws->maxdepth), since the chunks past its end come back empty; a window
 * bounded below and of ws->deep_quarters or less is carved past it all the
 * same (a few empty pages at most), so that the last windows of a backfill
 * do not end it with a chain of round trips of their own.
 *
 * A page of the carved window already in flight may bring rows of the range
 * given away; the backfill drops them.  Returns the new window, or NULL if
 * nothing is worth carving.
 */
BfWindow *
stripe_windows_split(BfWindows *ws)
{
	int			best = -1;
	int64		best_pages = 4;		/* in quarters: 1.25 pages or more */
	int64		mid;
	int64		old_lo;
	BfWindow   *w;
	BfWindow   *nw;

	if (!ws->ranged)
		return NULL;
	for (int i = 0; i < ws->n; i++)
	{
		BfWindow   *c = &ws->w[i];
		int64		pages;

		/* in quarters: a window of 1.5 pages is two round trips, worth sharing */
		pages = stripe_window_quarters(ws, c);
		if (c->depth >= Max(ws->maxdepth, 1) && !(c->lo != 0 && pages <= ws->deep_quarters))
			continue;
		if (pages > best_pages)
		{
			best = i;
			best_pages = pages;
		}
	}
	if (best < 0)
		return NULL;
	w = &ws->w[best];
	if (ws->chunk_quarters > 0)
		mid = stripe_window_top(ws, w) - Min(ws->chunk_quarters, Max(best_pages / 2, 4)) * w->span / 4;
	else
		mid = stripe_window_top(ws, w) - Min(CHUNK_PAGES, Max(best_pages / 8, 1)) * w->span;
	old_lo = w->lo;
	w->lo = mid;
	/* stripe_windows_add may move the array */
	nw = stripe_windows_add(ws, old_lo, mid);
	w = &ws->w[best];
	nw->span = w->span;
	nw->depth = w->depth + 1;
	memcpy(nw->query, w->query, sizeof(nw->query));
	return nw;
}

/*
 * A page of the window arrived, of which the first nkeep rows are the
 * window's: its cursor and density move on, and it is done when the page was
 * its last.
 */
void
stripe_window_advance(BfWindow *w, StripePage *page, int nkeep, int id_slot, int created_slot)
{
	const char *why;
	char	   *id;
	int64		newest;
	int64		diff;

	/* its last page, or rows below the window: the window is done */
	if (!page->has_more || nkeep < page->nrows)
	{
		w->done = true;
		return;
	}
	/* a page that cannot be followed would be asked for again, forever */
	id = stripe_page_next_cursor(page, id_slot, w->after[0] ? w->after : NULL, &why);
	if (id == NULL || strlen(id) >= sizeof(w->after))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("Stripe's list cannot be followed past this page: %s",
						id == NULL ? why : "its last id is too long"),
				 errdetail("The page says it has more, but gives no new cursor to ask for it.")));
	strlcpy(w->after, id, sizeof(w->after));
	if (created_slot < 0 || !stripe_span_int64(&page->rows[nkeep - 1].fields[created_slot], &w->last_created))
		w->last_created = 0;
	/* a full page measures how much created time a page covers here */
	if (created_slot >= 0 && stripe_span_int64(&page->rows[0].fields[created_slot], &newest) &&
		!pg_sub_s64_overflow(newest, w->last_created, &diff) && diff >= 0 &&
		diff < PG_INT64_MAX / STRIPE_PAGE_SIZE)
	{
		w->span = Max(diff * STRIPE_PAGE_SIZE / nkeep, 1);
		w->depth = 0;
	}
}
