/*-------------------------------------------------------------------------
 * sync_reread.c
 *		An event's object read again at the source's API version.
 *
 * Stripe renders an event's data.object in the API version in force when the
 * event was created (the event's api_version: the account's default version
 * then), not in the version a request asks for.  A field that moved between
 * the two would reach the local table as a NULL column, or as another shape
 * in attrs.  Such an object is read again (GET /v1/<path>/<id>) at the
 * source's version: once per object and sync, the objects of a page of
 * events together, up to stripe_sync.max_concurrent_requests at a time,
 * outside any transaction.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "events.h"
#include "json_page.h"
#include "text.h"

struct Rereads
{
	SyncRun    *run;
	MemoryContext cxt;			/* the entries', for the whole events step */
	HTAB	   *objects;		/* RereadEntry by key */
	List	   *queue;			/* RereadEntry to fetch */
	MemoryContext page_cxt;		/* the objects fetched, until applied */
};

/* a request of the stream: its PageCheck first, for stripe_check_page */
typedef struct RereadReq
{
	PageCheck	pc;
	RereadEntry *r;
} RereadReq;

Rereads *
stripe_rereads_create(SyncRun *run, MemoryContext cxt)
{
	Rereads    *rr = MemoryContextAllocZero(cxt, sizeof(Rereads));
	HASHCTL		ctl;

	rr->run = run;
	rr->cxt = cxt;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = REREAD_KEY_LEN;
	ctl.entrysize = sizeof(RereadEntry);
	ctl.hcxt = cxt;
	rr->objects = hash_create("stripe_sync rereads", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	return rr;
}

/* the key of an object: its table and id; false when the id is too long to be Stripe's */
static bool
reread_key(LocalTable *lt, const char *id, char *key)
{
	memset(key, 0, REREAD_KEY_LEN);
	return snprintf(key, REREAD_KEY_LEN, "%s/%s", lt->def->table, id) < REREAD_KEY_LEN;
}

/* The entry of an object of a table Stripe can retrieve, or NULL when it has none. */
RereadEntry *
stripe_rereads_get(Rereads *rr, LocalTable *lt, const char *id)
{
	char		key[REREAD_KEY_LEN];

	if (!reread_key(lt, id, key))
		return NULL;
	return hash_search(rr->objects, key, HASH_FIND, NULL);
}

/*
 * Asks for an object to be read again, unless it was in this sync; false when
 * it cannot be (Stripe has no retrieve for its object).
 */
bool
stripe_rereads_want(Rereads *rr, LocalTable *lt, const char *id)
{
	char		key[REREAD_KEY_LEN];
	RereadEntry *r;
	bool		found;

	if (lt->def == NULL || lt->def->no_retrieve || !reread_key(lt, id, key))
		return false;
	r = hash_search(rr->objects, key, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(rr->cxt);

		r->state = REREAD_QUEUED;
		r->lt = lt;
		r->id = pstrdup(id);
		r->row = NULL;
		r->why = NULL;
		rr->queue = lappend(rr->queue, r);
		MemoryContextSwitchTo(old);
	}
	return true;
}

bool
stripe_rereads_pending(Rereads *rr)
{
	return rr->queue != NIL;
}

static bool
reread_feed(void *arg, StripeManyReq *req)
{
	Rereads    *rr = arg;

	while (rr->queue != NIL)
	{
		RereadEntry *r = linitial(rr->queue);
		char	   *segment = stripe_path_segment(r->id);
		RereadReq  *q;
		MemoryContext old;

		rr->queue = list_delete_first(rr->queue);
		if (segment == NULL)
		{
			r->state = REREAD_GONE; /* an id no object has ("", ".", "..") */
			continue;
		}
		req->cxt = AllocSetContextCreate(rr->page_cxt, "stripe_sync reread", ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(req->cxt);
		q = palloc0(sizeof(RereadReq));
		q->r = r;
		q->pc.fs = r->lt->rc->fs;
		q->pc.page = palloc0(sizeof(StripePage));
		q->pc.is_list = false;
		req->path = psprintf("/v1/%s/%s", r->lt->def->path, segment);
		req->check = stripe_check_page;
		req->check_arg = q;
		/* Stripe refusing one object (gone, or a permission) is that object's */
		req->soft = true;
		MemoryContextSwitchTo(old);
		return true;
	}
	return false;
}

/* an object came, or Stripe refused it: its entry says which (its memory lives with the page) */
static void
reread_done(void *arg, StripeManyReq *req)
{
	Rereads    *rr = arg;
	RereadReq  *q = req->check_arg;
	RereadEntry *r = q->r;

	if (req->error != NULL)
	{
		ErrorData  *e = req->error;

		if (req->refusal.status == 404)
			r->state = REREAD_GONE;
		else
		{
			r->state = REREAD_FAILED;
			r->why = MemoryContextStrdup(rr->cxt, e->detail ? psprintf("%s: %s", e->message, e->detail)
										 : e->message);
		}
		return;
	}
	if (q->pc.page->nrows < 1 || q->pc.page->rows[0].deleted)
	{
		r->state = REREAD_GONE;
		return;
	}
	r->state = REREAD_FOUND;
	r->row = &q->pc.page->rows[0];
	/* as a backfill page: at least as new as the second before it was asked for */
	r->observed = time_t_to_timestamptz(timestamptz_to_time_t(req->sent) - 1);
}

/*
 * Reads the objects asked for, together; call it outside a transaction.  The
 * objects found live in page_cxt until it is reset.
 */
void
stripe_rereads_fetch(Rereads *rr, MemoryContext page_cxt)
{
	MemoryContext old = MemoryContextSwitchTo(page_cxt);

	rr->page_cxt = page_cxt;
	stripe_request_stream(rr->run->conn, reread_feed, reread_done, rr, &rr->run->stats);
	MemoryContextSwitchTo(old);
}
