/*-------------------------------------------------------------------------
 * bf_parents.h
 *		Objects Stripe lists only per customer, listed for each customer of
 *		the source's own customers table (bf_parents.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_BF_PARENTS_H
#define STRIPE_BF_PARENTS_H

#include "backfill.h"

extern bool stripe_listed_per_parent(const char *object);
extern void stripe_backfill_parents(SyncRun *run, List *pending);
extern void stripe_parents_relist(SyncRun *run);

#endif							/* STRIPE_BF_PARENTS_H */
