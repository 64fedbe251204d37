/*-------------------------------------------------------------------------
 * catalog.h
 *		The catalogue of Stripe objects (catalog.c; the columns are generated
 *		into catalog_data.c by tools/gen_catalog.py).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_CATALOG_H
#define STRIPE_CATALOG_H

#include "nodes/pg_list.h"

typedef enum StripeColType
{
	STRIPE_COL_TEXT,
	STRIPE_COL_INT8,
	STRIPE_COL_BOOL,
	STRIPE_COL_TIMESTAMPTZ,
	STRIPE_COL_NUMERIC,
	STRIPE_COL_JSONB
} StripeColType;

/* StripeColumn.flags: how Stripe's list endpoint can filter on the field */
#define STRIPE_FILTER_EQ		0x01	/* field=value */
#define STRIPE_FILTER_RANGE		0x02	/* field[gt|gte|lt|lte]=unix time */

typedef struct StripeColumn
{
	const char *name;
	StripeColType type;
	int			flags;
	const char *values;			/* a filter's values Stripe accepts, "a|b|c";
								 * NULL: any */
} StripeColumn;

/* StripeObjectDef.rows_from: what one row of the table is */
typedef enum StripeRowsFrom
{
	STRIPE_ROWS_LIST = 0,		/* one object of a list endpoint */
	STRIPE_ROWS_ARRAYS			/* one element of a top-level array of a single
								 * object (balance: one row per kind and
								 * currency); the array's name is the "kind" */
} StripeRowsFrom;

/*
 * StripeObjectDef.relist: what a sync lists again for the changes Stripe sends
 * no event for (sync_relist.c)
 */
typedef enum StripeRelist
{
	STRIPE_RELIST_NONE = 0,		/* events bring every change */
	STRIPE_RELIST_RECENT,		/* each sync: those created since relist_from */
	STRIPE_RELIST_FULL,			/* every stripe_sync.relist_interval: all */
	STRIPE_RELIST_PARENT		/* each sync: those of every parent whose row
								 * changed since the last listing (bf_parents.c) */
} StripeRelist;

/*
 * The fields after ncolumns are zero for ordinary objects, so that the
 * generated catalogue names only what is special.
 */
typedef struct StripeObjectDef
{
	const char *table;			/* foreign/local table name */
	const char *path;			/* list path under /v1/ */
	const char *object;			/* Stripe's "object" value */
	const StripeColumn *columns;
	int			ncolumns;
	StripeRowsFrom rows_from;
	bool		no_retrieve;	/* Stripe has no GET /v1/<path>/<id> */

	/*
	 * Objects Stripe lists only under a parent: the list needs this filter
	 * (setup_attempts: setup_intent).  With parent_path the value goes into
	 * the path instead, /v1/<parent_path>/<value>/<path> (payment_methods:
	 * /v1/customers/cus_…/payment_methods).  required_example is the parent
	 * id's prefix, for hints ("cus_").
	 */
	const char *required_filter;
	const char *parent_path;
	const char *required_example;
	/* the list's segment under the parent when it is not path (balance_transactions) */
	const char *child_path;

	bool		no_list;		/* Stripe has no list: a scan needs id = */

	/*
	 * Lists that leave objects out unless asked for them: how every object is
	 * listed, as one parameter ("status=all") or as several lists that
	 * together hold them all ("active=true|active=false").  A query's own
	 * value of that parameter replaces them.
	 */
	const char *list_all;
	bool		test_clocks;	/* objects on test clocks are listed only per clock */

	/* a source can sync it, and how its local table stays current; or NULL */
	const char *stays_current;
	/*
	 * relist_from: an aggregate over the local table's live rows, the oldest
	 * created a recent re-list reads from (NULL: nothing may have changed);
	 * without it, the last relist_days.  Never more than relist_days back.
	 * relist_query: the list's own filter ("status=open"), or NULL.
	 */
	StripeRelist relist;
	const char *relist_from;
	const char *relist_query;
	int			relist_days;
	/* the writes Stripe allows through the foreign table ("insert, update"), or NULL */
	const char *writable;

	/*
	 * Fields holding a list Stripe inlines only the first page of ("lines",
	 * "a|b"), whose rest nested.c fetches; or NULL
	 */
	const char *nested_lists;

	/*
	 * A child table (children.c): one row per element of the list child_list
	 * of the parent table child_of, with the parent's id in parent_column.
	 * local_only: no foreign table of its own (its path is the parent's).
	 */
	const char *child_of;
	const char *child_list;
	const char *parent_column;
	bool		local_only;
} StripeObjectDef;

#define STRIPE_PAGE_SIZE			100

extern const StripeObjectDef stripe_objects[];
extern const int stripe_nobjects;

extern const StripeObjectDef *stripe_object_by_path(const char *path);
extern const StripeObjectDef *stripe_object_by_table(const char *table);
extern const StripeColumn *stripe_object_column(const StripeObjectDef *def,
												const char *name);
extern const char *stripe_coltype_sql(StripeColType type);
extern char *stripe_object_table_names(void);
extern bool stripe_filter_accepts(const StripeColumn *col, const char *value);
extern char *stripe_list_all_param(const StripeObjectDef *def);
extern List *stripe_list_all_queries(const StripeObjectDef *def);

#endif							/* STRIPE_CATALOG_H */
