/*-------------------------------------------------------------------------
 * ratelimit.h
 *		The rate limit shared by every backend and worker (ratelimit.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_RATELIMIT_H
#define STRIPE_RATELIMIT_H

#include "datatype/timestamp.h"
#include "options.h"

extern void stripe_ratelimit_shmem_init(void);
extern void stripe_ratelimit_wait(const StripeConn *conn);
extern TimestampTz stripe_ratelimit_reserve(const StripeConn *conn);

#endif							/* STRIPE_RATELIMIT_H */
