/*-------------------------------------------------------------------------
 * bgw.c
 *		Plumbing shared by stripe_sync's background workers: registration,
 *		signals, the main loop of the launcher and the shipper, and
 *		stripe_sync.wake(), which sets their latches when the calling
 *		transaction commits.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <malloc.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "bgw.h"
#include "guc.h"
#include "shmem.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(stripe_wake);

/*
 * The latches of the launcher and the shipper.  Read without the lock: a
 * stale pointer only sets the latch of whichever process now owns that
 * PGPROC, and every latch user tolerates spurious wakeups.
 */
typedef struct WakeShared
{
	LWLock	   *lock;
	struct
	{
		Latch	   *latch;
		pid_t		pid;
	}			wakeable[STRIPE_WAKEABLE_ROLES];
} WakeShared;

static WakeShared *wake_shared = NULL;
static bool wake_at_commit = false;
static bool wake_callback_registered = false;

/* Reserves the latch table; _PG_init calls it while shared_preload_libraries loads. */
void
stripe_bgw_shmem_init(void)
{
	stripe_shmem_add("stripe_sync wake", sizeof(WakeShared), (void **) &wake_shared);
}

/*
 * What all our background workers share: a database connection, started
 * only once out of recovery (a standby cannot write the local tables), and
 * not restarted by the postmaster unless the caller says otherwise.
 */
void
stripe_bgw_prepare(BackgroundWorker *worker, const char *function, const char *type)
{
	memset(worker, 0, sizeof(BackgroundWorker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker->bgw_library_name, "stripe_sync", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_name, type, BGW_MAXLEN);
	strlcpy(worker->bgw_type, type, BGW_MAXLEN);
}

/*
 * A worker's first step: SIGHUP reloads at the next check, and SIGTERM's die()
 * lets CHECK_FOR_INTERRUPTS() end the worker, even in the middle of a request.
 */
void
stripe_bgw_start(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
}

/*
 * A sync allocates and frees megabytes per page (the body, the rows, the
 * executor's tuplestore).  glibc hands big blocks back to the kernel at once
 * and faults them in again at the next page, which costs a backfill several
 * per cent; our own processes keep them instead.
 */
void
stripe_bgw_keep_memory(void)
{
	mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
}

/* Applies a pending SIGHUP in a background worker; a backend does it between queries. */
void
stripe_bgw_reload_config(void)
{
	if (IsBackgroundWorker && ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* ---------- waking the launcher and the shipper ---------- */

/* Wakes the launcher and the shipper now, if they run. */
void
stripe_bgw_wake(void)
{
	if (wake_shared == NULL)
		return;
	for (int r = 0; r < STRIPE_WAKEABLE_ROLES; r++)
	{
		Latch	   *latch = wake_shared->wakeable[r].latch;

		if (latch != NULL)
			SetLatch(latch);
	}
}

static void
wakeable_detach(int code, Datum arg)
{
	int			role = DatumGetInt32(arg);

	LWLockAcquire(wake_shared->lock, LW_EXCLUSIVE);
	if (wake_shared->wakeable[role].pid == MyProcPid)
	{
		wake_shared->wakeable[role].latch = NULL;
		wake_shared->wakeable[role].pid = 0;
	}
	LWLockRelease(wake_shared->lock);
}

/* The launcher or the shipper makes itself known, so that stripe_sync.wake() reaches it. */
void
stripe_bgw_attach_wakeable(StripeWakeableRole role)
{
	if (wake_shared == NULL)
		return;
	LWLockAcquire(wake_shared->lock, LW_EXCLUSIVE);
	wake_shared->wakeable[role].pid = MyProcPid;
	wake_shared->wakeable[role].latch = &MyProc->procLatch;
	LWLockRelease(wake_shared->lock);
	on_shmem_exit(wakeable_detach, Int32GetDatum(role));
}

static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
			{
				wake_at_commit = false;
				stripe_bgw_wake();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared change is picked up at the next tick */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Wakes the launcher and the shipper when the current transaction commits.
 * Woken earlier, they would read the sources before the change is visible and
 * then sleep through it.
 */
void
stripe_bgw_wake_at_commit(void)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * stripe_sync.wake(): the launcher re-reads the sources, and the shipper the
 * outbox, when the caller's transaction commits.  A no-op when the library is
 * not preloaded.
 */
Datum
stripe_wake(PG_FUNCTION_ARGS)
{
	stripe_bgw_wake_at_commit();
	PG_RETURN_VOID();
}

typedef struct LoopPass
{
	long		(*pass) (void);
	long		sleep_ms;
} LoopPass;

static void
loop_pass(void *arg)
{
	LoopPass   *lp = arg;

	lp->sleep_ms = lp->pass();
}

/*
 * The main loop of the launcher and the shipper: pass() does one round, in a
 * memory context reset for each, and says how long to sleep (0: go again at
 * once).  A pass that fails is logged and tried again after
 * stripe_sync.naptime.  A worker's start or end (bgw_notify_pid),
 * stripe_sync.wake() or a signal cuts the sleep short.
 */
void
stripe_bgw_loop(long (*pass) (void))
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync pass",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext errcxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync pass error",
												 ALLOCSET_SMALL_SIZES);
	LoopPass	lp = {pass, 0};

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		stripe_bgw_reload_config();
		MemoryContextReset(cxt);
		MemoryContextReset(errcxt);
		MemoryContextSwitchTo(cxt);
		sleep_ms = stripe_try(loop_pass, &lp, errcxt, NULL) ? (long) stripe_naptime * 1000 : lp.sleep_ms;
		MemoryContextSwitchTo(TopMemoryContext);
		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
