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

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
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
