/*-------------------------------------------------------------------------
 * launcher.c
 *		The launcher, and the sync workers it starts: one per running sync.
 *
 * The launcher is a static background worker, registered when the library is
 * preloaded.  It connects to stripe_sync.database and, every
 * stripe_sync.naptime, when the next source falls due, and when woken by
 * stripe_sync.wake(), reads the enabled sources.  For each source whose
 * next_sync_at has passed and that no worker is syncing, it starts a dynamic
 * background worker that connects as the source's owner and runs one sync
 * (stripe_sync_run).  The sync moves next_sync_at when it is done.
 *
 * A small table in shared memory holds one slot per sync worker: the
 * launcher claims a slot before it registers the worker, the worker marks it
 * running once started and exited on its way out.  The table outlives the
 * launcher, so a launcher restarted after an error still knows which syncs
 * are running (it has lost their handles), and it is what tells a
 * stripe_sync.runs row left 'running' by a dead worker from the row of a live
 * one.  A crash restart of the cluster clears it together with every worker.
 *
 * A source whose worker ends without moving next_sync_at (it was killed, it
 * failed before the sync could record anything, or a sync_now held the
 * source's lock) is started again only after a growing delay, so that a
 * failure cannot turn into a tight loop of worker starts.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "guc.h"
#include "launcher.h"
#include "run.h"
#include "shmem.h"
#include "xact.h"

/* seconds before the postmaster restarts a launcher that exited or crashed */
#define LAUNCHER_RESTART_SECS	5

/*
 * A slot the launcher claimed for a worker that never attached to it (the
 * fork failed, or the launcher that held its handle died) is given up after
 * this long; a worker normally attaches within milliseconds.
 */
#define SLOT_START_TIMEOUT_SECS	60

/* delay before retrying a source whose worker did not finish: 5 s doubling to 5 min */
#define RETRY_BASE_SECS			5
#define RETRY_MAX_SECS			300

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_STARTING,				/* claimed by the launcher, worker not yet attached */
	SLOT_RUNNING,				/* the worker process attached */
	SLOT_EXITED					/* the worker is gone; the launcher has not reaped it */
} SlotState;

typedef struct WorkerSlot
{
	SlotState	state;
	uint32		generation;		/* tells a reused slot from the one a worker was given */
	pid_t		pid;
	bool		finished;		/* stripe_sync_run() returned */
	TimestampTz claimed_at;
	char		source[STRIPE_SOURCE_MAXLEN];
} WorkerSlot;

typedef struct WorkerShared
{
	LWLock	   *lock;
	uint32		next_generation;
	WorkerSlot	slots[STRIPE_WORKER_SLOTS];
} WorkerShared;

/* what the launcher hands a worker in bgw_extra (bgw_main_arg is the slot) */
typedef struct WorkerExtra
{
	Oid			dboid;
	Oid			owner;
	uint32		generation;
	char		source[STRIPE_SOURCE_MAXLEN];
} WorkerExtra;

StaticAssertDecl(sizeof(WorkerExtra) <= BGW_EXTRALEN, "WorkerExtra must fit in bgw_extra");

/* the launcher's memory of a source it started, kept until the source is no longer due */
typedef struct SourceEntry
{
	char		source[STRIPE_SOURCE_MAXLEN];	/* hash key */
	TimestampTz launched_due;	/* next_sync_at when its worker was started */
	bool		ended;			/* that worker has ended since */
	int			failures;		/* workers in a row that left next_sync_at as it was */
	TimestampTz not_before;		/* no new worker before this */
	bool		warned;			/* a problem with the source was logged */
} SourceEntry;

/* an enabled source, as a scheduling pass reads it */
typedef struct EnabledSource
{
	char	   *name;
	Oid			owner;
	TimestampTz next_sync_at;
	int			login;			/* 1 can log in, 0 cannot, -1 no such role */
	char	   *owner_name;		/* or its oid when the role is gone */
} EnabledSource;

static WorkerShared *worker_shared = NULL;

/* ---- launcher state (launcher process only) ---- */

static MemoryContext launcher_cxt = NULL;
/* handles of the workers this launcher started, by slot */
static BackgroundWorkerHandle *slot_handle[STRIPE_WORKER_SLOTS];
/* TerminateBackgroundWorker() or SIGTERM already sent, by slot */
static bool slot_terminating[STRIPE_WORKER_SLOTS];
static HTAB *source_entries = NULL;
/* some worker ended without finishing: look for runs rows it left 'running' */
static bool check_leftovers = true;
/* the last registration found no free background worker slot (logged once) */
static bool bgworker_slots_exhausted = false;

/*
 * Reserves the worker table and registers the launcher and the shipper.
 * Called from _PG_init only while shared_preload_libraries is processed:
 * static workers and shared memory can be set up only then.
 */
void
stripe_launcher_init(void)
{
	BackgroundWorker worker;

	stripe_shmem_add("stripe_sync workers", sizeof(WorkerShared), (void **) &worker_shared);

	stripe_bgw_prepare(&worker, "stripe_launcher_main", "stripe_sync launcher");
	/* a launcher that dies is brought back; its workers live on meanwhile */
	worker.bgw_restart_time = LAUNCHER_RESTART_SECS;
	RegisterBackgroundWorker(&worker);

	/* the outbox shipper (shipper.c): one for all sources, restarted likewise */
	strlcpy(worker.bgw_function_name, "stripe_shipper_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "stripe_sync shipper", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "stripe_sync shipper", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* ---------- the sync worker ---------- */

/* on_shmem_exit: by now the worker's transaction is over, committed or not */
static void
worker_detach(int code, Datum arg)
{
	WorkerSlot *slot = &worker_shared->slots[DatumGetInt32(arg)];

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (slot->pid == MyProcPid)
	{
		slot->state = SLOT_EXITED;
		slot->pid = 0;
	}
	LWLockRelease(worker_shared->lock);
}

void
stripe_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	WorkerExtra extra;
	WorkerSlot *slot;
	bool		attached = false;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	extra.source[STRIPE_SOURCE_MAXLEN - 1] = '\0';
	stripe_bgw_start();
	if (worker_shared == NULL || slotno < 0 || slotno >= STRIPE_WORKER_SLOTS)
		proc_exit(0);

	/*
	 * Attach before anything can write a runs row: the launcher takes a row
	 * whose source has no attached worker for a leftover.
	 */
	slot = &worker_shared->slots[slotno];
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (slot->state == SLOT_STARTING && slot->generation == extra.generation &&
		strcmp(slot->source, extra.source) == 0)
	{
		slot->state = SLOT_RUNNING;
		slot->pid = MyProcPid;
		attached = true;
	}
	LWLockRelease(worker_shared->lock);
	if (!attached)
		proc_exit(0);			/* the launcher gave the slot up: not ours any more */
	on_shmem_exit(worker_detach, Int32GetDatum(slotno));

	stripe_bgw_keep_memory();
	/* the sync runs with the owner's privileges and user mapping */
	BackgroundWorkerInitializeConnectionByOid(extra.dboid, extra.owner, 0);
	SetConfigOption("application_name", psprintf("stripe_sync %s", extra.source),
					PGC_USERSET, PGC_S_SESSION);
	pgstat_report_activity(STATE_RUNNING, psprintf("sync of source \"%s\"", extra.source));

	if (stripe_sync_run(extra.source))
	{
		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		slot->finished = true;
		LWLockRelease(worker_shared->lock);
	}
	proc_exit(0);
}

/* ---------- the launcher: the worker table ---------- */

/* slots the table holds now, whatever their state */
static int
slots_in_use(void)
{
	int			n = 0;

	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < STRIPE_WORKER_SLOTS; i++)
		if (worker_shared->slots[i].state != SLOT_FREE)
			n++;
	LWLockRelease(worker_shared->lock);
	return n;
}

/* the slot syncing source, or -1 */
static int
source_slot(const char *source)
{
	int			found = -1;

	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < STRIPE_WORKER_SLOTS && found < 0; i++)
		if (worker_shared->slots[i].state != SLOT_FREE &&
			strcmp(worker_shared->slots[i].source, source) == 0)
			found = i;
	LWLockRelease(worker_shared->lock);
	return found;
}

static SourceEntry *
source_entry(const char *source, bool create)
{
	char		key[STRIPE_SOURCE_MAXLEN];
	bool		found;
	SourceEntry *e;

	memset(key, 0, sizeof(key));
	strlcpy(key, source, sizeof(key));
	e = hash_search(source_entries, key, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		e->launched_due = 0;
		e->ended = false;
		e->failures = 0;
		e->not_before = 0;
		e->warned = false;
	}
	return e;
}

/* Frees slot i if its worker is gone; returns the source it synced, or NULL. */
static bool
reap_slot(int i, TimestampTz now, char *source, bool *finished)
{
	WorkerSlot *slot = &worker_shared->slots[i];
	bool		gone = false;
	pid_t		pid;

	if (slot_handle[i] != NULL)
		gone = GetBackgroundWorkerPid(slot_handle[i], &pid) == BGWH_STOPPED;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (slot_handle[i] == NULL && slot->state != SLOT_FREE)
		gone = slot->state == SLOT_EXITED ||
			(slot->state == SLOT_STARTING &&
			 TimestampDifferenceExceeds(slot->claimed_at, now, SLOT_START_TIMEOUT_SECS * 1000));
	if (gone)
	{
		strlcpy(source, slot->source, STRIPE_SOURCE_MAXLEN);
		*finished = slot->finished;
		slot->state = SLOT_FREE;
		slot->pid = 0;
		slot->finished = false;
		slot->source[0] = '\0';
	}
	LWLockRelease(worker_shared->lock);
	return gone;
}

/*
 * Frees the slots of workers that are gone: ours when the postmaster reports
 * them stopped (their locks are released by then), and those of a previous
 * launcher once they have exited.
 */
static void
reap_workers(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < STRIPE_WORKER_SLOTS; i++)
	{
		char		source[STRIPE_SOURCE_MAXLEN];
		bool		finished = false;
		SourceEntry *e;

		if (!reap_slot(i, now, source, &finished))
			continue;
		if (slot_handle[i] != NULL)
		{
			pfree(slot_handle[i]);
			slot_handle[i] = NULL;
		}
		slot_terminating[i] = false;
		if (!finished)
			check_leftovers = true;
		if ((e = source_entry(source, false)) != NULL)
			e->ended = true;
		elog(DEBUG1, "stripe_sync: sync worker for source \"%s\" ended%s",
			 source, finished ? "" : " before the sync finished");
	}
}

/*
 * Marks 'interrupted' the runs rows left 'running' by workers that are gone
 * (in a transaction).
 *
 * The rows are read under a snapshot taken before the worker table is read.
 * A worker attaches to its slot before it writes its row, so a row in the
 * snapshot whose source has no attached worker in the table read afterwards
 * belongs to a worker that has exited.  The UPDATE rechecks the status, so a
 * run that finished meanwhile is left as it is.
 */
static void
mark_leftovers(void)
{
	int64	   *ids;
	char	  **sources;
	uint64		nrows;
	int			n = 0;

	stripe_spi("SELECT id, source FROM stripe_sync.runs WHERE status = 'running'", 0, NULL, NULL,
			   NULL, SPI_OK_SELECT);
	nrows = SPI_processed;
	if (nrows == 0)
		return;
	ids = palloc(sizeof(int64) * nrows);
	sources = palloc(sizeof(char *) * nrows);
	for (uint64 r = 0; r < nrows; r++)
	{
		ids[r] = stripe_spi_int64(r, 1, 0);
		sources[r] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
	}
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (uint64 r = 0; r < nrows; r++)
	{
		bool		live = false;

		for (int i = 0; i < STRIPE_WORKER_SLOTS && !live; i++)
			live = worker_shared->slots[i].state == SLOT_RUNNING &&
				strcmp(worker_shared->slots[i].source, sources[r]) == 0;
		if (!live)
			ids[n++] = ids[r];
	}
	LWLockRelease(worker_shared->lock);
	if (n > 0)
	{
		Datum	   *elems = palloc(sizeof(Datum) * n);
		Oid			types[1] = {INT8ARRAYOID};
		Datum		values[1];

		for (int i = 0; i < n; i++)
			elems[i] = Int64GetDatum(ids[i]);
		values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		stripe_spi("UPDATE stripe_sync.runs SET status = 'interrupted', "
				   "finished_at = coalesce(finished_at, clock_timestamp()), "
				   "error = coalesce(error, 'the sync worker stopped before the run finished') "
				   "WHERE id = ANY ($1) AND status = 'running'", 1, types, values, NULL, SPI_OK_UPDATE);
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("stripe_sync: marked " UINT64_FORMAT " sync run(s) interrupted", SPI_processed),
					 errdetail("Their workers stopped before the runs finished; the next sync resumes from the last committed page.")));
	}
}

/* Stops the worker in slot i: its source was disabled or dropped. */
static void
stop_worker(int i, const char *source)
{
	pid_t		pid;

	if (slot_terminating[i])
		return;
	if (slot_handle[i] != NULL)
		TerminateBackgroundWorker(slot_handle[i]);
	else
	{
		/* started by a previous launcher: a running slot's pid is alive */
		LWLockAcquire(worker_shared->lock, LW_SHARED);
		pid = worker_shared->slots[i].state == SLOT_RUNNING ? worker_shared->slots[i].pid : 0;
		LWLockRelease(worker_shared->lock);
		if (pid == 0)
			return;
		(void) kill(pid, SIGTERM);
	}
	slot_terminating[i] = true;
	ereport(LOG,
			(errmsg("stripe_sync: stopping the sync of source \"%s\", which was disabled or dropped",
					source)));
}

/* Claims a free slot of the table for source; -1 when none is free. */
static int
claim_slot(const char *source, uint32 *generation)
{
	int			slotno = -1;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < STRIPE_WORKER_SLOTS && slotno < 0; i++)
		if (worker_shared->slots[i].state == SLOT_FREE)
			slotno = i;
	if (slotno >= 0)
	{
		WorkerSlot *slot = &worker_shared->slots[slotno];

		slot->state = SLOT_STARTING;
		slot->generation = ++worker_shared->next_generation;
		slot->pid = 0;
		slot->finished = false;
		slot->claimed_at = GetCurrentTimestamp();
		strlcpy(slot->source, source, sizeof(slot->source));
		*generation = slot->generation;
	}
	LWLockRelease(worker_shared->lock);
	return slotno;
}

/* Starts a worker for source; returns false when no background worker slot is free. */
static bool
start_worker(const char *source, Oid owner)
{
	BackgroundWorker worker;
	WorkerExtra extra;
	BackgroundWorkerHandle *handle;
	MemoryContext old;
	int			slotno;
	bool		ok;

	memset(&extra, 0, sizeof(extra));
	slotno = claim_slot(source, &extra.generation);
	if (slotno < 0)
		return false;			/* not reached: the caller caps below the table size */
	strlcpy(extra.source, source, sizeof(extra.source));
	extra.dboid = MyDatabaseId;
	extra.owner = owner;

	/* the launcher decides when a source runs again, not the postmaster */
	stripe_bgw_prepare(&worker, "stripe_worker_main", "stripe_sync worker");
	snprintf(worker.bgw_name, BGW_MAXLEN, "stripe_sync worker for source %s", source);
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &extra, sizeof(extra));
	/* the postmaster signals us when it stops, which sets our latch */
	worker.bgw_notify_pid = MyProcPid;

	old = MemoryContextSwitchTo(launcher_cxt);
	ok = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old);
	if (!ok)
	{
		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		worker_shared->slots[slotno].state = SLOT_FREE;
		worker_shared->slots[slotno].source[0] = '\0';
		LWLockRelease(worker_shared->lock);
		return false;
	}
	slot_handle[slotno] = handle;
	slot_terminating[slotno] = false;
	elog(DEBUG1, "stripe_sync: started a sync worker for source \"%s\"", source);
	return true;
}

static int64
retry_delay_usecs(int failures)
{
	int64		secs = RETRY_BASE_SECS;

	for (int i = 1; i < failures && secs < RETRY_MAX_SECS; i++)
		secs *= 2;
	return Min(secs, RETRY_MAX_SECS) * USECS_PER_SEC;
}

/* ---------- the launcher: one scheduling pass ---------- */

/* the enabled sources, most overdue first (in a transaction) */
static List *
read_enabled(void)
{
	List	   *enabled = NIL;

	stripe_spi("SELECT s.name, s.owner::oid, s.next_sync_at, "
			   "       CASE WHEN r.rolcanlogin THEN 1 WHEN NOT r.rolcanlogin THEN 0 ELSE -1 END, "
			   "       s.owner::text "
			   "  FROM stripe_sync.sources s "
			   "  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.owner "
			   " WHERE s.enabled AND s.platform IS NULL "
			   " ORDER BY s.next_sync_at, s.name", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EnabledSource *s = palloc(sizeof(EnabledSource));
		bool		isnull;

		s->name = SPI_getvalue(tup, desc, 1);
		s->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		s->next_sync_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		s->login = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		s->owner_name = SPI_getvalue(tup, desc, 5);
		enabled = lappend(enabled, s);
	}
	return enabled;
}

static bool
is_enabled(List *enabled, const char *name)
{
	ListCell   *lc;

	foreach(lc, enabled)
		if (strcmp(((EnabledSource *) lfirst(lc))->name, name) == 0)
			return true;
	return false;
}

/* workers of sources no longer enabled stop: a sync resumes from its last page */
static void
stop_unwanted(List *enabled)
{
	for (int i = 0; i < STRIPE_WORKER_SLOTS; i++)
	{
		char		source[STRIPE_SOURCE_MAXLEN];

		LWLockAcquire(worker_shared->lock, LW_SHARED);
		if (worker_shared->slots[i].state == SLOT_STARTING ||
			worker_shared->slots[i].state == SLOT_RUNNING)
			strlcpy(source, worker_shared->slots[i].source, sizeof(source));
		else
			source[0] = '\0';
		LWLockRelease(worker_shared->lock);
		if (source[0] != '\0' && !is_enabled(enabled, source))
			stop_worker(i, source);
	}
}

/* A source no worker can run (its name, its owner): logged once. */
static void
warn_unrunnable(EnabledSource *s)
{
	SourceEntry *e = source_entry(s->name, true);

	if (e->warned)
		return;
	e->warned = true;
	if (s->login == 1)
		ereport(WARNING,
				(errmsg("stripe_sync: source \"%s\" is not synced: its name is longer than %d bytes",
						s->name, STRIPE_SOURCE_MAXLEN - 1),
				 errhint("Create the source again under a shorter name.")));
	else
		ereport(WARNING,
				(errmsg("stripe_sync: source \"%s\" is not synced: its owner \"%s\" %s",
						s->name, s->owner_name,
						s->login == 0 ? "cannot log in" : "does not exist"),
				 errdetail("A sync runs as a connection of the source's owner."),
				 errhint("Make the owner a role with LOGIN, e.g. UPDATE stripe_sync.sources SET owner = '<role>' WHERE name = '%s'.",
						 s->name)));
}

/*
 * Starts a worker for a due source unless it runs, is backing off, or no
 * slot is free; *sleep_usecs shrinks to the end of a backoff.  Returns false
 * when no background worker slot was free (try again at the next tick).
 */
static bool
start_due(EnabledSource *s, TimestampTz now, int64 *sleep_usecs)
{
	SourceEntry *e;

	if (source_slot(s->name) >= 0)
		return true;			/* running; its end wakes us */
	if (strlen(s->name) >= STRIPE_SOURCE_MAXLEN || s->login != 1)
	{
		warn_unrunnable(s);
		return true;
	}
	e = source_entry(s->name, true);
	e->warned = false;			/* a problem logged earlier is fixed */
	if (e->ended)
	{
		e->ended = false;
		if (e->launched_due == s->next_sync_at)
		{
			/* its worker ended without syncing: back off */
			e->failures++;
			e->not_before = now + retry_delay_usecs(e->failures);
		}
		else
			e->failures = 0;
	}
	if (e->failures > 0 && now < e->not_before)
	{
		*sleep_usecs = Min(*sleep_usecs, e->not_before - now);
		return true;
	}
	if (slots_in_use() >= stripe_max_workers)
		return true;			/* a worker's end wakes us */
	if (!start_worker(s->name, s->owner))
	{
		if (!bgworker_slots_exhausted)
			ereport(WARNING,
					(errmsg("stripe_sync: no background worker slot is free to sync source \"%s\"",
							s->name),
					 errhint("Raise max_worker_processes (now %d): the launcher takes one, and each concurrent sync (up to stripe_sync.max_workers = %d) one more.",
							 max_worker_processes, stripe_max_workers)));
		bgworker_slots_exhausted = true;
		return false;
	}
	bgworker_slots_exhausted = false;
	e->launched_due = s->next_sync_at;
	return true;
}

/* forget sources that are no longer due and have no worker */
static void
forget_done(List *enabled, TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	SourceEntry *e;

	hash_seq_init(&seq, source_entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		bool		due = false;
		ListCell   *lc;

		foreach(lc, enabled)
		{
			EnabledSource *s = lfirst(lc);

			if (strcmp(s->name, e->source) == 0)
				due = s->next_sync_at <= now;
		}
		if (!due && source_slot(e->source) < 0)
			hash_search(source_entries, e->source, HASH_REMOVE, NULL);
	}
}

/*
 * One scheduling pass, in a transaction of its own (and the loop's memory
 * context, reset for each pass).  Returns how long the
 * launcher may sleep: stripe_sync.naptime at most, less when a source falls
 * due or a retry delay ends sooner.
 */
static long
launcher_pass(void)
{
	int64		sleep_usecs = (int64) stripe_naptime * USECS_PER_SEC;
	TimestampTz now;
	List	   *enabled;
	ListCell   *lc;

	reap_workers();
	stripe_xact_begin(true);
	pgstat_report_activity(STATE_RUNNING, "stripe_sync: scheduling sources");
	/* not installed (yet) in this database, or not updated: look again at the next tick */
	if (!OidIsValid(get_extension_oid("stripe_sync", true)) || !stripe_schema_current(false))
		enabled = NIL;
	else
	{
		if (check_leftovers)
		{
			check_leftovers = false;
			mark_leftovers();
		}
		enabled = read_enabled();
		stop_unwanted(enabled);
		now = GetCurrentTimestamp();
		foreach(lc, enabled)
		{
			EnabledSource *s = lfirst(lc);

			if (s->next_sync_at > now)
			{
				/* sorted by next_sync_at: the first one not due is the next wakeup */
				sleep_usecs = Min(sleep_usecs, s->next_sync_at - now);
				break;
			}
			if (!start_due(s, now, &sleep_usecs))
				break;
		}
		forget_done(enabled, now);
	}
	stripe_xact_commit(true);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* round up, so that a source due in 0.4 ms is not polled in a busy loop */
	return (long) Max((sleep_usecs + 999) / 1000, 1);
}

void
stripe_launcher_main(Datum main_arg)
{
	HASHCTL		ctl;

	stripe_bgw_start();
	BackgroundWorkerInitializeConnection(stripe_database, NULL, 0);
	stripe_bgw_attach_wakeable(STRIPE_WAKE_LAUNCHER);

	launcher_cxt = AllocSetContextCreate(TopMemoryContext, "stripe_sync launcher",
										 ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = STRIPE_SOURCE_MAXLEN;
	ctl.entrysize = sizeof(SourceEntry);
	ctl.hcxt = launcher_cxt;
	source_entries = hash_create("stripe_sync sources", 16, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	ereport(LOG,
			(errmsg("stripe_sync launcher started in database \"%s\"", stripe_database)));

	stripe_bgw_loop(launcher_pass);
}
