/*-------------------------------------------------------------------------
 * events.h
 *		The incremental part of a sync (sync_events.c): Stripe's events since
 *		the source's cursor, applied oldest first; the objects of events in
 *		another API version read again (sync_reread.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_EVENTS_H
#define STRIPE_EVENTS_H

#include "sync.h"

/* events older than Stripe keeps (30 days), with a day's margin */
#define STRIPE_EVENT_RETENTION_SECS	(29 * 86400)
/* the last second of year 9999: a later event time is not Stripe's */
#define STRIPE_MAX_EVENT_TIME	INT64CONST(253402300799)

/* what became of an event here */
typedef enum EventFate
{
	EVENT_APPLIED,				/* its object's state is in the local table */
	EVENT_SKIPPED,				/* it changes no local table */
	EVENT_NOT_OURS				/* its object was created before sync_from */
} EventFate;

extern bool stripe_events_feed_first(SyncRun *run, MemoryContext parent, StripeManyReq *req);
extern void stripe_events_first_done(SyncRun *run, StripeManyReq *req);
extern void stripe_sync_events(SyncRun *run);
extern EventFate stripe_events_apply_one(SyncRun *run, const char *id, const char *type,
										 const char *api_version, int64 created, char *object,
										 int object_len, bool *outbox);

/*
 * sync_reread.c: the objects of events in another API version than the
 * source's, read again at the source's (once per object and sync).
 */
#define REREAD_KEY_LEN		320

typedef enum RereadState
{
	REREAD_QUEUED,				/* to be read */
	REREAD_FOUND,				/* read: row holds it, not yet applied */
	REREAD_APPLIED,				/* its state is in the local table */
	REREAD_GONE,				/* Stripe no longer has it (404, or deleted) */
	REREAD_FAILED				/* Stripe refused it: why */
} RereadState;

typedef struct RereadEntry
{
	char		key[REREAD_KEY_LEN];	/* table/id */
	RereadState state;
	LocalTable *lt;
	char	   *id;
	StripeRow  *row;
	TimestampTz observed;		/* when Stripe's state was seen */
	char	   *why;
} RereadEntry;

typedef struct Rereads Rereads;

extern Rereads *stripe_rereads_create(SyncRun *run, MemoryContext cxt);
extern bool stripe_rereads_want(Rereads *rr, LocalTable *lt, const char *id);
extern bool stripe_rereads_pending(Rereads *rr);
extern void stripe_rereads_fetch(Rereads *rr, MemoryContext page_cxt);
extern RereadEntry *stripe_rereads_get(Rereads *rr, LocalTable *lt, const char *id);

#endif							/* STRIPE_EVENTS_H */
