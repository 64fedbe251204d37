/*-------------------------------------------------------------------------
 * ratelimit.h
 *		The rate limits shared by every backend and worker (ratelimit.c):
 *		per Stripe account in all and per endpoint, slowed down by 429s.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_RATELIMIT_H
#define STRIPE_RATELIMIT_H

#include "datatype/timestamp.h"
#include "options.h"

/* an endpoint's name, "GET /v1/charges/{id}", at most this long with its NUL */
#define STRIPE_ENDPOINT_NAME_LEN	64

/* one row of stripe_sync.rate_limits() */
typedef struct StripeRateRow
{
	char		endpoint[STRIPE_ENDPOINT_NAME_LEN]; /* "" for the account in all */
	int			limit;			/* requests a second; 0 = none */
	int			current;		/* after slowdowns; 0 = none */
} StripeRateRow;

extern void stripe_ratelimit_shmem_init(void);
extern void stripe_ratelimit_wait(const StripeConn *conn, const char *method,
								  const char *path);
extern TimestampTz stripe_ratelimit_reserve(const StripeConn *conn, const char *method,
											const char *path);
extern void stripe_ratelimit_refused(const StripeConn *conn, const char *method,
									 const char *path, const char *reason);
extern bool stripe_key_is_live(const char *api_key);
extern int	stripe_ratelimit_report(const StripeConn *conn, StripeRateRow **rows);

#endif							/* STRIPE_RATELIMIT_H */
