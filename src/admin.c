/*-------------------------------------------------------------------------
 * admin.c
 *		SQL-callable management functions.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
/* PostgreSQL's SQL function json_object() and json-c's type share a name */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#include "utils/memutils.h"
#undef json_object
#include "utils/tuplestore.h"

#include <json-c/json.h>

#include "account.h"
#include "ratelimit.h"
#include "text.h"

PG_FUNCTION_INFO_V1(stripe_test_connection);
PG_FUNCTION_INFO_V1(stripe_rate_limits);

typedef struct AccountInfo
{
	const char *key;			/* the connection's key, scrubbed from what we keep */
	char	   *id;
	char	   *name;
	int64		created;		/* unix seconds; 0 when absent */
	ErrorData  *refused;		/* Stripe's 403: the key may not read the account */
} AccountInfo;

/* a Unix time Stripe could mean: from 1970 to the year 10000 */
#define MAX_ACCOUNT_CREATED		INT64CONST(253402300799)

/*
 * The string at root.a.b.c, or NULL when a step is absent or not an object,
 * or the value is not a string.  A string with a NUL or invalid UTF-8 makes
 * *why say which field it is.
 */
static const char *
json_path_string(json_object *root, const char *a, const char *b, const char *c,
				 const char **why)
{
	json_object *o = root;
	const char *keys[3] = {a, b, c};
	const char *s;
	int			len;

	for (int i = 0; i < 3 && keys[i]; i++)
		if (!json_object_is_type(o, json_type_object) ||
			!json_object_object_get_ex(o, keys[i], &o))
			return NULL;
	if (!json_object_is_type(o, json_type_string))
		return NULL;
	s = json_object_get_string(o);
	len = json_object_get_string_len(o);
	if (memchr(s, '\0', len) != NULL || !pg_verify_mbstr(PG_UTF8, s, len, true))
	{
		*why = psprintf("Stripe's account object has a NUL or invalid UTF-8 in %s%s%s%s%s",
						a, b ? "." : "", b ? b : "", c ? "." : "", c ? c : "");
		return NULL;
	}
	return s;
}

/* Stripe's account ids are acct_ and letters and digits */
bool
stripe_is_account_id(const char *id)
{
	if (strncmp(id, "acct_", 5) != 0 || id[5] == '\0' || strlen(id) > 255)
		return false;
	for (const char *p = id + 5; *p; p++)
		if (!isalnum((unsigned char) *p))
			return false;
	return true;
}

/*
 * A small document: json-c is fine here.  Malformed → retried by the caller.
 * Every value may be of any JSON type: each is checked before use.
 */
static bool
check_account(StripeResponse *resp, void *arg, const char **why)
{
	AccountInfo *info = arg;
	json_object *volatile root = json_tokener_parse(resp->body);
	bool		ok = false;

	if (root == NULL)
	{
		*why = "malformed JSON from Stripe";
		return false;
	}
	PG_TRY();
	{
		const char *bad = NULL;
		const char *id = json_path_string(root, "id", NULL, NULL, &bad);
		const char *name = json_path_string(root, "settings", "dashboard", "display_name", &bad);
		json_object *v;

		if (name == NULL)
			name = json_path_string(root, "business_profile", "name", NULL, &bad);
		if (name == NULL)
			name = json_path_string(root, "email", NULL, NULL, &bad);
		if (bad != NULL)
			*why = bad;
		else if (id == NULL)
			*why = "Stripe's account object has no id";
		else if (!stripe_is_account_id(id))
			*why = "Stripe's account id is not acct_ followed by letters and digits";
		else
		{
			info->id = pstrdup(id);
			/* Stripe's text, kept and shown: scrubbed like a message */
			info->name = name ? stripe_safe_text(name, strlen(name), strlen(name), info->key) : NULL;
			ok = true;
		}
		if (json_object_object_get_ex(root, "created", &v) &&
			json_object_is_type(v, json_type_int) &&
			json_object_get_int64(v) > 0 && json_object_get_int64(v) <= MAX_ACCOUNT_CREATED)
			info->created = json_object_get_int64(v);
	}
	PG_FINALLY();
	{
		json_object_put(root);
	}
	PG_END_TRY();
	return ok;
}

/*
 * One GET /v1/account, checked.  Returns false when Stripe refuses the key
 * the account (a 403: a restricted key, which in practice never has the
 * permission), with Stripe's error in info->refused; any other failure is an
 * ERROR.
 */
static bool
fetch_account(StripeConn *conn, StripeStats *stats, AccountInfo *info)
{
	StripeResponse resp;
	StripeRefusal refusal;

	memset(info, 0, sizeof(AccountInfo));
	info->key = conn->api_key;
	(void) stripe_request_refusable(conn, "/v1/account", false, check_account, info, &resp,
									stats, &info->refused, &refusal);
	if (info->refused != NULL && info->refused->sqlerrcode != ERRCODE_INSUFFICIENT_PRIVILEGE)
		ReThrowError(info->refused);
	return info->refused == NULL;
}

/* Stripe's words for a refusal, as the ERROR's detail has them (already scrubbed) */
static char *
refusal_text(ErrorData *edata)
{
	return edata->detail ? edata->detail : edata->message;
}

/*
 * GET /v1/account as one request of a stream (a first sync's backfill asks
 * for it beside its first pages, instead of a round trip before them): req
 * is filled in a context of its own under parent.
 */
void
stripe_account_request(StripeConn *conn, StripeManyReq *req, MemoryContext parent)
{
	AccountInfo *info;

	req->cxt = AllocSetContextCreate(parent, "stripe_sync account", ALLOCSET_SMALL_SIZES);
	info = MemoryContextAllocZero(req->cxt, sizeof(AccountInfo));
	info->key = conn->api_key;
	req->path = "/v1/account";
	req->check = check_account;
	req->check_arg = info;
	/* a refusal (a restricted key) comes back here, not as the stream's ERROR */
	req->soft = true;
}

/*
 * The answer to stripe_account_request, as stripe_fetch_account_id gives it
 * (allocated in the current context); any failure but a refusal is an ERROR.
 */
char *
stripe_account_answer(StripeManyReq *req, int64 *created, char **refused)
{
	AccountInfo *info = req->check_arg;

	*created = 0;
	*refused = NULL;
	if (req->error != NULL)
	{
		if (req->error->sqlerrcode != ERRCODE_INSUFFICIENT_PRIVILEGE)
			ReThrowError(req->error);
		*refused = pstrdup(refusal_text(req->error));
		return NULL;
	}
	if (info->id == NULL)
		return NULL;
	*created = info->created;
	return pstrdup(info->id);
}

/*
 * The id of the account behind a connection: one GET /v1/account.  *created
 * gets the account's creation time, the oldest any of its objects can be, or
 * 0 when Stripe did not say.  NULL when the key may not read the account
 * (a restricted key): *refused then says what Stripe said.
 */
char *
stripe_fetch_account_id(StripeConn *conn, StripeStats *stats, int64 *created, char **refused)
{
	AccountInfo info;

	*refused = NULL;
	*created = 0;
	if (!fetch_account(conn, stats, &info))
	{
		*refused = refusal_text(info.refused);
		return NULL;
	}
	*created = info.created;
	return info.id;
}

/* the caller's connection to a server of the stripe_sync wrapper, by name */
static StripeConn *
named_server_conn(const char *servername)
{
	ForeignServer *server = GetForeignServerByName(servername, false);
	ForeignDataWrapper *fdw = GetForeignDataWrapper(server->fdwid);

	if (strcmp(fdw->fdwname, "stripe_sync") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" does not use the stripe_sync foreign data wrapper",
						servername),
				 errhint("Create it with CREATE SERVER … FOREIGN DATA WRAPPER stripe_sync.")));
	return stripe_conn_for_server(server->serverid, GetUserId());
}

/*
 * stripe_sync.test_connection(server name) → (account_id, account_name, api_version)
 * One GET /v1/account with the caller's user mapping.  A key Stripe refuses
 * the account (a restricted key) gets NULL for both, and a NOTICE: the key
 * works (a wrong one is a 401), and the rest depends on its permissions.
 */
Datum
stripe_test_connection(PG_FUNCTION_ARGS)
{
	char	   *servername = NameStr(*PG_GETARG_NAME(0));
	StripeConn *conn;
	AccountInfo info;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	conn = named_server_conn(servername);
	if (!fetch_account(conn, NULL, &info))
		ereport(NOTICE,
				(errmsg("the API key of server \"%s\" cannot read the account", servername),
				 errdetail("%s", refusal_text(info.refused)),
				 errhint("A restricted key serves the foreign tables and syncs of the objects it may read; "
						 "account_id stays NULL.")));

	if (info.id)
		values[0] = CStringGetTextDatum(info.id);
	else
		nulls[0] = true;
	if (info.name)
		values[1] = CStringGetTextDatum(info.name);
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(conn->api_version);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * stripe_sync.rate_limits(server name) → setof (endpoint, mode, requests_per_second,
 * current_requests_per_second): the limits the caller's requests through the
 * server go by, no request made.  First the account in all (endpoint NULL),
 * then each endpoint the limiter tracks; a limit of NULL is none, and the
 * current rate is lower than the limit while a 429 slows it down.
 */
Datum
stripe_rate_limits(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StripeConn *conn = named_server_conn(NameStr(*PG_GETARG_NAME(0)));
	const char *mode = stripe_key_is_live(conn->api_key) ? "live" : "test";
	StripeRateRow *rows;
	int			n = stripe_ratelimit_report(conn, &rows);

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {rows[i].endpoint[0] == '\0', false,
		rows[i].limit == 0, rows[i].current == 0};

		values[0] = CStringGetTextDatum(rows[i].endpoint);
		values[1] = CStringGetTextDatum(mode);
		values[2] = Int32GetDatum(rows[i].limit);
		values[3] = Int32GetDatum(rows[i].current);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
