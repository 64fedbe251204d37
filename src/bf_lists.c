/*-------------------------------------------------------------------------
 * bf_lists.c
 *		The lists a backfill reads for an object (see "list" in bf_windows.h):
 *		the catalogue's lists that together hold every object (active and
 *		inactive prices), and, for the objects Stripe lists per test clock
 *		(customers, subscriptions), the same lists per clock of the account.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "backfill.h"
#include "text.h"

/* the listing of an account's test clocks, page after page */
typedef struct ClockList
{
	MemoryContext cxt;
	List	   *ids;
	char	   *after;
	bool		more;
	bool		busy;
	char	   *error;
} ClockList;


static bool
clocks_feed(void *arg, StripeManyReq *req)
{
	ClockList  *cl = arg;

	if (cl->busy || !cl->more)
		return false;
	req->cxt = AllocSetContextCreate(cl->cxt, "stripe_sync test clocks", ALLOCSET_SMALL_SIZES);
	req->path = MemoryContextStrdup(req->cxt,
									psprintf("/v1/test_helpers/test_clocks?limit=%d%s%s",
											 STRIPE_PAGE_SIZE, cl->after ? "&starting_after=" : "",
											 cl->after ? stripe_urlencode(cl->after) : ""));
	/* a key that may not list them (a restricted one) fails this alone */
	req->soft = true;
	cl->busy = true;
	return true;
}

static void
clocks_done(void *arg, StripeManyReq *req)
{
	ClockList  *cl = arg;
	MemoryContext old = MemoryContextSwitchTo(cl->cxt);
	Jsonb	   *page;
	JsonbValue *v;

	cl->busy = false;
	cl->more = false;
	if (req->error != NULL)
		cl->error = pstrdup(req->error->message);
	else
	{
		page = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req->resp.body)));
		v = getKeyJsonValueFromContainer(&page->root, "data", 4, NULL);
		if (v != NULL && v->type == jbvBinary)
		{
			JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
			JsonbValue	e;
			JsonbIteratorToken tok;

			while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
			{
				JsonbValue *id;

				if (tok != WJB_ELEM || e.type != jbvBinary)
					continue;
				id = getKeyJsonValueFromContainer(e.val.binary.data, "id", 2, NULL);
				if (id != NULL && id->type == jbvString && id->val.string.len < 100)
					cl->ids = lappend(cl->ids, pnstrdup(id->val.string.val, id->val.string.len));
			}
		}
		v = getKeyJsonValueFromContainer(&page->root, "has_more", 8, NULL);
		/* a page that does not move the cursor on ends the listing */
		if (v != NULL && v->type == jbvBool && v->val.boolean && cl->ids != NIL &&
			(cl->after == NULL || strcmp(cl->after, llast(cl->ids)) != 0))
		{
			cl->after = llast(cl->ids);
			cl->more = list_length(cl->ids) < 10000;
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(req->cxt);
}

/*
 * The test clocks of the account, when the key is a test key and an object of
 * the set is listed per clock: Stripe leaves customers and subscriptions on a
 * test clock out of their lists unless the list names the clock.  Live mode
 * has no test clocks.  A key that may not list them leaves them out, said once.
 */
List *
stripe_backfill_test_clocks(SyncRun *run, List *pending, MemoryContext cxt)
{
	ClockList	cl = {.cxt = cxt, .more = true};
	const char *key = run->conn->api_key;
	bool		wanted = false;
	ListCell   *lc;

	foreach(lc, pending)
		if (((BfPending *) lfirst(lc))->lt->def != NULL &&
			((BfPending *) lfirst(lc))->lt->def->test_clocks)
			wanted = true;
	if (!wanted || strlen(key) < 8 || strncmp(key + 2, "_test_", 6) != 0)
		return NIL;
	stripe_request_stream(run->conn, clocks_feed, clocks_done, &cl, &run->stats);
	if (cl.error != NULL)
		ereport(run->own ? LOG : WARNING,
				(errmsg("stripe_sync: source \"%s\": the test clocks could not be listed; customers and subscriptions on test clocks are left out",
						run->src.name),
				 errdetail("%s", cl.error)));
	return cl.ids;
}

/*
 * The lists that together hold every object of the backfill: the catalogue's
 * (one, or active and inactive prices), and for objects Stripe lists per test
 * clock, each of those again per clock.
 */
List *
stripe_backfill_lists(Backfill *bf, List *clocks)
{
	List	   *all = stripe_list_all_queries(bf->lt->def);
	List	   *out = list_copy(all);
	ListCell   *lc,
			   *c;

	if (bf->lt->def != NULL && bf->lt->def->test_clocks)
		foreach(c, clocks)
			foreach(lc, all)
				out = lappend(out, psprintf("%s&test_clock=%s", (char *) lfirst(lc),
											stripe_urlencode(lfirst(c))));
	return out;
}

/*
 * A cursor of 0.1 names no list: its windows are the first list's, and every
 * other list starts with one window of the whole range.
 */
void
stripe_backfill_add_lists(Backfill *bf, List *lists, int64 floor)
{
	for (int i = 0; i < bf->win.n; i++)
		strlcpy(bf->win.w[i].query, linitial(lists), sizeof(bf->win.w[i].query));
	for (int i = 1; i < list_length(lists); i++)
		stripe_windows_first(&bf->win, NULL, 1, floor, list_nth(lists, i));
	bf->win.unlisted = false;
}
