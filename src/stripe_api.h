/*-------------------------------------------------------------------------
 * stripe_api.h
 *		Stripe's errors and headers, above the HTTP transport (stripe_api.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_API_H
#define STRIPE_API_H

#include "options.h"

/*
 * What Stripe said when it refused a request, for a caller that catches the
 * ERROR stripe_api_error threw: taken (and forgotten) with
 * stripe_api_take_refusal right after the catch.
 */
typedef struct StripeRefusal
{
	long		status;			/* 0: the ERROR was not Stripe refusing the request */
	char		code[64];		/* Stripe's error code ("resource_missing"), or "" */
	char		param[64];		/* the parameter it names ("starting_after"), or "" */
} StripeRefusal;

extern void stripe_api_take_refusal(StripeRefusal *r);
extern bool stripe_refusal_cursor_gone(const StripeRefusal *r);

/* what Stripe's headers said of an answer, for its ERROR */
typedef struct StripeAnswerInfo
{
	const char *request_id;		/* Request-Id, or "" */
	const char *rate_reason;	/* Stripe-Rate-Limited-Reason of a 429, or "" */
	bool		replayed;		/* Idempotent-Replayed: the key's saved answer */
	int			attempts;
} StripeAnswerInfo;

extern void stripe_api_error(StripeConn *conn, const char *method, const char *path, long status,
							 const char *body, size_t len,
							 const StripeAnswerInfo *info) pg_attribute_noreturn();
extern char *stripe_api_shown_path(StripeConn *conn, const char *path);
extern char **stripe_api_headers(StripeConn *conn, const char *idempotency_key, int *n);

#endif							/* STRIPE_API_H */
