/*-------------------------------------------------------------------------
 * http_post.h
 *		JSON POSTs to any HTTP API, several in flight at once (http_post.c):
 *		the shipper's requests to Intempt.  No retries: the caller judges.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_HTTP_POST_H
#define STRIPE_HTTP_POST_H

#include "utils/palloc.h"

/* POSTs in flight at once, at most (bounds stripe_sync.outbox_concurrency) */
#define STRIPE_POSTS_MAX	64

typedef struct StripeHttpResult
{
	long		status;			/* 0: no answer, see error */
	char	   *body;			/* NUL-terminated, in the context given to the POST */
	size_t		len;
	char		retry_after[32];
	char		error[256];
} StripeHttpResult;

extern void stripe_post_start(const char *url, const char *authorization,
							  const char *body, void *tag, MemoryContext cxt);
extern void *stripe_post_wait(int timeout_ms, StripeHttpResult *res);
extern int	stripe_posts_in_flight(void);
extern void stripe_posts_abort(void);

#endif							/* STRIPE_HTTP_POST_H */
