/*-------------------------------------------------------------------------
 * guc.h
 *		stripe_sync's configuration parameters (guc.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_GUC_H
#define STRIPE_GUC_H

extern int	stripe_requests_per_second;	/* 0: by the key's mode */
extern int	stripe_endpoint_requests_per_second;	/* 0: by requests_per_second; -1: none */
extern int	stripe_max_concurrent_requests;
extern int	stripe_http_timeout;		/* seconds */
extern int	stripe_max_retries;
extern int	stripe_retry_base_delay;	/* milliseconds */
extern int	stripe_outbox_batch_size;
extern int	stripe_outbox_concurrency;
extern char *stripe_outbox_retention;
extern int	stripe_naptime;				/* seconds */
extern char *stripe_database;
extern int	stripe_max_workers;
extern int	stripe_backfill_helpers;
extern int	stripe_relist_interval;		/* seconds */
extern int	stripe_connect_turn;		/* milliseconds */

/* sync workers the shared table tracks at most; bounds stripe_sync.max_workers */
#define STRIPE_WORKER_SLOTS		64

extern void stripe_define_gucs(bool preloading);

#endif							/* STRIPE_GUC_H */
