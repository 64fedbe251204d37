/*-------------------------------------------------------------------------
 * sync_outbox.c
 *		The outbox rows a sync writes: for the Stripe events it applies, and
 *		for the history of what its first backfill lists.  They are written
 *		in the transaction of the page or batch they come from, so they
 *		commit with the rows they describe or not at all; the shipper
 *		(shipper.c) delivers them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "bgw.h"
#include "sync.h"
#include "xact.h"

/*
 * Outbox rows for Stripe events (ids and types given) or for backfilled
 * objects' history (ids NULL), in the current transaction.
 */
void
stripe_outbox_add(SyncRun *run, Datum ids, Datum types, Datum *times, Datum *objects, int n)
{
	Oid			argtypes[6] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ids ? ' ' : 'n', types ? ' ' : 'n', ' ', ' ', ' '};

	if (n == 0)
		return;
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = ids;
	values[2] = types;
	values[3] = PointerGetDatum(construct_array(times, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(objects, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = Int64GetDatum(run->src.history_until);
	stripe_spi("SELECT stripe_sync.outbox_add($1, $2, $3, $4, $5, $6)", 6, argtypes, values, nulls,
			   SPI_OK_SELECT);
	if (stripe_spi_int64(0, 1, 0) > 0)
		stripe_bgw_wake_at_commit();	/* the shipper */
}

/* the historical events of a backfilled page's objects */
void
stripe_outbox_history(SyncRun *run, LocalTable *lt, StripeRow *rows, int nrows)
{
	Datum	   *times;
	Datum	   *objects;
	int			n = 0;

	/* a re-list (30-day gap, earlier sync_from) sent its history before */
	if (run->src.destination == NULL || !run->src.emit_history || run->src.history_until == 0 ||
		lt->created_slot < 0 || !lt->history)
		return;
	times = palloc(sizeof(Datum) * Max(nrows, 1));
	objects = palloc(sizeof(Datum) * Max(nrows, 1));
	for (int r = 0; r < nrows; r++)
	{
		int64		created = stripe_row_created(lt, &rows[r]);

		if (created >= run->src.history_until)
			continue;			/* newer objects have events of their own */
		times[n] = Int64GetDatum(created);
		objects[n] = PointerGetDatum(cstring_to_text_with_len(rows[r].object.start, rows[r].object.len));
		n++;
	}
	stripe_outbox_add(run, (Datum) 0, (Datum) 0, times, objects, n);
}
