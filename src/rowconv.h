/*-------------------------------------------------------------------------
 * rowconv.h
 *		From a parsed Stripe object to a tuple (rowconv.c), and attrs built in
 *		one pass over an object's text (jsonb_fast.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_ROWCONV_H
#define STRIPE_ROWCONV_H

#include "access/attnum.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "nodes/bitmapset.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

#include "json_page.h"

#define STRIPE_ATTRS_SLOT	(-2)	/* the column holds the whole object */

typedef struct StripeRowConv
{
	int			natts;
	int		   *att_slot;		/* field slot per attribute, STRIPE_ATTRS_SLOT, or -1 */
	char	  **att_field;		/* Stripe field name per attribute */
	int			attrs_att;		/* the jsonb attrs column, or -1 */
	Oid		   *att_type;
	FmgrInfo   *att_in;
	Oid		   *att_ioparam;
	int32	   *att_typmod;
	StripeFieldSet *fs;
	int			id_slot;
	int			created_slot;	/* "created", read whether or not a column does */
} StripeRowConv;

extern char *stripe_column_field(Oid relid, AttrNumber attno);
extern char *stripe_table_object_path(Oid relid);
extern StripeRowConv *stripe_rowconv_create(Relation rel, bool all, Bitmapset *wanted);
extern void stripe_row_to_slot(StripeRowConv *rc, StripeRow *row, TupleTableSlot *slot);

/* jsonb_fast.c: jsonb of a plain JSON object's text, or NULL (then use jsonb_in) */
extern Jsonb *stripe_jsonb_from_object(const char *text, int len);

#endif							/* STRIPE_ROWCONV_H */
