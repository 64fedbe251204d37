/*-------------------------------------------------------------------------
 * stripe_api.c
 *		What is Stripe's, above the HTTP transport (http.c): its errors made
 *		ERRORs with the SQLSTATE each status means, and its headers.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <json-c/json.h>

#include "lib/stringinfo.h"

#include "stripe_api.h"
#include "text.h"

/* how much of what Stripe said a message shows */
#define MAX_SHOWN_BODY		300
#define MAX_SHOWN_MESSAGE	1000
#define MAX_SHOWN_FIELD		200

/* the refusal stripe_api_error reported last, until a caller takes it */
static StripeRefusal last_refusal;

void
stripe_api_take_refusal(StripeRefusal *r)
{
	*r = last_refusal;
	memset(&last_refusal, 0, sizeof(last_refusal));
}

/*
 * Stripe no longer knows the object a list's cursor names: it was deleted,
 * or the list's filters no longer take it (400 resource_missing on
 * starting_after or ending_before).
 */
bool
stripe_refusal_cursor_gone(const StripeRefusal *r)
{
	return r->status == 400 && strcmp(r->code, "resource_missing") == 0 &&
		(strcmp(r->param, "starting_after") == 0 || strcmp(r->param, "ending_before") == 0);
}

/* SQLSTATE for a Stripe HTTP status */
static int
status_errcode(long status)
{
	switch (status)
	{
		case 401:
			return ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		case 403:
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		case 404:
			return ERRCODE_FDW_TABLE_NOT_FOUND;
		case 400:
		case 402:
		case 409:
		case 422:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case 429:
			return ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
		default:
			return ERRCODE_FDW_ERROR;
	}
}

/* A field of Stripe's error object when it is a string, fit for a message; else NULL */
static char *
error_field(StripeConn *conn, json_object *err, const char *name, size_t max)
{
	json_object *v;

	if (!json_object_object_get_ex(err, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return stripe_safe_text(json_object_get_string(v), json_object_get_string_len(v),
							max, conn->api_key);
}

/* The request path for a message: it may carry ids from a query or from Stripe. */
char *
stripe_api_shown_path(StripeConn *conn, const char *path)
{
	return stripe_safe_text(path, strlen(path), MAX_SHOWN_MESSAGE, conn->api_key);
}

/* " (code X; param Y; rate limiter R; N attempts)" after Stripe's message, or "" */
static char *
detail_suffix(StripeConn *conn, const char *code, const char *param,
			  const StripeAnswerInfo *info)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (code)
		appendStringInfo(&buf, "code %s", code);
	if (param)
		appendStringInfo(&buf, "%sparam %s", buf.len ? "; " : "", param);
	/* which of Stripe's limiters refused it: global-rate, endpoint-rate, … */
	if (info->rate_reason[0])
		appendStringInfo(&buf, "%srate limiter %s", buf.len ? "; " : "",
						 stripe_safe_text(info->rate_reason, strlen(info->rate_reason),
										  MAX_SHOWN_FIELD, conn->api_key));
	if (info->attempts > 1)
		appendStringInfo(&buf, "%s%d attempts", buf.len ? "; " : "", info->attempts);
	if (info->replayed)
		appendStringInfo(&buf, "%sreplayed for its Idempotency-Key", buf.len ? "; " : "");
	return buf.len ? psprintf(" (%s)", buf.data) : "";
}

/*
 * Reports a non-2xx answer from Stripe as an ERROR: Stripe's message, type,
 * code and param (only when they are strings, and scrubbed of the key), the
 * SQLSTATE the status means, a hint of what to do, and Stripe's request id.
 */
void
stripe_api_error(StripeConn *conn, const char *method, const char *path, long status,
				 const char *body, size_t len, const StripeAnswerInfo *info)
{
	char	   *volatile message = NULL;
	char	   *volatile type = NULL;
	char	   *volatile code = NULL;
	char	   *volatile param = NULL;
	json_object *volatile root = NULL;
	const char *hint;

	if (body && len > 0)
		root = json_tokener_parse(body);
	PG_TRY();
	{
		json_object *err;

		/* any part of the answer may be of any JSON type: only strings are shown */
		if (json_object_is_type(root, json_type_object) &&
			json_object_object_get_ex(root, "error", &err) &&
			json_object_is_type(err, json_type_object))
		{
			message = error_field(conn, err, "message", MAX_SHOWN_MESSAGE);
			type = error_field(conn, err, "type", MAX_SHOWN_FIELD);
			code = error_field(conn, err, "code", MAX_SHOWN_FIELD);
			param = error_field(conn, err, "param", MAX_SHOWN_FIELD);
		}
	}
	PG_FINALLY();
	{
		if (root)
			json_object_put(root);
	}
	PG_END_TRY();

	if (status == 401)
	{
		/* Stripe echoes part of a wrong key: say nothing of what it said */
		message = pstrdup("Stripe did not accept the API key.");
		hint = psprintf("Check the api_key option of the user mapping for server \"%s\".",
						conn->server_name);
	}
	else if (status == 403)
		hint = "The API key lacks a permission this request needs: use a key with read access to this object.";
	else if (status == 429)
		hint = "Stripe kept rate-limiting the request: lower stripe_sync.requests_per_second or raise stripe_sync.max_retries.";
	else if (status >= 500)
		hint = "Stripe had a server error; the request was retried up to stripe_sync.max_retries times.";
	else if (status == 404)
		hint = "Check the foreign table's object option: it must name a Stripe list path such as customers or checkout/sessions.";
	else
		hint = NULL;
	/* Stripe saved this answer for the key: another try would get it again */
	if (info->replayed)
		hint = "Stripe replayed the saved answer of this request's first attempt (same Idempotency-Key), so it was not retried; that attempt may have been carried out: check before repeating the statement.";

	if (message == NULL)
		message = len > 0 ? stripe_safe_text(body, len, MAX_SHOWN_BODY, conn->api_key)
			: pstrdup("(empty response)");

	last_refusal.status = status;
	strlcpy(last_refusal.code, code ? code : "", sizeof(last_refusal.code));
	strlcpy(last_refusal.param, param ? param : "", sizeof(last_refusal.param));

	ereport(ERROR,
			(errcode(status_errcode(status)),
			 errmsg("Stripe request %s %s failed with HTTP %ld%s%s%s",
					method, stripe_api_shown_path(conn, path), status,
					type ? " (" : "", type ? type : "", type ? ")" : ""),
			 errdetail("%s%s", message, detail_suffix(conn, code, param, info)),
			 hint ? errhint("%s", hint) : 0,
			 info->request_id[0]
			 ? errcontext("Stripe request id %s",
						  stripe_safe_text(info->request_id, strlen(info->request_id),
										   MAX_SHOWN_FIELD, conn->api_key))
			 : 0));
}


/*
 * The header lines of a request to Stripe, the secret Authorization first:
 * the caller wipes it once sent.  *n gets how many.
 */
char	  **
stripe_api_headers(StripeConn *conn, const char *idempotency_key, int *n)
{
	char	  **h = palloc0(sizeof(char *) * 5);

	*n = 0;
	h[(*n)++] = psprintf("Authorization: Bearer %s", conn->api_key);
	h[(*n)++] = psprintf("Stripe-Version: %s", conn->api_version);
	if (conn->on_behalf || conn->account)
		h[(*n)++] = psprintf("Stripe-Account: %s", conn->on_behalf ? conn->on_behalf : conn->account);
	if (idempotency_key)
		h[(*n)++] = psprintf("Idempotency-Key: %s", idempotency_key);
	/* no "Expect: 100-continue" round trip before a POST body */
	h[(*n)++] = pstrdup("Expect:");
	return h;
}
