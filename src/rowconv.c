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
#include "common/int.h"
#include "executor/tuptable.h"
#include "foreign/foreign.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "rowconv.h"

/*
 * What a conversion keeps beyond StripeRowConv: names for messages, and
 * the Stripe type a foreign table of a catalogued object holds.
 */
typedef struct RowConvPriv
{
	StripeRowConv pub;			/* first: the StripeRowConv handed out points here */
	const char *table;			/* the relation's name */
	const char *object;			/* Stripe's "object" value every row must have, or NULL */
	int			object_slot;	/* the slot of "object" when object is set */
	int			current_att;	/* the attribute being converted, for the error context */
} RowConvPriv;

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
	RowConvPriv *priv = palloc0(sizeof(RowConvPriv));
	StripeRowConv *rc = &priv->pub;
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
	/* a slot per attribute, then "id", "object" and "created" */
	rc->fs = stripe_fieldset_create(rc->natts + 3);
	priv->table = pstrdup(RelationGetRelationName(rel));
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
	/* and its created, for a scan to go on from should Stripe lose its cursor */
	rc->created_slot = stripe_fieldset_add(rc->fs, "created", rc->natts + 2);
	/* a list of customers holds customers: anything else is refused, not shown */
	if (def != NULL && def->object != NULL && def->rows_from == STRIPE_ROWS_LIST)
	{
		priv->object = def->object;
		priv->object_slot = stripe_fieldset_add(rc->fs, "object", rc->natts + 1);
	}
	stripe_fieldset_finish(rc->fs);
	return rc;
}

/*
 * An ERROR for a value that does not fit its column, naming the Stripe field
 * and the table.  A number is shown (a JSON number is plain ASCII); other
 * values only by their JSON type.
 */
static void
value_error(RowConvPriv *priv, int att, StripeSpan *span, int sqlstate, const char *what)
{
	const char *field = priv->pub.att_field[att];
	const char *kind;

	switch (span->start[0])
	{
		case '"':
			kind = "a string";
			break;
		case '{':
			kind = "an object";
			break;
		case '[':
			kind = "an array";
			break;
		case 't':
		case 'f':
			kind = "a boolean";
			break;
		default:
			kind = NULL;		/* a number */
			break;
	}
	ereport(ERROR,
			(errcode(sqlstate),
			 field ? errmsg("Stripe field \"%s\" of table \"%s\" %s", field, priv->table, what)
			 : errmsg("Stripe object of table \"%s\" %s", priv->table, what),
			 sqlstate == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE
			 ? errdetail("Stripe's text is UTF-8; this value is not.")
			 : kind ? errdetail("Stripe sent %s.", kind)
			 : errdetail("Stripe sent %.*s.", Min(span->len, 40), span->start)));
}

/* Stripe's text is UTF-8: a value with anything else is refused, never stored */
static void
check_utf8(RowConvPriv *priv, int att, StripeSpan *span)
{
	for (int i = 0; i < span->len; i++)
		if ((unsigned char) span->start[i] >= 0x80)
		{
			/* i is a character boundary: all before it is ASCII */
			if (pg_encoding_verifymbstr(PG_UTF8, span->start + i, span->len - i) != span->len - i)
				value_error(priv, att, span, ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
							"is not valid UTF-8");
			return;
		}
}

/*
 * A JSON integer that fits in int64.  A fraction, an exponent, a string or
 * any other JSON value is an error, and so is a number past int64: never a
 * wrapped or truncated value.  type names the column's type for the
 * message, range_sqlstate is its out-of-range error.
 */
static int64
span_int64(RowConvPriv *priv, int att, StripeSpan *span, const char *type, int range_sqlstate)
{
	const char *p = span->start;
	const char *end = p + span->len;
	bool		neg = (*p == '-');
	uint64		v = 0;

	if (neg)
		p++;
	if (p == end)
		value_error(priv, att, span, ERRCODE_INVALID_TEXT_REPRESENTATION, "is not an integer");
	for (; p < end; p++)
	{
		if (*p < '0' || *p > '9')
			value_error(priv, att, span, ERRCODE_INVALID_TEXT_REPRESENTATION,
						"is not an integer");
		if (pg_mul_u64_overflow(v, 10, &v) || pg_add_u64_overflow(v, *p - '0', &v))
			v = PG_UINT64_MAX;	/* the range check below says so */
	}
	if (v > (neg ? (uint64) PG_INT64_MAX + 1 : (uint64) PG_INT64_MAX))
		value_error(priv, att, span, range_sqlstate, psprintf("is out of range for type %s", type));
	return neg ? (int64) (0 - v) : (int64) v;
}

/* Unix seconds as a timestamptz within PostgreSQL's range, without wrapping */
static TimestampTz
span_timestamptz(RowConvPriv *priv, int att, StripeSpan *span)
{
	static const char type[] = "timestamp with time zone";
	int64		secs = span_int64(priv, att, span, type, ERRCODE_DATETIME_VALUE_OUT_OF_RANGE);
	TimestampTz ts;

	if (pg_sub_s64_overflow(secs, (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY, &ts) ||
		pg_mul_s64_overflow(ts, USECS_PER_SEC, &ts) || !IS_VALID_TIMESTAMP(ts))
		value_error(priv, att, span, ERRCODE_DATETIME_VALUE_OUT_OF_RANGE,
					psprintf("is out of range for type %s", type));
	return ts;
}

/*
 * Stripe's text through the column's input function (json and jsonb: the
 * raw text, parsed in place).  An input function's error quotes its input,
 * which is Stripe's to choose (the API key, say): a data error becomes one
 * that names the field and not the value.
 */
static Datum
input_value(RowConvPriv *priv, int att, StripeSpan *span)
{
	StripeRowConv *rc = &priv->pub;
	Oid			type = rc->att_type[att];
	bool		raw = (type == JSONBOID || type == JSONOID);
	char	   *text;
	char		saved = span->start[span->len];
	MemoryContext cxt = CurrentMemoryContext;
	volatile Datum d = (Datum) 0;

	check_utf8(priv, att, span);
	if (raw)
	{
		/* the body is ours: terminate the span for a moment */
		span->start[span->len] = '\0';
		text = span->start;
	}
	else
		text = stripe_span_text(span);
	PG_TRY();
	{
		d = InputFunctionCall(&rc->att_in[att], text, rc->att_ioparam[att], rc->att_typmod[att]);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		if (raw)
			span->start[span->len] = saved;
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		/* the type's own reason, unless it quotes the value (which may hold a key) */
		value_error(priv, att, span, edata->sqlerrcode,
					strchr(edata->message, '"') == NULL
					? psprintf("is not a valid %s (%s)", format_type_be(type), edata->message)
					: psprintf("is not a valid %s", format_type_be(type)));
	}
	PG_END_TRY();
	if (raw)
		span->start[span->len] = saved;
	return d;
}

/* JSON value → datum of the column's type */
static Datum
convert_value(StripeRowConv *rc, int att, StripeSpan *span)
{
	RowConvPriv *priv = (RowConvPriv *) rc;
	char		c = span->start[0];

	switch (rc->att_type[att])
	{
		case JSONBOID:
			{
				/* this refuses invalid UTF-8 too: check_utf8 then names it */
				Jsonb	   *jb = stripe_jsonb_from_object(span->start, span->len);

				if (jb != NULL)
					return JsonbPGetDatum(jb);
			}
			/* not a plain object: jsonb_in says what it is */
			break;
		case TEXTOID:
			check_utf8(priv, att, span);
			return PointerGetDatum(cstring_to_text(stripe_span_text(span)));
		case INT8OID:
			return Int64GetDatum(span_int64(priv, att, span, "bigint",
											ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE));
		case BOOLOID:
			if (c == 't' || c == 'f')
				return BoolGetDatum(c == 't');
			break;
		case TIMESTAMPTZOID:
			return TimestampTzGetDatum(span_timestamptz(priv, att, span));
		default:
			break;
	}
	return input_value(priv, att, span);
}

/*
 * A foreign table of a catalogued object holds that object: a list of
 * customers that brings a charge (or anything else) is wrong, and nothing
 * of it is shown.  An object without "object" is taken as it is.
 */
static void
check_object_type(RowConvPriv *priv, StripeRow *row)
{
	StripeSpan *span = &row->fields[priv->object_slot];
	int			len = strlen(priv->object);

	if (span->start == NULL ||
		(span->len == len + 2 && span->start[0] == '"' &&
		 memcmp(span->start + 1, priv->object, len) == 0))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("Stripe sent an object that is not a %s for foreign table \"%s\"",
					priv->object, priv->table),
			 errdetail("Every object of this table's list has \"object\": \"%s\"; this one has something else.",
					   priv->object),
			 errhint("Check the foreign table's object option: it names the Stripe list the table reads.")));
}

/* Any error while a value is converted says which field and table it was. */
static void
conversion_context(void *arg)
{
	RowConvPriv *priv = arg;
	const char *field = priv->pub.att_field[priv->current_att];

	if (field)
		errcontext("Stripe field \"%s\" of table \"%s\"", field, priv->table);
	else
		errcontext("the Stripe object of table \"%s\"", priv->table);
}

/* Fills a virtual tuple from one parsed object; allocates in the current context. */
void
stripe_row_to_slot(StripeRowConv *rc, StripeRow *row, TupleTableSlot *slot)
{
	RowConvPriv *priv = (RowConvPriv *) rc;
	Jsonb	   *attrs = NULL;
	ErrorContextCallback errcallback;

	ExecClearTuple(slot);
	if (priv->object != NULL)
		check_object_type(priv, row);
	errcallback.callback = conversion_context;
	errcallback.arg = priv;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	/* attrs first: jsonb columns are then taken from it, not parsed again */
	if (rc->attrs_att >= 0)
	{
		priv->current_att = rc->attrs_att;
		slot->tts_values[rc->attrs_att] = convert_value(rc, rc->attrs_att, &row->object);
		slot->tts_isnull[rc->attrs_att] = false;
		attrs = DatumGetJsonbP(slot->tts_values[rc->attrs_att]);
	}
	for (int i = 0; i < rc->natts; i++)
	{
		int			s = rc->att_slot[i];

		if (i == rc->attrs_att)
			continue;
		priv->current_att = i;
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
	error_context_stack = errcallback.previous;
	ExecStoreVirtualTuple(slot);
}
