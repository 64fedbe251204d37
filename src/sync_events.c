/*-------------------------------------------------------------------------
 * sync_events.c
 *		A sync's incremental step: read /v1/events since the source's cursor
 *		(re-reading a short overlap, whose ids already applied are dropped),
 *		then apply each event's object oldest first, with the cursor moving
 *		in the same transaction as every batch.
 *
 * Stripe lists events newest first and can only be read that way, so the
 * events are first spooled to a temporary file a page at a time (fetch),
 * then read back page by page from the last (order), each page's events in
 * reverse, and applied (apply), a page in a transaction: each table's
 * objects in one statement, every object at its newest state in the page.
 * Memory holds one page, however many events a long gap brings.  An event
 * whose object is rendered in another API version than the source's has its
 * object read again (sync_reread.c); one that changes no local table is
 * skipped, and counted.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/buffile.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "children.h"
#include "events.h"
#include "json_page.h"
#include "xact.h"

/* re-read this much before the cursor; applied ids are dropped */
#define EVENT_OVERLAP_SECS		300
#define EVENT_ID_MAX			(NAMEDATALEN * 2)

/* one event as spooled and read back */
typedef struct EventRef
{
	int64		created;
	char	   *id;
	char	   *type;
	char	   *api_version;	/* the version data.object is rendered in; "" if none */
	char	   *object;			/* data.object's JSON text, NUL-terminated */
	int			object_len;
} EventRef;

/* the events fetched, in Stripe's order, one record per event */
typedef struct EventSpool
{
	BufFile    *file;
	int			npages;
	int			cap;
	off_t	   *page_at;		/* where each page's records start */
	int		   *page_count;		/* and how many it has */
	int64		nevents;
	int64		skipped;		/* events that change nothing here, or malformed */
} EventSpool;

/*
 * An object's change in the open batch: its newest state, written with its
 * table's others, and a deletion that came after it without a state.
 */
typedef struct PendingObject
{
	char		key[REREAD_KEY_LEN];	/* table/id */
	LocalTable *lt;
	char	   *id;
	StripeRow  *row;			/* the newest state, or NULL */
	int64		row_at;			/* its event's time */
	bool		row_deletes;	/* its event deleted the object, leaving this state */
	bool		marked;			/* a later deletion event, without state */
	int64		mark_at;
} PendingObject;

/* what applying keeps across batches */
typedef struct Applier
{
	SyncRun    *run;
	bool		webhook;		/* one event of a webhook: no overlap, the cursor stays */
	HTAB	   *seen;			/* event ids applied before, in the overlap */
	HTAB	   *mapped;			/* event types the outbox takes, or NULL */
	StripeFieldSet *ofs;		/* an event object's "object", "id" and "created" */
	Rereads    *rereads;		/* objects of events in another API version */
	MemoryContext batch_cxt;	/* the open batch's, reset after it */
	int64		cursor;
	/* the open batch (in batch_cxt): its event ids, outbox rows and objects */
	int			n;
	Datum	   *ids,
			   *created;
	int			nob;
	Datum	   *ob_ids,
			   *ob_types,
			   *ob_times,
			   *ob_objects;
	HTAB	   *pending;		/* PendingObject by key */
	PendingObject **order;		/* in the order the batch first changed them */
	int			npending;
} Applier;

static char *
events_path(SyncRun *run, const char *after)
{
	return psprintf("/v1/events?limit=%d&created%%5Bgte%%5D=" INT64_FORMAT "%s%s",
					STRIPE_PAGE_SIZE, run->src.events_cursor - EVENT_OVERLAP_SECS,
					after[0] ? "&starting_after=" : "", after);
}

/*
 * The first free slot the run's last backfills have no page for asks for the
 * first page of events, which the events step would otherwise ask for alone,
 * one round trip after the backfill.  Asking early loses nothing: the cursor
 * only moves up to the events applied, so what happens after this request is
 * read by the next sync, and observed_at orders these events and the pages.
 */
bool
stripe_events_feed_first(SyncRun *run, MemoryContext parent, StripeManyReq *req)
{
	PageCheck  *pc;
	StripeFieldSet *fs;
	MemoryContext old;

	if (run->events_early)
		return false;
	req->cxt = AllocSetContextCreate(parent, "stripe_sync events page", ALLOCSET_DEFAULT_SIZES);
	req->tag = -1;
	old = MemoryContextSwitchTo(req->cxt);
	fs = stripe_fieldset_create(1);
	stripe_fieldset_add(fs, "id", 0);
	stripe_fieldset_finish(fs);
	pc = palloc0(sizeof(PageCheck));
	pc->fs = fs;
	pc->page = palloc0(sizeof(StripePage));
	pc->is_list = true;
	req->path = events_path(run, "");
	req->check = stripe_check_page;
	req->check_arg = pc;
	MemoryContextSwitchTo(old);
	run->events_early = true;
	return true;
}

/* the events' first page came: kept for the events step, which parses the body in place */
void
stripe_events_first_done(SyncRun *run, StripeManyReq *req)
{
	run->events_page = MemoryContextAlloc(run->cxt, req->resp.len + 1);
	memcpy(run->events_page, req->resp.body, req->resp.len + 1);
	run->events_len = req->resp.len;
	MemoryContextDelete(req->cxt);
}

/* ---------- fetch: every event since the cursor, spooled in Stripe's order ---------- */

static void
spool_write_str(BufFile *f, const char *s, int32 len)
{
	BufFileWrite(f, &len, sizeof(len));
	BufFileWrite(f, (void *) s, len);
}

static bool
is_string(StripeSpan *span)
{
	return span->start != NULL && span->len >= 2 && span->start[0] == '"';
}

/* A page's events go to the spool. */
static void
spool_page(EventSpool *sp, StripePage *page)
{
	StripeFieldSet *dfs = stripe_fieldset_create(1);
	int			fileno;
	int			count = 0;

	stripe_fieldset_add(dfs, "object", 0);
	stripe_fieldset_finish(dfs);
	if (sp->npages == sp->cap)
	{
		sp->cap = Max(sp->cap * 2, 64);
		sp->page_at = repalloc_huge(sp->page_at, sizeof(off_t) * sp->cap);
		sp->page_count = repalloc_huge(sp->page_count, sizeof(int) * sp->cap);
	}
	BufFileTell(sp->file, &fileno, &sp->page_at[sp->npages]);
	for (int i = 0; i < page->nrows; i++)
	{
		StripeRow  *r = &page->rows[i];
		StripePage	data;
		const char *why;
		char	   *id,
				   *type,
				   *version;
		int64		created;

		/*
		 * An event without a string id and type, a time of this world and an
		 * object changes nothing here; nor does one whose text is not UTF-8
		 * (it would reach the tables).
		 */
		if (!is_string(&r->fields[0]) || !is_string(&r->fields[2]) ||
			!stripe_span_int64(&r->fields[1], &created) || created < 0 || created > STRIPE_MAX_EVENT_TIME ||
			r->fields[3].start == NULL ||
			!stripe_parse_page(r->fields[3].start, r->fields[3].len, false, dfs, &data, &why) ||
			data.rows[0].fields[0].start == NULL ||
			!pg_verifymbstr(r->object.start, r->object.len, true))
		{
			sp->skipped++;
			continue;
		}
		id = stripe_span_text(&r->fields[0]);
		type = stripe_span_text(&r->fields[2]);
		version = is_string(&r->fields[4]) ? stripe_span_text(&r->fields[4]) : "";
		BufFileWrite(sp->file, &created, sizeof(created));
		spool_write_str(sp->file, id, strlen(id));
		spool_write_str(sp->file, type, strlen(type));
		spool_write_str(sp->file, version, strlen(version));
		spool_write_str(sp->file, data.rows[0].fields[0].start, data.rows[0].fields[0].len);
		count++;
	}
	sp->page_count[sp->npages++] = count;
	sp->nevents += count;
}

/*
 * Reads every event since the cursor into the spool, a page at a time (no
 * transaction).  The pages follow starting_after, which Stripe refuses (400
 * resource_missing) once it no longer has the event named: events are kept
 * 30 days and the cursor is never older than 29 (a re-list reads from 28), so
 * that cannot happen while a sync pages.  Should it, the run fails, and the
 * next reads again from the committed cursor: no cursor id outlives a run.
 */
static void
events_fetch(SyncRun *run, EventSpool *sp)
{
	MemoryContext page_cxt = AllocSetContextCreate(CurrentMemoryContext, "stripe_sync events page",
												   ALLOCSET_DEFAULT_SIZES);
	StripeFieldSet *efs = stripe_fieldset_create(5);
	char		last_id[256] = "";

	stripe_fieldset_add(efs, "id", 0);
	stripe_fieldset_add(efs, "created", 1);
	stripe_fieldset_add(efs, "type", 2);
	stripe_fieldset_add(efs, "data", 3);
	stripe_fieldset_add(efs, "api_version", 4);
	stripe_fieldset_finish(efs);
	/* the page index lives with the spool, not with a page */
	sp->page_at = palloc(sizeof(off_t));
	sp->page_count = palloc(sizeof(int));
	sp->file = BufFileCreateTemp(true);
	for (;;)
	{
		StripePage	page;
		PageCheck	pc = {efs, &page, true};
		StripeResponse resp;
		const char *why;
		MemoryContext old = MemoryContextSwitchTo(page_cxt);
		char	   *last;
		bool		more;

		/* the first page may have come with the backfill's tail */
		if (run->events_page == NULL ||
			!stripe_parse_page(run->events_page, run->events_len, true, efs, &page, &why))
			stripe_request(run->conn, "GET", events_path(run, last_id), NULL, NULL, false,
						   stripe_check_page, &pc, &resp, &run->stats);
		run->events_page = NULL;
		spool_page(sp, &page);
		more = page.has_more;
		if (more)
		{
			/* a page that cannot be followed would be asked for again, forever */
			last = stripe_page_next_cursor(&page, 0, last_id[0] ? last_id : NULL, &why);
			if (last == NULL || strlen(last) >= sizeof(last_id))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("Stripe's list of events cannot be followed past this page: %s",
								last == NULL ? why : "its last id is too long")));
			strlcpy(last_id, last, sizeof(last_id));
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(page_cxt);
		CHECK_FOR_INTERRUPTS();
		if (!more)
			break;
	}
	MemoryContextDelete(page_cxt);
}

/* ---------- order: the spool read back, oldest first ---------- */

static char *
spool_read_str(BufFile *f, int32 *len)
{
	char	   *s;

	if (BufFileRead(f, len, sizeof(*len)) != sizeof(*len))
		elog(ERROR, "stripe_sync: could not read the events spool");
	s = palloc(*len + 1);
	if (BufFileRead(f, s, *len) != (size_t) *len)
		elog(ERROR, "stripe_sync: could not read the events spool");
	s[*len] = '\0';
	return s;
}

/*
 * Page p of the spool, its events reversed: Stripe lists newest first, so
 * the last page read back first, each reversed, is oldest first (events of
 * one second keep Stripe's order, reversed).
 */
static EventRef *
spool_read_page(EventSpool *sp, int p)
{
	int			n = sp->page_count[p];
	EventRef   *ev = palloc(sizeof(EventRef) * Max(n, 1));

	if (BufFileSeek(sp->file, 0, sp->page_at[p], SEEK_SET) != 0)
		elog(ERROR, "stripe_sync: could not seek in the events spool");
	for (int i = n - 1; i >= 0; i--)
	{
		int32		len;

		if (BufFileRead(sp->file, &ev[i].created, sizeof(int64)) != sizeof(int64))
			elog(ERROR, "stripe_sync: could not read the events spool");
		ev[i].id = spool_read_str(sp->file, &len);
		ev[i].type = spool_read_str(sp->file, &len);
		ev[i].api_version = spool_read_str(sp->file, &len);
		ev[i].object = spool_read_str(sp->file, &ev[i].object_len);
	}
	return ev;
}

/* ---------- apply ---------- */

static HTAB *
text_set(const char *name, MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = EVENT_ID_MAX;
	ctl.entrysize = EVENT_ID_MAX;
	ctl.hcxt = cxt;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

static void
text_set_add_result(HTAB *set)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char		key[EVENT_ID_MAX] = {0};

		strlcpy(key, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), sizeof(key));
		hash_search(set, key, HASH_ENTER, NULL);
	}
}

/* the ids applied in the overlap, and the types the outbox takes (in a transaction) */
static void
applier_load(Applier *ap, MemoryContext cxt)
{
	SyncRun    *run = ap->run;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {CStringGetTextDatum(run->src.name),
	Int64GetDatum(run->src.events_cursor - EVENT_OVERLAP_SECS)};

	ap->seen = text_set("stripe_sync applied events", cxt);
	if (!ap->webhook)
	{
		stripe_spi("SELECT event_id FROM stripe_sync.applied_events WHERE source = $1 AND created >= $2",
				   2, types, values, NULL, SPI_OK_SELECT);
		text_set_add_result(ap->seen);
	}
	ap->mapped = NULL;
	if (run->src.destination != NULL)
	{
		ap->mapped = text_set("stripe_sync event map", cxt);
		stripe_spi("SELECT stripe_event FROM stripe_sync.event_map WHERE enabled", 0, NULL, NULL,
				   NULL, SPI_OK_SELECT);
		text_set_add_result(ap->mapped);
	}
}

/* the batch's applied ids, outbox rows and cursor commit together */
static void
applier_flush(Applier *ap)
{
	SyncRun    *run = ap->run;
	Oid			types[4] = {TEXTOID, TEXTARRAYOID, INT8ARRAYOID, INT8OID};
	Datum		values[4];

	if (ap->n == 0)
		return;
	if (ap->nob > 0)
		stripe_outbox_add(run, PointerGetDatum(construct_array(ap->ob_ids, ap->nob, TEXTOID, -1, false, TYPALIGN_INT)),
						  PointerGetDatum(construct_array(ap->ob_types, ap->nob, TEXTOID, -1, false, TYPALIGN_INT)),
						  ap->ob_times, ap->ob_objects, ap->nob);
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = PointerGetDatum(construct_array(ap->ids, ap->n, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(ap->created, ap->n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = Int64GetDatum(ap->cursor);
	stripe_spi("INSERT INTO stripe_sync.applied_events (source, event_id, created) "
			   "SELECT $1, e.id, e.created FROM unnest($2, $3) e(id, created) ON CONFLICT DO NOTHING",
			   3, types, values, NULL, SPI_OK_INSERT);
	/*
	 * A worker's cursor moves with each batch it commits.  sync_now runs in
	 * one transaction, all or nothing: its cursor moves once, at the end,
	 * since each UPDATE would leave one more version of the source's row for
	 * every applied id's foreign key check to walk.  A webhook's event
	 * leaves it where it is.
	 */
	if (run->own && !ap->webhook)
		stripe_spi("UPDATE stripe_sync.sources SET events_cursor = $4 WHERE name = $1",
				   4, types, values, NULL, SPI_OK_UPDATE);
	ap->n = 0;
	ap->nob = 0;
}

/*
 * Stripe's *.deleted events of the objects a source can sync (catalog_data.c),
 * each checked against Stripe's list of event types: whether the object is
 * gone, or lives on in a final state.  A subscription that ends
 * ("customer.subscription.deleted: occurs whenever a customer's subscription
 * ends") is canceled, and stays listed (status=all) and retrievable: it is
 * applied as an update, so that it looks like the canceled subscriptions a
 * backfill lists.  The other catalogued objects have no *.deleted event; one
 * not listed here is taken for a deletion, as its name says.
 */
static const struct
{
	const char *type;
	bool		gone;
}			deleted_events[] =
{
	{"coupon.deleted", true},
	{"customer.deleted", true},
	{"customer.subscription.deleted", false},
	{"invoice.deleted", true},	/* a draft invoice deleted */
	{"invoiceitem.deleted", true},
	{"payment_method.detached", true},	/* no longer the customer's: gone from its list */
	{"plan.deleted", true},
	{"price.deleted", true},
	{"product.deleted", true},
};

/* Stripe's events whose object is a preview, no object of the account */
static const char *const preview_events[] = {
	"invoice.upcoming",			/* the next invoice of a subscription; it has no id */
};

/* whether the event deletes its object */
static bool
event_deletes(const char *type)
{
	size_t		tl = strlen(type);

	for (size_t i = 0; i < lengthof(deleted_events); i++)
		if (strcmp(type, deleted_events[i].type) == 0)
			return deleted_events[i].gone;
	return tl > 8 && strcmp(type + tl - 8, ".deleted") == 0;
}

static bool
event_is_preview(const char *type)
{
	for (size_t i = 0; i < lengthof(preview_events); i++)
		if (strcmp(type, preview_events[i]) == 0)
			return true;
	return false;
}

/*
 * The local table of an event's object, with its id (NULL when it has none)
 * and created (0 when absent), parsed with ap->ofs; NULL when the object is
 * a preview, or of a type the source does not sync.
 */
static LocalTable *
event_target(Applier *ap, EventRef *e, char **id, int64 *created)
{
	StripePage	obj;
	const char *why;
	LocalTable *lt;

	*id = NULL;
	*created = 0;
	if (event_is_preview(e->type) ||
		!stripe_parse_page(e->object, e->object_len, false, ap->ofs, &obj, &why) ||
		!is_string(&obj.rows[0].fields[0]))
		return NULL;
	lt = stripe_table_find(ap->run, stripe_span_text(&obj.rows[0].fields[0]), false);
	if (lt == NULL)
		return NULL;
	if (is_string(&obj.rows[0].fields[1]))
		*id = stripe_span_text(&obj.rows[0].fields[1]);
	if (!stripe_span_int64(&obj.rows[0].fields[2], created))
		*created = 0;
	return lt;
}

/* an object created before sync_from is not this source's */
static bool
before_sync_from(Applier *ap, int64 created)
{
	return ap->run->src.has_sync_from && created != 0 && created < ap->run->src.sync_from;
}

/* whether the event's object is rendered in another API version than the source's */
static bool
other_version(Applier *ap, EventRef *e)
{
	return strcmp(e->api_version, ap->run->conn->api_version) != 0;
}

/* the row of a deleted object keeps its last full state, marked deleted */
static void
mark_deleted(SyncRun *run, LocalTable *lt, const char *id, TimestampTz at)
{
	Oid			dt[4] = {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		dv[4] = {TimestampTzGetDatum(at), TimestampTzGetDatum(GetCurrentTimestamp()),
	CStringGetTextDatum(id), CStringGetTextDatum(run->src.account_id)};

	/* by the whole key: one shard's row under Citus */
	stripe_run_as_owner(run, true);
	stripe_spi(psprintf("UPDATE %s SET deleted_at = $1, observed_at = $1, synced_at = $2 "
						"WHERE id = $3 AND account_id = $4 AND observed_at <= $1 AND deleted_at IS NULL",
						lt->qualified), 4, dt, dv, NULL, SPI_OK_UPDATE);
	stripe_run_as_owner(run, false);
	stripe_children_mark_deleted(run, lt, id, at);
}

/*
 * The events of page ev in another API version than the source's ask for
 * their objects to be read again; returns whether any is to be read.
 */
static bool
rereads_wanted(Applier *ap, EventRef *ev, int n)
{
	for (int i = 0; i < n; i++)
	{
		EventRef   *e = &ev[i];
		char		key[EVENT_ID_MAX] = {0};
		LocalTable *lt;
		char	   *id;
		int64		created;

		strlcpy(key, e->id, sizeof(key));
		if (!other_version(ap, e) || event_deletes(e->type) ||
			hash_search(ap->seen, key, HASH_FIND, NULL) != NULL)
			continue;
		lt = event_target(ap, e, &id, &created);
		if (lt != NULL && id != NULL && !before_sync_from(ap, created))
			(void) stripe_rereads_want(ap->rereads, lt, id);
	}
	return stripe_rereads_pending(ap->rereads);
}

/*
 * An event in another API version: its object as read again at the source's
 * version (stripe_rereads_fetch), applied once; the later events of the
 * object in the sync are older than that state, which covers them.
 */
static EventFate
apply_reread(Applier *ap, EventRef *e, LocalTable *lt, const char *id)
{
	SyncRun    *run = ap->run;
	RereadEntry *r = stripe_rereads_get(ap->rereads, lt, id);
	char	   *why;

	/* read now, newer than any event of the sync: no batched state overwrites it */
	if (r != NULL && r->state == REREAD_FOUND)
	{
		lt->rows += stripe_upsert_rows(run, lt, r->row, 1, r->observed, 0);
		r->state = REREAD_APPLIED;
		r->row = NULL;
	}
	if (r != NULL && r->state == REREAD_APPLIED)
		return EVENT_APPLIED;
	/* gone at Stripe: its deletion has an event of its own */
	if (r != NULL && r->state == REREAD_GONE)
		return EVENT_SKIPPED;
	/* Stripe refused it (a permission, say): the event changes nothing, and the run says why, once */
	if (r != NULL && r->state == REREAD_FAILED && r->why != NULL)
	{
		why = psprintf("event %s is in API version %s, and %s %s could not be read again at %s: %s",
					   e->id, e->api_version[0] ? e->api_version : "(none)", lt->def->object, id,
					   run->conn->api_version, r->why);
		r->why = NULL;
		ereport(run->own ? LOG : WARNING,
				(errmsg("stripe_sync: source \"%s\": %s", run->src.name, why)));
		if (!stripe_run_object_failed(run, lt->def->table))
		{
			MemoryContext old = MemoryContextSwitchTo(run->cxt);

			run->failed = lappend(run->failed, psprintf("%s: %s", lt->def->table, why));
			MemoryContextSwitchTo(old);
			stripe_state_update(run, lt->def->table, "state = 'error', last_error = $3", why);
		}
	}
	return EVENT_SKIPPED;
}

/*
 * The batch's entry for an object, made on first sight; NULL when its id is
 * too long to be Stripe's (it is then written at once).
 */
static PendingObject *
pending_get(Applier *ap, LocalTable *lt, const char *id)
{
	char		key[REREAD_KEY_LEN];
	PendingObject *po;
	bool		found;

	memset(key, 0, sizeof(key));
	if (snprintf(key, sizeof(key), "%s/%s", lt->def->table, id) >= (int) sizeof(key))
		return NULL;
	po = hash_search(ap->pending, key, HASH_ENTER, &found);
	if (!found)
	{
		po->lt = lt;
		po->id = pstrdup(id);
		po->row = NULL;
		po->marked = false;
		ap->order[ap->npending++] = po;
	}
	return po;
}

/*
 * An event's state of its object.  The batch keeps, per object, what writing
 * its events one by one would leave (an upsert wins over a row observed no
 * later): the state of the newest event, the later of equals.
 */
static void
pending_state(Applier *ap, LocalTable *lt, const char *id, StripeRow *row, int64 at, bool deletes)
{
	PendingObject *po = pending_get(ap, lt, id);
	TimestampTz ts = time_t_to_timestamptz((pg_time_t) at);

	if (po == NULL)
	{
		lt->rows += stripe_upsert_rows(ap->run, lt, row, 1, ts, deletes ? ts : 0);
		return;
	}
	if (po->row != NULL && at < po->row_at)
		return;
	po->row = row;
	po->row_at = at;
	po->row_deletes = deletes;
	/* a deletion no newer than this state is undone by it */
	if (po->marked && at >= po->mark_at)
		po->marked = false;
}

/* A deletion event without the object's state: it marks the row after the batch's state. */
static void
pending_mark(Applier *ap, LocalTable *lt, const char *id, int64 at)
{
	PendingObject *po = pending_get(ap, lt, id);

	if (po == NULL)
	{
		mark_deleted(ap->run, lt, id, time_t_to_timestamptz((pg_time_t) at));
		return;
	}
	if ((po->row != NULL && at < po->row_at) || (po->marked && at < po->mark_at))
		return;
	po->marked = true;
	po->mark_at = at;
}

/*
 * Writes the batch's objects: each table's states in one statement (an
 * object that cannot be stored set aside alone), then the deletions.
 */
static void
pending_write(Applier *ap)
{
	SyncRun    *run = ap->run;
	StripeRow  *rows = palloc(sizeof(StripeRow) * Max(ap->npending, 1));
	TimestampTz *observed = palloc(sizeof(TimestampTz) * Max(ap->npending, 1));
	TimestampTz *deleted = palloc(sizeof(TimestampTz) * Max(ap->npending, 1));
	ListCell   *lc;

	foreach(lc, run->tables)
	{
		LocalTable *lt = lfirst(lc);
		int			n = 0;

		for (int i = 0; i < ap->npending; i++)
		{
			PendingObject *po = ap->order[i];

			if (po->lt != lt || po->row == NULL)
				continue;
			rows[n] = *po->row;
			observed[n] = time_t_to_timestamptz((pg_time_t) po->row_at);
			deleted[n] = po->row_deletes ? observed[n] : 0;
			n++;
		}
		if (n > 0)
			lt->rows += stripe_upsert_rows_at(run, lt, rows, n, observed, deleted);
	}
	for (int i = 0; i < ap->npending; i++)
		if (ap->order[i]->marked)
			mark_deleted(run, ap->order[i]->lt, ap->order[i]->id,
						 time_t_to_timestamptz((pg_time_t) ap->order[i]->mark_at));
}

/*
 * Takes one event's object into the batch for its local table, or says why
 * it changes none: its object is a preview (invoice.upcoming) or has no id,
 * its type is not synced here, Stripe no longer has it; or it is not this
 * source's (created before sync_from), and then its event is not shipped
 * either.
 */
static EventFate
apply_object(Applier *ap, EventRef *e)
{
	StripePage	row;
	const char *why;
	char	   *id;
	int64		created;
	LocalTable *lt = event_target(ap, e, &id, &created);
	bool		deletes = event_deletes(e->type);

	if (lt == NULL || id == NULL)
		return EVENT_SKIPPED;
	if (before_sync_from(ap, created))
		return EVENT_NOT_OURS;
	/* a deletion needs no state; any other change, the object as the source's version has it */
	if (other_version(ap, e) && !deletes)
		return apply_reread(ap, e, lt, id);
	if (!stripe_parse_page(e->object, e->object_len, false, lt->rc->fs, &row, &why))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("event %s carries a malformed object: %s", e->id, why)));
	if (deletes && (row.rows[0].deleted || other_version(ap, e)))
		pending_mark(ap, lt, id, e->created);
	else
		pending_state(ap, lt, id, &row.rows[0], e->created, deletes);
	return EVENT_APPLIED;
}

/* the event's id joins the batch's, and the cursor passes it */
static void
applier_add(Applier *ap, EventRef *e)
{
	ap->ids[ap->n] = CStringGetTextDatum(e->id);
	ap->created[ap->n] = Int64GetDatum(e->created);
	ap->n++;
	ap->cursor = Max(ap->cursor, e->created);
}

/* one event, into the open batch */
static EventFate
apply_event(Applier *ap, EventRef *e)
{
	SyncRun    *run = ap->run;
	char		key[EVENT_ID_MAX] = {0};
	EventFate	fate;

	strlcpy(key, e->id, sizeof(key));
	if (hash_search(ap->seen, key, HASH_FIND, NULL) != NULL)
	{
		/*
		 * Applied before: re-read in the overlap, or delivered by a webhook
		 * (webhook.c) ahead of the poll, whose cursor must pass it then.
		 */
		if (e->created > ap->cursor)
			applier_add(ap, e);
		return EVENT_SKIPPED;
	}
	fate = apply_object(ap, e);
	/* mapped events go to the outbox; older ones are the backfill's history */
	if (fate != EVENT_NOT_OURS && ap->mapped != NULL && e->created >= run->src.history_until &&
		hash_search(ap->mapped, e->type, HASH_FIND, NULL) != NULL)
	{
		ap->ob_ids[ap->nob] = CStringGetTextDatum(e->id);
		ap->ob_types[ap->nob] = CStringGetTextDatum(e->type);
		ap->ob_times[ap->nob] = Int64GetDatum(e->created);
		ap->ob_objects[ap->nob] = PointerGetDatum(cstring_to_text_with_len(e->object, e->object_len));
		ap->nob++;
	}
	applier_add(ap, e);
	if (fate == EVENT_APPLIED)
		run->events_applied++;
	else
		run->events_skipped++;
	return fate;
}

static Applier *
applier_create(SyncRun *run, MemoryContext cxt, bool webhook)
{
	Applier    *ap = palloc0(sizeof(Applier));

	ap->run = run;
	ap->webhook = webhook;
	ap->cursor = run->src.events_cursor;
	ap->ofs = stripe_fieldset_create(3);
	stripe_fieldset_add(ap->ofs, "object", 0);
	stripe_fieldset_add(ap->ofs, "id", 1);
	stripe_fieldset_add(ap->ofs, "created", 2);
	stripe_fieldset_finish(ap->ofs);
	ap->batch_cxt = AllocSetContextCreate(cxt, "stripe_sync events batch", ALLOCSET_DEFAULT_SIZES);
	ap->rereads = stripe_rereads_create(run, cxt);
	stripe_run_begin(run);
	applier_load(ap, cxt);
	stripe_run_commit(run);
	return ap;
}

/*
 * A batch of up to n events opens, in the current memory context, which the
 * caller resets after batch_close.
 */
static void
batch_open(Applier *ap, int n)
{
	HASHCTL		ctl;

	ap->n = ap->nob = ap->npending = 0;
	ap->ids = palloc(sizeof(Datum) * n);
	ap->created = palloc(sizeof(Datum) * n);
	ap->ob_ids = palloc(sizeof(Datum) * n);
	ap->ob_types = palloc(sizeof(Datum) * n);
	ap->ob_times = palloc(sizeof(Datum) * n);
	ap->ob_objects = palloc(sizeof(Datum) * n);
	ap->order = palloc(sizeof(PendingObject *) * n);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = REREAD_KEY_LEN;
	ctl.entrysize = sizeof(PendingObject);
	ctl.hcxt = CurrentMemoryContext;
	ap->pending = hash_create("stripe_sync batch objects", n, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/*
 * The batch's events are applied, in the open transaction: their objects
 * (pending_write), then their ids, outbox rows and the cursor (applier_flush).
 */
static void
batch_close(Applier *ap)
{
	pending_write(ap);
	applier_flush(ap);
	hash_destroy(ap->pending);
	ap->pending = NULL;
}

/* A batch of events, oldest first, applied in the open transaction. */
static void
apply_batch(Applier *ap, EventRef *ev, int n)
{
	batch_open(ap, n);
	for (int i = 0; i < n; i++)
		apply_event(ap, &ev[i]);
	batch_close(ap);
}

/*
 * Applies the spool oldest first, a page of events in a transaction, whose
 * memory is freed after it.  The objects of a page's events in another API
 * version are read first, outside any transaction.
 */
static void
events_apply(SyncRun *run, EventSpool *sp, MemoryContext cxt)
{
	Applier    *ap = applier_create(run, cxt, false);

	for (int p = sp->npages - 1; p >= 0; p--)
	{
		MemoryContext old = MemoryContextSwitchTo(ap->batch_cxt);
		EventRef   *ev = spool_read_page(sp, p);

		if (sp->page_count[p] > 0)
		{
			if (rereads_wanted(ap, ev, sp->page_count[p]))
				stripe_rereads_fetch(ap->rereads, ap->batch_cxt);
			stripe_run_begin(run);
			apply_batch(ap, ev, sp->page_count[p]);
			stripe_run_commit(run);
			stripe_bgw_reload_config();
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(ap->batch_cxt);
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(ap->batch_cxt);
	if (!run->own && ap->cursor != run->src.events_cursor)
	{
		stripe_run_begin(run);
		stripe_set_cursor(run, ap->cursor);
		stripe_run_commit(run);
	}
	run->src.events_cursor = ap->cursor;
}

void
stripe_sync_events(SyncRun *run)
{
	MemoryContext cxt = AllocSetContextCreate(run->cxt, "stripe_sync events", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	EventSpool *sp = palloc0(sizeof(EventSpool));

	PG_TRY();
	{
		Oid			types[2] = {TEXTOID, INT8OID};
		Datum		values[2];

		events_fetch(run, sp);
		events_apply(run, sp, cxt);
		stripe_run_begin(run);
		values[0] = CStringGetTextDatum(run->src.name);
		values[1] = Int64GetDatum(run->src.events_cursor - 2 * EVENT_OVERLAP_SECS);
		stripe_spi("DELETE FROM stripe_sync.applied_events WHERE source = $1 AND created < $2",
				   2, types, values, NULL, SPI_OK_DELETE);
		stripe_run_commit(run);
	}
	PG_FINALLY();
	{
		if (sp->file)
			BufFileClose(sp->file);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/*
 * One event delivered by a webhook (webhook.c), applied as a polled one: its
 * object (read again first when in another API version), its outbox row and
 * its id in applied_events, in one step.  The caller has claimed the id in
 * applied_events, so that a second delivery and the poll drop it; the cursor
 * stays, so that the poll still reads every event before it.  *outbox says
 * whether the event went to the outbox.
 */
EventFate
stripe_events_apply_one(SyncRun *run, const char *id, const char *type, const char *api_version,
						int64 created, char *object, int object_len, bool *outbox)
{
	Applier    *ap = applier_create(run, CurrentMemoryContext, true);
	EventRef	e = {created, pstrdup(id), pstrdup(type), pstrdup(api_version), object, object_len};
	EventFate	fate;

	if (rereads_wanted(ap, &e, 1))
		stripe_rereads_fetch(ap->rereads, ap->batch_cxt);
	stripe_run_begin(run);
	batch_open(ap, 1);
	fate = apply_event(ap, &e);
	*outbox = ap->nob > 0;
	batch_close(ap);
	stripe_run_commit(run);
	MemoryContextDelete(ap->batch_cxt);
	return fate;
}
