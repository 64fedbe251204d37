/*-------------------------------------------------------------------------
 * ship_batch.h
 *		One batch of the shipper (ship_batch.c): the outbox rows it claims,
 *		the request they make, how Intempt's answer is judged and recorded.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_SHIP_BATCH_H
#define STRIPE_SHIP_BATCH_H

#include "datatype/timestamp.h"
#include "utils/hsearch.h"

#include "http_post.h"

/*
 * An object's key in a set of objects.  Stripe's ids are far shorter; a
 * longer one is cut, which can only hold back more rows than needed.
 */
#define SHIP_OBJECT_KEY		128

typedef struct ShipBatch
{
	MemoryContext cxt;			/* all of the batch, Intempt's answer included */
	void	   *owner;			/* the caller's: its source */
	uint64		credentials;	/* the caller's: which credentials it went with */
	int			n;
	int64	   *ids;			/* in id order */
	HTAB	   *objects;		/* the Stripe objects it carries events of */
	char	   *body;			/* the request */
	size_t		bytes;			/* its length */
} ShipBatch;

typedef enum ShipOutcome
{
	SHIP_DELIVERED,
	SHIP_SPLIT,					/* 413: send again in halves */
	SHIP_RETRY,					/* later, after a backoff */
	SHIP_PAUSE,					/* 401/403: the credentials, not the events */
	SHIP_DEAD					/* refused for good */
} ShipOutcome;

extern HTAB *stripe_ship_object_set(const char *what, MemoryContext cxt);
extern ShipBatch *stripe_ship_claim(const char *source, int64 *after, int limit,
									size_t max_bytes, HTAB *flying, MemoryContext parent);
extern void stripe_ship_flying(HTAB *flying, ShipBatch *b, bool add);
extern ShipOutcome stripe_ship_judge(const StripeHttpResult *res, int n);
extern void stripe_ship_record(ShipBatch *b, ShipOutcome out, const StripeHttpResult *res,
							   TimestampTz retry_at, const char *key, const char *destination);

#endif							/* STRIPE_SHIP_BATCH_H */
