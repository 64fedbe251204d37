/*-------------------------------------------------------------------------
 * fdw_quals.h
 *		The quals of an FDW scan that go to Stripe (fdw_quals.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_FDW_QUALS_H
#define STRIPE_FDW_QUALS_H

#include "nodes/pathnodes.h"

#include "catalog.h"
#include "fdw_request.h"

extern Node *stripe_strip_relabel(Node *n);
extern bool stripe_classify_clause(PlannerInfo *root, RelOptInfo *baserel, Oid relid,
								   const StripeObjectDef *def, Expr *clause,
								   PushKind *kind, char **key, Expr **value);

#endif							/* STRIPE_FDW_QUALS_H */
