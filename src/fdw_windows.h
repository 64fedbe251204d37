/*-------------------------------------------------------------------------
 * fdw_windows.h
 *		The rest of a long FDW list scan read as windows of created, several
 *		requests in flight, and handed out in Stripe's order (fdw_windows.c).
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_FDW_WINDOWS_H
#define STRIPE_FDW_WINDOWS_H

#include "fdw_request.h"
#include "http.h"

typedef struct StripeWinScan StripeWinScan;

/* What the scan reads, and what its requests count into */
typedef struct StripeWinSpec
{
	StripeConn *conn;
	RequestPlan *rp;
	const char *suffix;			/* the list's, of rp->suffixes */
	const char *path;			/* the object's, for messages */
	StripeFieldSet *fs;
	int			id_slot;
	int			created_slot;
	StripeStats *stats;
} StripeWinSpec;

extern StripeWinScan *stripe_winscan_start(StripeWinSpec *spec, StripePage *first,
										   MemoryContext parent);
extern bool stripe_winscan_next(StripeWinScan *sc, StripePage *page);
extern void stripe_winscan_end(StripeWinScan *sc, int *windows, int *held_peak);

#endif							/* STRIPE_FDW_WINDOWS_H */
