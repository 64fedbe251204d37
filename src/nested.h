/*-------------------------------------------------------------------------
 * nested.h
 *		Lists Stripe inlines only the first page of (invoice.lines,
 *		subscription.items…): the rest fetched and spliced into the object
 *		(nested.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_NESTED_H
#define STRIPE_NESTED_H

#include "catalog.h"
#include "http.h"
#include "json_page.h"
#include "rowconv.h"

/* the most elements kept of one nested list; past it a WARNING, the rest left out */
#define STRIPE_NESTED_MAX	10000
/* and of all the lists of one page's objects (about 100 MB of elements) */
#define STRIPE_NESTED_PAGE_MAX	100000

extern bool stripe_nested_pending(const StripeObjectDef *def, StripeRow *rows, int nrows);
extern void stripe_nested_complete(StripeConn *conn, const StripeObjectDef *def,
								   StripeFieldSet *fs, StripeRow *rows, int nrows,
								   ErrorData **errors, StripeStats *stats);

extern bool stripe_nested_wanted(const StripeObjectDef *def, const StripeRowConv *rc);
extern void stripe_nested_complete_page(StripeConn *conn, const StripeObjectDef *def,
										const StripeRowConv *rc, StripePage *page,
										StripeStats *stats);

#endif							/* STRIPE_NESTED_H */
