/*-------------------------------------------------------------------------
 * http_post.c
 *		JSON POSTs to any HTTP API, up to STRIPE_POSTS_MAX in flight at once
 *		over one libcurl multi handle: the shipper's requests to Intempt.
 *
 * There are no retries here: each answer goes back to the caller, who
 * judges it.  A transport failure comes back as status 0 with the reason.
 * The Authorization header is a secret: it lives only in the request's
 * header list, which is wiped when the request ends.  The easy handles and
 * the multi handle last as long as the process, so that connections are
 * kept alive from one POST to the next.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "http_curl.h"
#include "http_post.h"
#include "text.h"

/* how often a wait looks at interrupts */
#define POLL_INTERVAL_MS	100

typedef struct PostSlot
{
	CURL	   *easy;
	bool		busy;
	void	   *tag;			/* the caller's */
	struct curl_slist *headers;
	HttpBuffer	buf;
	char		errbuf[CURL_ERROR_SIZE];
} PostSlot;

static CURLM *post_multi = NULL;
static PostSlot post_slots[STRIPE_POSTS_MAX];
static int	posts_busy = 0;

/* the header list holds the key: wiped before it is freed */
static void
free_headers(struct curl_slist *headers)
{
	for (struct curl_slist *h = headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
}

/* takes a slot off the multi handle; its answer, if any, stays in its buffer */
static void
slot_release(PostSlot *s)
{
	curl_multi_remove_handle(post_multi, s->easy);
	/* the handle must not point at what is freed after us */
	curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
	free_headers(s->headers);
	s->headers = NULL;
	s->busy = false;
	s->tag = NULL;
	posts_busy--;
}

int
stripe_posts_in_flight(void)
{
	return posts_busy;
}

/*
 * Sends body (JSON) to url with the Authorization header given, which is
 * wiped from our copy.  The answer's body will be allocated in cxt;
 * stripe_post_wait hands it back with tag.  An ERROR when every slot is busy.
 */
void
stripe_post_start(const char *url, const char *authorization, const char *body,
				  void *tag, MemoryContext cxt)
{
	PostSlot   *s = NULL;
	char	   *h;
	struct curl_slist *next;

	stripe_curl_init();
	if (post_multi == NULL && (post_multi = curl_multi_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	for (int i = 0; i < STRIPE_POSTS_MAX && s == NULL; i++)
		if (!post_slots[i].busy)
			s = &post_slots[i];
	if (s == NULL)
		elog(ERROR, "stripe_sync: more than %d POSTs in flight", STRIPE_POSTS_MAX);
	if (s->easy == NULL && (s->easy = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));

	h = psprintf("Authorization: %s", authorization);
	s->headers = curl_slist_append(NULL, h);
	explicit_bzero(h, strlen(h));
	pfree(h);
	if (s->headers == NULL ||
		(next = curl_slist_append(s->headers, "Content-Type: application/json")) == NULL ||
		(next = curl_slist_append(s->headers, "Expect:")) == NULL)
	{
		free_headers(s->headers);
		s->headers = NULL;
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	memset(&s->buf, 0, sizeof(s->buf));
	s->buf.cxt = cxt;
	s->errbuf[0] = '\0';
	stripe_curl_setup(s->easy, url, s->headers, "POST", body, &s->buf, s->errbuf);
	if (curl_multi_add_handle(post_multi, s->easy) != CURLM_OK)
	{
		curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
		free_headers(s->headers);
		s->headers = NULL;
		elog(ERROR, "curl_multi_add_handle failed");
	}
	s->busy = true;
	s->tag = tag;
	posts_busy++;
}

/* a finished transfer's answer, and its slot free again */
static void *
slot_finish(PostSlot *s, CURLcode rc, StripeHttpResult *res)
{
	void	   *tag = s->tag;

	memset(res, 0, sizeof(*res));
	if (rc == CURLE_OK)
		curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &res->status);
	else
	{
		const char *why = stripe_curl_why(rc, &s->buf, s->errbuf);

		strlcpy(res->error, stripe_safe_text(why, strlen(why), sizeof(res->error) - 1, NULL),
				sizeof(res->error));
	}
	res->body = s->buf.data ? s->buf.data : MemoryContextStrdup(s->buf.cxt, "");
	res->len = s->buf.len;
	strlcpy(res->retry_after, s->buf.retry_after, sizeof(res->retry_after));
	slot_release(s);
	return tag;
}

/*
 * Waits at most timeout_ms for a POST to end, honouring interrupts.  Returns
 * its tag with its answer in res, or NULL when none ended in time or none is
 * in flight.
 */
void *
stripe_post_wait(int timeout_ms, StripeHttpResult *res)
{
	TimestampTz end = GetCurrentTimestamp() + (int64) timeout_ms * 1000;

	while (posts_busy > 0)
	{
		int			running;
		int			left;
		long		ms;
		CURLMsg    *msg;
		CURLMcode	mc = curl_multi_perform(post_multi, &running);

		if (mc != CURLM_OK)
			elog(ERROR, "curl_multi_perform failed: %s", curl_multi_strerror(mc));
		while ((msg = curl_multi_info_read(post_multi, &left)) != NULL)
		{
			if (msg->msg != CURLMSG_DONE)
				continue;
			for (int i = 0; i < STRIPE_POSTS_MAX; i++)
				if (post_slots[i].busy && post_slots[i].easy == msg->easy_handle)
					return slot_finish(&post_slots[i], msg->data.result, res);
		}
		ms = (long) ((end - GetCurrentTimestamp()) / 1000);
		if (ms <= 0)
			break;
		mc = stripe_curl_poll(post_multi, (int) Min(ms, POLL_INTERVAL_MS));
		if (mc != CURLM_OK && mc != CURLM_UNRECOVERABLE_POLL)
			elog(ERROR, "curl_multi_poll failed: %s", curl_multi_strerror(mc));
		stripe_curl_interrupts();
	}
	return NULL;
}

/*
 * Drops every POST in flight (their connections are closed by libcurl).  The
 * answers' memory belongs to the caller's contexts, which may be gone: it is
 * not touched.
 */
void
stripe_posts_abort(void)
{
	for (int i = 0; i < STRIPE_POSTS_MAX; i++)
		if (post_slots[i].busy)
			slot_release(&post_slots[i]);
}
