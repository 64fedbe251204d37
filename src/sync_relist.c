/*-------------------------------------------------------------------------
 * sync_relist.c
 *		The changes Stripe sends no event for, listed again by each sync, as
 *		the catalogue's relist says (catalog.h, tools/gen_catalog.py).
 *
 * A recent re-list reads, each sync, the objects created since the oldest
 * local one that may have changed (relist_from: a pending balance
 * transaction now due, an invoice item on no invoice yet), or in the last
 * relist_days (the open checkout sessions), never further back than that.
 * A full re-list reads them all every stripe_sync.relist_interval (file
 * links).  Both are a backfill's windowed listing of a created range
 * (stripe_backfill_range): the same rate limits and bound of requests in
 * flight, each page committed on its own, an older state never written over
 * a newer one (observed_at).  Deletions come with events, as for every
 * object; these objects have none that a listing would find.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "backfill.h"
#include "guc.h"
#include "xact.h"

/* its backfill is done, and it did not fail in this run (in a transaction) */
static bool
relist_ready(SyncRun *run, const char *object)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object)};

	if (stripe_run_object_failed(run, object))
		return false;
	stripe_spi("SELECT backfill_done FROM stripe_sync.object_state WHERE source = $1 AND object = $2",
			   2, types, values, NULL, SPI_OK_SELECT);
	return SPI_processed == 1 && stripe_spi_bool(0, 1);
}

/*
 * Where a recent re-list starts (unix seconds), from the local table, in a
 * transaction; false when no local object may have changed.
 */
static bool
recent_from(SyncRun *run, LocalTable *lt, int64 *lo)
{
	const StripeObjectDef *def = lt->def;
	int64		oldest = stripe_now_unix() - (int64) def->relist_days * SECS_PER_DAY;
	bool		found;

	if (def->relist_from == NULL)
	{
		*lo = oldest;
		return true;
	}
	/* the catalogue's own SQL, on the owner's table, with the owner's rights */
	stripe_run_as_owner(run, true);
	/* the source's account's rows only: the tables may hold other accounts' (Connect) */
	/* -infinity (no row to start from: as far back as the window goes) is 0 */
	stripe_spi(psprintf("SELECT CASE WHEN f = '-infinity' THEN 0 ELSE floor(extract(epoch FROM f))::int8 END FROM "
						"(SELECT (%s)::timestamptz AS f FROM %s WHERE deleted_at IS NULL AND account_id = $1) s",
						def->relist_from, lt->qualified), 1, (Oid[]) {TEXTOID},
			   (Datum[]) {CStringGetTextDatum(run->src.account_id)}, NULL, SPI_OK_SELECT);
	found = SPI_processed == 1 && stripe_spi_int64(0, 1, INT64_MIN) != INT64_MIN;
	*lo = found ? Max(stripe_spi_int64(0, 1, 0), oldest) : 0;
	stripe_run_as_owner(run, false);
	return found;
}

/*
 * Whether a full re-list is due (in a transaction): an interval after the
 * object's last full listing, its backfill's or a re-list's.  A backfill of
 * 0.1, which did not say when, counts from now.
 */
static bool
full_due(SyncRun *run, const char *object)
{
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};
	Datum		values[3] = {CStringGetTextDatum(run->src.name), CStringGetTextDatum(object),
	Int32GetDatum(stripe_relist_interval)};

	stripe_spi("UPDATE stripe_sync.object_state SET listed_at = now() "
			   "WHERE source = $1 AND object = $2 AND listed_at IS NULL",
			   2, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		return false;
	stripe_spi("SELECT listed_at <= now() - make_interval(secs => $3) FROM stripe_sync.object_state "
			   "WHERE source = $1 AND object = $2", 3, types, values, NULL, SPI_OK_SELECT);
	return SPI_processed == 1 && stripe_spi_bool(0, 1);
}

/* One object's re-list, if its strategy has one due. */
static void
relist_object(SyncRun *run, LocalTable *lt)
{
	const StripeObjectDef *def = lt->def;
	TimestampTz began = GetCurrentTimestamp();
	int64		lo = 0;
	bool		due;
	char	   *why;

	stripe_run_begin(run);
	due = relist_ready(run, def->table) &&
		(def->relist == STRIPE_RELIST_FULL ? full_due(run, def->table) : recent_from(run, lt, &lo));
	stripe_run_commit(run);
	if (!due)
		return;
	/* no re-list reaches back before the source's sync_from */
	if (run->src.has_sync_from)
		lo = Max(lo, run->src.sync_from);
	ereport(run->own ? DEBUG1 : NOTICE,
			(errmsg("%s: re-list of %s%s", run->src.name, def->table,
					def->relist == STRIPE_RELIST_FULL ? " (full)" :
					psprintf(" created since %s",
							 timestamptz_to_str(time_t_to_timestamptz((pg_time_t) lo))))));
	why = stripe_backfill_range(run, lt, def->table, lo, def->relist_query ? def->relist_query : "");
	if (why != NULL)
	{
		run->failed = lappend(run->failed, psprintf("%s: %s", def->table, why));
		return;
	}
	/* the next is due an interval after this one began */
	if (def->relist == STRIPE_RELIST_FULL)
	{
		stripe_run_begin(run);
		stripe_state_update(run, def->table, "listed_at = $3::timestamptz", timestamptz_to_str(began));
		stripe_run_commit(run);
	}
}

void
stripe_sync_relist(SyncRun *run)
{
	ListCell   *lc;

	foreach(lc, run->src.objects)
	{
		LocalTable *lt = stripe_table_find(run, lfirst(lc), true);

		if (lt != NULL && lt->def != NULL && (lt->def->relist == STRIPE_RELIST_RECENT ||
											 lt->def->relist == STRIPE_RELIST_FULL))
			relist_object(run, lt);
	}
}
