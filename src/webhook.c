/*-------------------------------------------------------------------------
 * webhook.c
 *		stripe_sync.ingest_webhook(source, payload, signature): an event that
 *		Stripe delivered to a webhook endpoint, verified with the endpoint's
 *		signing secret and applied as the poll applies it (sync_events.c).
 *
 * Stripe signs "<t>.<body>" with HMAC-SHA256 under the endpoint's secret
 * (whsec_…) and sends Stripe-Signature: t=<unix time>,v1=<hex>[,v1=…][,v0=…]
 * (two v1 while a secret is rolled; other schemes are ignored, as Stripe's
 * libraries ignore them, so that none can be downgraded to).  The secret is
 * the webhook_secret option of the source owner's user mapping.  A delivery
 * signed more than 5 minutes from this server's clock, either way, is
 * refused: a captured one cannot be replayed later, and within the 5 minutes
 * its event id is already applied.
 *
 * A Connect platform's endpoint also receives its connected accounts'
 * events, each naming its account at the top level: verified with the
 * platform's secret, such an event is applied as that account's source
 * ('<platform>/<acct_…>'), so that its dedup, account_id and outbox rows are
 * the ones its poll uses.  An account the platform does not sync is skipped.
 *
 * Who may call it, and as whom it writes, is sync_now's: the source's owner,
 * a member of its role, or a superuser (another role's source does not
 * exist for the caller); the management tables as the extension's owner,
 * the local tables as the source's owner in a restricted security context.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "events.h"
#include "json_page.h"
#include "options.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(stripe_ingest_webhook);

/* Stripe's tolerance, as its libraries default to it */
#define SIGNATURE_TOLERANCE_SECS	300
#define MAX_SIGNATURE_HEADER		4096
#define MAX_SIGNATURES				16
/* one event and its object; Stripe's largest objects are far smaller */
#define MAX_PAYLOAD					(2 * 1024 * 1024)
#define MAX_EVENT_ID				100
#define MAX_EVENT_TYPE				200

enum
{
	F_ID, F_CREATED, F_TYPE, F_DATA, F_VERSION, F_OBJECT, F_LIVEMODE, F_ACCOUNT, NFIELDS
};

/* the parts of Stripe-Signature that count */
typedef struct Signature
{
	int64		t;
	int			nv1;			/* v1 elements, well-formed or not */
	int			ndigests;
	uint8		digests[MAX_SIGNATURES][PG_SHA256_DIGEST_LENGTH];
} Signature;

/* a delivered event, checked */
typedef struct WebhookEvent
{
	char	   *id;
	char	   *type;
	char	   *api_version;	/* "" when none */
	int64		created;
	char	   *object;			/* data.object's JSON text */
	int			object_len;
	char	   *object_type;	/* data.object.object, or NULL */
	int			livemode;		/* -1 absent, else 0 or 1 */
	char	   *account;		/* Connect: the connected account, or NULL */
} WebhookEvent;

static void
refuse(const char *source, const char *msg, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("webhook delivery for source \"%s\" refused: %s", source, msg),
			 errdetail("%s", detail),
			 errhint("Pass Stripe's request body unchanged and its Stripe-Signature header; the user mapping's "
					 "webhook_secret must be the endpoint's signing secret.")));
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* a v1 value into a digest; false when it is not 64 hex digits */
static bool
decode_digest(const char *hex, uint8 *out)
{
	if (strlen(hex) != 2 * PG_SHA256_DIGEST_LENGTH)
		return false;
	for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
	{
		int			hi = hex_value(hex[2 * i]),
					lo = hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8) (hi << 4 | lo);
	}
	return true;
}

/*
 * Stripe-Signature's t and v1 elements; false when it has no single t of
 * digits, or no v1.  Nothing of the header reaches a message.
 */
static bool
parse_signature(const char *header, Signature *sig)
{
	char	   *copy = pstrdup(header);
	char	   *save = NULL;
	bool		has_t = false;

	memset(sig, 0, sizeof(Signature));
	for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		char	   *eq;

		while (*item == ' ')
			item++;
		eq = strchr(item, '=');
		if (eq == NULL)
			return false;
		*eq = '\0';
		if (strcmp(item, "t") == 0)
		{
			const char *v = eq + 1;
			size_t		n = strspn(v, "0123456789");

			if (has_t || n == 0 || n > 12 || (v[n] != '\0' && v[n] != ' '))
				return false;
			sig->t = strtoi64(v, NULL, 10);
			has_t = true;
		}
		else if (strcmp(item, "v1") == 0)
		{
			sig->nv1++;
			if (sig->ndigests < MAX_SIGNATURES && decode_digest(eq + 1, sig->digests[sig->ndigests]))
				sig->ndigests++;
		}
	}
	return has_t && sig->nv1 > 0;
}

/* HMAC-SHA256(secret, "<t>.<payload>"), with PostgreSQL's own HMAC */
static void
sign(const char *secret, int64 t, const char *payload, size_t len, uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	char	   *prefix = psprintf(INT64_FORMAT ".", t);

	if (ctx == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (pg_hmac_init(ctx, (const uint8 *) secret, strlen(secret)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) prefix, strlen(prefix)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) payload, len) < 0 ||
		pg_hmac_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
	{
		char	   *why = pstrdup(pg_hmac_error(ctx));

		pg_hmac_free(ctx);
		elog(ERROR, "could not compute HMAC-SHA256: %s", why);
	}
	pg_hmac_free(ctx);
}

/* compares every byte of every digest, so that the time taken tells nothing */
static bool
digest_matches(const Signature *sig, const uint8 *expected)
{
	volatile uint8 found = 0;

	for (int s = 0; s < sig->ndigests; s++)
	{
		uint8		diff = 0;

		for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
			diff |= sig->digests[s][i] ^ expected[i];
		found |= (diff == 0);
	}
	return found != 0;
}

/* Refuses a delivery whose signature is not the secret's, or not of now. */
static void
verify(const char *source, const char *secret, const char *payload, size_t len, const char *header)
{
	Signature	sig;
	uint8		expected[PG_SHA256_DIGEST_LENGTH];
	int64		age;

	if (strlen(header) > MAX_SIGNATURE_HEADER || !parse_signature(header, &sig))
		refuse(source, "malformed Stripe-Signature header",
			   "The header must be t=<unix time>,v1=<hex signature>[,v1=…], as Stripe sends it.");
	sign(secret, sig.t, payload, len, expected);
	if (!digest_matches(&sig, expected))
		refuse(source, "the signature does not match",
			   "No v1 signature of the header is the payload's, signed with the webhook_secret of the user mapping "
			   "of the source's owner.");
	age = stripe_now_unix() - sig.t;
	if (age > SIGNATURE_TOLERANCE_SECS)
		refuse(source, "the signature is too old",
			   psprintf("It was made " INT64_FORMAT " seconds ago; at most %d are accepted.", age,
						SIGNATURE_TOLERANCE_SECS));
	if (age < -SIGNATURE_TOLERANCE_SECS)
		refuse(source, "the signature is from the future",
			   psprintf("It is dated " INT64_FORMAT " seconds ahead of this server's clock; at most %d are accepted.",
						-age, SIGNATURE_TOLERANCE_SECS));
}

/* the webhook_secret of the owner's user mapping (or PUBLIC's) for the source's server */
static char *
owner_secret(SyncRun *run)
{
	ForeignServer *server = GetForeignServer(run->src.serverid);
	UserMapping *um = stripe_user_mapping(run->src.owner, server);
	ListCell   *lc;

	foreach(lc, um->options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "webhook_secret") == 0)
			return defGetString(def);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("source \"%s\" has no webhook secret", run->src.name),
			 errdetail("Deliveries are verified with the webhook_secret option of the user mapping of server %s for "
					   "the source's owner, and it has none.", quote_identifier(server->servername)),
			 errhint("ALTER USER MAPPING FOR %s SERVER %s OPTIONS (ADD webhook_secret 'whsec_…');",
					 quote_identifier(GetUserNameFromId(run->src.owner, false)),
					 quote_identifier(server->servername))));
	return NULL;
}

static bool
is_string(StripeSpan *span)
{
	return span->start != NULL && span->len >= 2 && span->start[0] == '"';
}

/* a string field, or NULL when absent or null; not_string when of another type */
static char *
string_field(StripeSpan *span, bool *not_string)
{
	if (span->start == NULL || stripe_span_is_null(span))
		return NULL;
	if (!is_string(span))
	{
		*not_string = true;
		return NULL;
	}
	return stripe_span_text(span);
}

/* letters, digits and the extra characters only, at most max bytes */
static bool
plain(const char *s, const char *extra, size_t max)
{
	return strlen(s) <= max && stripe_chars_in(s, extra);
}

static void
malformed(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("webhook payload is not a Stripe event: %s", why)));
}

/* The payload as a Stripe event, every field's type checked (payload is ours to parse in place). */
static void
parse_event(char *payload, size_t len, WebhookEvent *ev)
{
	StripeFieldSet *fs = stripe_fieldset_create(NFIELDS);
	StripeFieldSet *dfs = stripe_fieldset_create(1);
	StripeFieldSet *ofs = stripe_fieldset_create(1);
	static const char *const names[NFIELDS] = {"id", "created", "type", "data", "api_version",
	"object", "livemode", "account"};
	StripePage	page,
				data,
				obj;
	StripeSpan *f;
	const char *why;
	bool		bad = false;
	char	   *kind;

	for (int i = 0; i < NFIELDS; i++)
		stripe_fieldset_add(fs, names[i], i);
	stripe_fieldset_finish(fs);
	stripe_fieldset_add(dfs, "object", 0);
	stripe_fieldset_finish(dfs);
	stripe_fieldset_add(ofs, "object", 0);
	stripe_fieldset_finish(ofs);
	if (!stripe_parse_page(payload, len, false, fs, &page, &why))
		malformed(why);
	f = page.rows[0].fields;
	kind = string_field(&f[F_OBJECT], &bad);
	if (kind == NULL || strcmp(kind, "event") != 0)
		malformed("its \"object\" is not \"event\"");
	ev->id = string_field(&f[F_ID], &bad);
	if (ev->id == NULL || !plain(ev->id, "_", MAX_EVENT_ID))
		malformed("its id is not a string of letters, digits and '_'");
	ev->type = string_field(&f[F_TYPE], &bad);
	if (ev->type == NULL || !plain(ev->type, "_.", MAX_EVENT_TYPE))
		malformed("its type is not a string of letters, digits, '_' and '.'");
	if (!stripe_span_int64(&f[F_CREATED], &ev->created) || ev->created < 0 || ev->created > STRIPE_MAX_EVENT_TIME)
		malformed("its created is not a Unix time");
	ev->api_version = string_field(&f[F_VERSION], &bad);
	if (bad || (ev->api_version != NULL && !plain(ev->api_version, "-._", 64)))
		malformed("its api_version is not a version string");
	if (ev->api_version == NULL)
		ev->api_version = "";
	ev->account = string_field(&f[F_ACCOUNT], &bad);
	if (bad)
		malformed("its account is not a string");
	ev->livemode = -1;
	if (f[F_LIVEMODE].start != NULL && !stripe_span_is_null(&f[F_LIVEMODE]))
	{
		if (f[F_LIVEMODE].len == 4 && strncmp(f[F_LIVEMODE].start, "true", 4) == 0)
			ev->livemode = 1;
		else if (f[F_LIVEMODE].len == 5 && strncmp(f[F_LIVEMODE].start, "false", 5) == 0)
			ev->livemode = 0;
		else
			malformed("its livemode is not a boolean");
	}
	if (f[F_DATA].start == NULL || f[F_DATA].start[0] != '{' ||
		!stripe_parse_page(f[F_DATA].start, f[F_DATA].len, false, dfs, &data, &why) ||
		data.rows[0].fields[0].start == NULL || data.rows[0].fields[0].start[0] != '{')
		malformed("its data.object is not an object");
	/* a copy of its own: the apply parses it again */
	ev->object_len = data.rows[0].fields[0].len;
	ev->object = pnstrdup(data.rows[0].fields[0].start, ev->object_len);
	if (!pg_verifymbstr(ev->object, ev->object_len, true))
		malformed("its data.object is not valid text in the database's encoding");
	if (!stripe_parse_page(pnstrdup(ev->object, ev->object_len), ev->object_len, false, ofs, &obj, &why))
		malformed(why);
	ev->object_type = string_field(&obj.rows[0].fields[0], &bad);
}

/* the mode of a key, from its prefix: 1 live, 0 test, -1 unknown */
static int
key_livemode(const char *key)
{
	if (strncmp(key, "sk_live_", 8) == 0 || strncmp(key, "rk_live_", 8) == 0)
		return 1;
	if (strncmp(key, "sk_test_", 8) == 0 || strncmp(key, "rk_test_", 8) == 0)
		return 0;
	return -1;
}

/*
 * Why an event is of another account than the source's, or NULL.  A Connect
 * endpoint's events carry the connected account; an account's own do not:
 * the source's is its server's "account" option, or none.
 */
static const char *
other_account(SyncRun *run, WebhookEvent *ev)
{
	int			mode = key_livemode(run->conn->api_key);
	/* a connected account's source (routed here by its platform): its account */
	const char *mine = run->conn->on_behalf ? run->conn->on_behalf : run->conn->account;

	if (ev->account != NULL ? mine == NULL || strcmp(ev->account, mine) != 0
		: mine != NULL)
		return "another account";
	if (mode >= 0 && ev->livemode >= 0 && mode != ev->livemode)
		return ev->livemode ? "a live mode event for a test mode key" : "a test mode event for a live mode key";
	return NULL;
}

/* the source's tables of the event's object type; false when it syncs none (in a step) */
static bool
open_tables(SyncRun *run, const char *object_type)
{
	ListCell   *lc;
	bool		found = false;

	if (object_type == NULL)
		return false;
	foreach(lc, run->src.objects)
	{
		const StripeObjectDef *def = stripe_object_by_table(lfirst(lc));

		if (def != NULL && strcmp(def->object, object_type) == 0)
		{
			LocalTable *lt = stripe_open_local_table(run, lfirst(lc));

			/* a stored object is no longer rejected */
			lt->has_rejects = true;
			found = true;
		}
	}
	return found;
}

/* records the event as applied; false when it was already (in a step) */
static bool
claim(SyncRun *run, WebhookEvent *ev)
{
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	Datum		values[3] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(ev->id),
	Int64GetDatum(ev->created)};

	stripe_spi("INSERT INTO stripe_sync.applied_events (source, event_id, created) VALUES ($1, $2, $3) "
			   "ON CONFLICT DO NOTHING", 3, types, values, NULL, SPI_OK_INSERT);
	return SPI_processed == 1;
}

static Jsonb *
result(SyncRun *run, WebhookEvent *ev, bool applied, const char *reason, bool outbox)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"source\": ");
	escape_json(&buf, run->src.name);
	appendStringInfoString(&buf, ", \"event\": ");
	escape_json(&buf, ev->id);
	appendStringInfoString(&buf, ", \"type\": ");
	escape_json(&buf, ev->type);
	appendStringInfo(&buf, ", \"applied\": %s, \"reason\": ", applied ? "true" : "false");
	if (reason)
		escape_json(&buf, reason);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfo(&buf, ", \"outbox\": %s}", outbox ? "true" : "false");
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * The event applied, or why not.  Before the source's first sync every
 * object's history is owed, and its backfill sends it: no outbox row then.
 */
static Jsonb *
ingest(SyncRun *run, WebhookEvent *ev)
{
	bool		synced;
	bool		outbox = false;
	const char *why;
	EventFate	fate;

	if ((why = other_account(run, ev)) != NULL)
		return result(run, ev, false, why, false);
	/* before the first sync: the account its rows are keyed by */
	if (run->src.account_id == NULL)
		stripe_run_account(run, false);
	stripe_run_begin(run);
	synced = open_tables(run, ev->object_type);
	if (!claim(run, ev))
	{
		stripe_run_commit(run);
		return result(run, ev, false, "already applied", false);
	}
	stripe_run_commit(run);
	if (run->src.history_until == 0)
		run->src.history_until = PG_INT64_MAX;
	fate = stripe_events_apply_one(run, ev->id, ev->type, ev->api_version, ev->created,
								   ev->object, ev->object_len, &outbox);
	if (fate == EVENT_APPLIED)
		return result(run, ev, true, NULL, outbox);
	return result(run, ev, false,
				  !synced ? "the source does not sync its object's type"
				  : fate == EVENT_NOT_OURS ? "its object was created before the source's sync_from"
				  : "it changes no local table", outbox);
}

/*
 * A platform's delivery of a connected account's event (in a step): the name
 * of the account's source, when the platform syncs it, else NULL and why not.
 */
static char *
connected_source(SyncRun *run, WebhookEvent *ev, const char **why)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(ev->account)};

	stripe_spi("SELECT name, enabled AND deauthorized_at IS NULL FROM stripe_sync.sources "
			   "WHERE platform = $1 AND account_id = $2", 2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		*why = "an account that is not one of the platform's connected accounts";
	else if (!stripe_spi_bool(0, 2))
		*why = "a connected account the platform no longer syncs (deauthorized or stopped)";
	else
		return MemoryContextStrdup(run->cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	return NULL;
}

/*
 * The run that applies the event: the source's own, or, for a Connect
 * platform's delivery of a connected account's event, that account's source
 * (its account_id, dedup and outbox rows, as its poll), verified already with
 * the platform's secret.  NULL with *why when the platform does not sync it.
 */
static SyncRun *
route(SyncRun *run, WebhookEvent *ev, MemoryContext caller, const char **why)
{
	char	   *name;
	SyncRun    *acct;

	*why = NULL;
	if (ev->account == NULL || !run->src.connected_accounts || run->src.platform != NULL ||
		(run->conn->account != NULL && strcmp(ev->account, run->conn->account) == 0))
		return run;
	stripe_run_begin(run);
	name = connected_source(run, ev, why);
	stripe_run_commit(run);
	if (name == NULL)
		return NULL;
	acct = stripe_run_open(name, false, caller);
	MemoryContextSwitchTo(acct->cxt);
	stripe_check_usage(acct);
	acct->conn = stripe_conn_for_server(acct->src.serverid, acct->src.owner);
	acct->conn->on_behalf = acct->src.account_id;
	stripe_run_commit(acct);
	return acct;
}

static char *
text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * stripe_sync.ingest_webhook(source, payload, signature) → jsonb
 * {"source", "event", "type", "applied", "reason", "outbox"}
 */
Datum
stripe_ingest_webhook(PG_FUNCTION_ARGS)
{
	char	   *source = text_arg(fcinfo, 0, "source");
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt;
	SyncRun    *run;
	text	   *payload;
	char	   *header;
	char	   *secret;
	char	   *body;
	size_t		len;
	WebhookEvent ev;
	SyncRun    *volatile applier;
	const char *why;
	Jsonb	   *volatile res = NULL;

	header = text_arg(fcinfo, 2, "signature");
	if (PG_ARGISNULL(1))
		(void) text_arg(fcinfo, 1, "payload");
	payload = PG_GETARG_TEXT_PP(1);
	if (VARSIZE_ANY_EXHDR(payload) > MAX_PAYLOAD)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("webhook payload of %zu bytes is over the limit of %d",
						(size_t) VARSIZE_ANY_EXHDR(payload), MAX_PAYLOAD)));
	run = stripe_run_open(source, false, caller);
	cxt = run->cxt;
	MemoryContextSwitchTo(cxt);
	stripe_check_usage(run);
	run->conn = stripe_conn_for_server(run->src.serverid, run->src.owner);
	secret = owner_secret(run);
	stripe_run_commit(run);

	len = VARSIZE_ANY_EXHDR(payload);
	verify(source, secret, VARDATA_ANY(payload), len, header);
	body = text_to_cstring(payload);
	parse_event(body, len, &ev);
	applier = route(run, &ev, caller, &why);
	PG_TRY();
	{
		Jsonb	   *r = applier ? ingest(applier, &ev) : result(run, &ev, false, why, false);

		MemoryContextSwitchTo(caller);
		res = DatumGetJsonbPCopy(PointerGetDatum(r));
	}
	PG_FINALLY();
	{
		if (applier != NULL)
			stripe_close_local_tables(applier);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	if (applier != NULL && applier != run)
		MemoryContextDelete(applier->cxt);
	MemoryContextDelete(cxt);
	PG_RETURN_JSONB_P(res);
}
