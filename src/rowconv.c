/*-------------------------------------------------------------------------
 * rowconv.c
 *		From a parsed Stripe object to a tuple of a foreign table: which
 *		fields each column reads, and the conversion of a raw JSON value to
 *		the column's declared type.  Shared by scans and by RETURNING.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/tuptable.h"
#include "foreign/foreign.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "rowconv.h"

char *
stripe_column_field(Oid relid, AttrNumber attno)
{
	List	   *options = GetForeignColumnOptions(relid, attno);
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "field") == 0)
			return defGetString(def);
	}
	return get_attname(relid, attno, false);
}

char *
stripe_table_object_path(Oid relid)
{
	ForeignTable *ft = GetForeignTable(relid);
	ListCell   *lc;

	foreach(lc, ft->options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "object") == 0)
			return defGetString(def);
	}
	/* like postgres_fdw's table_name, default to the table's own name */
	return get_rel_name(relid);
}

/*
 * Sets up the conversion of a foreign table's attributes: all of them, or
 * those in "wanted" (attribute numbers).  The field set always holds "id".
 * A foreign table of an object whose rows come from arrays (balance) gets a
 * field set that parses it so, with the array's name in the column that
 * reads "kind".
 */
StripeRowConv *
stripe_rowconv_create(Relation rel, bool all, Bitmapset *wanted)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	Oid			relid = RelationGetRelid(rel);
	StripeRowConv *rc = palloc0(sizeof(StripeRowConv));
	const StripeObjectDef *def = NULL;
	int			kind_slot = -1;

	rc->natts = tupdesc->natts;
	rc->att_slot = palloc(sizeof(int) * rc->natts);
	rc->att_field = palloc0(sizeof(char *) * rc->natts);
	rc->attrs_att = -1;
	rc->att_type = palloc0(sizeof(Oid) * rc->natts);
	rc->att_in = palloc0(sizeof(FmgrInfo) * rc->natts);
	rc->att_ioparam = palloc0(sizeof(Oid) * rc->natts);
	rc->att_typmod = palloc0(sizeof(int32) * rc->natts);
	rc->fs = stripe_fieldset_create(rc->natts + 1);
	/* sync also converts into local tables, which have no object option */
	if (rel->rd_rel->relkind == RELKIND_FOREIGN_TABLE)
		def = stripe_object_by_path(stripe_table_object_path(relid));

	for (int i = 0; i < rc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Oid			infunc;

		rc->att_slot[i] = -1;
		if (att->attisdropped || (!all && !bms_is_member(i + 1, wanted)))
			continue;
		rc->att_type[i] = att->atttypid;
		rc->att_typmod[i] = att->atttypmod;
		getTypeInputInfo(att->atttypid, &infunc, &rc->att_ioparam[i]);
		fmgr_info(infunc, &rc->att_in[i]);
		if (strcmp(NameStr(att->attname), "attrs") == 0 &&
			GetForeignColumnOptions(relid, i + 1) == NIL)
		{
			rc->att_slot[i] = STRIPE_ATTRS_SLOT;
			if (att->atttypid == JSONBOID)
				rc->attrs_att = i;
		}
		else
		{
			char	   *field = stripe_column_field(relid, i + 1);

			rc->att_slot[i] = stripe_fieldset_add(rc->fs, field, i);
			rc->att_field[i] = pstrdup(field);
			if (strcmp(field, "kind") == 0)
				kind_slot = rc->att_slot[i];
		}
	}
	if (def != NULL && def->rows_from == STRIPE_ROWS_ARRAYS)
		stripe_fieldset_rows_from_arrays(rc->fs, kind_slot);
	/* the page cursor needs every object's id, whether or not a column reads it */
	rc->id_slot = stripe_fieldset_add(rc->fs, "id", rc->natts);
	stripe_fieldset_finish(rc->fs);
	return rc;
}

/* JSON value → datum of the column's type */
static Datum
convert_value(StripeRowConv *rc, int att, StripeSpan *span)
{
	Oid			type = rc->att_type[att];
	char		c = span->start[0];
	Datum		d;
	char		saved;

	switch (type)
	{
		case JSONBOID:
			{
				Jsonb	   *jb = stripe_jsonb_from_object(span->start, span->len);

				if (jb != NULL)
					return JsonbPGetDatum(jb);
			}
			/* not a plain object: jsonb_in says what it is */
			/* FALLTHROUGH */
		case JSONOID:
			/* parse in place: the body is ours, terminate the span for a moment */
			saved = span->start[span->len];
			span->start[span->len] = '\0';
			d = InputFunctionCall(&rc->att_in[att], span->start,
								  rc->att_ioparam[att], rc->att_typmod[att]);
			span->start[span->len] = saved;
			return d;
		case TEXTOID:
			return PointerGetDatum(cstring_to_text(stripe_span_text(span)));
		case INT8OID:
			if (c != '"' && memchr(span->start, '.', span->len) == NULL &&
				memchr(span->start, 'e', span->len) == NULL &&
				memchr(span->start, 'E', span->len) == NULL)
				return Int64GetDatum(pg_strtoint64(stripe_span_text(span)));
			break;
		case BOOLOID:
			if (c == 't' || c == 'f')
				return BoolGetDatum(c == 't');
			break;
		case TIMESTAMPTZOID:
			if (c == '-' || (c >= '0' && c <= '9'))
			{
				int64		secs = pg_strtoint64(stripe_span_text(span));

				return TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) secs));
			}
			break;
		default:
			break;
	}
	return InputFunctionCall(&rc->att_in[att], stripe_span_text(span),
							 rc->att_ioparam[att], rc->att_typmod[att]);
}

/* Fills a virtual tuple from one parsed object; allocates in the current context. */
void
stripe_row_to_slot(StripeRowConv *rc, StripeRow *row, TupleTableSlot *slot)
{
	Jsonb	   *attrs = NULL;

	ExecClearTuple(slot);
	/* attrs first: jsonb columns are then taken from it, not parsed again */
	if (rc->attrs_att >= 0)
	{
		slot->tts_values[rc->attrs_att] = convert_value(rc, rc->attrs_att, &row->object);
		slot->tts_isnull[rc->attrs_att] = false;
		attrs = DatumGetJsonbP(slot->tts_values[rc->attrs_att]);
	}
	for (int i = 0; i < rc->natts; i++)
	{
		int			s = rc->att_slot[i];

		if (i == rc->attrs_att)
			continue;
		slot->tts_isnull[i] = true;
		if (s == STRIPE_ATTRS_SLOT)
		{
			slot->tts_values[i] = convert_value(rc, i, &row->object);
			slot->tts_isnull[i] = false;
		}
		else if (s >= 0 && !stripe_span_is_null(&row->fields[s]))
		{
			JsonbValue *v;

			if (attrs != NULL && rc->att_type[i] == JSONBOID &&
				(v = getKeyJsonValueFromContainer(&attrs->root, rc->att_field[i],
												  strlen(rc->att_field[i]), NULL)) != NULL)
				slot->tts_values[i] = JsonbPGetDatum(JsonbValueToJsonb(v));
			else
				slot->tts_values[i] = convert_value(rc, i, &row->fields[s]);
			slot->tts_isnull[i] = false;
		}
	}
	ExecStoreVirtualTuple(slot);
}
