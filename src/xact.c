/*-------------------------------------------------------------------------
 * xact.c
 *		Transactions and SPI: one way for every background worker (the
 *		launcher, the syncs and their helpers, the shipper) and for sync_now.
 *
 * The order is worker_spi's: statement timestamp (so that now() moves), start,
 * SPI, snapshot; then snapshot, SPI, commit, statistics (so that autovacuum
 * sees what the worker changed while it lives).  The caller's memory context
 * is kept across both, so a caller works in its own long-lived context and
 * never in one that a commit frees.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "xact.h"

void
stripe_xact_begin(bool own)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (own)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (own)
		PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(cxt);
}

void
stripe_xact_commit(bool own)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (own)
		PopActiveSnapshot();
	SPI_finish();
	if (own)
	{
		CommitTransactionCommand();
		pgstat_report_stat(false);
	}
	else
		CommandCounterIncrement();
	MemoryContextSwitchTo(cxt);
}

/*
 * Runs a statement; an SPI failure, or a result other than expect (when not
 * 0), is an ERROR.  Returns SPI's result code.  The caller's memory context
 * is kept (SPI would leave us in its own, which the commit frees).
 */
int
stripe_spi(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		   int expect)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	MemoryContextSwitchTo(cxt);
	if (ret < 0 || (expect != 0 && ret != expect))
		elog(ERROR, "stripe_sync: SQL failed (%s): %s", SPI_result_code_string(ret), sql);
	return ret;
}

/* a boolean of the last result (false when NULL) */
bool
stripe_spi_bool(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return !isnull && DatumGetBool(d);
}

/* a bigint of the last result, or null_value */
int64
stripe_spi_int64(int row, int col, int64 null_value)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? null_value : DatumGetInt64(d);
}

/*
 * Whether the extension in this database is at the version this library
 * works with (in a transaction).  After the library is upgraded, the schema
 * follows only with ALTER EXTENSION stripe_sync UPDATE: until then nothing
 * may use it.  With raise, a mismatch is an ERROR; else it is logged once
 * per process and false returned.
 */
bool
stripe_schema_current(bool raise)
{
	static bool warned = false;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("stripe_sync"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		version = isnull ? NULL : TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (version == NULL || strcmp(version, STRIPE_SCHEMA_VERSION) == 0)
		return true;			/* not installed: the caller finds out */
	if (raise || !warned)
		ereport(raise ? ERROR : LOG,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension stripe_sync is at version %s, and its library at %s",
						version, STRIPE_SCHEMA_VERSION),
				 errdetail("Nothing syncs or ships until the extension is updated."),
				 errhint("ALTER EXTENSION stripe_sync UPDATE;")));
	warned = true;
	return false;
}

/* the role that owns the extension (a superuser): the management tables are its */
Oid
stripe_extension_owner(void)
{
	Oid			owner = InvalidOid;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("stripe_sync"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension stripe_sync is not installed in this database")));
	return owner;
}

ErrorData *
stripe_try(StripeTryFn fn, void *arg, MemoryContext cxt, StripeReportFn report)
{
	MemoryContext old = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		/* as the logical replication workers do after an error */
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (report == NULL || report(edata, arg))
			EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return edata;
}
