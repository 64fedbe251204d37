/*-------------------------------------------------------------------------
 * account.h
 *		The Stripe account behind a connection (admin.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_ACCOUNT_H
#define STRIPE_ACCOUNT_H

#include "http.h"

extern bool stripe_is_account_id(const char *id);
extern char *stripe_fetch_account_id(StripeConn *conn, StripeStats *stats,
									 int64 *created, char **refused);
extern void stripe_account_request(StripeConn *conn, StripeManyReq *req, MemoryContext parent);
extern char *stripe_account_answer(StripeManyReq *req, int64 *created, char **refused);

#endif							/* STRIPE_ACCOUNT_H */
