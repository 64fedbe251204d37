/*-------------------------------------------------------------------------
 * stripe_sync.h
 *		Declarations shared by the stripe_sync extension's source files.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_SYNC_H
#define STRIPE_SYNC_H

#include "postgres.h"

#include "executor/tuptable.h"
#include "fmgr.h"
#include "foreign/fdwapi.h"
#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

#define STRIPE_DEFAULT_API_URL		"https://api.stripe.com"
#define STRIPE_DEFAULT_API_VERSION	"2026-10-28.endive"
#define STRIPE_PAGE_SIZE			100

/* GUCs (stripe_sync.c) */
extern int	stripe_requests_per_second;
extern int	stripe_max_concurrent_requests;
extern int	stripe_http_timeout;		/* seconds */
extern int	stripe_max_retries;
extern int	stripe_retry_base_delay;	/* milliseconds */
extern int	stripe_outbox_batch_size;
extern char *stripe_outbox_retention;
extern int	stripe_naptime;				/* seconds */
extern char *stripe_database;

/* ---- catalogue (catalog.c, catalog_data.c) ---- */

typedef enum StripeColType
{
	STRIPE_COL_TEXT,
	STRIPE_COL_INT8,
	STRIPE_COL_BOOL,
	STRIPE_COL_TIMESTAMPTZ,
	STRIPE_COL_NUMERIC,
	STRIPE_COL_JSONB
} StripeColType;

/* StripeColumn.flags: how Stripe's list endpoint can filter on the field */
#define STRIPE_FILTER_EQ		0x01	/* field=value */
#define STRIPE_FILTER_RANGE		0x02	/* field[gt|gte|lt|lte]=unix time */

typedef struct StripeColumn
{
	const char *name;
	StripeColType type;
	int			flags;
} StripeColumn;

/* StripeObjectDef.rows_from: what one row of the table is */
typedef enum StripeRowsFrom
{
	STRIPE_ROWS_LIST = 0,		/* one object of a list endpoint */
	STRIPE_ROWS_ARRAYS			/* one element of a top-level array of a single
								 * object (balance: one row per kind and
								 * currency); the array's name is the "kind" */
} StripeRowsFrom;

/*
 * The fields after ncolumns are zero for ordinary objects, so that the
 * generated catalogue names only what is special.
 */
typedef struct StripeObjectDef
{
	const char *table;			/* foreign/local table name */
	const char *path;			/* list path under /v1/ */
	const char *object;			/* Stripe's "object" value */
	const StripeColumn *columns;
	int			ncolumns;
	StripeRowsFrom rows_from;
	bool		no_retrieve;	/* Stripe has no GET /v1/<path>/<id> */

	/*
	 * Objects Stripe lists only under a parent: the list needs this filter
	 * (setup_attempts: setup_intent).  With parent_path the value goes into
	 * the path instead, /v1/<parent_path>/<value>/<path> (payment_methods:
	 * /v1/customers/cus_…/payment_methods).  required_example is the parent
	 * id's prefix, for hints ("cus_").
	 */
	const char *required_filter;
	const char *parent_path;
	const char *required_example;
} StripeObjectDef;

extern const StripeObjectDef stripe_objects[];
extern const int stripe_nobjects;

extern const StripeObjectDef *stripe_object_by_path(const char *path);
extern const StripeObjectDef *stripe_object_by_table(const char *table);
extern const StripeColumn *stripe_object_column(const StripeObjectDef *def,
												const char *name);
extern const char *stripe_coltype_sql(StripeColType type);
extern char *stripe_object_table_names(void);

/* ---- connection options (options.c) ---- */

typedef struct StripeConn
{
	char	   *api_url;		/* without trailing slash */
	char	   *api_version;
	char	   *account;		/* Stripe-Account header, or NULL */
	char	   *api_key;		/* secret: never printed */
	char	   *server_name;
} StripeConn;

extern StripeConn *stripe_conn_for_server(Oid serverid, Oid userid);
extern bool stripe_valid_url(const char *url);
extern bool stripe_valid_object_path(const char *path);

/* ---- HTTP (http.c) ---- */

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
} StripeManyReq;

typedef bool (*StripeManyFeed) (void *arg, StripeManyReq *req);
typedef void (*StripeManyDone) (void *arg, StripeManyReq *req);

extern void stripe_request_stream(StripeConn *conn, StripeManyFeed feed,
								  StripeManyDone done, void *arg,
								  StripeStats *stats);
/* text.c: URL encoding; network text made fit for messages */
extern char *stripe_urlencode(const char *s);
extern char *stripe_path_segment(const char *s);
/* equal-jitter backoff from stripe_sync.retry_base_delay, at least Retry-After */
extern long stripe_backoff_ms(int attempt, const char *retry_after);
typedef struct StripeHttpResult
{
	long		status;			/* 0: no answer, see error */
	char	   *body;			/* NUL-terminated, in the caller's context */
	size_t		len;
	char		retry_after[32];
	char		error[256];
} StripeHttpResult;
extern void stripe_http_post_json(const char *url, const char *authorization,
								  const char *body, StripeHttpResult *res);
extern void stripe_scrub_secrets(char *msg);	/* text.c */
extern char *stripe_safe_text(const char *s, size_t len, size_t max, const char *key);

/* ---- rate limiter (ratelimit.c) ---- */

extern void stripe_ratelimit_shmem_init(void);
extern void stripe_ratelimit_wait(const StripeConn *conn);
extern TimestampTz stripe_ratelimit_reserve(const StripeConn *conn);

/* ---- JSON pages (json_page.c) ---- */

/* A raw JSON value inside a response body. */
typedef struct StripeSpan
{
	char	   *start;			/* NULL when the field is absent */
	int			len;
} StripeSpan;

typedef struct StripeRow
{
	StripeSpan	object;			/* the whole object */
	StripeSpan *fields;			/* one per wanted field slot */
	bool		deleted;		/* {"deleted": true} */
} StripeRow;

typedef struct StripeFieldSet StripeFieldSet;

typedef struct StripePage
{
	StripeRow  *rows;
	int			nrows;
	bool		has_more;
} StripePage;

extern StripeFieldSet *stripe_fieldset_create(int nslots);
extern int	stripe_fieldset_add(StripeFieldSet *fs, const char *name, int slot);
extern void stripe_fieldset_finish(StripeFieldSet *fs);
extern void stripe_fieldset_rows_from_arrays(StripeFieldSet *fs, int kind_slot);
extern bool stripe_parse_page(char *json, size_t len, bool is_list,
							  StripeFieldSet *fs, StripePage *page,
							  const char **why);
extern char *stripe_span_text(StripeSpan *span);
extern bool stripe_span_is_null(StripeSpan *span);
extern char *stripe_page_next_cursor(StripePage *page, int id_slot, const char *prev,
									 const char **why);

/* ---- row conversion (rowconv.c) ---- */

#define STRIPE_ATTRS_SLOT	(-2)	/* the column holds the whole object */

typedef struct StripeRowConv
{
	int			natts;
	int		   *att_slot;		/* field slot per attribute, STRIPE_ATTRS_SLOT, or -1 */
	char	  **att_field;		/* Stripe field name per attribute */
	int			attrs_att;		/* the jsonb attrs column, or -1 */
	Oid		   *att_type;
	FmgrInfo   *att_in;
	Oid		   *att_ioparam;
	int32	   *att_typmod;
	StripeFieldSet *fs;
	int			id_slot;
} StripeRowConv;

extern char *stripe_column_field(Oid relid, AttrNumber attno);
extern char *stripe_table_object_path(Oid relid);
extern StripeRowConv *stripe_rowconv_create(Relation rel, bool all, Bitmapset *wanted);
extern void stripe_row_to_slot(StripeRowConv *rc, StripeRow *row, TupleTableSlot *slot);

/* ---- sync engine (sync.c) ---- */

/*
 * Runs one sync of a source.  With own_transactions (background workers), it
 * must be called outside any transaction: it commits each page with its
 * cursor, and records a failure in stripe_sync.status instead of throwing.
 * Without it (sync_now), everything happens in the caller's transaction.
 */
extern void stripe_sync_run(const char *source, bool own_transactions);

/* jsonb_fast.c: jsonb of a plain JSON object's text, or NULL (then use jsonb_in) */
extern Jsonb *stripe_jsonb_from_object(const char *text, int len);

/* admin.c */
extern char *stripe_fetch_account_id(StripeConn *conn, StripeStats *stats,
									 int64 *created);

/* ---- background workers (worker.c) ---- */

/* stripe_sync.max_workers (defined in stripe_sync.c): concurrent syncs */
extern int	stripe_max_workers;

/* sync workers the shared table tracks at most; bounds stripe_sync.max_workers */
#define STRIPE_WORKER_SLOTS		64
/* longest source name a worker can carry, NUL included (it travels in bgw_extra) */
#define STRIPE_SOURCE_MAXLEN	112

extern void stripe_worker_init(void);	/* _PG_init, preloaded only */
extern void stripe_worker_wake(void);
extern void stripe_worker_wake_at_commit(void);
extern void stripe_worker_reload_config(void);
extern void stripe_worker_keep_memory(void);
struct BackgroundWorker;
extern void stripe_worker_prepare(struct BackgroundWorker *worker, const char *function,
								  const char *type);
extern PGDLLEXPORT void stripe_launcher_main(Datum main_arg);
extern PGDLLEXPORT void stripe_worker_main(Datum main_arg);
/* stripe_sync.backfill_helpers (stripe_sync.c) and the helpers' entry (sync.c) */
extern int	stripe_backfill_helpers;
extern PGDLLEXPORT void stripe_backfill_helper_main(Datum main_arg);
/* processes stripe_sync.wake() reaches */
typedef enum StripeWakeableRole
{
	STRIPE_WAKE_LAUNCHER,
	STRIPE_WAKE_SHIPPER,
	STRIPE_WAKEABLE_ROLES
} StripeWakeableRole;
extern void stripe_worker_attach_wakeable(StripeWakeableRole role);
extern void stripe_worker_loop(long (*pass) (void)) pg_attribute_noreturn();
/* ---- outbox shipper (outbox.c) ---- */
extern PGDLLEXPORT void stripe_shipper_main(Datum main_arg);

/* ---- writes (modify.c) ---- */
extern void stripe_fdw_set_modify_routines(FdwRoutine *routine);

#endif							/* STRIPE_SYNC_H */
