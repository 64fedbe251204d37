/*-------------------------------------------------------------------------
 * fdw_request.h
 *		Between the FDW's planner and executor (fdw.c) and the building of
 *		its requests (fdw_request.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_FDW_REQUEST_H
#define STRIPE_FDW_REQUEST_H

#include "utils/hsearch.h"

#include "catalog.h"
#include "json_page.h"

/* What a pushed qual asks of Stripe */
typedef enum PushKind
{
	PUSH_ID,					/* id = v: retrieve */
	PUSH_ID_ANY,				/* id = ANY(array): one retrieve each */
	PUSH_EQ,					/* field = v: list filter */
	PUSH_CREATED_GT,
	PUSH_CREATED_GE,
	PUSH_CREATED_LT,
	PUSH_CREATED_LE,
	PUSH_CREATED_EQ
} PushKind;

/* A pushed qual's value at execution, or its parameter for EXPLAIN */
typedef struct PushValue
{
	PushKind	kind;
	char	   *key;
	bool		known;			/* false: EXPLAIN of a parameter */
	bool		isnull;
	Datum		value;
	Oid			type;
	int			paramno;
} PushValue;

/* The range of created the quals allow, in Unix seconds; parameters for EXPLAIN */
typedef struct CreatedRange
{
	int64		lower;
	int64		upper;
	bool		have_lower;
	bool		have_upper;
	const char *lower_param;
	const char *upper_param;
} CreatedRange;

/* A request plan: retrieves, or a list with its filters. */
typedef struct RequestPlan
{
	bool		retrieve;
	bool		allow_404;		/* a 404 means no rows, not an error */
	bool		lacks_parent;	/* the filter Stripe requires is missing */
	bool		no_list;		/* Stripe has no list of it, and no id was given */
	List	   *retrieve_paths; /* "/v1/customers/cus_…" each */
	char	   *base_path;		/* "/v1/customers" */

	/*
	 * The lists to read one after the other, as what each adds to filters
	 * and created (stripe_list_rest_window): one "", unless the object's
	 * plain list leaves some out (prices: "&active=true", "&active=false").
	 */
	List	   *suffixes;
	char	   *filters;		/* "&customer=…": the parameters before created */
	CreatedRange created;
} RequestPlan;

/*
 * Where a list scan is, so that it can go on when Stripe no longer knows the
 * object its cursor names (deleted, or no longer taken by the list's
 * filters): the created second of the last row it returned, and the ids it
 * returned in that second.  Stripe's top-level lists are newest first, so
 * the scan goes on with created at most that second, skipping those ids.
 */
typedef struct ScanPlace
{
	MemoryContext cxt;			/* the ids' */
	bool		known;			/* second is the last row's created */
	int64		second;
	HTAB	   *ids;			/* ids returned in that second */
	bool		resumed;		/* the scan went on from second: those ids are skipped */
	int			resumptions;
} ScanPlace;

extern void stripe_place_init(ScanPlace *pl, MemoryContext parent);
extern void stripe_place_note(ScanPlace *pl, StripePage *page, int id_slot, int created_slot);
extern bool stripe_place_returned(ScanPlace *pl, StripeRow *row, int id_slot, int created_slot);

extern bool stripe_build_request(const char *path, const StripeObjectDef *def,
								 PushValue *vals, int nvals, RequestPlan *rp);
extern char *stripe_list_request(const char *base, int limit, const char *rest,
								 const char *cursor);
extern char *stripe_list_rest_window(RequestPlan *rp, const char *suffix,
									 int64 lo, int64 hi);
extern char *stripe_list_rest_upto(RequestPlan *rp, const char *suffix, int64 upper);
extern char *stripe_describe_requests(RequestPlan *rp, const StripeObjectDef *def,
									  int first_limit);
extern char *stripe_no_list_hint(const StripeObjectDef *def);

#endif							/* STRIPE_FDW_REQUEST_H */
