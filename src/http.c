/*-------------------------------------------------------------------------
 * http.c
 *		Requests to Stripe's API over libcurl: one keep-alive handle per
 *		backend, interruptible waits, retries with backoff and jitter, and
 *		Stripe's errors turned into ERRORs that never show the API key.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "http.h"
#include "http_curl.h"
#include "ratelimit.h"
#include "stripe_api.h"
#include "text.h"

#define MAX_BODY_BYTES		(256 * 1024 * 1024)
#define MAX_RETRY_WAIT_MS	60000
#define POLL_INTERVAL_MS	100

/* what a message shows of Stripe's text, in bytes */
#define MAX_SHOWN_MESSAGE	1000

static CURL *stripe_easy = NULL;
static CURLM *stripe_multi = NULL;

void
stripe_curl_init(void)
{
	static bool done = false;

	if (done)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	done = true;
}

static void
ensure_curl(void)
{
	if (stripe_easy != NULL)
		return;
	stripe_curl_init();
	stripe_multi = curl_multi_init();
	stripe_easy = curl_easy_init();
	if (stripe_multi == NULL || stripe_easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpBuffer *buf = (HttpBuffer *) userdata;
	size_t		n = size * nmemb;

	if (buf->len + n + 1 > buf->cap)
	{
		size_t		newcap = Max(buf->cap * 2, buf->len + n + 1);
		char	   *newdata;

		/* size the buffer once from Content-Length rather than doubling */
		if (buf->cap == 0 && buf->content_length[0])
		{
			size_t		cl = strtoul(buf->content_length, NULL, 10);

			if (cl + 1 > newcap && cl < MAX_BODY_BYTES)
				newcap = cl + 1;
		}

		if (newcap > MAX_BODY_BYTES)
		{
			buf->oom = true;
			return 0;
		}
		/* no ereport inside libcurl: ask for memory without throwing */
		newdata = MemoryContextAllocExtended(buf->cxt, newcap,
											 MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
		if (newdata == NULL)
		{
			buf->oom = true;
			return 0;
		}
		if (buf->len > 0)
			memcpy(newdata, buf->data, buf->len);
		if (buf->data)
			pfree(buf->data);
		buf->data = newdata;
		buf->cap = newcap;
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

static void
copy_header(char *dst, size_t dstlen, const char *val, size_t vallen)
{
	while (vallen > 0 && (val[vallen - 1] == '\r' || val[vallen - 1] == '\n' ||
						  val[vallen - 1] == ' '))
		vallen--;
	while (vallen > 0 && *val == ' ')
		val++, vallen--;
	if (vallen >= dstlen)
		vallen = dstlen - 1;
	memcpy(dst, val, vallen);
	dst[vallen] = '\0';
}

static size_t
header_cb(char *ptr, size_t size, size_t nitems, void *userdata)
{
	HttpBuffer *buf = (HttpBuffer *) userdata;
	size_t		n = size * nitems;
	static const struct
	{
		const char *name;
		size_t		off;
		size_t		len;
	}			wanted[] =
	{
		{"request-id:", offsetof(HttpBuffer, request_id), sizeof(((HttpBuffer *) 0)->request_id)},
		{"retry-after:", offsetof(HttpBuffer, retry_after), sizeof(((HttpBuffer *) 0)->retry_after)},
		{"stripe-should-retry:", offsetof(HttpBuffer, should_retry), sizeof(((HttpBuffer *) 0)->should_retry)},
		{"content-length:", offsetof(HttpBuffer, content_length), sizeof(((HttpBuffer *) 0)->content_length)},
		{"stripe-rate-limited-reason:", offsetof(HttpBuffer, rate_reason), sizeof(((HttpBuffer *) 0)->rate_reason)},
		{"idempotent-replayed:", offsetof(HttpBuffer, replayed), sizeof(((HttpBuffer *) 0)->replayed)},
	};

	for (size_t i = 0; i < lengthof(wanted); i++)
	{
		size_t		nl = strlen(wanted[i].name);

		if (n > nl && pg_strncasecmp(ptr, wanted[i].name, nl) == 0)
			copy_header((char *) buf + wanted[i].off, wanted[i].len,
						ptr + nl, n - nl);
	}
	return n;
}

/*
 * Waits for the transfers in flight, at most ms, as the wait event Extension:
 * pg_stat_activity shows a backend waiting on Stripe or Intempt as waiting.
 */
CURLMcode
stripe_curl_poll(CURLM *multi, int ms)
{
	CURLMcode	mc;

	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	mc = curl_multi_poll(multi, NULL, 0, ms, NULL);
	pgstat_report_wait_end();
	return mc;
}

void
stripe_curl_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	/* as WL_EXIT_ON_PM_DEATH does for latch waits: no orphans after a crash */
	if (!PostmasterIsAlive())
		proc_exit(1);
}

const char *
stripe_curl_why(CURLcode rc, const HttpBuffer *buf, const char *errbuf)
{
	return buf->oom ? "response too large or out of memory" :
		(errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

/*
 * Runs the transfer through the multi interface so that we can wake up every
 * POLL_INTERVAL_MS and honour query cancel, statement_timeout and SIGTERM.
 */
static CURLcode
perform_interruptible(void)
{
	volatile CURLcode result = CURLE_OK;
	volatile bool added = false;

	PG_TRY();
	{
		int			running = 1;

		if (curl_multi_add_handle(stripe_multi, stripe_easy) != CURLM_OK)
			elog(ERROR, "curl_multi_add_handle failed");
		added = true;
		while (running)
		{
			CURLMcode	mc = curl_multi_perform(stripe_multi, &running);

			if (mc != CURLM_OK)
				elog(ERROR, "curl_multi_perform failed: %s", curl_multi_strerror(mc));
			if (!running)
				break;
			mc = stripe_curl_poll(stripe_multi, POLL_INTERVAL_MS);
			if (mc != CURLM_OK && mc != CURLM_UNRECOVERABLE_POLL)
				elog(ERROR, "curl_multi_poll failed: %s", curl_multi_strerror(mc));
			stripe_curl_interrupts();
		}
		for (;;)
		{
			int			left;
			CURLMsg    *msg = curl_multi_info_read(stripe_multi, &left);

			if (msg == NULL)
				break;
			if (msg->msg == CURLMSG_DONE)
				result = msg->data.result;
		}
	}
	PG_FINALLY();
	{
		/* an aborted transfer's connection is closed by libcurl here */
		if (added)
			curl_multi_remove_handle(stripe_multi, stripe_easy);
	}
	PG_END_TRY();
	return result;
}

/* Waits ms milliseconds, waking for interrupts. */
static void
interruptible_sleep(long ms)
{
	TimestampTz end = GetCurrentTimestamp() + ms * 1000L;

	for (;;)
	{
		long		left = (long) ((end - GetCurrentTimestamp()) / 1000);

		CHECK_FOR_INTERRUPTS();
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

long
stripe_backoff_ms(int attempt, const char *retry_after)
{
	double		cap = (double) stripe_retry_base_delay * (1 << Min(attempt, 16));
	long		ms;

	cap = Min(cap, (double) MAX_RETRY_WAIT_MS);
	/* "equal jitter": half fixed, half random, so retries spread but still back off */
	ms = (long) (cap / 2 + pg_prng_double(&pg_global_prng_state) * cap / 2);
	if (retry_after && retry_after[0])
	{
		char	   *end;
		double		secs = strtod(retry_after, &end);

		if (end != retry_after && secs >= 0)
			ms = Max(ms, (long) Min(secs * 1000.0, (double) MAX_RETRY_WAIT_MS));
	}
	return ms;
}

/*
 * The request headers; the API key only ever lives in the list this returns
 * (the caller frees it with curl_slist_free_all, also on ERROR: pass a
 * volatile pointer that is NULL until this returns).
 */
static struct curl_slist *
build_headers(StripeConn *conn, const char *idempotency_key)
{
	struct curl_slist *headers = NULL;
	int			n;
	char	  **lines = stripe_api_headers(conn, idempotency_key, &n);

	for (int i = 0; i < n; i++)
	{
		struct curl_slist *next = curl_slist_append(headers, lines[i]);

		if (next == NULL)
		{
			/* a failed append leaves the list alone: free it before throwing */
			curl_slist_free_all(headers);
			explicit_bzero(lines[0], strlen(lines[0]));
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
		headers = next;
	}
	/* the key now lives only in the list */
	explicit_bzero(lines[0], strlen(lines[0]));
	return headers;
}

void
stripe_curl_setup(CURL *easy, const char *url, struct curl_slist *headers,
				  const char *method, const char *form_body,
				  HttpBuffer *buf, char *errbuf)
{
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "stripe_sync/0.2");
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) stripe_http_timeout * 1000L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) Min(stripe_http_timeout, 10) * 1000L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, buf);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, buf);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
	if (strcmp(method, "GET") == 0)
	{
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	}
	else if (strcmp(method, "POST") == 0)
	{
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) (form_body ? strlen(form_body) : 0));
		curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, form_body ? form_body : "");
	}
	else
	{
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
	}
}

typedef enum AttemptOutcome
{
	ATTEMPT_OK,					/* 2xx that passed the check: resp is filled */
	ATTEMPT_404,				/* allowed 404: resp is filled */
	ATTEMPT_RETRY				/* wait *retry_ms and send it again */
} AttemptOutcome;

/*
 * Judges one finished attempt: success, a retry after a backoff, or an ERROR
 * (which does not return).  The same rules for one request and for many.
 */
static AttemptOutcome
judge_attempt(StripeConn *conn, const char *method, const char *path,
			  CURL *easy, CURLcode rc, HttpBuffer *buf, char *errbuf,
			  bool allow_404, StripeBodyCheck check, void *check_arg,
			  StripeResponse *resp, int attempt, StripeStats *stats,
			  long *retry_ms)
{
	long		status = 0;
	const char *why = NULL;
	bool		retryable;
	StripeRefusal stale;

	/* a refusal reported before belongs to an ERROR nobody caught as such */
	stripe_api_take_refusal(&stale);
	if (stats)
		stats->bytes += buf->len;
	if (rc == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

	if (rc != CURLE_OK)
	{
		why = stripe_curl_why(rc, buf, errbuf);
		retryable = !buf->oom &&
			(rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_COULDNT_CONNECT ||
			 rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
			 rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE ||
			 rc == CURLE_SSL_CONNECT_ERROR ||
			 rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM ||
			 rc == CURLE_BAD_CONTENT_ENCODING);
	}
	else if (status >= 200 && status < 300)
	{
		MemoryContext old = MemoryContextSwitchTo(buf->cxt);
		bool		ok;

		resp->status = status;
		resp->body = buf->data ? buf->data : pstrdup("");
		resp->len = buf->len;
		/* what the check builds lives as long as the body */
		ok = (check == NULL || check(resp, check_arg, &why));
		MemoryContextSwitchTo(old);
		if (ok)
			return ATTEMPT_OK;
		retryable = true;		/* malformed or truncated JSON */
	}
	else if (status == 404 && allow_404)
	{
		resp->status = status;
		resp->body = buf->data;
		resp->len = buf->len;
		return ATTEMPT_404;
	}
	else
	{
		retryable = (status == 408 || status == 409 || status == 429 || status >= 500);
		/* whether retried or not, the next requests go slower */
		if (status == 429)
			stripe_ratelimit_refused(conn, method, path, buf->rate_reason);
		if (pg_strcasecmp(buf->should_retry, "false") == 0)
			retryable = false;
		else if (pg_strcasecmp(buf->should_retry, "true") == 0)
			retryable = true;
		/* the key's saved answer: the same key would get it again */
		if (pg_strcasecmp(buf->replayed, "true") == 0)
			retryable = false;
	}

	/* a parse error or curl's message may quote what the server sent */
	if (why != NULL)
		why = stripe_safe_text(why, strlen(why), MAX_SHOWN_MESSAGE, conn->api_key);

	if (retryable && attempt < stripe_max_retries)
	{
		*retry_ms = stripe_backoff_ms(attempt, buf->retry_after);
		if (stats)
			stats->retries++;
		ereport(DEBUG1,
				(errmsg("retrying Stripe request %s %s in %ld ms: %s",
						method, stripe_api_shown_path(conn, path), *retry_ms,
						why ? why : psprintf("HTTP %ld", status))));
		if (buf->data)
			pfree(buf->data);
		buf->data = NULL;
		return ATTEMPT_RETRY;
	}

	if (status != 0 && why == NULL)
	{
		StripeAnswerInfo info = {buf->request_id, buf->rate_reason,
		pg_strcasecmp(buf->replayed, "true") == 0, attempt + 1};

		stripe_api_error(conn, method, path, status, buf->data, buf->len, &info);
	}

	ereport(ERROR,
			(errcode(rc != CURLE_OK ? ERRCODE_CONNECTION_FAILURE : ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("Stripe request %s %s failed after %d attempt%s",
					method, stripe_api_shown_path(conn, path), attempt + 1, attempt == 0 ? "" : "s"),
			 errdetail("%s", why),
			 rc != CURLE_OK
			 ? errhint("Check that the api_url of server \"%s\" is reachable; stripe_sync.http_timeout and stripe_sync.max_retries set the patience.",
					   conn->server_name)
			 : errhint("Stripe's answer was not the JSON expected; stripe_sync.max_retries sets how often it is asked again.")));
	return ATTEMPT_RETRY;		/* keep compiler quiet */
}

/*
 * Sends one request to Stripe, retrying what Stripe says is retryable.
 *
 * path is relative to the server's api_url ("/v1/charges?limit=100").  On
 * success resp holds the 2xx answer, its body allocated in the caller's
 * memory context.  Returns false only for a 404 when allow_404 is set.
 * Everything else that is not a success is an ERROR.
 */
bool
stripe_request(StripeConn *conn, const char *method, const char *path,
			   const char *form_body, const char *idempotency_key,
			   bool allow_404, StripeBodyCheck check, void *check_arg,
			   StripeResponse *resp, StripeStats *stats)
{
	char	   *url = psprintf("%s%s", conn->api_url, path);
	int			attempt;
	char		errbuf[CURL_ERROR_SIZE];

	ensure_curl();

	for (attempt = 0;; attempt++)
	{
		HttpBuffer	buf;
		struct curl_slist *volatile headers = NULL;
		volatile CURLcode rc = CURLE_OK;
		long		ms = 0;

		memset(&buf, 0, sizeof(buf));
		buf.cxt = CurrentMemoryContext;
		errbuf[0] = '\0';

		PG_TRY();
		{
			headers = build_headers(conn, idempotency_key);
			stripe_curl_setup(stripe_easy, url, headers, method, form_body, &buf, errbuf);
			stripe_ratelimit_wait(conn, method, path);
			if (stats)
				stats->requests++;
			rc = perform_interruptible();
		}
		PG_FINALLY();
		{
			curl_easy_setopt(stripe_easy, CURLOPT_HTTPHEADER, NULL);
			curl_slist_free_all(headers);
		}
		PG_END_TRY();

		switch (judge_attempt(conn, method, path, stripe_easy, rc, &buf, errbuf,
							  allow_404, check, check_arg, resp, attempt, stats, &ms))
		{
			case ATTEMPT_OK:
				return true;
			case ATTEMPT_404:
				return false;
			case ATTEMPT_RETRY:
				interruptible_sleep(ms);
				break;
		}
	}
}

/* an ERROR that is one request's alone (see StripeManyReq.soft) */
static bool
soft_error(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE ||
		sqlerrcode == ERRCODE_FDW_TABLE_NOT_FOUND ||
		sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE ||
		sqlerrcode == ERRCODE_FDW_INVALID_DATA_TYPE;
}

/*
 * Catches the ERROR a request just threw when it is soft_error's: copied
 * into cxt with what Stripe said; anything else goes on up.  Nothing
 * transactional happens between the request's ereport and the catch (the
 * judgement only formats), so no subtransaction is needed to go on.
 */
static ErrorData *
catch_refusal(MemoryContext cxt, StripeRefusal *refusal)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	ErrorData  *edata = CopyErrorData();

	MemoryContextSwitchTo(old);
	if (!soft_error(edata->sqlerrcode))
		PG_RE_THROW();
	FlushErrorState();
	stripe_api_take_refusal(refusal);
	return edata;
}

bool
stripe_request_refusable(StripeConn *conn, const char *path, bool allow_404,
						 StripeBodyCheck check, void *check_arg, StripeResponse *resp,
						 StripeStats *stats, ErrorData **error, StripeRefusal *refusal)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool found = false;

	*error = NULL;
	memset(refusal, 0, sizeof(StripeRefusal));
	PG_TRY();
	{
		found = stripe_request(conn, "GET", path, NULL, NULL, allow_404, check, check_arg,
							   resp, stats);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		*error = catch_refusal(cxt, refusal);
	}
	PG_END_TRY();
	return found;
}

/* ---------- many requests at once ---------- */

#define MAX_POOL	256			/* the GUC's upper bound */

/* easy handles kept across calls, so that their connections are reused */
static CURL *easy_pool[MAX_POOL];

typedef struct StreamSlot
{
	StripeManyReq *req;			/* NULL: free */
	CURL	   *easy;
	bool		added;			/* on the multi handle */
	struct curl_slist *headers;
	char	   *url;
	HttpBuffer	buf;
	char		errbuf[CURL_ERROR_SIZE];
	int			attempt;
	TimestampTz retry_at;		/* waiting for a retry until then, when !added */
	bool		reserved;		/* set up, waiting for its rate slot */
	TimestampTz go_at;			/* that slot's time */
	CURLcode	rc;				/* how its last transfer ended */
} StreamSlot;

/*
 * A stream of requests: stripe_request_stream's, on the backend's shared
 * handles, or an owned one (stripe_stream_open) with handles of its own, so
 * that it can stay open between the calls of an FDW scan.
 */
struct StripeStream
{
	StripeConn *conn;
	StripeManyFeed feed;
	StripeManyDone done;
	void	   *arg;
	StripeStats *stats;
	MemoryContext cxt;			/* requests and urls */
	CURLM	   *multi;
	StreamSlot *slots;
	int			nslots;
	bool		feed_empty;
	bool		owned;
	bool		closed;
	MemoryContextCallback release;
};

/*
 * Sets an attempt up and takes its rate slot; slot_launch sends it when the
 * slot comes.  Waiting here instead would hold back the transfers already
 * set up: a round of N new requests would all leave together, N slots late.
 */
static void
slot_start(StripeConn *conn, StreamSlot *s, MemoryContext cxt, StripeStats *stats)
{
	memset(&s->buf, 0, sizeof(s->buf));
	s->buf.cxt = s->req->cxt;
	s->errbuf[0] = '\0';
	if (s->url == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		s->url = psprintf("%s%s", conn->api_url, s->req->path);
		MemoryContextSwitchTo(old);
	}
	s->headers = build_headers(conn, NULL);
	stripe_curl_setup(s->easy, s->url, s->headers, "GET", NULL, &s->buf, s->errbuf);
	/* every request takes its turn with the shared limit before it leaves */
	s->go_at = stripe_ratelimit_reserve(conn, "GET", s->req->path);
	s->reserved = true;
}

static void
slot_launch(CURLM *multi, StreamSlot *s, StripeStats *stats)
{
	if (stats)
		stats->requests++;
	s->req->sent = GetCurrentTimestamp();
	if (curl_multi_add_handle(multi, s->easy) != CURLM_OK)
		elog(ERROR, "curl_multi_add_handle failed");
	s->added = true;
	s->reserved = false;
}

static void
slot_detach(CURLM *multi, StreamSlot *s)
{
	if (s->added)
		curl_multi_remove_handle(multi, s->easy);
	s->added = false;
	if (s->easy)
	{
		/* the pooled handle must not point at what is freed after us */
		curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, NULL);
	}
	curl_slist_free_all(s->headers);
	s->headers = NULL;
	s->reserved = false;
}

/*
 * judge_attempt for a slot of the stream: a soft request's own failure is
 * kept in req->error (see catch_refusal), and the request ends as done.
 */
static AttemptOutcome
judge_soft(StripeConn *conn, StreamSlot *s, StripeStats *stats, long *ms)
{
	StripeManyReq *req = s->req;
	CURLcode	rc = s->rc;
	MemoryContext cxt = CurrentMemoryContext;
	volatile AttemptOutcome out = ATTEMPT_RETRY;

	PG_TRY();
	{
		out = judge_attempt(conn, "GET", req->path, s->easy, rc, &s->buf, s->errbuf, false,
							req->check, req->check_arg, &req->resp, s->attempt, stats, ms);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		if (!req->soft)
			PG_RE_THROW();
		req->error = catch_refusal(req->cxt, &req->refusal);
		out = ATTEMPT_404;		/* done, without an answer */
	}
	PG_END_TRY();
	return out;
}

/*
 * Takes the next finished transfer, if any: judges it, then hands it to done
 * or sets its retry.  Returns false when none has finished.
 */
static bool
stream_finished(StripeStream *ss)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(ss->multi, &left)) != NULL)
	{
		StreamSlot *s = NULL;
		long		ms = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		for (int i = 0; i < ss->nslots; i++)
			if (ss->slots[i].added && ss->slots[i].easy == msg->easy_handle)
				s = &ss->slots[i];
		if (s == NULL)
			continue;
		s->rc = msg->data.result;
		slot_detach(ss->multi, s);
		switch (judge_soft(ss->conn, s, ss->stats, &ms))
		{
			case ATTEMPT_OK:
			case ATTEMPT_404:
				{
					StripeManyReq *req = s->req;

					s->req = NULL;
					pfree(s->url);
					s->url = NULL;
					/* done may have more work now */
					ss->feed_empty = false;
					ss->done(ss->arg, req);
					pfree(req);
					break;
				}
			case ATTEMPT_RETRY:
				s->attempt++;
				s->retry_at = GetCurrentTimestamp() + ms * 1000L;
				break;
		}
		return true;
	}
	return false;
}

/*
 * Starts what is due in the stream's slots, retries first, then new work from
 * feed.  Returns the slots busy and, in *wait_ms, how long until the next
 * start is due.
 */
static int
stream_start_due(StripeStream *ss, long *wait_ms)
{
	int			busy = 0;
	TimestampTz now = GetCurrentTimestamp();

	*wait_ms = POLL_INTERVAL_MS;
	for (int i = 0; i < ss->nslots; i++)
	{
		StreamSlot *s = &ss->slots[i];

		if (s->req != NULL && !s->added && !s->reserved && s->retry_at <= now)
			slot_start(ss->conn, s, ss->cxt, ss->stats);
		if (s->req == NULL && !ss->feed_empty)
		{
			s->req = MemoryContextAllocZero(ss->cxt, sizeof(StripeManyReq));
			if (ss->feed(ss->arg, s->req))
			{
				s->attempt = 0;
				s->url = NULL;
				slot_start(ss->conn, s, ss->cxt, ss->stats);
			}
			else
			{
				pfree(s->req);
				s->req = NULL;
				ss->feed_empty = true;
			}
		}
		if (s->reserved && s->go_at <= GetCurrentTimestamp())
			slot_launch(ss->multi, s, ss->stats);
		if (s->req != NULL)
		{
			busy++;
			if (!s->added)
				*wait_ms = Min(*wait_ms, Max((long) (((s->reserved ? s->go_at : s->retry_at) - now) / 1000), 1));
		}
	}
	return busy;
}

/*
 * Runs the stream until nothing is in flight and feed has nothing (false),
 * or, with one, until a request has been handed to done (true).
 */
static bool
stream_run(StripeStream *ss, bool one)
{
	for (;;)
	{
		long		wait_ms;
		int			running;
		int			busy = stream_start_due(ss, &wait_ms);
		CURLMcode	mc;

		if (busy == 0)
			return false;

		mc = curl_multi_perform(ss->multi, &running);
		if (mc != CURLM_OK)
			elog(ERROR, "curl_multi_perform failed: %s", curl_multi_strerror(mc));

		if (stream_finished(ss))
		{
			if (one)
				return true;
			continue;			/* done may have run a while: look at the transfers again */
		}

		mc = stripe_curl_poll(ss->multi, (int) wait_ms);
		if (mc != CURLM_OK && mc != CURLM_UNRECOVERABLE_POLL)
			elog(ERROR, "curl_multi_poll failed: %s", curl_multi_strerror(mc));
		stripe_curl_interrupts();
	}
}

static void
stream_slots(StripeStream *ss, StripeConn *conn, StripeManyFeed feed, StripeManyDone done,
			 void *arg, StripeStats *stats)
{
	ss->conn = conn;
	ss->feed = feed;
	ss->done = done;
	ss->arg = arg;
	ss->stats = stats;
	ss->cxt = CurrentMemoryContext;
	ss->nslots = Min(Max(stripe_max_concurrent_requests, 1), MAX_POOL);
	ss->slots = MemoryContextAllocZero(ss->cxt, sizeof(StreamSlot) * ss->nslots);
}

/*
 * Runs GET requests, up to stripe_sync.max_concurrent_requests at a time,
 * each with stripe_request's retry rules and errors.  feed hands out the next
 * request (false: none for now); done receives each one as it completes, in
 * completion order, and may feed more work through its state (and commit:
 * nothing here lives in a transaction's memory).  Returns when nothing is in
 * flight and feed has nothing.  The body and what check builds land in each
 * request's cxt.  On ERROR every transfer is removed and freed.  Call it in
 * a memory context that outlives the transactions done commits.
 */
void
stripe_request_stream(StripeConn *conn, StripeManyFeed feed, StripeManyDone done,
					  void *arg, StripeStats *stats)
{
	StripeStream ss = {0};

	/* done may commit and switch contexts: what lives across it goes here */
	ensure_curl();
	stream_slots(&ss, conn, feed, done, arg, stats);
	ss.multi = stripe_multi;
	for (int i = 0; i < ss.nslots; i++)
	{
		if (easy_pool[i] == NULL && (easy_pool[i] = curl_easy_init()) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
		ss.slots[i].easy = easy_pool[i];
	}

	PG_TRY();
	{
		(void) stream_run(&ss, false);
	}
	PG_FINALLY();
	{
		/* aborted transfers' connections are closed by libcurl here */
		for (int i = 0; i < ss.nslots; i++)
			slot_detach(ss.multi, &ss.slots[i]);
	}
	PG_END_TRY();
	pfree(ss.slots);
}

/* an owned stream's handles, freed when it is closed or its context goes */
static void
stream_release(void *arg)
{
	StripeStream *ss = arg;

	if (ss->closed)
		return;
	ss->closed = true;
	for (int i = 0; i < ss->nslots; i++)
	{
		slot_detach(ss->multi, &ss->slots[i]);
		if (ss->slots[i].easy)
			curl_easy_cleanup(ss->slots[i].easy);
		ss->slots[i].easy = NULL;
	}
	if (ss->multi)
		curl_multi_cleanup(ss->multi);
	ss->multi = NULL;
}

/*
 * An owned stream: like stripe_request_stream's, but run a step at a time
 * (stripe_stream_step), so that the caller can use each answer in between.
 * Its handles are its own, so that several can be open in one backend; they
 * are freed by stripe_stream_close, or when the current memory context is
 * reset or deleted (an ERROR's end of the query).
 */
StripeStream *
stripe_stream_open(StripeConn *conn, StripeManyFeed feed, StripeManyDone done,
				   void *arg, StripeStats *stats)
{
	StripeStream *ss = palloc0(sizeof(StripeStream));

	stripe_curl_init();
	stream_slots(ss, conn, feed, done, arg, stats);
	ss->owned = true;
	ss->release.func = stream_release;
	ss->release.arg = ss;
	MemoryContextRegisterResetCallback(ss->cxt, &ss->release);
	if ((ss->multi = curl_multi_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	for (int i = 0; i < ss->nslots; i++)
		if ((ss->slots[i].easy = curl_easy_init()) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
	return ss;
}

/*
 * Asks feed again, then runs the stream until one request has been handed to
 * done (true) or nothing is in flight and feed has nothing (false).
 */
bool
stripe_stream_step(StripeStream *ss)
{
	Assert(ss->owned && !ss->closed);
	ss->feed_empty = false;
	return stream_run(ss, true);
}

/* Ends an owned stream: its transfers still in flight are dropped. */
void
stripe_stream_close(StripeStream *ss)
{
	stream_release(ss);
}
