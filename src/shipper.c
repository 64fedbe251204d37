/*-------------------------------------------------------------------------
 * shipper.c
 *		The shipper: a background worker that delivers stripe_sync.outbox to
 *		Intempt's tracking API.
 *
 * Each source's rows go out in id order, so the events of one Stripe object
 * arrive in the order they happened.  A batch is claimed (state 'sending')
 * in one transaction, posted outside any transaction, and its outcome
 * recorded in another.  A crash between the post and the record leaves the
 * batch 'sending'; the next shipper sends it again, which is the only way an
 * event can arrive twice.
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
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "guc.h"
#include "http.h"
#include "options.h"
#include "shipper.h"
#include "text.h"
#include "xact.h"

#define INTEMPT_DEFAULT_API_URL	"https://api.intempt.com/v1"
/* batches one source may send before the others get a turn */
#define BATCHES_PER_TURN		50
/* a source whose settings are broken is looked at again after this */
#define CONFIG_RETRY_SECS		30
/* how much of a refusing answer an outbox row keeps */
#define MAX_SAVED_RESPONSE		2000
#define PURGE_EVERY_SECS		10
#define RESCAN_SECS				5
/* a destination refusing the credentials (401/403) is tried again after this */
#define PAUSE_SECS				300

/* what the shipper remembers of a source between passes */
typedef struct ShipState
{
	char		source[STRIPE_SOURCE_MAXLEN];	/* hash key */
	int			batch_limit;	/* halved by 413, restored by successes */
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

typedef struct ShipSource
{
	char	   *name;
	Oid			owner;
	char	   *destination;
	char	   *key;			/* the Intempt key, while its turn lasts: scrubbed from answers */
} ShipSource;

typedef struct OutRow
{
	int64		id;
	char	   *name;
	char	   *object_id;
	char	   *payload;
} OutRow;

static HTAB *ship_states = NULL;
static MemoryContext ship_cxt = NULL;
static bool first_pass = true;
static TimestampTz last_purge = 0;

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
 * The track URL and the Authorization header of a source's destination, as
 * its owner's user mapping gives them.  The header is a secret.
 */
static void
destination_of(ShipSource *src, char **url, char **authorization)
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
	*url = psprintf("%.*s/%s/projects/%s/sources/%s/track", len, api_url,
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
	*authorization = psprintf("Basic %s", enc);
	explicit_bzero(enc, enclen);
	src->key = pstrdup(key);
}

/* ---------- one batch ---------- */

static Datum
id_array(OutRow *rows, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(rows[i].id);
	return PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Claims the source's next rows in id order, at most limit.  Returns how
 * many, copied into ship_cxt.  Rows are grouped by event name in the request,
 * so the batch ends before an object that would reappear under another name:
 * that keeps each object's events in order.
 */
static int
claim(ShipSource *src, int64 after, int limit, OutRow **rows_out)
{
	Oid			types[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[3] = {CStringGetTextDatum(src->name), Int32GetDatum(limit), Int64GetDatum(after)};
	OutRow	   *rows;
	int			n;
	HASHCTL		ctl;
	HTAB	   *names_of = NULL;

	stripe_xact_begin(true);
	/*
	 * A claim lost in a crash only means sending again: no need to wait for
	 * the disk.  The claim walks the index in id order from the hint; before
	 * the first ANALYZE the planner would rather sort every pending row.
	 */
	stripe_spi("SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true), "
		 "set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)",
		 0, NULL, NULL, NULL, SPI_OK_SELECT);
	stripe_spi("SELECT id, event_name, object_id, payload::text FROM stripe_sync.outbox "
		 "WHERE source = $1 AND state = 'pending' AND id > $3 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
		 3, types, values, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	rows = MemoryContextAlloc(ship_cxt, sizeof(OutRow) * Max(n, 1));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = NAMEDATALEN * 2 + sizeof(char *);
	ctl.hcxt = ship_cxt;
	if (n > 1)
		names_of = hash_create("stripe_sync batch objects", n, &ctl,
							   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old;

		rows[i].id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		old = MemoryContextSwitchTo(ship_cxt);
		rows[i].name = SPI_getvalue(tup, td, 2);
		rows[i].object_id = SPI_getvalue(tup, td, 3);
		rows[i].payload = SPI_getvalue(tup, td, 4);
		MemoryContextSwitchTo(old);
		if (names_of)
		{
			char		key[NAMEDATALEN * 2] = {0};
			bool		found;
			char	  **name;

			strlcpy(key, rows[i].object_id, sizeof(key));
			name = (char **) ((char *) hash_search(names_of, key, HASH_ENTER, &found) + NAMEDATALEN * 2);
			if (found && strcmp(*name, rows[i].name) != 0)
			{
				n = i;
				break;
			}
			*name = rows[i].name;
		}
	}
	if (n > 0)
	{
		Oid			t[1] = {INT8ARRAYOID};
		Datum		v[1] = {id_array(rows, n)};

		stripe_spi("UPDATE stripe_sync.outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ANY ($1)",
			 1, t, v, NULL, SPI_OK_UPDATE);
	}
	stripe_xact_commit(true);
	*rows_out = rows;
	return n;
}

/* {"track":[{"name":…,"payload":[…]},…]}, grouped by name in order of appearance */
static char *
build_body(OutRow *rows, int n)
{
	StringInfoData buf;
	bool	   *done = palloc0(sizeof(bool) * n);
	bool		first_group = true;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"track\":[");
	for (int i = 0; i < n; i++)
	{
		bool		first = true;

		if (done[i])
			continue;
		appendStringInfoString(&buf, first_group ? "{\"name\":" : ",{\"name\":");
		first_group = false;
		escape_json(&buf, rows[i].name);
		appendStringInfoString(&buf, ",\"payload\":[");
		for (int j = i; j < n; j++)
		{
			if (done[j] || strcmp(rows[j].name, rows[i].name) != 0)
				continue;
			done[j] = true;
			if (!first)
				appendStringInfoChar(&buf, ',');
			first = false;
			appendStringInfoString(&buf, rows[j].payload);
		}
		appendStringInfoString(&buf, "]}");
	}
	appendStringInfoString(&buf, "]}");
	return buf.data;
}

typedef enum Outcome
{
	OUT_DELIVERED,
	OUT_SPLIT,					/* 413: send again in halves */
	OUT_RETRY,					/* later, after a backoff */
	OUT_PAUSE,					/* 401/403: the credentials, not the events */
	OUT_DEAD					/* refused for good */
} Outcome;

static Outcome
judge(StripeHttpResult *res, int n)
{
	/* Intempt answers 200 or 201; any 2xx means it has the events */
	if (res->status >= 200 && res->status < 300)
		return OUT_DELIVERED;
	if (res->status == 413)
		return n > 1 ? OUT_SPLIT : OUT_DEAD;
	if (res->status == 0 || res->status == 408 || res->status == 429 || res->status >= 500)
		return OUT_RETRY;
	if (res->status == 401 || res->status == 403)
		return OUT_PAUSE;
	return OUT_DEAD;
}

/* what the rows keep of a failure: no key, valid UTF-8, at a character boundary */
static void
record(ShipSource *src, OutRow *rows, int n, Outcome out, StripeHttpResult *res, TimestampTz retry_at)
{
	Oid			types[4] = {INT8ARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];
	char	   *err;

	stripe_xact_begin(true);
	values[0] = id_array(rows, n);
	err = res->status == 0 ? stripe_safe_text(res->error, strlen(res->error), sizeof(res->error), src->key)
		: out == OUT_PAUSE ? psprintf("HTTP %ld: Intempt refused the credentials; delivery is paused "
									  "until the user mapping of server %s changes",
									  res->status, src->destination)
		: psprintf("HTTP %ld", res->status);
	values[1] = CStringGetTextDatum(err);
	values[2] = CStringGetTextDatum(stripe_safe_text(res->body ? res->body : "", res->len,
													 MAX_SAVED_RESPONSE, src->key));
	values[3] = TimestampTzGetDatum(retry_at);
	switch (out)
	{
		case OUT_DELIVERED:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'delivered', delivered_at = now(), "
				 "next_attempt_at = NULL, last_error = NULL WHERE id = ANY ($1)",
				 1, types, values, NULL, SPI_OK_UPDATE);
			break;
		case OUT_SPLIT:
			/* not the events' fault: the attempt does not count */
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending', attempts = attempts - 1, "
				 "last_error = $2 || ': batch too large, sending it in halves' WHERE id = ANY ($1)",
				 2, types, values, NULL, SPI_OK_UPDATE);
			break;
		case OUT_RETRY:
		case OUT_PAUSE:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending', last_error = $2, next_attempt_at = $4 "
				 "WHERE id = ANY ($1)", 4, types, values, NULL, SPI_OK_UPDATE);
			break;
		case OUT_DEAD:
			stripe_spi("UPDATE stripe_sync.outbox SET state = 'dead', last_error = $2, response = $3, "
				 "next_attempt_at = NULL WHERE id = ANY ($1)", 3, types, values, NULL, SPI_OK_UPDATE);
			break;
	}
	stripe_xact_commit(true);
}

/*
 * Ships batches of one source until it has nothing deliverable, a failure
 * asks for a pause, or its turn ends.  Returns true when rows may remain.
 */
static bool
ship_batches(ShipSource *src, ShipState *st, const char *url, const char *authorization,
			 MemoryContext pass_cxt)
{
	for (int b = 0; b < BATCHES_PER_TURN; b++)
	{
		OutRow	   *rows;
		int			limit = Min(st->batch_limit, stripe_outbox_batch_size);
		int			n;
		StripeHttpResult res;
		Outcome		out;
		TimestampTz retry_at = 0;

		CHECK_FOR_INTERRUPTS();
		if (GetCurrentTimestamp() >= st->rescan_at)
		{
			st->after = 0;
			st->rescan_at = GetCurrentTimestamp() + (int64) RESCAN_SECS * USECS_PER_SEC;
		}
		n = claim(src, st->after, Max(limit, 1), &rows);
		if (n == 0)
		{
			MemoryContextSwitchTo(pass_cxt);
			return false;
		}
		MemoryContextSwitchTo(ship_cxt);
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("shipping %d events of source \"%s\"", n, src->name));
		stripe_http_post_json(url, authorization, build_body(rows, n), &res);
		out = judge(&res, n);
		if (out == OUT_RETRY)
		{
			long		ms = stripe_backoff_ms(st->failures++, res.retry_after);

			retry_at = GetCurrentTimestamp() + (int64) ms * 1000;
			st->not_before = retry_at;
		}
		else if (out == OUT_PAUSE)
		{
			/* a change to the user mapping ends the pause sooner (mapping_changed) */
			retry_at = GetCurrentTimestamp() + (int64) PAUSE_SECS * USECS_PER_SEC;
			st->not_before = retry_at;
			st->paused = true;
		}
		record(src, rows, n, out, &res, retry_at);
		MemoryContextSwitchTo(ship_cxt);
		/* the rows go again unless done with: delivered or dead */
		st->after = (out == OUT_DELIVERED || out == OUT_DEAD) ? rows[n - 1].id : rows[0].id - 1;

		switch (out)
		{
			case OUT_DELIVERED:
				st->failures = 0;
				st->paused = false;
				/* back towards the configured size after a 413 */
				if (st->batch_limit < stripe_outbox_batch_size && ++st->successes >= 10)
				{
					st->batch_limit = Min(st->batch_limit * 2, stripe_outbox_batch_size);
					st->successes = 0;
				}
				break;
			case OUT_SPLIT:
				st->batch_limit = Max(n / 2, 1);
				st->successes = 0;
				break;
			case OUT_PAUSE:
				ereport(WARNING,
						(errmsg("stripe_sync: Intempt refused the credentials of source \"%s\" with HTTP %ld",
								src->name, res.status),
						 errdetail("Its events stay pending; delivery is paused for %d minutes, or until the user mapping changes.",
								   PAUSE_SECS / 60),
						 errhint("Check the api_key of the user mapping of server %s for the source's owner.",
								 src->destination)));
				MemoryContextSwitchTo(pass_cxt);
				MemoryContextReset(ship_cxt);
				return true;
			case OUT_RETRY:
				ereport(DEBUG1,
						(errmsg("stripe_sync: Intempt did not take %d events of source \"%s\" (%s); again in %ld ms",
								n, src->name, res.status ? psprintf("HTTP %ld", res.status) : res.error,
								(long) ((retry_at - GetCurrentTimestamp()) / 1000))));
				MemoryContextSwitchTo(pass_cxt);
				MemoryContextReset(ship_cxt);
				return true;
			case OUT_DEAD:
				st->failures = 0;
				ereport(WARNING,
						(errmsg("stripe_sync: Intempt refused %d events of source \"%s\" with HTTP %ld",
								n, src->name, res.status),
						 errdetail("The rows are marked dead in stripe_sync.outbox with the answer."),
						 errhint("Fix the cause, then SELECT stripe_sync.retry_dead();")));
				break;
		}
		MemoryContextSwitchTo(pass_cxt);
		MemoryContextReset(ship_cxt);
	}
	return true;
}

static bool
ship_source(ShipSource *src, ShipState *st, MemoryContext pass_cxt)
{
	char	   *url;
	char	   *authorization;
	MemoryContext old;
	volatile bool more = false;

	/* what outlives a transaction is allocated in a context of ours, not SPI's */
	stripe_xact_begin(true);
	old = MemoryContextSwitchTo(pass_cxt);
	destination_of(src, &url, &authorization);
	MemoryContextSwitchTo(old);
	stripe_xact_commit(true);

	PG_TRY();
	{
		more = ship_batches(src, st, url, authorization, pass_cxt);
	}
	PG_FINALLY();
	{
		/* the credentials do not linger in freed memory */
		explicit_bzero(authorization, strlen(authorization));
		explicit_bzero(src->key, strlen(src->key));
	}
	PG_END_TRY();
	return more;
}

/* ---------- the worker ---------- */

/*
 * A user mapping or a server changed: a destination paused for refusing the
 * credentials is tried again at once.  Invalidations arrive at the start of
 * the shipper's next transaction.
 */
static void
mapping_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS seq;
	ShipState  *st;

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
		st->successes = 0;
		st->failures = 0;
		st->not_before = 0;
		st->after = 0;
		st->rescan_at = 0;
		st->paused = false;
	}
	return st;
}

/* The first pass resends what was in flight; every pass purges old deliveries. */
static void
pass_housekeeping(void)
{
	if (first_pass)
	{
		/* batches in flight when a shipper died: send them again */
		stripe_spi("UPDATE stripe_sync.outbox SET state = 'pending' WHERE state = 'sending'",
				   0, NULL, NULL, NULL, SPI_OK_UPDATE);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("stripe_sync shipper: " UINT64_FORMAT " events were in flight when delivery stopped; sending them again",
							SPI_processed)));
		first_pass = false;
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
		ShipSource *s = palloc(sizeof(ShipSource));
		bool		isnull;

		s->name = SPI_getvalue(tup, td, 1);
		s->owner = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
		s->destination = SPI_getvalue(tup, td, 3);
		sources = lappend(sources, s);
	}
	return sources;
}

typedef struct ShipTurn
{
	ShipSource *src;
	ShipState  *st;
	MemoryContext pass_cxt;
	bool		more;
} ShipTurn;

static void
ship_turn(void *arg)
{
	ShipTurn   *t = arg;

	t->more = ship_source(t->src, t->st, t->pass_cxt);
}

/* a source's error is logged by the shipper itself, scrubbed of keys */
static bool
ship_report(ErrorData *edata, void *arg)
{
	return false;
}

/*
 * One pass over the sources with pending rows, in the loop's memory context.
 * Returns how long to sleep (ms): 0 when there is more to send at once.
 */
static long
ship_pass(void)
{
	long		sleep_ms = (long) stripe_naptime * 1000;
	MemoryContext pass_cxt = CurrentMemoryContext;
	List	   *sources = NIL;
	ListCell   *lc;

	stripe_xact_begin(true);
	if (OidIsValid(get_extension_oid("stripe_sync", true)) && stripe_schema_current(false))
	{
		pass_housekeeping();
		sources = pending_sources();
	}
	stripe_xact_commit(true);

	foreach(lc, sources)
	{
		ShipTurn	t = {lfirst(lc), NULL, pass_cxt, false};
		TimestampTz now = GetCurrentTimestamp();
		ErrorData  *edata;

		if (strlen(t.src->name) >= STRIPE_SOURCE_MAXLEN)
			continue;
		t.st = ship_state(t.src->name);
		if (now < t.st->not_before)
		{
			sleep_ms = Min(sleep_ms, (long) ((t.st->not_before - now + 999) / 1000));
			continue;
		}
		/* a source's broken settings must not stop the others */
		edata = stripe_try(ship_turn, &t, pass_cxt, ship_report);
		MemoryContextSwitchTo(pass_cxt);
		if (edata != NULL)
		{
			MemoryContextReset(ship_cxt);
			stripe_scrub_secrets(edata->message);
			ereport(LOG,
					(errmsg("stripe_sync shipper: source \"%s\": %s", t.src->name, edata->message),
					 edata->hint ? errhint("%s", edata->hint) : 0));
			t.st->not_before = GetCurrentTimestamp() + (int64) CONFIG_RETRY_SECS * USECS_PER_SEC;
			sleep_ms = Min(sleep_ms, CONFIG_RETRY_SECS * 1000L);
		}
		else if (t.more)
		{
			now = GetCurrentTimestamp();
			sleep_ms = Min(sleep_ms, now < t.st->not_before ? (long) ((t.st->not_before - now + 999) / 1000) : 0);
		}
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	return sleep_ms;
}

void
stripe_shipper_main(Datum main_arg)
{
	HASHCTL		ctl;

	stripe_bgw_start();
	BackgroundWorkerInitializeConnection(stripe_database, NULL, 0);
	stripe_bgw_attach_wakeable(STRIPE_WAKE_SHIPPER);
	SetConfigOption("application_name", "stripe_sync shipper", PGC_USERSET, PGC_S_SESSION);

	ship_cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync shipper batch",
									 ALLOCSET_DEFAULT_SIZES);
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
