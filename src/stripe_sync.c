/*-------------------------------------------------------------------------
 * stripe_sync.c
 *		Module entry point: the configuration parameters, and, when the
 *		library is preloaded, the shared memory and the static workers.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "bgw.h"
#include "fdw_stats.h"
#include "guc.h"
#include "launcher.h"
#include "ratelimit.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/*
	 * Shared memory and static background workers can be set up only while
	 * shared_preload_libraries loads.  Loaded later, by the FDW alone, each
	 * backend limits its own requests and nothing syncs on a schedule.
	 */
	stripe_define_gucs(process_shared_preload_libraries_in_progress);
	stripe_fdw_stats_init();
	if (process_shared_preload_libraries_in_progress)
	{
		stripe_ratelimit_shmem_init();
		stripe_bgw_shmem_init();
		stripe_launcher_init();
	}
}
