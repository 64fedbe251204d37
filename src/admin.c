/*-------------------------------------------------------------------------
 * admin.c
 *		SQL-callable management functions.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
/* PostgreSQL's SQL function json_object() and json-c's type share a name */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#undef json_object

#include <json-c/json.h>

#include "account.h"

PG_FUNCTION_INFO_V1(stripe_test_connection);

typedef struct AccountInfo
{
	char	   *id;
	char	   *name;
	bool		has_livemode;
	bool		livemode;
	int64		created;		/* unix seconds; 0 when absent */
} AccountInfo;

static const char *
json_path_string(json_object *root, const char *a, const char *b, const char *c)
{
	json_object *o = root;
	const char *keys[3] = {a, b, c};

	for (int i = 0; i < 3 && keys[i]; i++)
		if (!json_object_is_type(o, json_type_object) ||
			!json_object_object_get_ex(o, keys[i], &o))
			return NULL;
	return json_object_is_type(o, json_type_string) ? json_object_get_string(o) : NULL;
}

/* A small document: json-c is fine here.  Malformed → retried by the caller. */
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
		const char *id = json_path_string(root, "id", NULL, NULL);
		const char *name = json_path_string(root, "settings", "dashboard", "display_name");
		json_object *lm;

		if (name == NULL)
			name = json_path_string(root, "business_profile", "name", NULL);
		if (name == NULL)
			name = json_path_string(root, "email", NULL, NULL);
		if (id != NULL)
		{
			info->id = pstrdup(id);
			info->name = name ? pstrdup(name) : NULL;
			ok = true;
		}
		else
			*why = "Stripe's account object has no id";
		if (json_object_object_get_ex(root, "created", &lm) &&
			json_object_is_type(lm, json_type_int))
			info->created = json_object_get_int64(lm);
		if (json_object_object_get_ex(root, "livemode", &lm))
		{
			info->has_livemode = true;
			info->livemode = json_object_get_boolean(lm);
		}
	}
	PG_FINALLY();
	{
		json_object_put(root);
	}
	PG_END_TRY();
	return ok;
}

/*
 * The id of the account behind a connection: one GET /v1/account.  *created
 * (if not NULL) gets the account's creation time, the oldest any of its
 * objects can be, or 0 when Stripe did not say.
 */
char *
stripe_fetch_account_id(StripeConn *conn, StripeStats *stats, int64 *created)
{
	AccountInfo info = {0};
	StripeResponse resp;

	stripe_request(conn, "GET", "/v1/account", NULL, NULL, false,
				   check_account, &info, &resp, stats);
	if (created)
		*created = info.created;
	return info.id;
}

/*
 * stripe_sync.test_connection(server name) → (account_id, account_name, api_version)
 * One GET /v1/account with the caller's user mapping.
 */
Datum
stripe_test_connection(PG_FUNCTION_ARGS)
{
	char	   *servername = NameStr(*PG_GETARG_NAME(0));
	ForeignServer *server = GetForeignServerByName(servername, false);
	ForeignDataWrapper *fdw = GetForeignDataWrapper(server->fdwid);
	StripeConn *conn;
	AccountInfo info = {0};
	StripeResponse resp;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (strcmp(fdw->fdwname, "stripe_sync") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" does not use the stripe_sync foreign data wrapper",
						servername),
				 errhint("Create it with CREATE SERVER … FOREIGN DATA WRAPPER stripe_sync.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	conn = stripe_conn_for_server(server->serverid, GetUserId());
	stripe_request(conn, "GET", "/v1/account", NULL, NULL, false,
				   check_account, &info, &resp, NULL);

	values[0] = CStringGetTextDatum(info.id);
	if (info.name)
		values[1] = CStringGetTextDatum(info.name);
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(conn->api_version);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
