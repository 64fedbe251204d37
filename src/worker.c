/*-------------------------------------------------------------------------
 * worker.c
 *		Background workers: the launcher and one worker per running sync.
 *		(Being written.)
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "stripe_sync.h"
