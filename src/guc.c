/*-------------------------------------------------------------------------
 * guc.c
 *		stripe_sync's configuration parameters.  Every module reads them;
 *		_PG_init defines them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "guc.h"
#include "http_post.h"

int			stripe_requests_per_second = 0;
int			stripe_endpoint_requests_per_second = 0;
int			stripe_max_concurrent_requests = 8;
int			stripe_http_timeout = 30;
int			stripe_max_retries = 5;
int			stripe_retry_base_delay = 250;
int			stripe_outbox_batch_size = 500;
int			stripe_outbox_concurrency = 8;
char	   *stripe_outbox_retention = NULL;
int			stripe_naptime = 1;
char	   *stripe_database = NULL;
int			stripe_max_workers = 4;
int			stripe_backfill_helpers = 1;
int			stripe_relist_interval = 86400;
int			stripe_connect_turn = 10000;

/*
 * Defines the parameters.  stripe_sync.database is PGC_POSTMASTER, which
 * PostgreSQL refuses (FATAL) from a library loaded after startup: it exists
 * only when preloading, as the workers that read it do.
 */
void
stripe_define_gucs(bool preloading)
{
	DefineCustomIntVariable("stripe_sync.requests_per_second",
							"Requests per second allowed to each Stripe account; 0 sets it by the key's mode.",
							"0: 90 for a live key (sk_live_, rk_live_), 22 for any other, under Stripe's 100 and 25. "
							"Shared by all backends and workers when the library is preloaded; otherwise each backend has its own budget.",
							&stripe_requests_per_second, 0, 0, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.endpoint_requests_per_second",
							"Requests per second allowed to each endpoint of a Stripe account; 0 sets it by requests_per_second, -1 is none.",
							"0: 22, under Stripe's 25, while requests_per_second is 0, else none.",
							&stripe_endpoint_requests_per_second, 0, -1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.max_concurrent_requests",
							"Requests a sync, or a long foreign-table scan, keeps in flight at once.",
							NULL,
							&stripe_max_concurrent_requests, 8, 1, 256,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.backfill_helpers",
							"Helper background workers that share each backfill with its sync.",
							"Each takes a slot of max_worker_processes while it runs; 0 backfills in the sync's process alone.",
							&stripe_backfill_helpers, 1, 0, 16,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.relist_interval",
							"Time between a sync's full re-lists of an object Stripe sends no events for (file_links).",
							"Each full re-list costs a request per 100 objects.",
							&stripe_relist_interval, 86400, 1, PG_INT32_MAX,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("stripe_sync.connect_turn",
							"Time a platform's sync gives one connected account's backfill before the next account's turn.",
							"The accounts' backfills take turns, round after round, until every one is done; 0 backfills each account in full in one turn.",
							&stripe_connect_turn, 10000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.http_timeout",
							"Time allowed for one HTTP request, including the connection.",
							NULL,
							&stripe_http_timeout, 30, 1, 3600,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.max_retries",
							"Retries of a failed Stripe or Intempt request before giving up.",
							"Rate limits, server errors, timeouts, dropped connections and malformed answers are retried.",
							&stripe_max_retries, 5, 0, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.retry_base_delay",
							"First backoff delay between retries; it doubles on each retry, with jitter.",
							"A Retry-After header from the server takes precedence when longer.",
							&stripe_retry_base_delay, 250, 1, 60000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.outbox_batch_size",
							"Events sent to Intempt in one request.",
							"A request's body is also kept within 1 MiB; Intempt answering 413 halves both.",
							&stripe_outbox_batch_size, 500, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.outbox_concurrency",
							"Requests to Intempt the shipper keeps in flight at once.",
							"No two of them carry events of the same Stripe object; 1 sends one batch at a time.",
							&stripe_outbox_concurrency, 8, 1, STRIPE_POSTS_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("stripe_sync.outbox_retention",
							   "How long delivered outbox rows are kept.",
							   NULL,
							   &stripe_outbox_retention, "7 days",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.naptime",
							"Scheduler tick of the background workers.",
							NULL,
							&stripe_naptime, 1, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("stripe_sync.max_workers",
							"Sources synced at the same time, one background worker each.",
							"Each takes a slot of max_worker_processes, and the launcher one more.",
							&stripe_max_workers, 4, 1, STRIPE_WORKER_SLOTS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	if (preloading)
		DefineCustomStringVariable("stripe_sync.database",
								   "Database the background workers connect to.",
								   NULL,
								   &stripe_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("stripe_sync");
}
