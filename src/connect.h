/*-------------------------------------------------------------------------
 * connect.h
 *		Connect fan-out (connect.c): a platform's connected accounts, each
 *		synced as a source of its own ('<platform>/<acct_…>', its platform
 *		set) inside the platform's run, with the platform's key and rate limit
 *		and the Stripe-Account header.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_CONNECT_H
#define STRIPE_CONNECT_H

#include "sync.h"

/* what it did goes in run->connect (sync.h), for the run's summary */
extern void stripe_connect_fanout(SyncRun *run, struct ConnectTally *tally);

#endif							/* STRIPE_CONNECT_H */
