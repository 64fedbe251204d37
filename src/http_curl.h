/*-------------------------------------------------------------------------
 * http_curl.h
 *		The libcurl plumbing of http.c that http_post.c shares: a response
 *		under construction, an easy handle set up for one request, and the
 *		waits that honour interrupts.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_HTTP_CURL_H
#define STRIPE_HTTP_CURL_H

#include <curl/curl.h>

#include "utils/palloc.h"

/* Response under construction; filled by libcurl callbacks, which must not ereport. */
typedef struct HttpBuffer
{
	MemoryContext cxt;
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		oom;
	char		request_id[64];
	char		retry_after[32];
	char		should_retry[8];
	char		content_length[24];
	char		rate_reason[40];	/* Stripe-Rate-Limited-Reason */
	char		replayed[8];	/* Idempotent-Replayed */
} HttpBuffer;

/* libcurl's global state, once per process (ERROR when it cannot be had) */
extern void stripe_curl_init(void);
/* Points an easy handle at one request; buf and errbuf must outlive it. */
extern void stripe_curl_setup(CURL *easy, const char *url, struct curl_slist *headers,
							  const char *method, const char *body,
							  HttpBuffer *buf, char *errbuf);
/* waits at most ms for a transfer of multi, as the wait event Extension */
extern CURLMcode stripe_curl_poll(CURLM *multi, int ms);
/* between two waits: query cancel, SIGTERM, and the postmaster's death */
extern void stripe_curl_interrupts(void);
/* why a transfer failed, as curl or the buffer says */
extern const char *stripe_curl_why(CURLcode rc, const HttpBuffer *buf, const char *errbuf);

#endif							/* STRIPE_HTTP_CURL_H */
