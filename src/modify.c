/*-------------------------------------------------------------------------
 * modify.c
 *		INSERT / UPDATE / DELETE on the writable Stripe objects: form-encoded
 *		bodies (jsonb columns become nested parameters such as metadata[k]),
 *		one Idempotency-Key per row reused by every retry, and RETURNING
 *		filled from Stripe's answer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/appendinfo.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "http.h"
#include "modify.h"
#include "rowconv.h"
#include "text.h"

#define ROW_ID_NAME "stripe_id"

enum
{
	ModPrivPath,
	ModPrivAttrs
};

typedef struct StripeModifyState
{
	StripeConn *conn;
	char	   *path;
	Relation	rel;
	List	   *target_attrs;	/* attnums sent to Stripe */
	AttrNumber	id_junk;		/* row id in the plan's output (UPDATE, DELETE) */
	StripeRowConv *rc;			/* Stripe's answer → RETURNING */
	MemoryContext row_cxt;
	StripePage	answer;
	StripeStats stats;
} StripeModifyState;

/*
 * The catalogue says what Stripe lets us write (StripeObjectDef.writable).  A
 * DELETE Stripe has no endpoint for passes here, so that the planner asks
 * stripePlanForeignModify, which says what to do instead.
 */
static int
stripeIsForeignRelUpdatable(Relation rel)
{
	const StripeObjectDef *def = stripe_object_by_path(stripe_table_object_path(RelationGetRelid(rel)));

	if (def == NULL || def->writable == NULL)
		return 0;
	return (1 << CMD_INSERT) | (1 << CMD_UPDATE) | (1 << CMD_DELETE);
}

/* Stripe cannot delete these: it archives prices, and a refund stays; say so */
static void
refuse_delete(Relation rel, const StripeObjectDef *def)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot delete from foreign table \"%s\": Stripe cannot delete %s",
					RelationGetRelationName(rel), def->path),
			 strcmp(def->path, "prices") == 0
			 ? errhint("Archive a price instead: UPDATE %s SET active = false WHERE id = '…';",
					   RelationGetRelationName(rel))
			 : errhint("Stripe allows %s on %s.", def->writable, def->path)));
}

static AttrNumber
id_attno(Relation rel)
{
	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

		if (!att->attisdropped &&
			strcmp(stripe_column_field(RelationGetRelid(rel), i + 1), "id") == 0)
			return i + 1;
	}
	ereport(ERROR,
			(errcode(ERRCODE_FDW_COLUMN_NAME_NOT_FOUND),
			 errmsg("foreign table \"%s\" has no id column", RelationGetRelationName(rel)),
			 errhint("UPDATE and DELETE find the Stripe object by the column that reads \"id\".")));
	return InvalidAttrNumber;	/* keep the compiler quiet */
}

static void
stripeAddForeignUpdateTargets(PlannerInfo *root, Index rtindex,
							  RangeTblEntry *target_rte, Relation target_relation)
{
	AttrNumber	attno = id_attno(target_relation);
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(target_relation), attno - 1);
	Var		   *var = makeVar(rtindex, attno, att->atttypid, att->atttypmod,
							  att->attcollation, 0);

	add_row_identity_var(root, var, rtindex, ROW_ID_NAME);
}

static List *
stripePlanForeignModify(PlannerInfo *root, ModifyTable *plan,
						Index resultRelation, int subplan_index)
{
	CmdType		operation = plan->operation;
	RangeTblEntry *rte = planner_rt_fetch(resultRelation, root);
	Relation	rel = table_open(rte->relid, NoLock);
	List	   *attrs = NIL;
	const StripeObjectDef *def = stripe_object_by_path(stripe_table_object_path(rte->relid));

	if (operation == CMD_DELETE && def != NULL && def->writable != NULL &&
		strstr(def->writable, "delete") == NULL)
		refuse_delete(rel, def);
	if (operation == CMD_INSERT)
	{
		for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
			if (!TupleDescAttr(RelationGetDescr(rel), i)->attisdropped)
				attrs = lappend_int(attrs, i + 1);
	}
	else if (operation == CMD_UPDATE)
	{
		Bitmapset  *cols = bms_union(rte->updatedCols, rte->extraUpdatedCols);
		int			col = -1;

		while ((col = bms_next_member(cols, col)) >= 0)
		{
			AttrNumber	attno = col + FirstLowInvalidHeapAttributeNumber;

			if (attno <= InvalidAttrNumber)
				continue;
			if (strcmp(stripe_column_field(rte->relid, attno), "id") == 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot change the id of a Stripe object")));
			attrs = lappend_int(attrs, attno);
		}
	}
	table_close(rel, NoLock);
	return list_make2(makeString(stripe_table_object_path(rte->relid)), attrs);
}

static void
stripeBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
						 List *fdw_private, int subplan_index, int eflags)
{
	StripeModifyState *ms = palloc0(sizeof(StripeModifyState));
	Relation	rel = rinfo->ri_RelationDesc;
	EState	   *estate = mtstate->ps.state;
	RangeTblEntry *rte = exec_rt_fetch(rinfo->ri_RangeTableIndex, estate);
	Oid			userid = OidIsValid(rte->checkAsUser) ? rte->checkAsUser : GetUserId();

	rinfo->ri_FdwState = ms;
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	ms->rel = rel;
	ms->path = strVal(list_nth(fdw_private, ModPrivPath));
	ms->target_attrs = list_nth(fdw_private, ModPrivAttrs);
	ms->conn = stripe_conn_for_server(GetForeignTable(RelationGetRelid(rel))->serverid, userid);
	ms->rc = stripe_rowconv_create(rel, true, NULL);
	ms->row_cxt = AllocSetContextCreate(estate->es_query_cxt, "stripe_sync modify",
										ALLOCSET_DEFAULT_SIZES);
	if (mtstate->operation != CMD_INSERT)
	{
		Plan	   *subplan = outerPlanState(mtstate)->plan;

		ms->id_junk = ExecFindJunkAttributeInTlist(subplan->targetlist, ROW_ID_NAME);
		if (!AttributeNumberIsValid(ms->id_junk))
			elog(ERROR, "could not find junk %s column", ROW_ID_NAME);
	}
}

/* ---- form encoding ---- */

static void
append_param(StringInfo buf, const char *key, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, '&');
	appendStringInfo(buf, "%s=%s", stripe_urlencode(key), stripe_urlencode(value));
}

static char *
jsonb_scalar_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return v->val.boolean ? "true" : "false";
		default:
			return "";			/* null: Stripe reads an empty value as "unset" */
	}
}

/*
 * A jsonb value as Stripe's nested form parameters:
 * {"a": {"b": 1}, "c": [x]} under "meta" → meta[a][b]=1&meta[c][0]=x.
 */
static void
append_jsonb(StringInfo buf, const char *name, Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *prefix[64];
	int			index[64];
	bool		is_array[64];
	bool		empty[64];
	int			depth = -1;
	char	   *key = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				{
					char	   *p;

					if (depth < 0)
						p = pstrdup(name);
					else if (is_array[depth])
						p = psprintf("%s[%d]", prefix[depth], index[depth]++);
					else
						p = key;
					if (depth >= 0)
						empty[depth] = false;
					if (++depth >= (int) lengthof(prefix))
						ereport(ERROR,
								(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
								 errmsg("value of \"%s\" is nested too deeply for Stripe", name)));
					prefix[depth] = p;
					index[depth] = 0;
					is_array[depth] = (tok == WJB_BEGIN_ARRAY);
					empty[depth] = true;
					/* a raw scalar is an array of one with no brackets */
					if (tok == WJB_BEGIN_ARRAY && v.val.array.rawScalar)
						is_array[depth] = false;
				}
				break;
			case WJB_KEY:
				key = psprintf("%s[%.*s]", prefix[depth], v.val.string.len, v.val.string.val);
				break;
			case WJB_VALUE:
				empty[depth] = false;
				append_param(buf, key, jsonb_scalar_text(&v));
				break;
			case WJB_ELEM:
				empty[depth] = false;
				if (is_array[depth])
					append_param(buf, psprintf("%s[%d]", prefix[depth], index[depth]++),
								 jsonb_scalar_text(&v));
				else
					append_param(buf, prefix[depth], jsonb_scalar_text(&v));
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				/* {} or []: send the key empty, which Stripe reads as "clear it" */
				if (empty[depth])
					append_param(buf, prefix[depth], "");
				depth--;
				break;
			default:
				break;
		}
	}
}

static char *
form_body(StripeModifyState *ms, TupleTableSlot *slot, bool skip_nulls)
{
	StringInfoData buf;
	ListCell   *lc;
	Oid			relid = RelationGetRelid(ms->rel);

	initStringInfo(&buf);
	slot_getallattrs(slot);
	foreach(lc, ms->target_attrs)
	{
		AttrNumber	attno = lfirst_int(lc);
		Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, attno - 1);
		Datum		value = slot->tts_values[attno - 1];
		char	   *field = stripe_column_field(relid, attno);
		Oid			out;
		bool		isvarlena;

		if (ms->rc->att_slot[attno - 1] == STRIPE_ATTRS_SLOT)
			continue;			/* the whole object is not a parameter */
		if (slot->tts_isnull[attno - 1])
		{
			if (!skip_nulls)
				append_param(&buf, field, "");	/* UPDATE … SET x = NULL unsets x */
			continue;
		}
		switch (att->atttypid)
		{
			case BOOLOID:
				append_param(&buf, field, DatumGetBool(value) ? "true" : "false");
				break;
			case TIMESTAMPTZOID:
				/* Stripe's times are Unix seconds: infinity has none */
				if (TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(value)))
					ereport(ERROR,
							(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
							 errmsg("cannot send an infinite time to Stripe as \"%s\"", field)));
				append_param(&buf, field,
							 psprintf(INT64_FORMAT, (int64) timestamptz_to_time_t(DatumGetTimestampTz(value))));
				break;
			case JSONBOID:
				append_jsonb(&buf, field, DatumGetJsonbP(value));
				break;
			default:
				getTypeOutputInfo(att->atttypid, &out, &isvarlena);
				append_param(&buf, field, OidOutputFunctionCall(out, value));
				break;
		}
	}
	return buf.data;
}

/* one key per row, kept across the retries of that row's request */
static char *
new_idempotency_key(void)
{
	uint8		b[16];
	StringInfoData buf;

	if (!pg_strong_random(b, sizeof(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate an idempotency key")));
	initStringInfo(&buf);
	appendStringInfoString(&buf, "stripe_sync-");
	for (int i = 0; i < (int) sizeof(b); i++)
		appendStringInfo(&buf, "%02x", b[i]);
	return buf.data;
}

static bool
check_answer(StripeResponse *resp, void *arg, const char **why)
{
	StripeModifyState *ms = arg;

	return stripe_parse_page(resp->body, resp->len, false, ms->rc->fs, &ms->answer, why);
}

/* Sends one write; fills slot from Stripe's answer.  NULL: no such object. */
static TupleTableSlot *
send_write(StripeModifyState *ms, const char *method, const char *path,
		   const char *body, TupleTableSlot *slot)
{
	StripeResponse resp;
	bool		found;

	/* POST create and update carry a key; DELETE is idempotent by itself */
	found = stripe_request(ms->conn, method, path, body,
						   strcmp(method, "POST") == 0 ? new_idempotency_key() : NULL,
						   strcmp(path, psprintf("/v1/%s", ms->path)) != 0,
						   check_answer, ms, &resp, &ms->stats);
	if (!found)
		return NULL;
	stripe_row_to_slot(ms->rc, &ms->answer.rows[0], slot);
	return slot;
}

/* The object's path, or NULL for an id no object has ("", "." or "..") */
static char *
row_id_path(StripeModifyState *ms, TupleTableSlot *planSlot)
{
	bool		isnull;
	Datum		id = ExecGetJunkAttribute(planSlot, ms->id_junk, &isnull);
	char	   *segment;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("Stripe object id is null")));
	segment = stripe_path_segment(TextDatumGetCString(id));
	return segment ? psprintf("/v1/%s/%s", ms->path, segment) : NULL;
}

/* One row's request, in a memory context reset for every row. */
static TupleTableSlot *
write_row(ResultRelInfo *rinfo, CmdType op, TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	StripeModifyState *ms = rinfo->ri_FdwState;
	MemoryContext old;
	TupleTableSlot *result = NULL;
	char	   *path;

	MemoryContextReset(ms->row_cxt);
	old = MemoryContextSwitchTo(ms->row_cxt);
	if (op == CMD_INSERT)
		result = send_write(ms, "POST", psprintf("/v1/%s", ms->path),
							form_body(ms, slot, true), slot);
	else if ((path = row_id_path(ms, planSlot)) == NULL)
		result = NULL;			/* like an id Stripe does not know: no row */
	else if (op == CMD_UPDATE)
		result = send_write(ms, "POST", path, form_body(ms, slot, false), slot);
	else
		result = send_write(ms, "DELETE", path, NULL, slot);
	MemoryContextSwitchTo(old);
	return result;
}

static TupleTableSlot *
stripeExecForeignInsert(EState *estate, ResultRelInfo *rinfo,
						TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	return write_row(rinfo, CMD_INSERT, slot, planSlot);
}

static TupleTableSlot *
stripeExecForeignUpdate(EState *estate, ResultRelInfo *rinfo,
						TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	return write_row(rinfo, CMD_UPDATE, slot, planSlot);
}

static TupleTableSlot *
stripeExecForeignDelete(EState *estate, ResultRelInfo *rinfo,
						TupleTableSlot *slot, TupleTableSlot *planSlot)
{
	return write_row(rinfo, CMD_DELETE, slot, planSlot);
}

static void
stripeEndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
	StripeModifyState *ms = rinfo->ri_FdwState;

	if (ms && ms->row_cxt)
		MemoryContextDelete(ms->row_cxt);
}

static void
stripeExplainForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
						   List *fdw_private, int subplan_index, ExplainState *es)
{
	const char *path = strVal(list_nth(fdw_private, ModPrivPath));
	const char *line;

	switch (mtstate->operation)
	{
		case CMD_INSERT:
			line = psprintf("POST /v1/%s (one per row, with an Idempotency-Key)", path);
			break;
		case CMD_UPDATE:
			line = psprintf("POST /v1/%s/{id} (one per row, with an Idempotency-Key)", path);
			break;
		default:
			line = psprintf("DELETE /v1/%s/{id} (one per row)", path);
			break;
	}
	ExplainPropertyText("Stripe Request", line, es);
}

void
stripe_fdw_set_modify_routines(FdwRoutine *routine)
{
	routine->IsForeignRelUpdatable = stripeIsForeignRelUpdatable;
	routine->AddForeignUpdateTargets = stripeAddForeignUpdateTargets;
	routine->PlanForeignModify = stripePlanForeignModify;
	routine->BeginForeignModify = stripeBeginForeignModify;
	routine->ExecForeignInsert = stripeExecForeignInsert;
	routine->ExecForeignUpdate = stripeExecForeignUpdate;
	routine->ExecForeignDelete = stripeExecForeignDelete;
	routine->EndForeignModify = stripeEndForeignModify;
	routine->ExplainForeignModify = stripeExplainForeignModify;
}
