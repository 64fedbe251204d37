/*-------------------------------------------------------------------------
 * fdw_stats.c
 *		What the planner knows of a Stripe foreign table's columns: "id" is
 *		unique.
 *
 * Stripe gives no statistics, and a foreign table has no index, so without
 * help the planner takes a join on an id for one that matches 1/200 of the
 * table (its default number of distinct values) and believes each outer row
 * finds dozens of objects.  Joins then look far bigger than they are, and a
 * join that retrieves one customer per subscription loses to listing every
 * customer.  Through get_relation_stats_hook, the id column of our tables
 * says it has as many distinct values as rows, as a primary key would.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_statistic.h"
#include "foreign/foreign.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"

#include "catalog.h"
#include "fdw_stats.h"
#include "rowconv.h"

static get_relation_stats_hook_type prev_stats_hook = NULL;

/* a table of ours, whose rows are Stripe objects with ids (not balance's) */
static bool
is_object_table(RangeTblEntry *rte)
{
	ForeignTable *ft;
	const StripeObjectDef *def;

	if (rte->rtekind != RTE_RELATION || rte->relkind != RELKIND_FOREIGN_TABLE)
		return false;
	ft = GetForeignTable(rte->relid);
	if (strcmp(GetForeignDataWrapper(GetForeignServer(ft->serverid)->fdwid)->fdwname,
			   "stripe_sync") != 0)
		return false;
	def = stripe_object_by_path(stripe_table_object_path(rte->relid));
	return def == NULL || def->rows_from == STRIPE_ROWS_LIST;
}

/* a pg_statistic tuple that says only: no nulls, every value distinct */
static HeapTuple
unique_stats(Oid relid, AttrNumber attnum)
{
	Relation	rel = table_open(StatisticRelationId, AccessShareLock);
	Datum		values[Natts_pg_statistic] = {0};
	bool		nulls[Natts_pg_statistic];
	HeapTuple	tup;

	for (int i = 0; i < Natts_pg_statistic; i++)
		nulls[i] = i >= Anum_pg_statistic_stanumbers1 - 1;
	values[Anum_pg_statistic_starelid - 1] = ObjectIdGetDatum(relid);
	values[Anum_pg_statistic_staattnum - 1] = Int16GetDatum(attnum);
	values[Anum_pg_statistic_stainherit - 1] = BoolGetDatum(false);
	values[Anum_pg_statistic_stanullfrac - 1] = Float4GetDatum(0.0);
	values[Anum_pg_statistic_stawidth - 1] = Int32GetDatum(28);
	values[Anum_pg_statistic_stadistinct - 1] = Float4GetDatum(-1.0);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	table_close(rel, AccessShareLock);
	return tup;
}

static void
free_stats(HeapTuple tup)
{
	heap_freetuple(tup);
}

static bool
stripe_stats_hook(PlannerInfo *root, RangeTblEntry *rte, AttrNumber attnum,
				  VariableStatData *vardata)
{
	if (attnum > 0 && is_object_table(rte) &&
		strcmp(stripe_column_field(rte->relid, attnum), "id") == 0)
	{
		vardata->statsTuple = unique_stats(rte->relid, attnum);
		vardata->freefunc = free_stats;
		/* it holds no value of the table, only that they are distinct */
		vardata->acl_ok = true;
		return true;
	}
	return prev_stats_hook ? prev_stats_hook(root, rte, attnum, vardata) : false;
}

void
stripe_fdw_stats_init(void)
{
	prev_stats_hook = get_relation_stats_hook;
	get_relation_stats_hook = stripe_stats_hook;
}
