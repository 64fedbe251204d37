/*-------------------------------------------------------------------------
 * children.h
 *		Child tables: the elements of a parent's nested list as rows of their
 *		own, kept with the parent (children.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_CHILDREN_H
#define STRIPE_CHILDREN_H

#include "sync.h"

extern bool stripe_is_child(const char *table);
extern void stripe_children_write(SyncRun *run, LocalTable *parent, StripeRow *rows, int nrows,
								  const TimestampTz *observed, const TimestampTz *deleted_at);
extern void stripe_children_mark_deleted(SyncRun *run, LocalTable *parent, const char *id,
										 TimestampTz at);
extern void stripe_children_prepare(SyncRun *run);

#endif							/* STRIPE_CHILDREN_H */
