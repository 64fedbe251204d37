/*-------------------------------------------------------------------------
 * shmem.c
 *		stripe_sync's structs in shared memory: each module names its struct
 *		from _PG_init, while shared_preload_libraries loads (the one time
 *		shared memory can be reserved), and finds it set up, with an LWLock
 *		of its own, in every process.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "shmem.h"

#define MAX_STRUCTS		8

typedef struct ShmemStruct
{
	const char *name;			/* also the name of its LWLock tranche */
	Size		size;
	void	  **ptr;
} ShmemStruct;

static ShmemStruct structs[MAX_STRUCTS];
static int	nstructs = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < nstructs; i++)
	{
		RequestAddinShmemSpace(MAXALIGN(structs[i].size));
		RequestNamedLWLockTranche(structs[i].name, 1);
	}
}

static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < nstructs; i++)
	{
		bool		found;
		StripeShmemHeader *h = ShmemInitStruct(structs[i].name, structs[i].size, &found);

		if (!found)
		{
			memset(h, 0, structs[i].size);
			h->lock = &(GetNamedLWLockTranche(structs[i].name))->lock;
		}
		*structs[i].ptr = h;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Reserves a struct of size bytes that begins with a StripeShmemHeader; *ptr
 * points at it once shared memory is set up (it stays NULL without
 * preloading).
 */
void
stripe_shmem_add(const char *name, Size size, void **ptr)
{
	Assert(process_shared_preload_libraries_in_progress);
	if (nstructs == MAX_STRUCTS)
		elog(ERROR, "stripe_sync: too many shared memory structs");
	if (nstructs == 0)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = shmem_startup;
	}
	structs[nstructs].name = name;
	structs[nstructs].size = size;
	structs[nstructs].ptr = ptr;
	nstructs++;
}
