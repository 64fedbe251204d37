/*-------------------------------------------------------------------------
 * sync.h
 *		The sync engine's shared state: a run of one source, its rows in the
 *		management tables (sync_state.c), its local tables and their upserts
 *		(sync_local.c), and the outbox rows it writes (sync_outbox.c).
 *
 * Every local row carries observed_at: when Stripe's state was seen (the
 * fetch time of a backfill page, or the event's time).  An upsert only wins
 * over a row observed no later, so an older state never overwrites a newer
 * one, whatever order pages and events arrive in; and it writes nothing when
 * the object did not change.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_SYNC_H
#define STRIPE_SYNC_H

#include "access/tupdesc.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"

#include "catalog.h"
#include "http.h"
#include "rowconv.h"

typedef struct SourceInfo
{
	char	   *name;
	Oid			serverid;
	char	   *target_schema;
	List	   *objects;		/* text */
	bool		has_sync_from;
	int64		sync_from;		/* unix seconds */
	bool		has_cursor;
	int64		events_cursor;
	char	   *account_id;
	char	   *platform;		/* a connected account's source: its platform's; else NULL */
	bool		connected_accounts;	/* a platform: its connected accounts synced too */
	bool		created_here;	/* its row is this transaction's (a connected account's) */
	Oid			owner;			/* the role the source syncs as */
	int			failures;		/* runs in a row that failed, this one included */
	char	   *last_error;		/* the last failure's, logged only when it changes */
	int64		run_id;
	char	   *destination;	/* intempt server, or NULL: no outbox rows */
	bool		emit_history;
	int64		history_until;	/* unix seconds; 0 = first backfill not begun */
} SourceInfo;

/* One local table being written */
typedef struct LocalTable
{
	const StripeObjectDef *def;
	char	   *qualified;		/* "schema"."table" */
	StripeRowConv *rc;
	TupleDesc	tupdesc;
	TupleTableSlot *slot;
	SPIPlanPtr	upsert;			/* one statement for a whole page: unnest of arrays */
	Oid		   *argtypes;		/* array type of each column */
	int16	   *typlen;
	bool	   *typbyval;
	char	   *typalign;
	int			created_slot;	/* field slot of "created", or -1 */
	int			att_account,
				att_synced,
				att_observed,
				att_deleted;
	int			att_livemode;	/* -1: none (a table of 0.1 not yet upgraded) */
	List	   *children;		/* the source's child tables of this one (children.c) */
	bool		children_known;
	int64		rows;
	int64		pages;
	bool		locked_here;	/* created or truncated in this transaction */
	bool		has_rejects;	/* stripe_sync.rejected holds some of its objects */
} LocalTable;

/* One sync of a source, across its transactions */
typedef struct SyncRun
{
	SourceInfo	src;
	StripeConn *conn;
	bool		own;			/* a worker's own transactions (see xact.h) */
	Oid			caller;			/* the role that asked for the run */
	Oid			admin;			/* the extension's owner: the management tables */
	Oid			save_user;		/* the identity a step's transaction began with */
	int			save_sec;
	int64		reported_requests;	/* already added to the runs row */
	List	   *failed;			/* "object: why" of the objects that failed */
	int64		rejected;		/* objects set aside in stripe_sync.rejected */
	MemoryContext cxt;			/* lives across the run's transactions */
	List	   *tables;			/* LocalTable */
	StripeStats stats;
	int64		events_applied;	/* events whose object's state reached a local table */
	int64		events_skipped;	/* events that change no local table */
	TimestampTz started;
	int64		account_created;	/* unix seconds; 0 = not known */
	bool		account_asked;	/* GET /v1/account was sent in this run */
	bool		account_in_stream;	/* the backfill's stream asks for it */
	bool		events_early;	/* the events' first page was asked for */
	char	   *events_page;	/* its body, in cxt, when it came */
	size_t		events_len;
	struct ConnectTally
	{
		int			listed;		/* connected accounts Stripe listed */
		int			synced;		/* their syncs that ran */
		int			deauthorized;	/* accounts found gone in this run */
		int			rounds;		/* of turns (see connect.c) */
	}			connect;		/* a platform's fan-out (connect.c) */
	/* a connected account's turn (connect.c): its backfill stops feeding at turn_end */
	TimestampTz turn_end;		/* 0: no turn, the backfill goes to its end */
	bool		turn_over;		/* the turn ended with a backfill unfinished */
} SyncRun;

/* a page's objects, parsed by a StripeBodyCheck as the page arrives */
typedef struct PageCheck
{
	StripeFieldSet *fs;
	StripePage *page;
	bool		is_list;
} PageCheck;

extern bool stripe_check_page(StripeResponse *resp, void *arg, const char **why);

/*
 * sync_state.c.  Each step of a run is a transaction (stripe_run_begin and
 * stripe_run_commit) that works as the extension's owner on the management
 * tables, and as the source's owner (stripe_run_as_owner), in a restricted
 * security context, on anything of the owner's: its local tables and the
 * triggers on them run with the owner's rights, whoever asked for the run.
 */
extern void stripe_run_begin(SyncRun *run);
extern void stripe_run_commit(SyncRun *run);
extern void stripe_run_as_owner(SyncRun *run, bool owner);
extern void stripe_run_progress(SyncRun *run, int64 rows);
extern bool stripe_run_object_failed(SyncRun *run, const char *object);
extern bool stripe_load_source(SyncRun *run, const char *name);
extern SyncRun *stripe_run_open(const char *source, bool own, MemoryContext parent);
extern void stripe_check_usage(SyncRun *run);
extern void stripe_state_update(SyncRun *run, const char *object, const char *set_clause,
								const char *text_arg);
extern void stripe_set_cursor(SyncRun *run, int64 cursor);
extern void stripe_source_update(SyncRun *run, const char *set_clause, Oid argtype, Datum arg);
extern void stripe_run_account_answer(SyncRun *run, const char *acct, const char *refused);
extern int64 stripe_now_unix(void);

/* sync_run.c: the account the local rows are keyed by, learned before the first is written */
extern void stripe_run_account(SyncRun *run, bool need_created);

/* sync_local.c */
extern LocalTable *stripe_open_local_table(SyncRun *run, const char *object);
extern LocalTable *stripe_table_find(SyncRun *run, const char *name, bool by_name);
extern void stripe_close_local_tables(SyncRun *run);
extern int64 stripe_upsert_rows(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
								TimestampTz observed, TimestampTz deleted_at);
extern int64 stripe_upsert_rows_at(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows,
								   const TimestampTz *observed, const TimestampTz *deleted_at);
extern int64 stripe_row_created(LocalTable *lt, StripeRow *row);

/* sync_outbox.c */
extern void stripe_outbox_add(SyncRun *run, Datum ids, Datum types, Datum *times,
							  Datum *objects, int n);
extern void stripe_outbox_history(SyncRun *run);

/* sync_relist.c: the changes without events, listed again after the events */
extern void stripe_sync_relist(SyncRun *run);

#endif							/* STRIPE_SYNC_H */
