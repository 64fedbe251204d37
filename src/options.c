/*-------------------------------------------------------------------------
 * options.c
 *		Validators for the stripe_sync and intempt foreign data wrappers, and
 *		the lookup of a server's connection settings.  Modeled on
 *		postgres_fdw: a table of the options valid in each catalog.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "options.h"

typedef struct OptionDef
{
	const char *name;
	Oid			context;
} OptionDef;

static const OptionDef stripe_option_defs[] = {
	{"api_url", ForeignServerRelationId},
	{"api_version", ForeignServerRelationId},
	{"account", ForeignServerRelationId},
	{"api_key", UserMappingRelationId},
	{"webhook_secret", UserMappingRelationId},
	{"object", ForeignTableRelationId},
	{"field", AttributeRelationId},
	{NULL, InvalidOid}
};

static const OptionDef intempt_option_defs[] = {
	{"api_url", ForeignServerRelationId},
	{"org", ForeignServerRelationId},
	{"project", ForeignServerRelationId},
	{"source_id", ForeignServerRelationId},
	{"api_key", UserMappingRelationId},
	{NULL, InvalidOid}
};

PG_FUNCTION_INFO_V1(stripe_fdw_validator);
PG_FUNCTION_INFO_V1(intempt_fdw_validator);

/* http(s)://host[:port][/path], nothing that could smuggle credentials or queries */
bool
stripe_valid_url(const char *url)
{
	const char *host;
	const char *p;

	if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else
		return false;
	if (*host == '\0' || *host == '/' || *host == ':')
		return false;
	for (p = url; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= ' ' || c >= 0x7f || c == '@' || c == '?' || c == '#' ||
			c == '\\' || c == '"' || c == '<' || c == '>')
			return false;
	}
	return true;
}

/*
 * Stripe's path grammar: lower-case letters, digits and _, in segments
 * separated by single slashes ("customers", "checkout/sessions").  Nothing
 * else may reach a request line: no dot segments, no query, no fragment.
 */
bool
stripe_valid_object_path(const char *path)
{
	bool		segment_start = true;

	for (const char *p = path; *p; p++)
	{
		if (*p == '/')
		{
			if (segment_start)
				return false;	/* a leading or a double slash */
			segment_start = true;
		}
		else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
			segment_start = false;
		else
			return false;
	}
	return !segment_start;		/* not empty, no trailing slash */
}

/* s is not empty, and made of letters, digits and the extra characters only */
bool
stripe_chars_in(const char *s, const char *extra)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char) *s) && strchr(extra, *s) == NULL)
			return false;
	return true;
}

static void
bad_value(const char *option, const char *value, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
			 value ? errmsg("invalid value for option \"%s\": \"%s\"", option, value)
			 : errmsg("invalid value for option \"%s\"", option),
			 errdetail("%s", detail),
			 hint ? errhint("%s", hint) : 0));
}

static void
unknown_option(const OptionDef *defs, const char *name, Oid catalog)
{
	StringInfoData buf;
	const OptionDef *d;
	bool		elsewhere = false;

	initStringInfo(&buf);
	for (d = defs; d->name; d++)
	{
		if (d->context == catalog)
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", d->name);
		else if (strcmp(d->name, name) == 0)
			elsewhere = true;
	}
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
			 errmsg("invalid option \"%s\"", name),
			 elsewhere && strcmp(name, "api_key") == 0
			 ? errdetail("API keys belong in a user mapping, never in a server or table.")
			 : elsewhere && strcmp(name, "webhook_secret") == 0
			 ? errdetail("Webhook secrets belong in a user mapping, never in a server or table.")
			 : 0,
			 buf.len > 0
			 ? errhint("Valid options in this context are: %s", buf.data)
			 : errhint("There are no valid options in this context.")));
}

static void
check_api_url(const char *value)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set option \"api_url\""),
				 errdetail("Pointing a server at another host lets a role make the database send requests anywhere."),
				 errhint("Only superusers can set api_url; others use the default.")));
	if (!stripe_valid_url(value))
		bad_value("api_url", value,
				  "The URL must be http:// or https://, a host and an optional port and path, with no user, query or fragment.",
				  NULL);
}

static void
validate(List *options, Oid catalog, const OptionDef *defs, bool intempt)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);
		const OptionDef *d;
		bool		found = false;
		char	   *value;

		for (d = defs; d->name; d++)
			if (d->context == catalog && strcmp(d->name, def->defname) == 0)
				found = true;
		if (!found)
			unknown_option(defs, def->defname, catalog);

		value = defGetString(def);
		if (strcmp(def->defname, "api_url") == 0)
			check_api_url(value);
		else if (strcmp(def->defname, "api_key") == 0)
		{
			/* never echo the value */
			if (value[0] == '\0' || !stripe_chars_in(value, "_-.*"))
				bad_value("api_key", NULL,
						  "The key must be non-empty and made of letters, digits, '_', '-' and '.'.",
						  intempt ? "Use the Intempt API key as prefix.secret." : "Use a Stripe secret (sk_…) or restricted (rk_…) key.");
			if (intempt && strchr(value, '.') == NULL)
				bad_value("api_key", NULL,
						  "An Intempt API key has the form prefix.secret.", NULL);
		}
		else if (strcmp(def->defname, "webhook_secret") == 0)
		{
			/* never echo the value */
			if (strncmp(value, "whsec_", 6) != 0 || !stripe_chars_in(value + 6, "_-+/="))
				bad_value("webhook_secret", NULL,
						  "A webhook signing secret is whsec_ followed by letters, digits, '_', '-', '+', '/' and '='.",
						  "Copy the endpoint's signing secret from Stripe's dashboard (Developers, Webhooks).");
		}
		else if (strcmp(def->defname, "api_version") == 0)
		{
			int			y,
						m,
						dd,
						n = 0;

			if (sscanf(value, "%4d-%2d-%2d%n", &y, &m, &dd, &n) != 3 || n != 10 ||
				m < 1 || m > 12 || dd < 1 || dd > 31 ||
				(value[10] != '\0' && (value[10] != '.' || !stripe_chars_in(value + 11, "_"))))
				bad_value("api_version", value,
						  "A Stripe API version looks like 2026-10-28.endive or 2024-06-20.",
						  NULL);
		}
		else if (strcmp(def->defname, "account") == 0)
		{
			if (strncmp(value, "acct_", 5) != 0 || !stripe_chars_in(value + 5, ""))
				bad_value("account", value, "A Stripe account id looks like acct_1A2b3C.", NULL);
		}
		else if (strcmp(def->defname, "object") == 0)
		{
			if (!stripe_valid_object_path(value))
				bad_value("object", value,
						  "The object is a Stripe list path such as customers or checkout/sessions.",
						  NULL);
		}
		else if (strcmp(def->defname, "field") == 0)
		{
			if (!stripe_chars_in(value, "_"))
				bad_value("field", value, "A field is a top-level Stripe field name such as amount.", NULL);
		}
		else if (strcmp(def->defname, "org") == 0 || strcmp(def->defname, "project") == 0 ||
				 strcmp(def->defname, "source_id") == 0)
		{
			if (!stripe_chars_in(value, "_-"))
				bad_value(def->defname, value,
						  "Use the identifier shown in Intempt: letters, digits, '_' and '-'.", NULL);
		}
	}
}

Datum
stripe_fdw_validator(PG_FUNCTION_ARGS)
{
	validate(untransformRelOptions(PG_GETARG_DATUM(0)), PG_GETARG_OID(1),
			 stripe_option_defs, false);
	PG_RETURN_VOID();
}

Datum
intempt_fdw_validator(PG_FUNCTION_ARGS)
{
	validate(untransformRelOptions(PG_GETARG_DATUM(0)), PG_GETARG_OID(1),
			 intempt_option_defs, true);
	PG_RETURN_VOID();
}

/*
 * The user's mapping for a server, or PUBLIC's; without one, an ERROR that
 * names the server and the fix (GetUserMapping's says only "not found").
 */
UserMapping *
stripe_user_mapping(Oid userid, ForeignServer *server)
{
	if (!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(userid),
							   ObjectIdGetDatum(server->serverid)) &&
		!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
							   ObjectIdGetDatum(server->serverid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %s has no user mapping for server \"%s\"",
						GetUserNameFromId(userid, true) ? GetUserNameFromId(userid, true) : "?",
						server->servername),
				 errdetail("The API key comes from the user mapping, which holds it as api_key."),
				 errhint("CREATE USER MAPPING FOR %s SERVER %s OPTIONS (api_key '…');",
						 GetUserNameFromId(userid, true) ? quote_identifier(GetUserNameFromId(userid, true)) : "CURRENT_USER",
						 quote_identifier(server->servername))));
	return GetUserMapping(userid, server->serverid);
}

/*
 * Connection settings of a Stripe server for a user: the server's options
 * and the key from the user's mapping (or PUBLIC's).
 */
StripeConn *
stripe_conn_for_server(Oid serverid, Oid userid)
{
	ForeignServer *server = GetForeignServer(serverid);
	UserMapping *um = stripe_user_mapping(userid, server);
	StripeConn *conn = palloc0(sizeof(StripeConn));
	ListCell   *lc;

	conn->api_url = STRIPE_DEFAULT_API_URL;
	conn->api_version = STRIPE_DEFAULT_API_VERSION;
	conn->server_name = pstrdup(server->servername);
	foreach(lc, server->options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "api_url") == 0)
		{
			char	   *url = pstrdup(defGetString(def));
			size_t		n = strlen(url);

			while (n > 0 && url[n - 1] == '/')
				url[--n] = '\0';
			conn->api_url = url;
		}
		else if (strcmp(def->defname, "api_version") == 0)
			conn->api_version = pstrdup(defGetString(def));
		else if (strcmp(def->defname, "account") == 0)
			conn->account = pstrdup(defGetString(def));
	}
	foreach(lc, um->options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "api_key") == 0)
			conn->api_key = pstrdup(defGetString(def));
	}
	if (conn->api_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("no API key for server \"%s\"", server->servername),
				 errdetail("The user mapping has no api_key option."),
				 errhint("ALTER USER MAPPING FOR CURRENT_USER SERVER %s OPTIONS (ADD api_key 'sk_…');",
						 quote_identifier(server->servername))));
	return conn;
}
