/*-------------------------------------------------------------------------
 * xact.h
 *		Transactions and SPI for stripe_sync's background workers and its
 *		SQL-callable functions (xact.c).
 *
 * "own" says whose transactions they are.  A background worker (own) opens a
 * short transaction for each step and commits it; nothing stays open while it
 * waits on the network.  A SQL-callable function (sync_now) runs in its
 * caller's transaction: there a "transaction" here is an SPI connection, and
 * a commit only makes the step's writes visible to the next.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_XACT_H
#define STRIPE_XACT_H

#include "utils/elog.h"
#include "utils/palloc.h"

/* the extension's schema version this library works with */
#define STRIPE_SCHEMA_VERSION	"0.2"

extern bool stripe_schema_current(bool raise);
extern Oid	stripe_extension_owner(void);
extern void stripe_xact_begin(bool own);
extern void stripe_xact_commit(bool own);
extern int	stripe_spi(const char *sql, int nargs, Oid *types, Datum *values,
					   const char *nulls, int expect);
extern bool stripe_spi_bool(int row, int col);
extern int64 stripe_spi_int64(int row, int col, int64 null_value);

/*
 * Runs fn(arg) in a background worker, catching an ERROR: it is reported to
 * the server log (EmitErrorReport) unless report(edata, arg) says otherwise,
 * any transaction is aborted, and a copy of the error (in cxt) is returned.
 * NULL when fn returned.  Call it outside any transaction, in a context that
 * outlives transactions.
 */
typedef void (*StripeTryFn) (void *arg);
typedef bool (*StripeReportFn) (ErrorData *edata, void *arg);
extern ErrorData *stripe_try(StripeTryFn fn, void *arg, MemoryContext cxt,
							 StripeReportFn report);

#endif							/* STRIPE_XACT_H */
