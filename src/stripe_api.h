/*-------------------------------------------------------------------------
 * stripe_api.h
 *		Stripe's errors and headers, above the HTTP transport (stripe_api.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_API_H
#define STRIPE_API_H

#include "options.h"

extern void stripe_api_error(StripeConn *conn, const char *method, const char *path, long status,
							 const char *body, size_t len, const char *request_id,
							 int attempts) pg_attribute_noreturn();
extern char *stripe_api_shown_path(StripeConn *conn, const char *path);
extern char **stripe_api_headers(StripeConn *conn, const char *idempotency_key, int *n);

#endif							/* STRIPE_API_H */
