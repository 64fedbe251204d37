/*-------------------------------------------------------------------------
 * manage.c
 *		The management functions' front door (create_source, alter_source,
 *		drop_source, retry_dead), and small SQL-callable facts about the
 *		library.
 *
 * A SECURITY DEFINER function in SQL cannot tell who called it, and the
 * management tables are writable by the extension's owner only.  So each
 * public management function is this C function: it takes the calling role
 * (GetUserId(): SET ROLE and an enclosing SECURITY DEFINER function count, as
 * they do for any privilege check), and calls the private _<name>(caller, …)
 * in SQL, which is SECURITY DEFINER with a pinned search_path and checks what
 * the caller may do.  A call through fmgr checks no EXECUTE privilege: the
 * private functions stay revoked from PUBLIC.  Then the source's schema and
 * local tables are created as the source's owner, in a restricted security
 * context, so that they are the owner's and no code of the owner's runs with
 * more rights than the owner's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "guc.h"
#include "xact.h"

PG_FUNCTION_INFO_V1(stripe_manage);
PG_FUNCTION_INFO_V1(stripe_worker_database);
PG_FUNCTION_INFO_V1(stripe_library_version);

/* stripe_sync.<name> with these argument types */
static Oid
our_function(const char *name, int nargs, Oid *argtypes)
{
	return LookupFuncName(list_make2(makeString("stripe_sync"), makeString(pstrdup(name))),
						  nargs, argtypes, false);
}

/* The schema and local tables of a source, as its owner (see the header). */
static void
local_tables(Datum source, Oid owner)
{
	Oid			argtypes[1] = {TEXTOID};
	Oid			fn = our_function("_local_tables", 1, argtypes);
	Oid			save_user;
	int			save_sec;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		(void) OidFunctionCall1(fn, source);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
}

/*
 * The front door of the management functions: stripe_sync.<name>(args) runs
 * stripe_sync._<name>(caller, args).  For create_source and alter_source the
 * private function returns the owner whose tables to create (or NULL).
 */
Datum
stripe_manage(PG_FUNCTION_ARGS)
{
	Oid			self = fcinfo->flinfo->fn_oid;
	char	   *name = get_func_name(self);
	Oid		   *argtypes;
	int			nargs;
	Oid			inner_types[FUNC_MAX_ARGS];
	FmgrInfo	flinfo;
	Datum		result;
	bool		tables = strcmp(name, "create_source") == 0 || strcmp(name, "alter_source") == 0;

	LOCAL_FCINFO(inner, FUNC_MAX_ARGS);

	stripe_schema_current(true);
	(void) get_func_signature(self, &argtypes, &nargs);
	if (nargs + 1 > FUNC_MAX_ARGS)
		elog(ERROR, "stripe_sync.%s has too many arguments", name);
	inner_types[0] = REGROLEOID;
	memcpy(inner_types + 1, argtypes, sizeof(Oid) * nargs);
	fmgr_info(our_function(psprintf("_%s", name), nargs + 1, inner_types), &flinfo);
	InitFunctionCallInfoData(*inner, &flinfo, nargs + 1, PG_GET_COLLATION(), NULL, NULL);
	inner->args[0].value = ObjectIdGetDatum(GetUserId());
	inner->args[0].isnull = false;
	for (int i = 0; i < nargs; i++)
		inner->args[i + 1] = fcinfo->args[i];
	result = FunctionCallInvoke(inner);
	if (tables)
	{
		if (!inner->isnull && !fcinfo->args[0].isnull)
			local_tables(fcinfo->args[0].value, DatumGetObjectId(result));
		PG_RETURN_VOID();
	}
	if (inner->isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/* stripe_sync.worker_database(): stripe_sync.database, or NULL when not preloaded */
Datum
stripe_worker_database(PG_FUNCTION_ARGS)
{
	if (stripe_database == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(stripe_database));
}

/* stripe_sync.library_version(): the schema version this library works with */
Datum
stripe_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(STRIPE_SCHEMA_VERSION));
}
