/*-------------------------------------------------------------------------
 * catalog.c
 *		Look-ups in the catalogue of Stripe objects (catalog_data.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "stripe_sync.h"

const StripeObjectDef *
stripe_object_by_path(const char *path)
{
	for (int i = 0; i < stripe_nobjects; i++)
		if (strcmp(stripe_objects[i].path, path) == 0)
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
		appendStringInfo(&buf, "%s%s", i ? ", " : "", stripe_objects[i].table);
	return buf.data;
}
