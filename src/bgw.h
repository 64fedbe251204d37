/*-------------------------------------------------------------------------
 * bgw.h
 *		What all of stripe_sync's background workers share (bgw.c): their
 *		registration, signals, main loop, and waking the launcher and the
 *		shipper when a transaction commits.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_BGW_H
#define STRIPE_BGW_H

/* longest source name a worker can carry, NUL included (it travels in bgw_extra) */
#define STRIPE_SOURCE_MAXLEN	112

/* processes stripe_sync.wake() reaches */
typedef enum StripeWakeableRole
{
	STRIPE_WAKE_LAUNCHER,
	STRIPE_WAKE_SHIPPER,
	STRIPE_WAKEABLE_ROLES
} StripeWakeableRole;

struct BackgroundWorker;

extern void stripe_bgw_shmem_init(void);	/* _PG_init, preloaded only */
extern void stripe_bgw_prepare(struct BackgroundWorker *worker, const char *function,
							   const char *type);
extern void stripe_bgw_start(void);
extern void stripe_bgw_keep_memory(void);
extern void stripe_bgw_reload_config(void);
extern void stripe_bgw_attach_wakeable(StripeWakeableRole role);
extern void stripe_bgw_wake(void);
extern void stripe_bgw_wake_at_commit(void);
extern void stripe_bgw_loop(long (*pass) (void)) pg_attribute_noreturn();

#endif							/* STRIPE_BGW_H */
