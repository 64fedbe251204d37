/*-------------------------------------------------------------------------
 * http.h
 *		Requests to Stripe's API (http.c): one at a time or many at once,
 *		with the shared rate limit, retries, and Stripe's errors as ERRORs.
 *		The backoff is the shipper's too (its POSTs: http_post.h).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_HTTP_H
#define STRIPE_HTTP_H

#include "datatype/timestamp.h"
#include "options.h"
#include "stripe_api.h"

typedef struct StripeStats
{
	int64		requests;
	int64		retries;
	int64		pages;
	int64		bytes;
} StripeStats;

typedef struct StripeResponse
{
	long		status;
	char	   *body;			/* NUL-terminated, in the caller's context */
	size_t		len;
} StripeResponse;

/*
 * Checks a 2xx body inside the retry loop; returns false (with *why set) when
 * the body is malformed, which makes the request count as failed and retried.
 */
typedef bool (*StripeBodyCheck) (StripeResponse *resp, void *arg, const char **why);

extern bool stripe_request(StripeConn *conn, const char *method,
						   const char *path, const char *form_body,
						   const char *idempotency_key, bool allow_404,
						   StripeBodyCheck check, void *check_arg,
						   StripeResponse *resp, StripeStats *stats);

/*
 * A GET like stripe_request, except that an answer that fails for this
 * request alone (Stripe refusing it: 400, 403, 404…, or malformed past the
 * retries) comes back instead of being thrown: false, with the ERROR in
 * *error (in the caller's context) and what Stripe said in *refusal.  Else
 * *error is NULL and the result is stripe_request's.
 */
extern bool stripe_request_refusable(StripeConn *conn, const char *path, bool allow_404,
									 StripeBodyCheck check, void *check_arg,
									 StripeResponse *resp, StripeStats *stats,
									 ErrorData **error, StripeRefusal *refusal);

/* One GET of stripe_request_stream; feed fills path, check, check_arg, cxt, tag */
typedef struct StripeManyReq
{
	const char *path;
	StripeBodyCheck check;
	void	   *check_arg;
	MemoryContext cxt;			/* body and check's allocations */
	int			tag;			/* the caller's */
	StripeResponse resp;		/* filled when done */
	TimestampTz sent;			/* when the attempt that answered left */
	/*
	 * With soft, an answer that fails for this request alone (Stripe refusing
	 * it: 400, 403, 404…, or malformed past the retries) comes to done with
	 * the ERROR in error (in cxt) instead of ending the stream.  A refused
	 * key, rate limits, server errors and the network still end it.
	 */
	bool		soft;
	ErrorData  *error;
	StripeRefusal refusal;		/* with error: what Stripe said, if it was Stripe */
} StripeManyReq;

typedef bool (*StripeManyFeed) (void *arg, StripeManyReq *req);
typedef void (*StripeManyDone) (void *arg, StripeManyReq *req);

extern void stripe_request_stream(StripeConn *conn, StripeManyFeed feed,
								  StripeManyDone done, void *arg,
								  StripeStats *stats);
/* a stream run a step at a time, with handles of its own (http.c) */
typedef struct StripeStream StripeStream;

extern StripeStream *stripe_stream_open(StripeConn *conn, StripeManyFeed feed,
										StripeManyDone done, void *arg,
										StripeStats *stats);
extern bool stripe_stream_step(StripeStream *ss);
extern void stripe_stream_close(StripeStream *ss);

/* equal-jitter backoff from stripe_sync.retry_base_delay, at least Retry-After */
extern long stripe_backoff_ms(int attempt, const char *retry_after);

#endif							/* STRIPE_HTTP_H */
