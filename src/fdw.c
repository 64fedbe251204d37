/*-------------------------------------------------------------------------
 * fdw.c
 *		The stripe_sync foreign data wrapper: planning with pushdown of the
 *		quals Stripe can answer (ids, list filters, created ranges), Stripe's
 *		newest-first order, LIMIT, parameterized paths for joins, a
 *		page-at-a-time scan whose long lists go on in windows of created
 *		read together (fdw_windows.c), and EXPLAIN.  Which quals go to Stripe
 *		is fdw_quals.c's; IMPORT FOREIGN SCHEMA is fdw_import.c's.
 *
 *		Two kinds of objects are special.  Balance is one object read as one
 *		row per kind and currency.  Payment methods, setup attempts and
 *		subscription items are listed by Stripe only under a parent (a
 *		customer, a setup intent, a subscription): their scans need that
 *		filter, from a qual or, in a join, from a parameterized path.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "parser/parsetree.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "fdw_request.h"
#include "fdw_windows.h"
#include "http.h"
#include "fdw_import.h"
#include "fdw_quals.h"
#include "modify.h"
#include "nested.h"
#include "rowconv.h"
#include "text.h"

PG_FUNCTION_INFO_V1(stripe_fdw_handler);

/* Row guesses: Stripe gives no counts, and most accounts are large. */
#define ROWS_LIST		10000.0
#define ROWS_RANGE		1000.0
#define ROWS_FILTERED	100.0
#define ROWS_BALANCE	10.0	/* a few currencies in a few kinds */
/*
 * A request costs about as much as reading a hundred rows locally.  Kept
 * modest so that a full scan stays under jit_above_cost: JIT (and loading
 * LLVM, 50 MB) does nothing for a scan bound by the network.
 */
#define COST_REQUEST	100.0

/* Planner state kept in baserel->fdw_private */
typedef struct StripeRelInfo
{
	char	   *path;			/* list path under /v1/ */
	const StripeObjectDef *def; /* NULL for generic tables */
	AttrNumber	created_attno;	/* timestamptz column reading "created", or 0 */
	bool		all_pushed;		/* every base qual goes to Stripe */
	bool		has_id;			/* a base qual is id = or id = ANY */
	bool		has_parent;		/* a base qual gives the filter Stripe requires */
	bool		many_lists;		/* read as several lists (prices: active, inactive) */
} StripeRelInfo;

/* fdw_private of the ForeignScan plan */
enum
{
	FdwPrivPath,
	FdwPrivKinds,
	FdwPrivKeys,
	FdwPrivAttrs,
	FdwPrivFirstLimit
};

typedef struct StripeScanState
{
	StripeConn *conn;
	char	   *path;
	const StripeObjectDef *def; /* NULL for generic tables */
	List	   *push_kinds;
	List	   *push_keys;
	List	   *push_states;	/* ExprState per pushed value */
	List	   *push_exprs;
	int			first_limit;	/* limit= of the first page (LIMIT pushdown) */

	StripeRowConv *rc;
	bool		nested;			/* its columns read a list Stripe inlines a page of */

	MemoryContext page_cxt;
	StripePage	page;
	int			next_row;
	int			pages_done;
	bool		started;
	bool		done;
	bool		retrieve;
	bool		allow_404;		/* a 404 means no rows */
	List	   *retrieve_paths; /* retrieves still to send */
	RequestPlan rp;				/* the list's base path and parameters */
	List	   *suffixes;		/* the lists left (RequestPlan.suffixes) */
	char	   *first_request;	/* for EXPLAIN ANALYZE */
	char		last_id[256];
	ScanPlace	place;			/* to go on from, should Stripe lose the cursor */
	StripeWinScan *win;			/* the rest of the list, read in windows */
	int			windows;		/* windows read, for EXPLAIN ANALYZE */
	int			windows_ready_peak;	/* pages waiting at most */
	StripeStats stats;
} StripeScanState;

/* ---------- helpers ---------- */

/* ---------- planning ---------- */

static void
stripeGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	StripeRelInfo *info = palloc0(sizeof(StripeRelInfo));
	ListCell   *lc;
	bool		eq = false,
				range = false,
				all_given = false;
	double		ids = 0;
	Relation	rel;
	char	   *all_param;

	info->path = stripe_table_object_path(foreigntableid);
	/* the table's name when there is no object option: anything may be in it */
	if (!stripe_valid_object_path(info->path))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("foreign table \"%s\" does not name a Stripe list path",
						get_rel_name(foreigntableid)),
				 errdetail("\"%s\" is not a path of Stripe's: lower-case letters, digits and _, in segments separated by /.",
						   info->path),
				 errhint("Without an object option the table's name is the path: ALTER FOREIGN TABLE %s OPTIONS (ADD object 'customers');",
						 quote_identifier(get_rel_name(foreigntableid)))));
	info->def = stripe_object_by_path(info->path);
	info->all_pushed = true;
	all_param = stripe_list_all_param(info->def);

	rel = table_open(foreigntableid, NoLock);
	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

		if (!att->attisdropped && att->atttypid == TIMESTAMPTZOID &&
			strcmp(stripe_column_field(foreigntableid, i + 1), "created") == 0)
			info->created_attno = i + 1;
	}
	table_close(rel, NoLock);

	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *ri = lfirst(lc);
		PushKind	kind;
		char	   *key;
		Expr	   *val;

		if (!stripe_classify_clause(root, baserel, foreigntableid, info->def, ri->clause,
							 &kind, &key, &val))
		{
			info->all_pushed = false;
			continue;
		}
		if (kind == PUSH_ID || kind == PUSH_ID_ANY ||
			(kind == PUSH_EQ && info->def && info->def->required_filter &&
			 strcmp(key, info->def->required_filter) == 0))
			info->has_parent = true;
		if (kind == PUSH_EQ && all_param != NULL && strcmp(key, all_param) == 0)
			all_given = true;
		if (kind == PUSH_ID)
			ids = 1;
		else if (kind == PUSH_ID_ANY)
		{
			Node	   *arr = stripe_strip_relabel((Node *) val);

			ids = (IsA(arr, Const) && !((Const *) arr)->constisnull)
				? ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(((Const *) arr)->constvalue)),
								 ARR_DIMS(DatumGetArrayTypeP(((Const *) arr)->constvalue)))
				: 10;
		}
		else if (kind == PUSH_EQ)
			eq = true;
		else
			range = true;
	}
	if (ids > 0)
		info->has_id = true;
	/* without its parameter, Stripe's newest-first order holds within each list only */
	info->many_lists = !all_given && list_length(stripe_list_all_queries(info->def)) > 1;
	baserel->fdw_private = info;
	baserel->tuples = ROWS_LIST;
	baserel->rows = ids > 0 ? ids : eq ? ROWS_FILTERED : range ? ROWS_RANGE : ROWS_LIST;
	if (info->def && info->def->rows_from == STRIPE_ROWS_ARRAYS)
		baserel->rows = ROWS_BALANCE;
}

/*
 * A scan Stripe would refuse: the object is listed only per parent, and
 * neither a base qual nor the join clause of a parameterized path (key, or
 * NULL for none) supplies the parent.
 */
static bool
lacks_parent(StripeRelInfo *info, PushKind kind, const char *key)
{
	if (info->def == NULL || info->has_parent)
		return false;
	/* an object Stripe does not list (mandates) needs its id */
	if (info->def->no_list)
		return key == NULL || kind != PUSH_ID;
	if (info->def->required_filter == NULL)
		return false;
	if (key == NULL)
		return true;
	return !(kind == PUSH_ID ||
			 (kind == PUSH_EQ && strcmp(key, info->def->required_filter) == 0));
}

/*
 * What the requests of a scan of this many rows cost.  A retrieve is one
 * round trip like a list page, but its answer is one object, not a hundred
 * to transfer and parse: half a page.  So a join that retrieves per outer
 * row wins over listing a table in full when the rows are as many as the
 * pages.
 */
static double
scan_requests_cost(double rows, bool by_id)
{
	return by_id ? Max(rows, 1) * COST_REQUEST / 2 : Max(ceil(rows / STRIPE_PAGE_SIZE), 1) * COST_REQUEST;
}

/* ORDER BY created DESC, which Stripe's lists already are */
static List *
stripe_order_pathkeys(PlannerInfo *root, RelOptInfo *baserel, StripeRelInfo *info)
{
	PathKey    *pk;
	ListCell   *lc;

	if (info->created_attno == 0 || info->has_id || info->many_lists ||
		list_length(root->query_pathkeys) != 1)
		return NIL;

	/*
	 * Stripe documents newest first for its top-level lists, not for the
	 * lists under a parent; a sort of one parent's few objects is cheap.
	 */
	if (info->def && info->def->required_filter)
		return NIL;
	pk = linitial(root->query_pathkeys);
	if (pk->pk_strategy != BTGreaterStrategyNumber || pk->pk_eclass->ec_has_volatile)
		return NIL;
	foreach(lc, pk->pk_eclass->ec_members)
	{
		EquivalenceMember *em = lfirst(lc);
		Node	   *e = stripe_strip_relabel((Node *) em->em_expr);

		if (IsA(e, Var) && ((Var *) e)->varno == (int) baserel->relid &&
			((Var *) e)->varattno == info->created_attno)
			return root->query_pathkeys;
	}
	return NIL;
}

/* ec_member_matches callback: a member that is this relation's column attno */
static bool
ec_member_is_column(PlannerInfo *root, RelOptInfo *rel, EquivalenceClass *ec,
					EquivalenceMember *em, void *arg)
{
	Node	   *e = stripe_strip_relabel((Node *) em->em_expr);

	return IsA(e, Var) && ((Var *) e)->varno == (int) rel->relid &&
		((Var *) e)->varattno == *(AttrNumber *) arg;
}

/*
 * Parameterized paths for joins: "t.x = this.id" retrieves one object per
 * outer row; "this.customer = c.id" lists with a filter per outer row.
 */
static void
add_parameterized_paths(PlannerInfo *root, RelOptInfo *baserel, Oid relid,
						StripeRelInfo *info)
{
	List	   *candidates = NIL;
	ListCell   *lc;
	Relation	rel = table_open(relid, NoLock);

	/* clauses the planner already holds as join clauses ... */
	foreach(lc, baserel->joininfo)
		candidates = lappend(candidates, lfirst(lc));
	/* ... and those implied by equivalence classes (a.id = b.x) */
	for (AttrNumber a = 1; a <= RelationGetDescr(rel)->natts; a++)
	{
		char	   *field;
		const StripeColumn *col;

		if (TupleDescAttr(RelationGetDescr(rel), a - 1)->attisdropped)
			continue;
		field = stripe_column_field(relid, a);
		col = stripe_object_column(info->def, field);
		if (strcmp(field, "id") != 0 && (col == NULL || !(col->flags & STRIPE_FILTER_EQ)))
			continue;
		candidates = list_concat(candidates,
								 generate_implied_equalities_for_column(root, baserel,
																		ec_member_is_column,
																		&a,
																		baserel->lateral_referencers));
	}
	table_close(rel, NoLock);

	foreach(lc, candidates)
	{
		RestrictInfo *ri = lfirst(lc);
		PushKind	kind;
		char	   *key;
		Expr	   *val;
		Relids		required_outer;
		ParamPathInfo *ppi;
		double		rows;

		if (!join_clause_is_movable_to(ri, baserel) ||
			!stripe_classify_clause(root, baserel, relid, info->def, ri->clause, &kind, &key, &val) ||
			(kind != PUSH_ID && kind != PUSH_EQ))
			continue;
		required_outer = bms_union(bms_difference(ri->clause_relids, baserel->relids),
								   baserel->lateral_relids);
		if (bms_is_empty(required_outer))
			continue;
		ppi = get_baserel_parampathinfo(root, baserel, required_outer);
		rows = kind == PUSH_ID ? 1 : Max(Min(ppi->ppi_rows, ROWS_FILTERED), 1);
		add_path(baserel, (Path *)
				 create_foreignscan_path(root, baserel, NULL, rows,
										 COST_REQUEST / 10,
										 COST_REQUEST / 10 + scan_requests_cost(rows, kind == PUSH_ID) +
										 rows * cpu_tuple_cost * 10 +
										 (lacks_parent(info, kind, key) ? disable_cost : 0),
										 NIL, required_outer, NULL, NIL));
	}
}

static void
stripeGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	StripeRelInfo *info = baserel->fdw_private;
	double		rows = baserel->rows;
	Cost		startup = COST_REQUEST / 10;
	Cost		total = startup + scan_requests_cost(rows, info->has_id) + rows * cpu_tuple_cost * 10;
	List	   *pathkeys = stripe_order_pathkeys(root, baserel, info);
	int			first_limit = 0;

	/*
	 * LIMIT n: ask for only n objects on the first page when Stripe's answer
	 * goes straight to the Limit node: every qual pushed, no join, and no
	 * sort other than Stripe's own order.  Later pages (if the scan is asked
	 * for more) are full pages, so a LIMIT never truncates a result.
	 */
	if (root->limit_tuples > 0 && root->limit_tuples < STRIPE_PAGE_SIZE &&
		info->all_pushed && !info->has_id &&
		(info->def == NULL || info->def->rows_from != STRIPE_ROWS_ARRAYS) &&
		bms_membership(root->all_baserels) == BMS_SINGLETON &&
		(root->query_pathkeys == NIL || pathkeys != NIL))
	{
		first_limit = (int) root->limit_tuples;
		total = startup + COST_REQUEST + root->limit_tuples * cpu_tuple_cost * 10;
	}

	/*
	 * Stripe lists this object only under a parent, and no base qual names
	 * one.  Make this path the last resort, so that a join picks a
	 * parameterized path that supplies the parent; if nothing else is
	 * possible the scan fails when it starts, with a hint.
	 */
	if (lacks_parent(info, PUSH_EQ, NULL))
		total += disable_cost;

	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, rows, startup, total,
									 pathkeys, NULL, NULL,
									 list_make1(makeInteger(first_limit))));
	if (pathkeys != NIL)
		add_path(baserel, (Path *)
				 create_foreignscan_path(root, baserel, NULL, rows, startup, total + 1,
										 NIL, NULL, NULL,
										 list_make1(makeInteger(first_limit))));
	add_parameterized_paths(root, baserel, foreigntableid, info);
}

static ForeignScan *
stripeGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
					 ForeignPath *best_path, List *tlist, List *scan_clauses,
					 Plan *outer_plan)
{
	StripeRelInfo *info = baserel->fdw_private;
	Bitmapset  *attrs = NULL;
	List	   *attr_list = NIL;
	List	   *kinds = NIL,
			   *keys = NIL,
			   *exprs = NIL;
	ListCell   *lc;
	int			x;
	int			first_limit = 0;

	/* what goes to Stripe, join clauses of a parameterized path included */
	foreach(lc, scan_clauses)
	{
		RestrictInfo *ri = lfirst(lc);
		PushKind	kind;
		char	   *key;
		Expr	   *val;

		if (stripe_classify_clause(root, baserel, foreigntableid, info->def, ri->clause,
							&kind, &key, &val))
		{
			kinds = lappend_int(kinds, kind);
			keys = lappend(keys, makeString(key));
			exprs = lappend(exprs, val);
		}
	}

	/* columns the query reads, so the scan converts only those */
	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &attrs);
	foreach(lc, scan_clauses)
		pull_varattnos((Node *) ((RestrictInfo *) lfirst(lc))->clause,
					   baserel->relid, &attrs);
	x = -1;
	while ((x = bms_next_member(attrs, x)) >= 0)
		attr_list = lappend_int(attr_list, x + FirstLowInvalidHeapAttributeNumber);

	if (best_path->fdw_private != NIL)
		first_limit = intVal(linitial(best_path->fdw_private));

	/* every qual is also checked here: pushdown never changes a result */
	scan_clauses = extract_actual_clauses(scan_clauses, false);

	return make_foreignscan(tlist, scan_clauses, baserel->relid, exprs,
							list_make5(makeString(info->path), kinds, keys, attr_list,
									   makeInteger(first_limit)),
							NIL, NIL, outer_plan);
}

/* ---------- execution ---------- */

static void
stripeBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *fsplan = (ForeignScan *) node->ss.ps.plan;
	EState	   *estate = node->ss.ps.state;
	StripeScanState *st = palloc0(sizeof(StripeScanState));
	Relation	rel = node->ss.ss_currentRelation;
	ForeignTable *ft = GetForeignTable(RelationGetRelid(rel));
	Oid			userid;
	List	   *attr_list;
	ListCell   *lc;
	Bitmapset  *wanted = NULL;
	bool		whole_row = false;

	node->fdw_state = st;
	st->path = strVal(list_nth(fsplan->fdw_private, FdwPrivPath));
	st->def = stripe_object_by_path(st->path);
	st->push_kinds = list_nth(fsplan->fdw_private, FdwPrivKinds);
	st->push_keys = list_nth(fsplan->fdw_private, FdwPrivKeys);
	attr_list = list_nth(fsplan->fdw_private, FdwPrivAttrs);
	st->first_limit = intVal(list_nth(fsplan->fdw_private, FdwPrivFirstLimit));
	st->push_exprs = fsplan->fdw_exprs;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	{
		RangeTblEntry *rte = exec_rt_fetch(fsplan->scan.scanrelid, estate);

		/* a view's owner, when the scan runs through a view */
		userid = OidIsValid(rte->checkAsUser) ? rte->checkAsUser : GetUserId();
	}
	st->conn = stripe_conn_for_server(ft->serverid, userid);
	st->push_states = ExecInitExprList(fsplan->fdw_exprs, (PlanState *) node);

	foreach(lc, attr_list)
	{
		if (lfirst_int(lc) == 0)
			whole_row = true;	/* a whole-row reference reads every column */
		else
			wanted = bms_add_member(wanted, lfirst_int(lc));
	}
	st->rc = stripe_rowconv_create(rel, whole_row, wanted);
	st->nested = stripe_nested_wanted(st->def, st->rc);
	st->page_cxt = AllocSetContextCreate(estate->es_query_cxt, "stripe_sync page",
										 ALLOCSET_DEFAULT_SIZES);
}

static PushValue *
evaluate_pushed(ForeignScanState *node, StripeScanState *st, bool explain_only, int *nvals)
{
	int			n = list_length(st->push_kinds);
	PushValue  *vals = palloc0(sizeof(PushValue) * Max(n, 1));
	ExprContext *econtext = node->ss.ps.ps_ExprContext;

	for (int i = 0; i < n; i++)
	{
		Expr	   *expr = list_nth(st->push_exprs, i);

		vals[i].kind = list_nth_int(st->push_kinds, i);
		vals[i].key = strVal(list_nth(st->push_keys, i));
		vals[i].type = exprType((Node *) expr);
		if (explain_only)
		{
			vals[i].known = IsA(expr, Const);
			if (vals[i].known)
			{
				vals[i].value = ((Const *) expr)->constvalue;
				vals[i].isnull = ((Const *) expr)->constisnull;
			}
			else
				vals[i].paramno = IsA(expr, Param) ? ((Param *) expr)->paramid : i + 1;
		}
		else
		{
			ExprState  *es = list_nth(st->push_states, i);

			vals[i].known = true;
			vals[i].value = ExecEvalExpr(es, econtext, &vals[i].isnull);
		}
	}
	*nvals = n;
	return vals;
}

static bool
check_page(StripeResponse *resp, void *arg, const char **why)
{
	StripeScanState *st = arg;

	return stripe_parse_page(resp->body, resp->len, !st->retrieve, st->rc->fs,
							 &st->page, why);
}

/* Stripe's top-level lists are newest first and take created[lte]: a scan can go on from a second */
static bool
can_resume(StripeScanState *st)
{
	const StripeColumn *col = st->def ? stripe_object_column(st->def, "created") : NULL;

	return st->place.known && col != NULL && (col->flags & STRIPE_FILTER_RANGE) &&
		st->def->required_filter == NULL && st->place.resumptions < 1000;
}

/*
 * The next page of a list.  When Stripe no longer knows the object the cursor
 * names (deleted, or out of the list's filters: 400 resource_missing), the
 * scan goes on from the second of the last row it returned, and skips the
 * rows of that second it returned before (see ScanPlace).
 */
static bool
fetch_list_page(StripeScanState *st)
{
	StripeResponse resp;
	ErrorData  *error;
	StripeRefusal refusal;
	int			limit = st->pages_done == 0 && st->first_limit > 0 ? st->first_limit : STRIPE_PAGE_SIZE;
	char	   *path = stripe_list_request(st->rp.base_path, limit,
										   stripe_list_rest_window(&st->rp, linitial(st->suffixes), 0, 0),
										   st->last_id[0] ? stripe_urlencode(st->last_id) : NULL);
	bool		found;

	if (!st->last_id[0])
		return stripe_request(st->conn, "GET", path, NULL, NULL, st->allow_404, check_page, st,
							  &resp, &st->stats);
	found = stripe_request_refusable(st->conn, path, st->allow_404, check_page, st, &resp,
									 &st->stats, &error, &refusal);
	if (error == NULL)
		return found;
	if (!stripe_refusal_cursor_gone(&refusal) || !can_resume(st))
	{
		if (stripe_refusal_cursor_gone(&refusal))
			error->hint = psprintf("The object the scan's cursor names was deleted while it read %s; run the query again.",
								   st->path);
		ReThrowError(error);
	}
	st->place.resumed = true;
	st->place.resumptions++;
	path = stripe_list_request(st->rp.base_path, STRIPE_PAGE_SIZE,
							   stripe_list_rest_upto(&st->rp, linitial(st->suffixes), st->place.second),
							   NULL);
	return stripe_request(st->conn, "GET", path, NULL, NULL, st->allow_404, check_page, st,
						  &resp, &st->stats);
}

/* The list's first page says there is more: the rest in windows, when it can be read so. */
static void
start_windows(StripeScanState *st)
{
	const StripeColumn *col = st->def ? stripe_object_column(st->def, "created") : NULL;
	StripeWinSpec spec;

	/* LIMIT reads a page; lists per parent have no documented order and are short */
	if (st->first_limit > 0 || col == NULL || !(col->flags & STRIPE_FILTER_RANGE) ||
		st->def->required_filter != NULL || st->allow_404)
		return;
	spec.conn = st->conn;
	spec.rp = &st->rp;
	spec.suffix = linitial(st->suffixes);
	spec.path = st->path;
	spec.fs = st->rc->fs;
	spec.id_slot = st->rc->id_slot;
	spec.created_slot = st->rc->created_slot;
	spec.stats = &st->stats;
	st->win = stripe_winscan_start(&spec, &st->page, MemoryContextGetParent(st->page_cxt));
}

/* the next list, or the end of the scan, when this one is done */
static void
next_list(StripeScanState *st)
{
	st->suffixes = list_delete_first(st->suffixes);
	st->last_id[0] = '\0';
	stripe_place_init(&st->place, NULL);
	st->done = (st->suffixes == NIL);
}

/* Ends the windows of the list, if it was read in windows. */
static void
end_windows(StripeScanState *st)
{
	int			n;
	int			peak;

	if (st->win == NULL)
		return;
	stripe_winscan_end(st->win, &n, &peak);
	st->win = NULL;
	st->windows += n;
	st->windows_ready_peak = Max(st->windows_ready_peak, peak);
}

/* The next page of a list read in windows; false when the list is over. */
static bool
fetch_window_page(StripeScanState *st)
{
	MemoryContextReset(st->page_cxt);
	st->next_row = 0;
	if (stripe_winscan_next(st->win, &st->page))
	{
		st->pages_done++;
		return true;
	}
	end_windows(st);
	memset(&st->page, 0, sizeof(StripePage));
	next_list(st);
	return st->done;
}

/* Fetches the next page (or the next retrieved object) into st->page. */
static void
fetch_page(StripeScanState *st)
{
	char	   *path;
	StripeResponse resp;
	MemoryContext old;
	bool		found;

	if (st->win != NULL && fetch_window_page(st))
		return;
	/* the page whose rows were all returned: the place to go on from */
	if (!st->retrieve && st->last_id[0])
		stripe_place_note(&st->place, &st->page, st->rc->id_slot, st->rc->created_slot);
	MemoryContextReset(st->page_cxt);
	old = MemoryContextSwitchTo(st->page_cxt);
	if (st->retrieve)
	{
		path = linitial(st->retrieve_paths);
		st->retrieve_paths = list_delete_first(st->retrieve_paths);
		found = stripe_request(st->conn, "GET", path, NULL, NULL, st->allow_404,
							   check_page, st, &resp, &st->stats);
	}
	else
		found = fetch_list_page(st);
	MemoryContextSwitchTo(old);
	st->stats.pages++;
	st->pages_done++;
	st->next_row = 0;
	if (st->retrieve)
	{
		if (!found)
			memset(&st->page, 0, sizeof(StripePage));	/* 404: no such object */
		st->done = (st->retrieve_paths == NIL);
		return;
	}
	if (!found)
	{
		memset(&st->page, 0, sizeof(StripePage));	/* 404: no such parent */
		st->done = true;
	}
	else if (!st->page.has_more)
	{
		/* this list is done: the next one (inactive prices) starts afresh */
		next_list(st);
	}
	else if (!st->last_id[0] && (start_windows(st), st->win != NULL))
		return;					/* the rest of the list comes in windows */
	else
	{
		const char *why = NULL;
		char	   *id;

		old = MemoryContextSwitchTo(st->page_cxt);
		id = stripe_page_next_cursor(&st->page, st->rc->id_slot,
									 st->last_id[0] ? st->last_id : NULL, &why);
		MemoryContextSwitchTo(old);
		/* a list that does not move on would be asked for the same page forever */
		if (id == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("Stripe list %s does not go on after page %d", st->path, st->pages_done),
					 errdetail("The page says there is more, but %s.", why),
					 errhint("The scan stops here rather than ask for that page again.")));
		if (strlen(id) >= sizeof(st->last_id))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("Stripe object id in list %s is longer than %d bytes",
							st->path, (int) sizeof(st->last_id) - 1)));
		strcpy(st->last_id, id);
	}
}

/*
 * Stripe lists this object only under a parent and the plan has none: the
 * query had no such qual, and no parameterized path could supply it.  Say
 * so before sending a request Stripe would refuse.  Stripe's own answer
 * would be a 400 parameter_missing, 22023 here too.
 */
static void
report_missing_parent(ForeignScanState *node, const StripeObjectDef *def)
{
	Relation	rel = node->ss.ss_currentRelation;
	TupleDesc	tupdesc = RelationGetDescr(rel);
	const char *column = def->required_filter;

	/* the column that reads the parent, which a field option may rename */
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped &&
			strcmp(stripe_column_field(RelationGetRelid(rel), i + 1),
				   def->required_filter) == 0)
		{
			column = NameStr(att->attname);
			break;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("foreign table \"%s\" needs a value for \"%s\"",
					RelationGetRelationName(rel), column),
			 errdetail("Stripe lists %s only per %s (GET %s).", def->path,
					   def->required_filter,
					   def->parent_path
					   ? psprintf("/v1/%s/{%s}/%s", def->parent_path,
								  def->required_filter,
								  def->child_path ? def->child_path : def->path)
					   : psprintf("/v1/%s?%s={%s}", def->path,
								  def->required_filter, def->required_filter)),
			 errhint("Add WHERE %s = '%s…', or join on %s.",
					 quote_identifier(column), def->required_example, quote_identifier(column))));
}

static TupleTableSlot *
stripeIterateForeignScan(ForeignScanState *node)
{
	StripeScanState *st = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	StripeRow  *row;

	ExecClearTuple(slot);
	if (!st->started)
	{
		int			nvals;
		PushValue  *vals = evaluate_pushed(node, st, false, &nvals);
		MemoryContext old = MemoryContextSwitchTo(node->ss.ps.state->es_query_cxt);
		RequestPlan rp;

		st->started = true;
		st->last_id[0] = '\0';
		st->page.nrows = 0;
		st->next_row = 0;
		st->pages_done = 0;
		st->done = !stripe_build_request(st->path, st->def, vals, nvals, &rp);
		if (!st->done && rp.lacks_parent)
			report_missing_parent(node, st->def);
		if (!st->done && rp.no_list)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("foreign table \"%s\" needs a value for \"id\"",
							RelationGetRelationName(node->ss.ss_currentRelation)),
					 errdetail("%s (GET /v1/%s/{id}).", stripe_no_list_hint(st->def), st->def->path),
					 errhint("Add WHERE id = '…', or join on id.")));
		st->retrieve = rp.retrieve;
		st->allow_404 = rp.allow_404;
		st->retrieve_paths = rp.retrieve_paths;
		st->rp = rp;
		st->suffixes = rp.suffixes;
		stripe_place_init(&st->place, node->ss.ps.state->es_query_cxt);
		if (st->first_request == NULL && !st->done)
			st->first_request = stripe_describe_requests(&rp, st->def, st->first_limit);
		MemoryContextSwitchTo(old);
	}

	for (;;)
	{
		if (st->next_row < st->page.nrows)
		{
			row = &st->page.rows[st->next_row++];
			if (!row->deleted &&
				!stripe_place_returned(&st->place, row, st->rc->id_slot, st->rc->created_slot))
				break;
			continue;
		}
		if (st->done)
			return slot;
		CHECK_FOR_INTERRUPTS();
		fetch_page(st);
		if (st->nested)
		{
			MemoryContext old = MemoryContextSwitchTo(st->page_cxt);

			stripe_nested_complete_page(st->conn, st->def, st->rc, &st->page, &st->stats);
			MemoryContextSwitchTo(old);
		}
	}
	stripe_row_to_slot(st->rc, row, slot);
	return slot;
}

static void
stripeReScanForeignScan(ForeignScanState *node)
{
	StripeScanState *st = node->fdw_state;

	/* values of parameters may have changed: build the request again */
	end_windows(st);
	st->started = false;
	st->page.nrows = 0;
	st->next_row = 0;
}

static void
stripeEndForeignScan(ForeignScanState *node)
{
	StripeScanState *st = node->fdw_state;

	if (st)
		end_windows(st);
	if (st && st->page_cxt)
		MemoryContextDelete(st->page_cxt);
}

static void
stripeExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	StripeScanState *st = node->fdw_state;
	char	   *req = NULL;

	if (es->analyze && st->first_request)
		req = st->first_request;
	else
	{
		int			nvals;
		PushValue  *vals = evaluate_pushed(node, st, true, &nvals);
		RequestPlan rp;

		if (stripe_build_request(st->path, st->def, vals, nvals, &rp))
			req = stripe_describe_requests(&rp, st->def, st->first_limit);
	}
	ExplainPropertyText("Stripe Request", req ? req : "none (quals match nothing)", es);
	if (es->analyze)
	{
		ExplainPropertyInteger("Stripe Requests", NULL, st->stats.requests, es);
		ExplainPropertyInteger("Stripe Pages", NULL, st->stats.pages, es);
		ExplainPropertyInteger("Stripe Retries", NULL, st->stats.retries, es);
		ExplainPropertyInteger("Stripe Bytes Received", NULL, st->stats.bytes, es);
		/* a long list read several pages at a time */
		if (st->windows > 0)
		{
			ExplainPropertyInteger("Stripe Windows", NULL, st->windows, es);
			ExplainPropertyInteger("Stripe Pages Waiting", NULL, st->windows_ready_peak, es);
		}
	}
}

Datum
stripe_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = stripeGetForeignRelSize;
	routine->GetForeignPaths = stripeGetForeignPaths;
	routine->GetForeignPlan = stripeGetForeignPlan;
	routine->BeginForeignScan = stripeBeginForeignScan;
	routine->IterateForeignScan = stripeIterateForeignScan;
	routine->ReScanForeignScan = stripeReScanForeignScan;
	routine->EndForeignScan = stripeEndForeignScan;
	routine->ExplainForeignScan = stripeExplainForeignScan;
	routine->ImportForeignSchema = stripe_import_foreign_schema;
	stripe_fdw_set_modify_routines(routine);
	PG_RETURN_POINTER(routine);
}
