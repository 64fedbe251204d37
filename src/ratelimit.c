/*-------------------------------------------------------------------------
 * ratelimit.c
 *		Requests per second per Stripe account in all, and per endpoint
 *		(stripe_sync.requests_per_second, endpoint_requests_per_second), and
 *		the slowdowns Stripe's 429s ask for.
 *
 * Stripe allows 100 requests a second in live mode and 25 in test mode, and
 * 25 a second to any one endpoint (a named operation: GET /v1/charges and
 * GET /v1/charges/{id} are two).  The defaults stay about 10 % under those,
 * for the account's other clients and for jitter: 90 or 22 in all by the
 * key's mode, 22 an endpoint.
 *
 * The account's requests leave on a grid of ticks one interval apart, each
 * tick taken by one request at most: a calendar of the next CAL_TICKS ticks
 * (one that finds two ticks free leaves at once, between them, taking both).
 * A request waiting for its endpoint takes a tick later on without holding
 * back the other endpoints' requests, which take the free ticks before it.
 * An endpoint is a leaky bucket without burst (GCRA): the time of its next
 * free slot, moved one interval past each request's tick.  So any two
 * requests of an account leave at least one interval apart, and any two of
 * one endpoint at least an endpoint interval apart, whichever backend or
 * worker sends them.
 *
 * A 429 whose Stripe-Rate-Limited-Reason names the endpoint (endpoint-rate,
 * endpoint-concurrency) halves that endpoint's rate; resource-specific (one
 * object's own limit) changes nothing; any other reason, or none, halves the
 * account's.  Answers to requests already in flight are one burst: one cut
 * a second at most.  The cut holds SLOW_HOLD_USEC, then the rate climbs
 * back by a tenth of the full rate a second.
 *
 * When the library is preloaded the tables live in shared memory, so every
 * backend and worker of the cluster shares one budget per account and
 * endpoint.  Otherwise each backend keeps its own tables, which bound only
 * that backend's own requests.  Both tables are fixed; past their size the
 * least recently used entry is reused.
 *
 * An account is known only by a 64-bit hash of the API URL and the account
 * id or API key; the key itself is never stored here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "ratelimit.h"
#include "shmem.h"

/* accounts and endpoints tracked at once */
#define RATE_SLOTS			64
#define ENDPOINT_SLOTS		256

/* an account's calendar: ticks ahead it can book (11 s at 90 a second) */
#define CAL_TICKS			1024

/* the defaults, under Stripe's 100 (live), 25 (test) and 25 an endpoint */
#define LIVE_RATE			90
#define TEST_RATE			22
#define ENDPOINT_RATE		22

/*
 * Extra spacing per second of requests.  A server that counts arrivals in a
 * sliding one-second window sees N+1 requests inside 1.0 s as soon as one
 * request is late by the loopback, scheduling or wakeup jitter while the one
 * N slots later is not.  Stretching N intervals to 1.0 s plus this much hides
 * up to 20 ms of such jitter (1-3 ms measured on loopback), at a cost of 2%.
 */
#define RATE_GUARD_USEC		20000

/* after a 429: half the rate, held 2 s, then a tenth more a second */
#define SLOW_HOLD_USEC		(2 * USECS_PER_SEC)
#define SLOW_RECOVER_USEC	(10 * USECS_PER_SEC)
#define SLOW_BURST_USEC		USECS_PER_SEC
#define SLOW_MIN			0.0625

typedef struct Slowdown
{
	double		factor;			/* share of the rate set at since; 0 = none */
	TimestampTz since;
} Slowdown;

typedef struct RateSlot
{
	uint64		hash;			/* account identity, see account_hash() */
	TimestampTz last_used;		/* for LRU reuse; 0 = never used */
	int			grid_rate;		/* requests a second the ticks are spaced for */
	int64		lo;				/* first tick that may be booked */
	uint64		booked[CAL_TICKS / 64]; /* ticks lo .. lo + CAL_TICKS - 1, by tick % CAL_TICKS */
	Slowdown	slow;
} RateSlot;

typedef struct EndpointSlot
{
	uint64		account;		/* RateSlot.hash */
	uint64		hash;			/* of name */
	TimestampTz last_used;		/* for LRU reuse; 0 = never used */
	TimestampTz next_slot;		/* earliest time the next request may leave */
	Slowdown	slow;
	char		name[STRIPE_ENDPOINT_NAME_LEN];
} EndpointSlot;

typedef struct RateTable
{
	LWLock	   *lock;
	RateSlot	accounts[RATE_SLOTS];
	EndpointSlot endpoints[ENDPOINT_SLOTS];
} RateTable;

/* what one request is limited by */
typedef struct Limits
{
	uint64		account;
	uint64		endpoint;		/* hash of name */
	char		name[STRIPE_ENDPOINT_NAME_LEN];
	int			total;			/* the account's requests a second */
	int			per_endpoint;	/* an endpoint's; 0 = none */
} Limits;

/* shared table; NULL unless preloaded */
static RateTable *rate_shared = NULL;

/* this backend's own table, used when the shared one does not exist */
static RateTable rate_local;

/* Reserves the shared table; _PG_init calls it while preloading. */
void
stripe_ratelimit_shmem_init(void)
{
	stripe_shmem_add("stripe_sync rate limiter", sizeof(RateTable), (void **) &rate_shared);
}

/*
 * The account's identity: the API URL, then the Connect account when there is
 * one (its requests count against that account), else the key.  Only the
 * hash leaves this function, and the buffer that held the key is wiped.
 */
static uint64
account_hash(const StripeConn *conn)
{
	const char *who = conn->account ? conn->account : conn->api_key;
	size_t		ulen = strlen(conn->api_url);
	size_t		wlen = who ? strlen(who) : 0;
	unsigned char *buf = palloc(ulen + 1 + wlen);
	uint64		hash;

	memcpy(buf, conn->api_url, ulen);
	buf[ulen] = '\0';
	if (wlen > 0)
		memcpy(buf + ulen + 1, who, wlen);
	hash = hash_bytes_extended(buf, (int) (ulen + 1 + wlen), 0);
	explicit_bzero(buf, ulen + 1 + wlen);
	pfree(buf);
	return hash;
}

/* sk_live_… and rk_live_… are live mode; any other key counts as test mode */
bool
stripe_key_is_live(const char *api_key)
{
	return api_key != NULL &&
		(strncmp(api_key, "sk_live_", 8) == 0 || strncmp(api_key, "rk_live_", 8) == 0);
}

/*
 * The endpoint of a request: its method and path, each path word after the
 * version that is not all lowercase letters and underscores (an id, maybe
 * %-encoded) made "{id}", the query left out.  Written to out, which holds
 * STRIPE_ENDPOINT_NAME_LEN bytes; a longer name is cut.
 */
static void
endpoint_name(const char *method, const char *path, char *out)
{
	int			len = snprintf(out, STRIPE_ENDPOINT_NAME_LEN, "%s ", method);
	int			word = 0;

	len = Min(len, STRIPE_ENDPOINT_NAME_LEN - 1);
	for (const char *p = path; *p && *p != '?' && len < STRIPE_ENDPOINT_NAME_LEN - 1;)
	{
		const char *end = p;
		bool		id = false;
		const char *from;
		int			n;

		if (*p == '/')
		{
			out[len++] = '/';
			p++;
			word++;
			continue;
		}
		while (*end && *end != '/' && *end != '?')
		{
			if (!((*end >= 'a' && *end <= 'z') || *end == '_'))
				id = true;
			end++;
		}
		from = (id && word >= 2) ? "{id}" : p;
		n = (id && word >= 2) ? 4 : (int) (end - p);
		n = Min(n, STRIPE_ENDPOINT_NAME_LEN - 1 - len);
		memcpy(out + len, from, n);
		len += n;
		p = end;
	}
	out[len] = '\0';
}

/*
 * The limits of a request to conn's account (method NULL: the account's
 * alone).  requests_per_second 0 means by the key's mode; then an endpoint
 * has a limit too unless endpoint_requests_per_second is -1.  An explicit
 * requests_per_second leaves endpoints unlimited unless
 * endpoint_requests_per_second sets one.
 */
static void
limits_for(const StripeConn *conn, const char *method, const char *path, Limits *lim)
{
	bool		automatic = stripe_requests_per_second == 0;

	memset(lim, 0, sizeof(Limits));
	lim->account = account_hash(conn);
	lim->total = automatic ? (stripe_key_is_live(conn->api_key) ? LIVE_RATE : TEST_RATE)
		: stripe_requests_per_second;
	if (stripe_endpoint_requests_per_second > 0)
		lim->per_endpoint = stripe_endpoint_requests_per_second;
	else if (stripe_endpoint_requests_per_second == 0 && automatic)
		lim->per_endpoint = ENDPOINT_RATE;
	if (method != NULL)
	{
		endpoint_name(method, path, lim->name);
		lim->endpoint = hash_bytes_extended((const unsigned char *) lim->name,
											(int) strlen(lim->name), lim->account);
	}
}

/* ---------- slowdowns ---------- */

static double
slow_factor(const Slowdown *s, TimestampTz now)
{
	double		f;

	if (s->factor <= 0.0 || s->factor >= 1.0)
		return 1.0;
	if (now - s->since < SLOW_HOLD_USEC)
		return s->factor;
	f = s->factor + (double) (now - s->since - SLOW_HOLD_USEC) / SLOW_RECOVER_USEC;
	return Min(f, 1.0);
}

/* halves the rate, unless it was halved less than a second ago */
static void
slow_down(Slowdown *s, TimestampTz now)
{
	if (s->factor > 0.0 && s->factor < 1.0 && now - s->since < SLOW_BURST_USEC)
		return;
	s->factor = Max(slow_factor(s, now) / 2, SLOW_MIN);
	s->since = now;
}

static int
slowed(int rate, const Slowdown *s, TimestampTz now)
{
	return Max((int) (rate * slow_factor(s, now)), 1);
}

/* the spacing of requests at rate a second */
static int64
interval_of(int rate)
{
	return (USECS_PER_SEC + RATE_GUARD_USEC) / Max(rate, 1);
}

static int64
ceil_div(int64 a, int64 b)
{
	return a >= 0 ? (a + b - 1) / b : a / b;
}

/* ---------- the tables ---------- */

static RateSlot *
find_account(RateTable *tab, uint64 hash, TimestampTz now)
{
	RateSlot   *lru = &tab->accounts[0];

	for (int i = 0; i < RATE_SLOTS; i++)
	{
		RateSlot   *a = &tab->accounts[i];

		if (a->last_used != 0 && a->hash == hash)
		{
			a->last_used = now;
			return a;
		}
		if (a->last_used < lru->last_used)
			lru = a;
	}
	/* a new account, or one forgotten: free to go now */
	memset(lru, 0, sizeof(RateSlot));
	lru->hash = hash;
	lru->last_used = now;
	return lru;
}

/* the endpoint's entry; NULL when it has none and create is false */
static EndpointSlot *
find_endpoint(RateTable *tab, const Limits *lim, TimestampTz now, bool create)
{
	EndpointSlot *lru = &tab->endpoints[0];

	for (int i = 0; i < ENDPOINT_SLOTS; i++)
	{
		EndpointSlot *e = &tab->endpoints[i];

		if (e->last_used != 0 && e->hash == lim->endpoint && e->account == lim->account)
		{
			e->last_used = now;
			return e;
		}
		if (e->last_used < lru->last_used)
			lru = e;
	}
	if (!create)
		return NULL;
	memset(lru, 0, sizeof(EndpointSlot));
	lru->account = lim->account;
	lru->hash = lim->endpoint;
	lru->next_slot = now;
	lru->last_used = now;
	strlcpy(lru->name, lim->name, sizeof(lru->name));
	return lru;
}

/* ---------- an account's calendar ---------- */

static bool
tick_booked(const RateSlot *a, int64 n)
{
	uint64		i = (uint64) n % CAL_TICKS;

	return (a->booked[i / 64] >> (i % 64)) & 1;
}

static void
tick_set(RateSlot *a, int64 n, bool on)
{
	uint64		i = (uint64) n % CAL_TICKS;

	if (on)
		a->booked[i / 64] |= UINT64CONST(1) << (i % 64);
	else
		a->booked[i / 64] &= ~(UINT64CONST(1) << (i % 64));
}

/* forgets the ticks before first: their places now stand for ticks ahead */
static void
calendar_advance(RateSlot *a, int64 first)
{
	if (first <= a->lo)
		return;
	if (first - a->lo >= CAL_TICKS)
		memset(a->booked, 0, sizeof(a->booked));
	else
		for (int64 n = a->lo; n < first; n++)
			tick_set(a, n, false);
	a->lo = first;
}

/*
 * Spaces the ticks for a new rate (a reload, a slowdown or its recovery).
 * The ticks booked on the old grid still go; new ones start one new interval
 * after the last of them.
 */
static void
calendar_regrid(RateSlot *a, int rate, TimestampTz now)
{
	int64		step = interval_of(rate);
	TimestampTz start = now;
	bool		fresh = a->grid_rate == 0;

	if (!fresh)
	{
		int64		last = a->lo - 1;	/* ticks before lo are gone or booked */

		for (int64 n = a->lo + CAL_TICKS - 1; n >= a->lo; n--)
			if (tick_booked(a, n))
			{
				last = n;
				break;
			}
		start = Max(now, last * interval_of(a->grid_rate) + step);
	}
	memset(a->booked, 0, sizeof(a->booked));
	a->grid_rate = rate;
	/* a new account may go at once, within the current tick */
	a->lo = fresh ? start / step : ceil_div(start, step);
}

/*
 * Books the request's slot in the table and returns its time.  The caller
 * holds the lock if the table is shared; this must stay short and must not
 * throw.
 */
static TimestampTz
take_slot(RateTable *tab, const Limits *lim, TimestampTz now)
{
	RateSlot   *a = find_account(tab, lim->account, now);
	EndpointSlot *e = find_endpoint(tab, lim, now, lim->per_endpoint > 0);
	int			rate = slowed(lim->total, &a->slow, now);
	int64		step;
	int64		e_step = 0;
	TimestampTz earliest = now;
	TimestampTz t;
	int64		n;

	if (a->grid_rate != rate)
		calendar_regrid(a, rate, now);
	step = interval_of(rate);
	if (e != NULL)
	{
		e_step = interval_of(slowed(lim->per_endpoint > 0 ? lim->per_endpoint : lim->total,
									&e->slow, now));

		/*
		 * Every process waits for few slots at a time, so a queue longer than
		 * that means the system clock stepped back, or that slots of canceled
		 * waiters piled up.  Either way, start afresh rather than make every
		 * later request wait it out.
		 */
		if (e->next_slot - now > (int64) (MaxBackends + 1) * e_step)
			e->next_slot = now;
		earliest = Max(earliest, e->next_slot);
	}
	/* a calendar far ahead of now: the system clock stepped back */
	if (a->lo - now / step > CAL_TICKS)
	{
		memset(a->booked, 0, sizeof(a->booked));
		a->lo = now / step;
	}
	calendar_advance(a, now / step);

	/*
	 * Between two ticks, a request may leave at once if it can have both:
	 * the interval after it spans the next tick too.  Else it takes the
	 * first free tick, and leaves at its start.  An endpoint's turn past the
	 * calendar (an account rate hundreds of times its endpoints') books no
	 * tick: the endpoint's spacing is what holds such requests back.
	 */
	n = earliest / step;
	if (Max(a->lo, ceil_div(earliest, step)) >= a->lo + CAL_TICKS)
		t = earliest;
	else if (earliest % step != 0 && n >= a->lo && n + 1 < a->lo + CAL_TICKS &&
			 !tick_booked(a, n) && !tick_booked(a, n + 1))
	{
		tick_set(a, n, true);
		tick_set(a, n + 1, true);
		t = earliest;
	}
	else
	{
		for (n = Max(a->lo, ceil_div(earliest, step)); n < a->lo + CAL_TICKS; n++)
			if (!tick_booked(a, n))
				break;
		if (n >= a->lo + CAL_TICKS)
		{
			/* every tick booked: waiters canceled by the hundred; start afresh */
			memset(a->booked, 0, sizeof(a->booked));
			a->lo = n = Max(ceil_div(now, step), ceil_div(earliest, step));
		}
		tick_set(a, n, true);
		t = n * step;
	}
	if (e != NULL)
		e->next_slot = t + e_step;
	return t;
}

/* runs fn on the table, under its lock if shared */
static void
with_table(void (*fn) (RateTable *tab, void *arg), void *arg, LWLockMode mode)
{
	if (rate_shared != NULL)
	{
		LWLockAcquire(rate_shared->lock, mode);
		fn(rate_shared, arg);
		LWLockRelease(rate_shared->lock);
	}
	else
		fn(&rate_local, arg);
}

typedef struct TakeArg
{
	Limits		lim;
	TimestampTz now;
	TimestampTz slot;
} TakeArg;

static void
take_fn(RateTable *tab, void *arg)
{
	TakeArg    *t = arg;

	t->slot = take_slot(tab, &t->lim, t->now);
}

/*
 * Takes the next slot of the request's account and endpoint and returns its
 * time, without waiting: the caller sends no earlier.  The request stream
 * uses it so that its transfers keep running while later requests wait for
 * their turn.
 */
TimestampTz
stripe_ratelimit_reserve(const StripeConn *conn, const char *method, const char *path)
{
	TakeArg		t;

	/* a query already canceled should not take a slot */
	CHECK_FOR_INTERRUPTS();

	/* the settings are read at each call, so that a reload counts at the next request */
	limits_for(conn, method, path, &t.lim);
	t.now = GetCurrentTimestamp();
	with_table(take_fn, &t, LW_EXCLUSIVE);
	return t.slot;
}

typedef struct RefusedArg
{
	Limits		lim;
	TimestampTz now;
	bool		endpoint;
	int			rate;			/* the rate after the cut */
} RefusedArg;

static void
refused_fn(RateTable *tab, void *arg)
{
	RefusedArg *r = arg;

	if (r->endpoint)
	{
		EndpointSlot *e = find_endpoint(tab, &r->lim, r->now, true);

		slow_down(&e->slow, r->now);
		r->rate = slowed(r->lim.per_endpoint > 0 ? r->lim.per_endpoint : r->lim.total,
						 &e->slow, r->now);
	}
	else
	{
		RateSlot   *a = find_account(tab, r->lim.account, r->now);

		slow_down(&a->slow, r->now);
		r->rate = slowed(r->lim.total, &a->slow, r->now);
	}
}

/*
 * Stripe answered 429 to a request, with reason the Stripe-Rate-Limited-
 * Reason header ("" when absent): slows its endpoint or its account down.
 */
void
stripe_ratelimit_refused(const StripeConn *conn, const char *method, const char *path,
						 const char *reason)
{
	RefusedArg	r;

	if (pg_strcasecmp(reason, "resource-specific") == 0)
		return;
	limits_for(conn, method, path, &r.lim);
	r.now = GetCurrentTimestamp();
	r.endpoint = pg_strncasecmp(reason, "endpoint-", 9) == 0;
	with_table(refused_fn, &r, LW_EXCLUSIVE);
	ereport(DEBUG1,
			(errmsg("Stripe rate-limited %s (%s): %s now at %d requests a second",
					r.lim.name, reason[0] ? reason : "no reason given",
					r.endpoint ? "the endpoint" : "the account", r.rate)));
}

typedef struct ReportArg
{
	Limits		lim;
	TimestampTz now;
	StripeRateRow *rows;
	int			n;
} ReportArg;

static void
report_fn(RateTable *tab, void *arg)
{
	ReportArg  *r = arg;
	StripeRateRow *row = &r->rows[r->n++];

	row->limit = r->lim.total;
	row->current = r->lim.total;
	for (int i = 0; i < RATE_SLOTS; i++)
		if (tab->accounts[i].last_used != 0 && tab->accounts[i].hash == r->lim.account)
			row->current = slowed(r->lim.total, &tab->accounts[i].slow, r->now);
	for (int i = 0; i < ENDPOINT_SLOTS; i++)
	{
		EndpointSlot *e = &tab->endpoints[i];

		if (e->last_used == 0 || e->account != r->lim.account)
			continue;
		row = &r->rows[r->n++];
		strlcpy(row->endpoint, e->name, sizeof(row->endpoint));
		row->limit = r->lim.per_endpoint;
		if (r->lim.per_endpoint > 0 || slow_factor(&e->slow, r->now) < 1.0)
			row->current = slowed(r->lim.per_endpoint > 0 ? r->lim.per_endpoint : r->lim.total,
								  &e->slow, r->now);
	}
}

/*
 * The limits of conn's account as they stand: first the account in all, then
 * each endpoint the table tracks.  Returns the number of rows in *rows.
 */
int
stripe_ratelimit_report(const StripeConn *conn, StripeRateRow **rows)
{
	ReportArg	r;

	limits_for(conn, NULL, NULL, &r.lim);
	r.now = GetCurrentTimestamp();
	r.rows = palloc0(sizeof(StripeRateRow) * (1 + ENDPOINT_SLOTS));
	r.n = 0;
	with_table(report_fn, &r, LW_SHARED);
	*rows = r.rows;
	return r.n;
}

/*
 * Blocks until the request may be sent.  Call it before every
 * attempt, retries included.  Query cancel, statement_timeout and SIGTERM end
 * the wait with an ERROR; the slot it held is then simply not used.
 */
void
stripe_ratelimit_wait(const StripeConn *conn, const char *method, const char *path)
{
	TimestampTz slot = stripe_ratelimit_reserve(conn, method, path);
	TimestampTz now = GetCurrentTimestamp();
	int64		wait_us;
	instr_time	start;

	/*
	 * Slots are wall-clock times, the one clock all processes share; the
	 * sleep itself is timed on the monotonic clock so that a clock step
	 * during the wait neither stretches nor cuts it.
	 */
	wait_us = slot - now;
	INSTR_TIME_SET_CURRENT(start);
	for (;;)
	{
		instr_time	elapsed;
		int64		left;

		CHECK_FOR_INTERRUPTS();
		INSTR_TIME_SET_CURRENT(elapsed);
		INSTR_TIME_SUBTRACT(elapsed, start);
		left = wait_us - (int64) INSTR_TIME_GET_MICROSEC(elapsed);
		if (left <= 0)
			break;
		/* round up: leaving a fraction of a millisecond early breaks the spacing */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) ((left + 999) / 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
