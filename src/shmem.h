/*-------------------------------------------------------------------------
 * shmem.h
 *		stripe_sync's structs in shared memory (shmem.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_SHMEM_H
#define STRIPE_SHMEM_H

#include "storage/lwlock.h"

/*
 * Every struct begins with the LWLock that guards it; at creation the struct
 * is zeroed and the lock set.
 */
typedef struct StripeShmemHeader
{
	LWLock	   *lock;
} StripeShmemHeader;

extern void stripe_shmem_add(const char *name, Size size, void **ptr);

#endif							/* STRIPE_SHMEM_H */
