/*-------------------------------------------------------------------------
 * fdw_import.c
 *		IMPORT FOREIGN SCHEMA: a foreign table per object of the catalogue,
 *		with its columns and types.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "fdw_import.h"

static bool
table_listed(List *tables, const char *name)
{
	ListCell   *lc;

	foreach(lc, tables)
		if (strcmp(((RangeVar *) lfirst(lc))->relname, name) == 0)
			return true;
	return false;
}

/* a CREATE FOREIGN TABLE for each object of the catalogue the statement takes */
List *
stripe_import_foreign_schema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
	ForeignServer *server = GetForeignServer(serverOid);
	List	   *commands = NIL;
	ListCell   *lc;

	foreach(lc, stmt->table_list)
	{
		RangeVar   *rv = lfirst(lc);

		const StripeObjectDef *def = stripe_object_by_table(rv->relname);

		if (def == NULL || def->local_only)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_TABLE_NOT_FOUND),
					 errmsg("unknown Stripe object \"%s\"", rv->relname),
					 errdetail("Known objects: %s.", stripe_object_table_names()),
					 errhint("Any other list path works as a generic table: CREATE FOREIGN TABLE t (id text, created timestamptz, attrs jsonb) SERVER %s OPTIONS (object 'path');",
							 quote_identifier(server->servername))));
	}

	for (int i = 0; i < stripe_nobjects; i++)
	{
		const StripeObjectDef *def = &stripe_objects[i];
		StringInfoData buf;

		if (def->local_only)
			continue;
		if (stmt->list_type == FDW_IMPORT_SCHEMA_LIMIT_TO &&
			!table_listed(stmt->table_list, def->table))
			continue;
		if (stmt->list_type == FDW_IMPORT_SCHEMA_EXCEPT &&
			table_listed(stmt->table_list, def->table))
			continue;

		initStringInfo(&buf);
		appendStringInfo(&buf, "CREATE FOREIGN TABLE %s (\n", quote_identifier(def->table));
		for (int c = 0; c < def->ncolumns; c++)
			appendStringInfo(&buf, "  %s %s,\n", quote_identifier(def->columns[c].name),
							 stripe_coltype_sql(def->columns[c].type));
		appendStringInfo(&buf, "  attrs jsonb\n) SERVER %s OPTIONS (object %s)",
						 quote_identifier(server->servername),
						 quote_literal_cstr(def->path));
		commands = lappend(commands, buf.data);
	}
	return commands;
}
