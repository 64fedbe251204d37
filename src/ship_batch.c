/*-------------------------------------------------------------------------
 * ship_batch.c
 *		One batch of the shipper (shipper.c): the outbox rows it claims, the
 *		request body they make, how Intempt's answer is judged, and what the
 *		rows keep of it.
 *
 * Several batches of a source may be in flight at once, and Intempt may
 * answer them in any order, or refuse one and take the next.  The events of
 * one Stripe object still arrive in the order they happened, because no two
 * batches in flight carry events of the same object: a claim passes over the
 * rows of an object in flight, and every later row of that object, which
 * stay pending for a later batch.  Within a request the events are grouped
 * by name, the groups in order of first appearance; an object's event that
 * would land in an earlier group than its previous event is held back in the
 * same way.  A claim takes rows in id order up to outbox_batch_size of them
 * and max_bytes of body, whichever comes first.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ship_batch.h"
#include "text.h"
#include "xact.h"

/* how much of a refusing answer an outbox row keeps */
#define MAX_SAVED_RESPONSE	2000
/* {"track":[ and ]} */
#define BODY_FRAME			12

typedef struct ShipObject
{
	char		key[SHIP_OBJECT_KEY];	/* hash key */
	int			group;			/* in a batch: the group of its last event */
} ShipObject;

/* the events of one name: {"name":…,"payload":[ and the events so far */
typedef struct NameGroup
{
	char	   *name;
	StringInfoData buf;
	int			events;
} NameGroup;

typedef struct Claim
{
	ShipBatch  *b;
	HTAB	   *flying;			/* objects of the source's batches in flight */
	HTAB	   *held;			/* objects whose rows this claim passes over */
	int			limit;
	size_t		max_bytes;
	List	   *groups;			/* NameGroup, in order of first appearance */
	int64		first_held;		/* the first row passed over; 0: none */
	int64		last;			/* the last row looked at */
	bool		full;			/* the next row would make the body too large */
} Claim;

HTAB *
stripe_ship_object_set(const char *what, MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = SHIP_OBJECT_KEY;
	ctl.entrysize = sizeof(ShipObject);
	ctl.hcxt = cxt;
	return hash_create(what, 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* the batch's objects join the source's objects in flight, or leave them */
void
stripe_ship_flying(HTAB *flying, ShipBatch *b, bool add)
{
	HASH_SEQ_STATUS seq;
	ShipObject *o;

	hash_seq_init(&seq, b->objects);
	while ((o = hash_seq_search(&seq)) != NULL)
		(void) hash_search(flying, o->key, add ? HASH_ENTER : HASH_REMOVE, NULL);
}

/* the group of name, and its place; NULL (place: the next) when new */
static NameGroup *
group_of(Claim *c, const char *name, int *place)
{
	ListCell   *lc;

	*place = 0;
	foreach(lc, c->groups)
	{
		NameGroup	   *g = lfirst(lc);

		if (strcmp(g->name, name) == 0)
			return g;
		(*place)++;
	}
	return NULL;
}

/*
 * One row, in id order: into the batch, or passed over (held back with its
 * object), or the batch is full (c->full).
 */
static void
claim_row(Claim *c, int64 id, const char *name, const char *object_id,
		  const char *payload, int len)
{
	char		key[SHIP_OBJECT_KEY] = {0};
	ShipBatch  *b = c->b;
	ShipObject *o;
	NameGroup	   *g;
	int			place;
	size_t		add;
	StringInfoData head;

	c->last = id;
	strlcpy(key, object_id, sizeof(key));
	g = group_of(c, name, &place);
	if (hash_search(c->flying, key, HASH_FIND, NULL) != NULL ||
		hash_search(c->held, key, HASH_FIND, NULL) != NULL ||
		((o = hash_search(b->objects, key, HASH_FIND, NULL)) != NULL && place < o->group))
	{
		(void) hash_search(c->held, key, HASH_ENTER, NULL);
		if (c->first_held == 0)
			c->first_held = id;
		return;
	}

	initStringInfo(&head);
	if (g == NULL)
	{
		appendStringInfoString(&head, "{\"name\":");
		escape_json(&head, name);
		appendStringInfoString(&head, ",\"payload\":[");
	}
	add = len + (g == NULL ? head.len + 2 + (c->groups != NIL ? 1 : 0) : 1);
	if (b->n > 0 && b->bytes + add > c->max_bytes)
	{
		c->full = true;
		pfree(head.data);
		return;
	}
	if (g == NULL)
	{
		g = palloc0(sizeof(NameGroup));
		g->name = pstrdup(name);
		g->buf = head;
		c->groups = lappend(c->groups, g);
	}
	else
		pfree(head.data);
	if (g->events++ > 0)
		appendStringInfoChar(&g->buf, ',');
	appendBinaryStringInfo(&g->buf, payload, len);
	b->bytes += add;
	o = hash_search(b->objects, key, HASH_ENTER, NULL);
	o->group = place;
	b->ids[b->n++] = id;
}

/* the next rows after c->last, at most ask; returns how many there were */
static int
claim_rows(Claim *c, const char *source, int ask)
{
	Oid			types[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[3] = {CStringGetTextDatum(source), Int32GetDatum(ask), Int64GetDatum(c->last)};
	int			got;

	stripe_spi("SELECT id, event_name, object_id, payload::text FROM stripe_sync.outbox "
			   "WHERE source = $1 AND state = 'pending' AND id > $3 ORDER BY id LIMIT $2 "
			   "FOR UPDATE SKIP LOCKED", 3, types, values, NULL, SPI_OK_SELECT);
	got = (int) SPI_processed;
	for (int i = 0; i < got && !c->full && c->b->n < c->limit; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		text	   *payload = DatumGetTextPP(SPI_getbinval(tup, td, 4, &isnull));
		char	   *name = SPI_getvalue(tup, td, 2);
		char	   *object_id = SPI_getvalue(tup, td, 3);

		claim_row(c, DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull)), name, object_id,
				  VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
		pfree(name);
		pfree(object_id);
	}
	SPI_freetuptable(SPI_tuptable);
	return got;
}

/* {"track":[{"name":…,"payload":[…]},…]}: the groups in order */
static char *
claim_body(Claim *c)
{
	StringInfoData body;
	ListCell   *lc;

	initStringInfo(&body);
	enlargeStringInfo(&body, (int) c->b->bytes);
	appendStringInfoString(&body, "{\"track\":[");
	foreach(lc, c->groups)
	{
		NameGroup	   *g = lfirst(lc);

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&body, ',');
		appendBinaryStringInfo(&body, g->buf.data, g->buf.len);
		appendStringInfoString(&body, "]}");
		pfree(g->buf.data);
	}
	appendStringInfoString(&body, "]}");
	Assert((size_t) body.len == c->b->bytes);
	return body.data;
}

static Datum
id_array(ShipBatch *b)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(b->n, 1));

	for (int i = 0; i < b->n; i++)
		ids[i] = Int64GetDatum(b->ids[i]);
	return PointerGetDatum(construct_array(ids, b->n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Claims the source's next rows past *after, in id order (state 'sending'),
 * passing over the objects in flight, and moves *after on.  Returns the batch
 * in a context of its own under parent, or NULL when nothing could be had.
 */
ShipBatch *
stripe_ship_claim(const char *source, int64 *after, int limit, size_t max_bytes,
				  HTAB *flying, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "stripe_sync shipper batch",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	ShipBatch  *b = palloc0(sizeof(ShipBatch));
	Claim		c = {0};
	int			scanned = 0;

	limit = Max(limit, 1);
	b->cxt = cxt;
	b->ids = palloc(sizeof(int64) * limit);
	b->objects = stripe_ship_object_set("stripe_sync batch objects", cxt);
	b->bytes = BODY_FRAME;
	c.b = b;
	c.flying = flying;
	c.held = stripe_ship_object_set("stripe_sync held objects", cxt);
	c.limit = limit;
	c.max_bytes = max_bytes;
	c.last = *after;

	stripe_xact_begin(true);
	/*
	 * A claim lost in a crash only means sending again: no need to wait for
	 * the disk.  The claim walks the index in id order from the hint; before
	 * the first ANALYZE the planner would rather sort every pending row.
	 */
	stripe_spi("SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true), "
			   "set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)",
			   0, NULL, NULL, NULL, SPI_OK_SELECT);
	/* rows passed over count too, up to a bound: the objects in flight may hold many */
	while (!c.full && b->n < limit && scanned < Max(4 * limit, 1000))
	{
		int			ask = Max(limit - b->n, 16);
		int			got = claim_rows(&c, source, ask);

		scanned += got;
		if (got < ask)
			break;
	}
	if (b->n > 0)
	{
		Oid			t[1] = {INT8ARRAYOID};
		Datum		v[1] = {id_array(b)};

		stripe_spi("UPDATE stripe_sync.outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ANY ($1)",
				   1, t, v, NULL, SPI_OK_UPDATE);
	}
	stripe_xact_commit(true);

	/* what was passed over is looked at again by the next claim */
	if (c.first_held != 0)
		*after = c.first_held - 1;
	else if (b->n > 0)
		*after = b->ids[b->n - 1];
	MemoryContextSwitchTo(old);
	if (b->n == 0)
	{
		MemoryContextDelete(cxt);
		return NULL;
	}
	MemoryContextSwitchTo(cxt);
	b->body = claim_body(&c);
	hash_destroy(c.held);
	MemoryContextSwitchTo(old);
	return b;
}

ShipOutcome
stripe_ship_judge(const StripeHttpResult *res, int n)
{
	/* Intempt answers 200 or 201; any 2xx means it has the events */
	if (res->status >= 200 && res->status < 300)
		return SHIP_DELIVERED;
	if (res->status == 413)
		return n > 1 ? SHIP_SPLIT : SHIP_DEAD;
	if (res->status == 0 || res->status == 408 || res->status == 429 || res->status >= 500)
		return SHIP_RETRY;
	if (res->status == 401 || res->status == 403)
		return SHIP_PAUSE;
	return SHIP_DEAD;
}

/*
 * What the rows keep of the outcome: no key, valid UTF-8, cut at a character
 * boundary.  key is the Intempt key, scrubbed from Intempt's answer.
 */
void
stripe_ship_record(ShipBatch *b, ShipOutcome out, const StripeHttpResult *res,
				   TimestampTz retry_at, const char *key, const char *destination)
{
	Oid			types[4] = {INT8ARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char	   *err;

	stripe_xact_begin(true);
	values[0] = id_array(b);
	err = res->status == 0 ? stripe_safe_text(res->error, strlen(res->error), sizeof(res->error), key)
		: out == SHIP_PAUSE ? psprintf("HTTP %ld: Intempt refused the credentials; delivery is paused "
									   "until the user mapping of server %s changes",
									   res->status, destination)
		: psprintf("HTTP %ld", res->status);
	values[1] = CStringGetTextDatum(err);
	values[2] = CStringGetTextDatum(stripe_safe_text(res->body ? res->body : "", res->len,
													 MAX_SAVED_RESPONSE, key));
	values[3] = TimestampTzGetDatum(retry_at);
	switch (out)
	{
		case SHIP_DELIVERED:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'delivered', delivered_at = now(), "
					   "next_attempt_at = NULL, last_error = NULL WHERE id = ANY ($1)",
					   1, types, values, NULL, SPI_OK_UPDATE);
			break;
		case SHIP_SPLIT:
			/* not the events' fault: the attempt does not count */
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending', attempts = attempts - 1, "
					   "last_error = $2 || ': batch too large, sending it in halves' WHERE id = ANY ($1)",
					   2, types, values, NULL, SPI_OK_UPDATE);
			break;
		case SHIP_RETRY:
		case SHIP_PAUSE:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending', last_error = $2, next_attempt_at = $4 "
					   "WHERE id = ANY ($1)", 4, types, values, NULL, SPI_OK_UPDATE);
			break;
		case SHIP_DEAD:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'dead', last_error = $2, response = $3, "
					   "next_attempt_at = NULL WHERE id = ANY ($1)", 3, types, values, NULL, SPI_OK_UPDATE);
			break;
	}
	stripe_xact_commit(true);
}
