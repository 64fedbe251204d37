/*-------------------------------------------------------------------------
 * events.h
 *		The incremental part of a sync (sync_events.c): Stripe's events since
 *		the source's cursor, applied oldest first.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_EVENTS_H
#define STRIPE_EVENTS_H

#include "sync.h"

/* events older than Stripe keeps (30 days), with a day's margin */
#define STRIPE_EVENT_RETENTION_SECS	(29 * 86400)

extern bool stripe_events_feed_first(SyncRun *run, MemoryContext parent, StripeManyReq *req);
extern void stripe_events_first_done(SyncRun *run, StripeManyReq *req);
extern void stripe_sync_events(SyncRun *run);

#endif							/* STRIPE_EVENTS_H */
