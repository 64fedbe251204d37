/*-------------------------------------------------------------------------
 * shipper.c
 *		The shipper: a background worker that delivers stripe_sync.outbox to
 *		Intempt's tracking API.
 *
 * Up to stripe_sync.outbox_concurrency batches are in flight at once, the
 * sources taking turns to fill the free places.  A batch is claimed (state
 * 'sending') in one short transaction, posted outside any transaction, and
 * its outcome recorded in another when its answer comes (ship_batch.c).  No
 * two batches in flight carry events of the same Stripe object, and each
 * batch carries an object's events in order, so that they arrive in the
 * order they happened whatever Intempt answers first.  A batch that must go
 * again (413, a retryable failure, refused credentials) goes back to pending
 * before any later row of its objects can be claimed.
 *
 * A crash between a post and its record leaves the batch 'sending'; the next
 * shipper sends it again, which is the only way an event can arrive twice.
 * An ERROR in a pass drops what is in flight likewise: the next pass sends
 * it again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "guc.h"
#include "http.h"
#include "http_post.h"
#include "options.h"
#include "ship_batch.h"
#include "shipper.h"
#include "text.h"
#include "xact.h"

#define INTEMPT_DEFAULT_API_URL	"https://api.intempt.com/v1"
/*
 * A request's body, at most: well within what Intempt takes (the fake's
 * 5 MiB), and a 413 halves it further.
 */
#define MAX_BODY_BYTES			(1024 * 1024)
/* a source whose settings are broken is looked at again after this */
#define CONFIG_RETRY_SECS		30
#define PURGE_EVERY_SECS		10
#define RESCAN_SECS				5
/* a pass stops claiming after this, lets its batches land, and reads the sources again */
#define PASS_SECS				5
/* a destination refusing the credentials (401/403) is tried again after this */
#define PAUSE_SECS				300
/* how long the pump waits for an answer before it looks around again */
#define WAIT_MS					100

/* what the shipper remembers of a source between passes */
typedef struct ShipState
{
	char		source[STRIPE_SOURCE_MAXLEN];	/* hash key */
	int			batch_limit;	/* events: halved by 413, restored by successes */
	size_t		byte_limit;		/* of a body: likewise */
	int			successes;		/* since the last halving */
	int			failures;		/* retryable failures in a row */
	TimestampTz not_before;
	/*
	 * Every pending row is past this id, as far as we know: claims start
	 * there instead of walking the index over every row delivered since the
	 * last vacuum.  Rows can appear below it (retry_dead(), a transaction
	 * that committed late), so it goes back to 0 every RESCAN_SECS.
	 */
	int64		after;
	TimestampTz rescan_at;
	bool		paused;			/* the destination refused the credentials */
} ShipState;

/* a source with pending rows, during one pass */
typedef struct ShipSource
{
	char	   *name;
	Oid			owner;
	char	   *destination;
	ShipState  *st;
	/* read at its first claim, wiped at the end of the pass */
	char	   *url;
	char	   *authorization;	/* the header: a secret */
	char	   *key;			/* the Intempt key: scrubbed from answers */
	uint64		mapping_gen;	/* mapping_gen when they were read */
	HTAB	   *flying;			/* the objects of its batches in flight */
	bool		dry;			/* nothing to claim since its last batch landed */
} ShipSource;

/* one pass's batches in flight, and whose turn it is */
typedef struct ShipPump
{
	List	   *sources;		/* ShipSource */
	int			next;			/* the source that claims next */
	MemoryContext cxt;			/* the pass's */
	TimestampTz stop_at;		/* no claim after this */
	bool		more;			/* go again at once */
} ShipPump;

static HTAB *ship_states = NULL;
/* batches may be 'sending' without a post behind them: at start, and after an ERROR */
static bool flights_lost = true;
static TimestampTz last_purge = 0;
/* moves on when a user mapping or a server changes: the credentials are read again */
static uint64 mapping_gen = 0;

/* ---------- the destination ---------- */

static char *
option_value(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = lfirst(lc);

		if (strcmp(d->defname, name) == 0)
			return defGetString(d);
	}
	return NULL;
}

/*
 * The track URL, the Authorization header and the key of a source's
 * destination, as its owner's user mapping gives them (in a transaction).
 * The header and the key are secrets.
 */
static void
destination_of(ShipSource *src)
{
	ForeignServer *server = GetForeignServerByName(src->destination, true);
	UserMapping *um;
	char	   *api_url,
			   *org,
			   *project,
			   *source_id,
			   *key,
			   *dot,
			   *creds,
			   *enc;
	int			len,
				enclen;

	if (server == NULL ||
		strcmp(GetForeignDataWrapper(server->fdwid)->fdwname, "intempt") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("destination \"%s\" of source \"%s\" is not an intempt server",
						src->destination, src->name)));
	api_url = option_value(server->options, "api_url");
	org = option_value(server->options, "org");
	project = option_value(server->options, "project");
	source_id = option_value(server->options, "source_id");
	if (org == NULL || project == NULL || source_id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("server \"%s\" needs the options org, project and source_id",
						src->destination),
				 errhint("ALTER SERVER %s OPTIONS (ADD org '…', ADD project '…', ADD source_id '…').",
						 quote_identifier(src->destination))));
	um = stripe_user_mapping(src->owner, server);	/* ERROR when missing */
	key = option_value(um->options, "api_key");
	if (key == NULL || (dot = strchr(key, '.')) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("the user mapping of server \"%s\" for the owner of source \"%s\" has no api_key of the form prefix.secret",
						src->destination, src->name)));

	if (api_url == NULL)
		api_url = INTEMPT_DEFAULT_API_URL;
	len = strlen(api_url);
	while (len > 0 && api_url[len - 1] == '/')
		len--;
	src->url = psprintf("%.*s/%s/projects/%s/sources/%s/track", len, api_url,
					stripe_urlencode(org), stripe_urlencode(project), stripe_urlencode(source_id));

	/* Basic base64(prefix:secret) */
	creds = pstrdup(key);
	creds[dot - key] = ':';
	len = strlen(creds);
	enclen = pg_b64_enc_len(len);
	enc = palloc(enclen + 1);
	enclen = pg_b64_encode(creds, len, enc, enclen);
	explicit_bzero(creds, len);
	if (enclen < 0)
		elog(ERROR, "could not encode the Intempt credentials");
	enc[enclen] = '\0';
	src->authorization = psprintf("Basic %s", enc);
	explicit_bzero(enc, enclen);
	src->key = pstrdup(key);
}

static void
load_destination(void *arg)
{
	stripe_xact_begin(true);
	destination_of((ShipSource *) arg);
	stripe_xact_commit(true);
}

/* the credentials do not linger in freed memory */
static void
wipe_destination(ShipSource *src)
{
	if (src->authorization)
		explicit_bzero(src->authorization, strlen(src->authorization));
	if (src->key)
		explicit_bzero(src->key, strlen(src->key));
	src->url = src->authorization = src->key = NULL;
}

/* a source's error is logged by the shipper itself, scrubbed of keys */
static bool
ship_report(ErrorData *edata, void *arg)
{
	return false;
}

/* A source's broken settings, or a failed claim, must not stop the others. */
static void
source_failed(ShipSource *src, ErrorData *edata)
{
	stripe_scrub_secrets(edata->message);
	ereport(LOG,
			(errmsg("stripe_sync shipper: source \"%s\": %s", src->name, edata->message),
			 edata->hint ? errhint("%s", edata->hint) : 0));
	src->st->not_before = GetCurrentTimestamp() + (int64) CONFIG_RETRY_SECS * USECS_PER_SEC;
}

/* ---------- the batches in flight ---------- */

typedef struct ClaimTurn
{
	ShipSource *src;
	MemoryContext cxt;
	ShipBatch  *batch;
} ClaimTurn;

static void
claim_turn(void *arg)
{
	ClaimTurn  *t = arg;
	ShipState  *st = t->src->st;

	t->batch = stripe_ship_claim(t->src->name, &st->after,
								 Min(st->batch_limit, stripe_outbox_batch_size),
								 st->byte_limit, t->src->flying, t->cxt);
}

/*
 * Claims a batch of the source and posts it.  Returns false when the source
 * has nothing to send now.
 */
static bool
launch(ShipPump *p, ShipSource *src)
{
	ShipState  *st = src->st;
	ClaimTurn	t = {src, p->cxt, NULL};
	ErrorData  *edata;
	TimestampTz now = GetCurrentTimestamp();

	if (src->url == NULL || src->mapping_gen != mapping_gen)
	{
		wipe_destination(src);
		src->mapping_gen = mapping_gen;
		if ((edata = stripe_try(load_destination, src, p->cxt, ship_report)) != NULL)
		{
			wipe_destination(src);
			source_failed(src, edata);
			return false;
		}
	}
	if (now >= st->rescan_at)
	{
		st->after = 0;
		st->rescan_at = now + (int64) RESCAN_SECS * USECS_PER_SEC;
	}
	if ((edata = stripe_try(claim_turn, &t, p->cxt, ship_report)) != NULL)
	{
		source_failed(src, edata);
		return false;
	}
	if (t.batch == NULL)
	{
		src->dry = true;
		return false;
	}
	t.batch->owner = src;
	t.batch->credentials = src->mapping_gen;
	stripe_ship_flying(src->flying, t.batch, true);
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("shipping %d events of source \"%s\" (%d requests in flight)",
									t.batch->n, src->name, stripe_posts_in_flight() + 1));
	/* the rows are 'sending': an ERROR from here on has the next pass send them again */
	stripe_post_start(src->url, src->authorization, t.batch->body, t.batch, t.batch->cxt);
	/* libcurl has its copy */
	pfree(t.batch->body);
	t.batch->body = NULL;
	return true;
}

/* the next source in turn that has a batch to send, if any, sends it */
static bool
launch_next(ShipPump *p)
{
	int			n = list_length(p->sources);
	TimestampTz now = GetCurrentTimestamp();

	for (int k = 0; k < n; k++)
	{
		int			i = (p->next + k) % n;
		ShipSource *src = list_nth(p->sources, i);

		if (src->dry || now < src->st->not_before)
			continue;
		if (launch(p, src))
		{
			p->next = (i + 1) % n;
			return true;
		}
	}
	return false;
}

/*
 * When a retryable failure lets the source's batches go again.  Batches in
 * flight beside it may fail too: they wait as long, not longer, unless
 * Intempt's Retry-After says so.
 */
static TimestampTz
backoff(ShipState *st, const StripeHttpResult *res, TimestampTz now)
{
	TimestampTz at;

	if (now < st->not_before)
		at = Max(st->not_before, now + (int64) stripe_backoff_ms(0, res->retry_after) * 1000);
	else
		at = now + (int64) stripe_backoff_ms(st->failures++, res->retry_after) * 1000;
	st->not_before = at;
	return at;
}

/* the source's batch size after an outcome: halved by 413, back towards the settings */
static void
resize(ShipState *st, ShipBatch *b, ShipOutcome out)
{
	if (out == SHIP_SPLIT)
	{
		st->batch_limit = Min(st->batch_limit, Max(b->n / 2, 1));
		st->byte_limit = Min(st->byte_limit, Max(b->bytes / 2, 1));
		st->successes = 0;
	}
	else if (out == SHIP_DELIVERED &&
			 (st->batch_limit < stripe_outbox_batch_size || st->byte_limit < MAX_BODY_BYTES) &&
			 ++st->successes >= 10)
	{
		st->batch_limit = Min(st->batch_limit * 2, stripe_outbox_batch_size);
		st->byte_limit = Min(st->byte_limit * 2, MAX_BODY_BYTES);
		st->successes = 0;
	}
}

/* what the log says of an outcome; a pause once, not for each batch in flight */
static void
report_outcome(ShipSource *src, ShipBatch *b, ShipOutcome out, const StripeHttpResult *res,
	   TimestampTz retry_at, bool was_paused)
{
	if (out == SHIP_PAUSE && !was_paused)
		ereport(WARNING,
				(errmsg("stripe_sync: Intempt refused the credentials of source \"%s\" with HTTP %ld",
						src->name, res->status),
				 errdetail("Its events stay pending; delivery is paused for %d minutes, or until the user mapping changes.",
						   PAUSE_SECS / 60),
				 errhint("Check the api_key of the user mapping of server %s for the source's owner.",
						 src->destination)));
	else if (out == SHIP_RETRY)
		ereport(DEBUG1,
				(errmsg("stripe_sync: Intempt did not take %d events of source \"%s\" (%s); again in %ld ms",
						b->n, src->name, res->status ? psprintf("HTTP %ld", res->status) : res->error,
						(long) ((retry_at - GetCurrentTimestamp()) / 1000))));
	else if (out == SHIP_DEAD)
		ereport(WARNING,
				(errmsg("stripe_sync: Intempt refused %d events of source \"%s\" with HTTP %ld",
						b->n, src->name, res->status),
				 errdetail("The rows are marked dead in stripe_sync.outbox with the answer."),
				 errhint("Fix the cause, then SELECT stripe_sync.retry_dead();")));
}

/* Intempt answered a batch: the outcome is recorded, and its objects may fly again. */
static void
land(ShipBatch *b, StripeHttpResult *res)
{
	ShipSource *src = b->owner;
	ShipState  *st = src->st;
	ShipOutcome out = stripe_ship_judge(res, b->n);
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz retry_at = 0;
	bool		was_paused = st->paused;
	MemoryContext cxt = CurrentMemoryContext;

	/* credentials refused after they changed: the new ones go after a backoff, no pause */
	if (out == SHIP_PAUSE && b->credentials != mapping_gen)
		out = SHIP_RETRY;
	if (out == SHIP_RETRY)
		retry_at = backoff(st, res, now);
	else if (out == SHIP_PAUSE)
	{
		/* a change to the user mapping ends the pause sooner (mapping_changed) */
		retry_at = now + (int64) PAUSE_SECS * USECS_PER_SEC;
		st->not_before = Max(st->not_before, retry_at);
		st->paused = true;
	}
	MemoryContextSwitchTo(b->cxt);
	stripe_ship_record(b, out, res, retry_at, src->key, src->destination);
	MemoryContextSwitchTo(cxt);
	stripe_ship_flying(src->flying, b, false);
	src->dry = false;
	/* rows going again are claimed before any later row of their objects */
	if (out == SHIP_SPLIT || out == SHIP_RETRY || out == SHIP_PAUSE)
		st->after = Min(st->after, b->ids[0] - 1);
	if (out == SHIP_DELIVERED)
		st->paused = false;
	if (out == SHIP_DELIVERED || out == SHIP_DEAD)
		st->failures = 0;
	resize(st, b, out);
	report_outcome(src, b, out, res, retry_at, was_paused);
	MemoryContextDelete(b->cxt);
}

/*
 * Keeps up to stripe_sync.outbox_concurrency batches in flight until no
 * source has anything to send now, or the pass's time is up, and every
 * answer has come.
 */
static void
pump(ShipPump *p)
{
	for (;;)
	{
		StripeHttpResult res;
		ShipBatch  *b;

		stripe_bgw_reload_config();
		if (MyLatch->is_set)
		{
			ListCell   *lc;

			/* a sync committed rows: the sources that had none may have some */
			ResetLatch(MyLatch);
			foreach(lc, p->sources)
				((ShipSource *) lfirst(lc))->dry = false;
			p->more = true;
		}
		if (GetCurrentTimestamp() < p->stop_at)
		{
			while (stripe_posts_in_flight() < stripe_outbox_concurrency && launch_next(p))
				CHECK_FOR_INTERRUPTS();
		}
		else
			p->more = true;
		if (stripe_posts_in_flight() == 0)
			break;
		b = stripe_post_wait(WAIT_MS, &res);
		if (b != NULL)
			land(b, &res);
	}
}

/* ---------- the worker ---------- */

/*
 * A user mapping or a server changed: the credentials are read again, and a
 * destination paused for refusing them is tried again at once.
 * Invalidations arrive at the start of the shipper's next transaction.
 */
static void
mapping_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS seq;
	ShipState  *st;

	mapping_gen++;
	if (ship_states == NULL)
		return;
	hash_seq_init(&seq, ship_states);
	while ((st = hash_seq_search(&seq)) != NULL)
		if (st->paused)
		{
			st->paused = false;
			st->not_before = 0;
		}
}

static ShipState *
ship_state(const char *source)
{
	char		key[STRIPE_SOURCE_MAXLEN] = {0};
	bool		found;
	ShipState  *st;

	strlcpy(key, source, sizeof(key));
	st = hash_search(ship_states, key, HASH_ENTER, &found);
	if (!found)
	{
		st->batch_limit = stripe_outbox_batch_size;
		st->byte_limit = MAX_BODY_BYTES;
		st->successes = 0;
		st->failures = 0;
		st->not_before = 0;
		st->after = 0;
		st->rescan_at = 0;
		st->paused = false;
	}
	return st;
}

/*
 * At start, and after a pass that failed, what was in flight is sent again;
 * every pass purges old deliveries.
 */
static void
pass_housekeeping(void)
{
	if (flights_lost)
	{
		HASH_SEQ_STATUS seq;
		ShipState  *st;

		stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending' WHERE state = 'sending'",
				   0, NULL, NULL, NULL, SPI_OK_UPDATE);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("stripe_sync shipper: " UINT64_FORMAT " events were in flight when delivery stopped; sending them again",
							SPI_processed)));
		hash_seq_init(&seq, ship_states);
		while ((st = hash_seq_search(&seq)) != NULL)
			st->after = 0;
		flights_lost = false;
	}
	if (GetCurrentTimestamp() - last_purge >= (int64) PURGE_EVERY_SECS * USECS_PER_SEC)
	{
		Oid			t[1] = {TEXTOID};
		Datum		v[1] = {CStringGetTextDatum(stripe_outbox_retention)};

		stripe_spi("DELETE FROM stripe_sync.outbox WHERE state = 'delivered' AND delivered_at < now() - $1::interval",
				   1, t, v, NULL, SPI_OK_DELETE);
		last_purge = GetCurrentTimestamp();
	}
}

/* the sources with pending rows and a destination (in a transaction) */
static List *
pending_sources(void)
{
	List	   *sources = NIL;

	stripe_spi("SELECT s.name, s.owner::oid, s.destination::text FROM stripe_sync.sources s "
			   "WHERE s.destination IS NOT NULL AND EXISTS "
			   "(SELECT 1 FROM stripe_sync.outbox o WHERE o.source = s.name AND o.state = 'pending') "
			   "ORDER BY s.name", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		ShipSource *s = palloc0(sizeof(ShipSource));
		bool		isnull;

		s->name = SPI_getvalue(tup, td, 1);
		s->owner = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
		s->destination = SPI_getvalue(tup, td, 3);
		if (strlen(s->name) >= STRIPE_SOURCE_MAXLEN)
			continue;
		s->st = ship_state(s->name);
		s->flying = stripe_ship_object_set("stripe_sync objects in flight", CurrentMemoryContext);
		sources = lappend(sources, s);
	}
	return sources;
}

/*
 * One pass over the sources with pending rows, in the loop's memory context.
 * Returns how long to sleep (ms): 0 when there is more to send at once.
 */
static long
ship_pass(void)
{
	long		sleep_ms = (long) stripe_naptime * 1000;
	ShipPump	p = {NIL, 0, CurrentMemoryContext, 0, false};
	ListCell   *lc;
	TimestampTz now;
	bool		ready = false;

	stripe_xact_begin(true);
	if (OidIsValid(get_extension_oid("stripe_sync", true)) && stripe_schema_current(false))
	{
		pass_housekeeping();
		p.sources = pending_sources();
		ready = true;
	}
	stripe_xact_commit(true);

	/*
	 * Not installed, or not updated yet: nothing to pump, and what an earlier
	 * shipper left in flight (flights_lost) waits for the first pass that can
	 * send it again.
	 */
	if (!ready)
		return sleep_ms;

	p.stop_at = GetCurrentTimestamp() + (int64) PASS_SECS * USECS_PER_SEC;
	flights_lost = true;
	PG_TRY();
	{
		pump(&p);
	}
	PG_FINALLY();
	{
		stripe_posts_abort();
		foreach(lc, p.sources)
			wipe_destination(lfirst(lc));
	}
	PG_END_TRY();
	flights_lost = false;
	pgstat_report_activity(STATE_IDLE, NULL);

	now = GetCurrentTimestamp();
	foreach(lc, p.sources)
	{
		ShipState  *st = ((ShipSource *) lfirst(lc))->st;

		if (now < st->not_before)
			sleep_ms = Min(sleep_ms, (long) ((st->not_before - now + 999) / 1000));
	}
	return p.more ? 0 : sleep_ms;
}

void
stripe_shipper_main(Datum main_arg)
{
	HASHCTL		ctl;

	stripe_bgw_start();
	BackgroundWorkerInitializeConnection(stripe_database, NULL, 0);
	stripe_bgw_attach_wakeable(STRIPE_WAKE_SHIPPER);
	SetConfigOption("application_name", "stripe_sync shipper", PGC_USERSET, PGC_S_SESSION);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = STRIPE_SOURCE_MAXLEN;
	ctl.entrysize = sizeof(ShipState);
	ctl.hcxt = TopMemoryContext;
	ship_states = hash_create("stripe_sync shipper sources", 16, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	CacheRegisterSyscacheCallback(USERMAPPINGOID, mapping_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, mapping_changed, (Datum) 0);

	stripe_bgw_loop(ship_pass);
}
