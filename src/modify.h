/*-------------------------------------------------------------------------
 * modify.h
 *		INSERT, UPDATE and DELETE through the foreign tables (modify.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_MODIFY_H
#define STRIPE_MODIFY_H

#include "foreign/fdwapi.h"

extern void stripe_fdw_set_modify_routines(FdwRoutine *routine);

#endif							/* STRIPE_MODIFY_H */
