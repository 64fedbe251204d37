/*-------------------------------------------------------------------------
 * ratelimit.c
 *		Requests per second per Stripe account (stripe_sync.requests_per_second).
 *
 * The limiter is GCRA, a leaky bucket without burst: each account keeps the
 * time of its next free slot.  A request takes slot t = max(now, next_slot),
 * moves next_slot to t + interval and sleeps until t.  Requests of one
 * account therefore leave at least one interval apart, whichever backend or
 * worker sends them.
 *
 * When the library is preloaded the slot table lives in shared memory, so
 * every backend and worker of the cluster shares one budget per account.
 * Otherwise each backend keeps its own table, which bounds only that
 * backend's own requests.
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

/* accounts tracked at once; past that the least recently used slot is reused */
#define RATE_SLOTS			64

/*
 * Extra spacing per second of requests.  A server that counts arrivals in a
 * sliding one-second window sees N+1 requests inside 1.0 s as soon as one
 * request is late by the loopback, scheduling or wakeup jitter while the one
 * N slots later is not.  Stretching N intervals to 1.0 s plus this much hides
 * up to 20 ms of such jitter (1-3 ms measured on loopback), at a cost of 2%.
 */
#define RATE_GUARD_USEC		20000

typedef struct RateSlot
{
	uint64		hash;			/* account identity, see account_hash() */
	TimestampTz next_slot;		/* earliest time the next request may leave */
	TimestampTz last_used;		/* for LRU reuse; 0 = never used */
} RateSlot;

typedef struct RateLimitShared
{
	LWLock	   *lock;
	RateSlot	slots[RATE_SLOTS];
} RateLimitShared;

/* shared table; NULL unless preloaded */
static RateLimitShared *rate_shared = NULL;

/* this backend's own table, used when the shared one does not exist */
static RateSlot rate_local[RATE_SLOTS];

/* Reserves the shared table; _PG_init calls it while preloading. */
void
stripe_ratelimit_shmem_init(void)
{
	stripe_shmem_add("stripe_sync rate limiter", sizeof(RateLimitShared), (void **) &rate_shared);
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

/*
 * Reserves the account's next slot in the table and returns its time.  The
 * caller holds the lock if the table is shared; this must stay short and
 * must not throw.
 */
static TimestampTz
take_slot(RateSlot *slots, uint64 hash, TimestampTz now, int64 interval)
{
	RateSlot   *slot = NULL;
	RateSlot   *lru = &slots[0];
	TimestampTz t;

	for (int i = 0; i < RATE_SLOTS; i++)
	{
		if (slots[i].last_used != 0 && slots[i].hash == hash)
		{
			slot = &slots[i];
			break;
		}
		if (slots[i].last_used < lru->last_used)
			lru = &slots[i];
	}
	if (slot == NULL)
	{
		/* a new account, or one forgotten: free to go now */
		slot = lru;
		slot->hash = hash;
		slot->next_slot = now;
	}

	/*
	 * Every process waits for at most one slot at a time, so a queue longer
	 * than MaxBackends intervals means the system clock stepped back, or that
	 * slots of canceled waiters piled up.  Either way, start afresh rather
	 * than make every later request wait it out.
	 */
	if (slot->next_slot - now > (int64) (MaxBackends + 1) * interval)
		slot->next_slot = now;

	t = Max(now, slot->next_slot);
	slot->next_slot = t + interval;
	slot->last_used = now;
	return t;
}

/*
 * Takes the next slot of conn's account and returns its time, without
 * waiting: the caller sends no earlier.  The request stream uses it so that
 * its transfers keep running while later requests wait for their turn.
 */
TimestampTz
stripe_ratelimit_reserve(const StripeConn *conn)
{
	uint64		hash;
	int64		interval;
	TimestampTz now;
	TimestampTz slot;

	/* a query already canceled should not take a slot */
	CHECK_FOR_INTERRUPTS();

	hash = account_hash(conn);
	/* read at each call, so that a reload takes effect at the next request */
	interval = (USECS_PER_SEC + RATE_GUARD_USEC) / Max(stripe_requests_per_second, 1);

	now = GetCurrentTimestamp();
	if (rate_shared != NULL)
	{
		LWLockAcquire(rate_shared->lock, LW_EXCLUSIVE);
		slot = take_slot(rate_shared->slots, hash, now, interval);
		LWLockRelease(rate_shared->lock);
	}
	else
		slot = take_slot(rate_local, hash, now, interval);
	return slot;
}

/*
 * Blocks until a request to conn's account may be sent.  Call it before every
 * attempt, retries included.  Query cancel, statement_timeout and SIGTERM end
 * the wait with an ERROR; the slot it held is then simply not used.
 */
void
stripe_ratelimit_wait(const StripeConn *conn)
{
	TimestampTz slot = stripe_ratelimit_reserve(conn);
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
