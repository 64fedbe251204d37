/*-------------------------------------------------------------------------
 * fdw_quals.c
 *		Which quals of an FDW scan Stripe can answer: ids, list filters, and
 *		ranges of created, as "col op value", "value op col", a boolean
 *		column alone, or "id = ANY(array)".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "utils/lsyscache.h"

#include "fdw_quals.h"
#include "rowconv.h"

/* the expression under implicit coercions and relabelings */
Node *
stripe_strip_relabel(Node *n)
{
	n = strip_implicit_coercions(n);
	while (n && IsA(n, RelabelType))
		n = (Node *) ((RelabelType *) n)->arg;
	return n;
}

/* Is node a Var of this relation (a real column)? */
static bool
is_rel_var(Node *n, RelOptInfo *baserel)
{
	n = stripe_strip_relabel(n);
	return n && IsA(n, Var) && ((Var *) n)->varno == (int) baserel->relid &&
		((Var *) n)->varlevelsup == 0 && ((Var *) n)->varattno > 0;
}

/* A value Stripe can be sent: nothing of this relation, nothing volatile. */
static bool
is_pushable_value(PlannerInfo *root, RelOptInfo *baserel, Expr *val)
{
	return !bms_is_member(baserel->relid, pull_varnos(root, (Node *) val)) &&
		!contain_volatile_functions((Node *) val) &&
		!contain_subplans((Node *) val);
}

/*
 * Can this clause go to Stripe?  Recognizes "col op value", "value op col"
 * and "id = ANY(array)".  Values may reference other relations: in a
 * parameterized path they become parameters.
 */
bool
stripe_classify_clause(PlannerInfo *root, RelOptInfo *baserel, Oid relid,
				const StripeObjectDef *def, Expr *clause,
				PushKind *kind, char **key, Expr **value)
{
	Var		   *var;
	Expr	   *val;
	char	   *opname;
	char	   *field;
	bool		commuted = false;
	bool		retrievable;
	const StripeColumn *col;
	Oid			opno;
	Oid			inputcollid;
	bool		negated = is_notclause(clause);
	Node	   *alone = negated ? (Node *) get_notclausearg(clause) : (Node *) clause;

	/* active = true / false: the planner keeps "active" or "NOT active" */
	if (is_rel_var(alone, baserel) && ((Var *) stripe_strip_relabel(alone))->vartype == BOOLOID)
	{
		field = stripe_column_field(relid, ((Var *) stripe_strip_relabel(alone))->varattno);
		col = stripe_object_column(def, field);
		if (col == NULL || !(col->flags & STRIPE_FILTER_EQ) ||
			(def != NULL && def->rows_from == STRIPE_ROWS_ARRAYS))
			return false;
		*kind = PUSH_EQ;
		*key = field;
		*value = (Expr *) makeBoolConst(!negated, false);
		return true;
	}
	if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *saop = (ScalarArrayOpExpr *) clause;

		if (!saop->useOr || !is_rel_var(linitial(saop->args), baserel))
			return false;
		var = (Var *) stripe_strip_relabel(linitial(saop->args));
		val = lsecond(saop->args);
		opno = saop->opno;
		inputcollid = saop->inputcollid;
	}
	else if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
	{
		OpExpr	   *op = (OpExpr *) clause;

		if (is_rel_var(linitial(op->args), baserel))
		{
			var = (Var *) stripe_strip_relabel(linitial(op->args));
			val = lsecond(op->args);
		}
		else if (is_rel_var(lsecond(op->args), baserel))
		{
			var = (Var *) stripe_strip_relabel(lsecond(op->args));
			val = linitial(op->args);
			commuted = true;
		}
		else
			return false;
		opno = op->opno;
		inputcollid = op->inputcollid;
	}
	else
		return false;

	/* balance has no filters: one GET /v1/balance, every qual checked here */
	if (def != NULL && def->rows_from == STRIPE_ROWS_ARRAYS)
		return false;
	if (!is_pushable_value(root, baserel, val))
		return false;
	/* a case-insensitive collation would make Stripe's exact match differ */
	if (OidIsValid(inputcollid) && !get_collation_isdeterministic(inputcollid))
		return false;
	opname = get_opname(opno);
	if (opname == NULL)
		return false;
	field = stripe_column_field(relid, var->varattno);
	col = stripe_object_column(def, field);
	/* without a retrieve endpoint (setup_attempts), id is a local filter */
	retrievable = strcmp(field, "id") == 0 && (def == NULL || !def->no_retrieve);

	if (IsA(clause, ScalarArrayOpExpr))
	{
		if (!retrievable || strcmp(opname, "=") != 0 ||
			(var->vartype != TEXTOID && var->vartype != VARCHAROID))
			return false;
		*kind = PUSH_ID_ANY;
	}
	else if (retrievable && strcmp(opname, "=") == 0 &&
			 (var->vartype == TEXTOID || var->vartype == VARCHAROID))
		*kind = PUSH_ID;
	else if (col != NULL && (col->flags & STRIPE_FILTER_RANGE) &&
			 var->vartype == TIMESTAMPTZOID && exprType((Node *) val) == TIMESTAMPTZOID)
	{
		if (strcmp(opname, "=") == 0)
			*kind = PUSH_CREATED_EQ;
		else if (strcmp(opname, "<") == 0)
			*kind = commuted ? PUSH_CREATED_GT : PUSH_CREATED_LT;
		else if (strcmp(opname, "<=") == 0)
			*kind = commuted ? PUSH_CREATED_GE : PUSH_CREATED_LE;
		else if (strcmp(opname, ">") == 0)
			*kind = commuted ? PUSH_CREATED_LT : PUSH_CREATED_GT;
		else if (strcmp(opname, ">=") == 0)
			*kind = commuted ? PUSH_CREATED_LE : PUSH_CREATED_GE;
		else
			return false;
	}
	else if (col != NULL && (col->flags & STRIPE_FILTER_EQ) &&
			 strcmp(opname, "=") == 0 &&
			 (var->vartype == TEXTOID || var->vartype == VARCHAROID ||
			  var->vartype == BOOLOID))
		*kind = PUSH_EQ;
	else
		return false;

	*key = field;
	*value = val;
	return true;
}
