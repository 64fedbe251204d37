/*-------------------------------------------------------------------------
 * fdw_stats.h
 *		Planner statistics of the Stripe foreign tables (fdw_stats.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_FDW_STATS_H
#define STRIPE_FDW_STATS_H

extern void stripe_fdw_stats_init(void);

#endif							/* STRIPE_FDW_STATS_H */
