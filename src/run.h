/*-------------------------------------------------------------------------
 * run.h
 *		One sync of a source (sync_run.c), for the sync workers.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_RUN_H
#define STRIPE_RUN_H

#include "datatype/timestamp.h"

/*
 * Runs one sync of a source in a background worker, outside any
 * transaction: it commits each step in a transaction of its own, and records
 * a failure in stripe_sync.status instead of throwing.  Returns whether the
 * sync ran (false: another sync of the source holds it).
 */
extern bool stripe_sync_run(const char *source);

/*
 * One sync of a platform's connected account (its source's name), inside the
 * platform's run (connect.c): a worker's records its own failure and returns;
 * sync_now's (own false) throws it.  False when another sync holds it.  Its
 * backfill stops feeding pages at turn_end (0: never); *turn_over says it
 * did, with a backfill left for the account's next turn.
 */
extern bool stripe_sync_account(const char *source, bool own, TimestampTz turn_end, bool *turn_over);

#endif							/* STRIPE_RUN_H */
