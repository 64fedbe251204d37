/*-------------------------------------------------------------------------
 * children.c
 *		Child tables: one row per element of a parent's nested list
 *		(invoice_line_items of invoices.lines, subscription_items of
 *		subscriptions.items, credit_note_lines of credit_notes.lines), keyed
 *		by (parent, id) and written whenever their parent is, from the
 *		parent's own text: no request of their own.  The parent's list is
 *		whole by then (nested.c), so an element no longer in it is
 *		soft-deleted (deleted_at set), and one that comes back is live again
 *		(the upsert clears deleted_at).
 *
 *		A parent whose stored row is newer than the state being written
 *		leaves its children alone: they follow the parent's newest state.
 *		A parent whose list is still not whole (past STRIPE_NESTED_MAX)
 *		writes the elements it holds and deletes none.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "children.h"
#include "xact.h"

/* Whether a table is a child table (written with its parent, never listed). */
bool
stripe_is_child(const char *table)
{
	const StripeObjectDef *def = stripe_object_by_table(table);

	return def != NULL && def->child_of != NULL;
}

/* the source's objects; a backfill helper's run does not carry them (in a step) */
static List *
source_objects(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};
	List	   *objects = NIL;

	if (run->src.objects != NIL)
		return run->src.objects;
	stripe_spi("SELECT unnest(objects) FROM stripe_sync.sources WHERE name = $1",
			   1, types, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
		objects = lappend(objects, MemoryContextStrdup(run->cxt,
													   SPI_getvalue(SPI_tuptable->vals[r],
																	SPI_tuptable->tupdesc, 1)));
	return objects;
}

/* the source's child tables of a parent table, opened once a run */
static void
open_children(SyncRun *run, LocalTable *parent)
{
	List	   *objects = source_objects(run);
	MemoryContext old;

	parent->children_known = true;
	for (int i = 0; i < stripe_nobjects; i++)
	{
		const StripeObjectDef *def = &stripe_objects[i];
		LocalTable *child;
		ListCell   *lc;
		bool		synced = false;

		if (def->child_of == NULL || strcmp(def->child_of, parent->def->table) != 0)
			continue;
		foreach(lc, objects)
			if (strcmp(lfirst(lc), def->table) == 0)
				synced = true;
		if (!synced)
			continue;
		child = stripe_table_find(run, def->table, true);
		if (child == NULL)
			child = stripe_open_local_table(run, def->table);
		old = MemoryContextSwitchTo(run->cxt);
		parent->children = lappend(parent->children, child);
		MemoryContextSwitchTo(old);
	}
}

/* an attribute's number in a child table, or -1 */
static int
attno_named(LocalTable *lt, const char *name)
{
	for (int i = 0; i < lt->tupdesc->natts; i++)
		if (strcmp(NameStr(TupleDescAttr(lt->tupdesc, i)->attname), name) == 0)
			return i;
	return -1;
}

/*
 * The parents of the batch whose stored row was observed later than the
 * state given: their children stay as the newer state left them.
 */
static bool *
stale_parents(SyncRun *run, LocalTable *parent, StripeRow *rows, int nrows,
			  const TimestampTz *observed)
{
	bool	   *stale = palloc0(sizeof(bool) * nrows);
	Datum	   *ids = palloc(sizeof(Datum) * nrows);
	Datum	   *obs = palloc(sizeof(Datum) * nrows);
	Oid			types[2] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[2];

	for (int r = 0; r < nrows; r++)
	{
		StripeSpan *id = &rows[r].fields[parent->rc->id_slot];

		ids[r] = CStringGetTextDatum(stripe_span_text(id));
		obs[r] = TimestampTzGetDatum(observed[r]);
	}
	values[0] = PointerGetDatum(construct_array(ids, nrows, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(obs, nrows, TIMESTAMPTZOID, sizeof(TimestampTz),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	stripe_run_as_owner(run, true);
	stripe_spi(psprintf("SELECT p.n FROM unnest($1, $2) WITH ORDINALITY p(id, obs, n) "
						"JOIN %s t ON t.id = p.id WHERE t.observed_at > p.obs", parent->qualified),
			   2, types, values, NULL, SPI_OK_SELECT);
	stripe_run_as_owner(run, false);
	for (uint64 i = 0; i < SPI_processed; i++)
		stale[stripe_spi_int64(i, 1, 1) - 1] = true;
	return stale;
}

/*
 * The elements of one parent's list, appended to *elems (grown as needed);
 * false when the list is not whole (its elements still written).
 */
static bool
parent_elements(LocalTable *parent, LocalTable *child, StripeRow *row, StripeFieldSet *lfs,
				StripeRow **elems, int *nelems, int *cap)
{
	StripePage	obj;
	StripePage	list;
	const char *why = NULL;
	char	   *text;
	StripeSpan *span;
	int			patt = attno_named(child, child->def->parent_column);
	int			pslot = patt >= 0 ? child->rc->att_slot[patt] : -1;

	text = pnstrdup(row->object.start, row->object.len);
	if (!stripe_parse_page(text, row->object.len, false, lfs, &obj, &why))
		return false;
	span = &obj.rows[0].fields[0];
	if (span->start == NULL || span->start[0] != '{')
		return true;			/* no list (null, or left out): no elements */
	text = pnstrdup(span->start, span->len);
	/* the parent is stored all the same: its children wait for a list of Stripe's shape */
	if (!stripe_parse_page(text, span->len, true, child->rc->fs, &list, &why))
	{
		ereport(WARNING,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("the list \"%s\" of a Stripe %s is not a list of objects: %s keeps its rows",
						child->def->child_list, parent->def->object, child->def->table),
				 errdetail_internal("%s", why)));
		return false;
	}
	for (int e = 0; e < list.nrows; e++)
	{
		if (*nelems >= *cap)
		{
			*cap *= 2;
			*elems = repalloc(*elems, sizeof(StripeRow) * *cap);
		}
		(*elems)[*nelems] = list.rows[e];
		(*elems)[*nelems].deleted = false;
		/* the parent column is the parent's id, whatever the element says */
		if (pslot >= 0)
			(*elems)[*nelems].fields[pslot] = row->fields[parent->rc->id_slot];
		(*nelems)++;
	}
	return !list.has_more;
}

/*
 * Soft-deletes the live elements of the parents (ids, observed at obs) that
 * are not among (kept_parent, kept_id): left the list, or the parent is gone.
 */
static void
delete_left(SyncRun *run, LocalTable *child, List *ids, List *obs, List *kept_parent, List *kept_id)
{
	Oid			types[5] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID};
	Datum		values[5];
	Datum	   *a = palloc(sizeof(Datum) * (list_length(ids) + 1));
	Datum	   *b = palloc(sizeof(Datum) * (list_length(kept_id) + 1));
	ListCell   *lc;
	const char *pc = quote_identifier(child->def->parent_column);

	foreach(lc, ids)
		a[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	values[0] = PointerGetDatum(construct_array(a, list_length(ids), TEXTOID, -1, false, TYPALIGN_INT));
	foreach(lc, obs)
		a[foreach_current_index(lc)] = TimestampTzGetDatum(*(TimestampTz *) lfirst(lc));
	values[1] = PointerGetDatum(construct_array(a, list_length(obs), TIMESTAMPTZOID, sizeof(TimestampTz),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	foreach(lc, kept_parent)
		b[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	values[2] = PointerGetDatum(construct_array(b, list_length(kept_parent), TEXTOID, -1, false, TYPALIGN_INT));
	foreach(lc, kept_id)
		b[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	values[3] = PointerGetDatum(construct_array(b, list_length(kept_id), TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = CStringGetTextDatum(run->src.account_id);
	/* NOT IN of an uncorrelated set: one hash of the kept elements; by account: one shard (Citus) */
	stripe_run_as_owner(run, true);
	stripe_spi(psprintf("UPDATE %s t SET deleted_at = p.obs, observed_at = p.obs, synced_at = now() "
						"FROM unnest($1, $2) p(parent, obs) WHERE t.%s = p.parent AND t.account_id = $5 "
						"AND t.deleted_at IS NULL AND t.observed_at <= p.obs "
						"AND (t.%s, t.id) NOT IN (SELECT * FROM unnest($3, $4))",
						child->qualified, pc, pc),
			   5, types, values, NULL, SPI_OK_UPDATE);
	stripe_run_as_owner(run, false);
	child->rows += SPI_processed;
}

/* one child table's rows of the parents' states */
static void
write_child(SyncRun *run, LocalTable *parent, LocalTable *child, StripeRow *rows, int nrows,
			const TimestampTz *observed, const TimestampTz *deleted_at, const bool *stale)
{
	StripeFieldSet *lfs = stripe_fieldset_create(1);
	int			cap = 64;
	int			n = 0;
	StripeRow  *elems = palloc(sizeof(StripeRow) * cap);
	TimestampTz *obs;
	TimestampTz *del;
	int			owner_cap = cap;
	int		   *owner = palloc(sizeof(int) * owner_cap);
	List	   *whole_ids = NIL,
			   *whole_obs = NIL,
			   *kept_parent = NIL,
			   *kept_id = NIL;

	stripe_fieldset_add(lfs, child->def->child_list, 0);
	stripe_fieldset_finish(lfs);
	for (int r = 0; r < nrows; r++)
	{
		int			first = n;
		bool		whole;
		char	   *pid;

		if (stale[r])
			continue;
		/* a deleted parent's elements are gone with it */
		whole = rows[r].deleted || deleted_at[r] != 0 ||
			parent_elements(parent, child, &rows[r], lfs, &elems, &n, &cap);
		if (owner_cap < cap)
			owner = repalloc(owner, sizeof(int) * (owner_cap = cap));
		for (int e = first; e < n; e++)
			owner[e] = r;
		if (!whole)
			continue;
		pid = stripe_span_text(&rows[r].fields[parent->rc->id_slot]);
		whole_ids = lappend(whole_ids, pid);
		whole_obs = lappend(whole_obs, unconstify(TimestampTz *, &observed[r]));
		for (int e = first; e < n; e++)
		{
			kept_parent = lappend(kept_parent, pid);
			kept_id = lappend(kept_id, stripe_span_text(&elems[e].fields[child->rc->id_slot]));
		}
	}
	obs = palloc(sizeof(TimestampTz) * Max(n, 1));
	del = palloc(sizeof(TimestampTz) * Max(n, 1));
	for (int e = 0; e < n; e++)
	{
		obs[e] = observed[owner[e]];
		del[e] = 0;
	}
	if (n > 0)
		child->rows += stripe_upsert_rows_at(run, child, elems, n, obs, del);
	if (whole_ids != NIL)
		delete_left(run, child, whole_ids, whole_obs, kept_parent, kept_id);
}

/*
 * Writes the child tables' rows of parent objects just written to their
 * table (in the step's transaction): each parent's elements, and the
 * elements gone from its list soft-deleted; all the parents' in one
 * statement of each kind per child table.
 */
void
stripe_children_write(SyncRun *run, LocalTable *parent, StripeRow *rows, int nrows,
					  const TimestampTz *observed, const TimestampTz *deleted_at)
{
	ListCell   *lc;
	bool	   *stale;

	if (nrows == 0 || parent->def == NULL || parent->def->nested_lists == NULL)
		return;
	if (!parent->children_known)
		open_children(run, parent);
	if (parent->children == NIL)
		return;
	stale = stale_parents(run, parent, rows, nrows, observed);
	foreach(lc, parent->children)
		write_child(run, parent, lfirst(lc), rows, nrows, observed, deleted_at, stale);
}

/*
 * A parent marked deleted without its state (a deletion event): its
 * elements are gone with it (in a step).
 */
void
stripe_children_mark_deleted(SyncRun *run, LocalTable *parent, const char *id, TimestampTz at)
{
	ListCell   *lc;

	if (parent->def == NULL || parent->def->nested_lists == NULL)
		return;
	if (!parent->children_known)
		open_children(run, parent);
	foreach(lc, parent->children)
	{
		LocalTable *child = lfirst(lc);
		Oid			types[3] = {TIMESTAMPTZOID, TEXTOID, TEXTOID};
		Datum		values[3] = {TimestampTzGetDatum(at), CStringGetTextDatum(id),
		CStringGetTextDatum(run->src.account_id)};

		/* by account too: one shard when the tables are distributed (Citus) */
		stripe_run_as_owner(run, true);
		stripe_spi(psprintf("UPDATE %s SET deleted_at = $1, observed_at = $1, synced_at = now() "
							"WHERE %s = $2 AND account_id = $3 AND observed_at <= $1 AND deleted_at IS NULL",
							child->qualified, quote_identifier(child->def->parent_column)),
				   3, types, values, NULL, SPI_OK_UPDATE);
		stripe_run_as_owner(run, false);
	}
}

/*
 * A child added to a source whose parent is backfilled already: the parent
 * is backfilled again, which writes the child's rows; a child's own backfill
 * is done at once (in a step).
 */
void
stripe_children_prepare(SyncRun *run)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(run->src.name)};

	stripe_spi("UPDATE stripe_sync.object_state p SET backfill_done = false, backfill_cursor = NULL, "
			   "state = 'pending' FROM stripe_sync.object_state c, stripe_sync.catalog_children() ch "
			   "WHERE c.source = $1 AND p.source = $1 AND c.object = ch.object AND p.object = ch.parent "
			   "AND NOT c.backfill_done AND p.backfill_done",
			   1, types, values, NULL, SPI_OK_UPDATE);
	stripe_spi("UPDATE stripe_sync.object_state c SET backfill_done = true "
			   "FROM stripe_sync.catalog_children() ch "
			   "WHERE c.source = $1 AND c.object = ch.object AND NOT c.backfill_done",
			   1, types, values, NULL, SPI_OK_UPDATE);
}
