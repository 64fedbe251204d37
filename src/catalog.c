/*-------------------------------------------------------------------------
 * catalog.c
 *		Look-ups in the catalogue of Stripe objects (catalog_data.c), and
 *		stripe_sync.catalog_columns().
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "catalog.h"

PG_FUNCTION_INFO_V1(stripe_catalog_columns);
PG_FUNCTION_INFO_V1(stripe_catalog_objects);
PG_FUNCTION_INFO_V1(stripe_catalog_children);

const StripeObjectDef *
stripe_object_by_path(const char *path)
{
	/* a local-only table's path is its parent's, for the reader */
	for (int i = 0; i < stripe_nobjects; i++)
		if (!stripe_objects[i].local_only && strcmp(stripe_objects[i].path, path) == 0)
			return &stripe_objects[i];
	return NULL;
}

const StripeObjectDef *
stripe_object_by_table(const char *table)
{
	for (int i = 0; i < stripe_nobjects; i++)
		if (strcmp(stripe_objects[i].table, table) == 0)
			return &stripe_objects[i];
	return NULL;
}

const StripeColumn *
stripe_object_column(const StripeObjectDef *def, const char *name)
{
	if (def == NULL)
		return NULL;
	for (int i = 0; i < def->ncolumns; i++)
		if (strcmp(def->columns[i].name, name) == 0)
			return &def->columns[i];
	return NULL;
}

const char *
stripe_coltype_sql(StripeColType type)
{
	switch (type)
	{
		case STRIPE_COL_TEXT:
			return "text";
		case STRIPE_COL_INT8:
			return "bigint";
		case STRIPE_COL_BOOL:
			return "boolean";
		case STRIPE_COL_TIMESTAMPTZ:
			return "timestamptz";
		case STRIPE_COL_NUMERIC:
			return "numeric";
		case STRIPE_COL_JSONB:
			return "jsonb";
	}
	return "jsonb";
}

/* "customers, charges, …" for hints */
char *
stripe_object_table_names(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < stripe_nobjects; i++)
		if (!stripe_objects[i].local_only)
			appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", stripe_objects[i].table);
	return buf.data;
}

/*
 * Whether Stripe accepts this value of a list filter: a value outside the
 * filter's enum is refused with a 400, so it is not sent (the local check
 * still applies it).
 */
bool
stripe_filter_accepts(const StripeColumn *col, const char *value)
{
	const char *p;
	size_t		n = strlen(value);

	if (col == NULL || col->values == NULL)
		return true;
	if (strchr(value, '|') != NULL)
		return false;			/* no value of Stripe's has one */
	for (p = col->values; p != NULL; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL)
		if (strncmp(p, value, n) == 0 && (p[n] == '|' || p[n] == '\0'))
			return true;
	return false;
}

/* the parameter the object's list_all sets ("status"), or NULL */
char *
stripe_list_all_param(const StripeObjectDef *def)
{
	if (def == NULL || def->list_all == NULL)
		return NULL;
	return pnstrdup(def->list_all, strcspn(def->list_all, "="));
}

/*
 * The lists that together hold every object, as "&name=value" to append to a
 * list request: "&status=all" for subscriptions, "&active=true" and
 * "&active=false" for prices, one "" for the objects whose plain list does.
 */
List *
stripe_list_all_queries(const StripeObjectDef *def)
{
	List	   *out = NIL;
	const char *p;

	if (def == NULL || def->list_all == NULL)
		return list_make1(pstrdup(""));
	for (p = def->list_all; p != NULL; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL)
		out = lappend(out, psprintf("&%.*s", (int) strcspn(p, "|"), p));
	return out;
}

/* stripe_sync.catalog_columns(object): the typed columns of a catalogued object */
Datum
stripe_catalog_columns(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const StripeObjectDef *def = stripe_object_by_table(object);

	if (def == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown Stripe object \"%s\"", object),
				 errdetail("Known objects: %s.", stripe_object_table_names())));
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < def->ncolumns; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(def->columns[i].name);
		values[1] = CStringGetTextDatum(stripe_coltype_sql(def->columns[i].type));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* "lines|items" as a text[] */
static Datum
nested_array(const char *names)
{
	char	   *copy = pstrdup(names);
	char	   *save = NULL;
	Datum	   *elems = palloc(sizeof(Datum) * (strlen(names) / 2 + 1));
	int			n = 0;

	for (char *t = strtok_r(copy, "|", &save); t; t = strtok_r(NULL, "|", &save))
		elems[n++] = CStringGetTextDatum(t);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * How a syncable object's changes without events are listed again
 * (catalog.h): relist, relist_from, relist_filter, relist_window
 */
static void
relist_columns(const StripeObjectDef *def, Datum *values, bool *nulls)
{
	static const char *const names[] = {"none", "recent", "full", "parent"};

	nulls[0] = def->stays_current == NULL;
	values[0] = nulls[0] ? (Datum) 0 : CStringGetTextDatum(names[def->relist]);
	nulls[1] = def->relist_from == NULL;
	values[1] = nulls[1] ? (Datum) 0 : CStringGetTextDatum(def->relist_from);
	nulls[2] = def->relist_query == NULL;
	values[2] = nulls[2] ? (Datum) 0 : CStringGetTextDatum(def->relist_query);
	nulls[3] = def->relist_days == 0;
	if (!nulls[3])
	{
		Interval   *iv = palloc0(sizeof(Interval));

		iv->day = def->relist_days;
		values[3] = IntervalPGetDatum(iv);
	}
}

/* stripe_sync.catalog_objects(): every catalogued object and what it supports */
Datum
stripe_catalog_objects(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < stripe_nobjects; i++)
	{
		const StripeObjectDef *def = &stripe_objects[i];
		Datum		values[14];
		bool		nulls[14] = {0};
		Datum	   *filters = palloc(sizeof(Datum) * Max(def->ncolumns, 1));
		int			nfilters = 0;

		for (int c = 0; c < def->ncolumns; c++)
			if (def->columns[c].flags & STRIPE_FILTER_EQ)
				filters[nfilters++] = CStringGetTextDatum(def->columns[c].name);
		values[0] = CStringGetTextDatum(def->table);
		values[1] = CStringGetTextDatum(def->path);
		values[2] = CStringGetTextDatum(def->object);
		values[3] = PointerGetDatum(construct_array(filters, nfilters, TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = BoolGetDatum(!def->no_retrieve && !def->local_only);
		if (def->local_only)
			values[5] = CStringGetTextDatum(def->parent_column);
		else if (def->required_filter)
			values[5] = CStringGetTextDatum(def->required_filter);
		else
			nulls[5] = true;
		values[6] = def->writable ? CStringGetTextDatum(def->writable) : (Datum) 0;
		nulls[6] = def->writable == NULL;
		values[7] = BoolGetDatum(def->stays_current != NULL);
		values[8] = def->stays_current ? CStringGetTextDatum(def->stays_current) : (Datum) 0;
		nulls[8] = def->stays_current == NULL;
		values[9] = def->nested_lists ? nested_array(def->nested_lists) : (Datum) 0;
		nulls[9] = def->nested_lists == NULL;
		relist_columns(def, values + 10, nulls + 10);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* stripe_sync.catalog_children(): each child table, its parent, list and parent column */
Datum
stripe_catalog_children(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < stripe_nobjects; i++)
	{
		const StripeObjectDef *def = &stripe_objects[i];
		Datum		values[4];
		bool		nulls[4] = {0};

		if (def->child_of == NULL)
			continue;
		values[0] = CStringGetTextDatum(def->table);
		values[1] = CStringGetTextDatum(def->child_of);
		values[2] = CStringGetTextDatum(def->child_list);
		values[3] = CStringGetTextDatum(def->parent_column);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
