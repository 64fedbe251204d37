/*-------------------------------------------------------------------------
 * fdw_request.c
 *		The requests of an FDW scan, from the values of its pushed quals:
 *		retrieves by id, or a list with Stripe's filters, its parent in the
 *		path, and a range of created; and their lines for EXPLAIN.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "fdw_request.h"
#include "text.h"

/* unix seconds, floor or ceiling, of a finite timestamptz */
static int64
ts_to_unix(TimestampTz ts, bool ceiling)
{
	int64		us = ts + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	int64		s = us / USECS_PER_SEC;

	if (us % USECS_PER_SEC != 0)
	{
		if (us < 0 && !ceiling)
			s--;
		else if (us > 0 && ceiling)
			s++;
	}
	return s;
}

static char *
datum_param_text(Datum value, Oid type)
{
	Oid			out;
	bool		isvarlena;

	if (type == BOOLOID)
		return DatumGetBool(value) ? "true" : "false";
	if (type == TEXTOID || type == VARCHAROID)
		return TextDatumGetCString(value);
	getTypeOutputInfo(type, &out, &isvarlena);
	return OidOutputFunctionCall(out, value);
}

/* id: a path segment (stripe_path_segment), or NULL for an id no object has */
static void
add_retrieve(RequestPlan *rp, const char *path, const char *id)
{
	char	   *p;
	ListCell   *lc;

	if (id == NULL)
		return;
	p = psprintf("/v1/%s/%s", path, id);

	foreach(lc, rp->retrieve_paths)
		if (strcmp(lfirst(lc), p) == 0)
			return;				/* id IN ('a', 'a') is one retrieve */
	rp->retrieve_paths = lappend(rp->retrieve_paths, p);
}

/* id = v or id = ANY(array): a retrieve per id; false when there is none to send */
static bool
build_retrieves(const char *path, PushValue *v, RequestPlan *rp)
{
	if (v->known && v->isnull)
		return false;			/* id = NULL is never true */
	rp->retrieve = true;
	rp->allow_404 = true;		/* no such object: no row */
	if (!v->known)
		add_retrieve(rp, path, psprintf("$%d", v->paramno));
	else if (v->kind == PUSH_ID)
		add_retrieve(rp, path, stripe_path_segment(datum_param_text(v->value, v->type)));
	else
	{
		ArrayType  *arr = DatumGetArrayTypeP(v->value);
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
		deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign,
						  &elems, &nulls, &n);
		for (int e = 0; e < n; e++)
			if (!nulls[e])
				add_retrieve(rp, path,
							 stripe_path_segment(datum_param_text(elems[e], ARR_ELEMTYPE(arr))));
	}
	return rp->retrieve_paths != NIL;
}

/* Narrows the range by one created qual (or notes its parameter, for EXPLAIN). */
static void
narrow_created(CreatedRange *cr, PushValue *v)
{
	TimestampTz ts;
	int64		lo = PG_INT64_MIN,
				hi = PG_INT64_MAX;

	if (!v->known)
	{
		/* EXPLAIN of a parameterized range: show where it goes */
		if (v->kind == PUSH_CREATED_GT || v->kind == PUSH_CREATED_GE || v->kind == PUSH_CREATED_EQ)
			cr->lower_param = psprintf("$%d", v->paramno);
		if (v->kind == PUSH_CREATED_LT || v->kind == PUSH_CREATED_LE || v->kind == PUSH_CREATED_EQ)
			cr->upper_param = psprintf("$%d", v->paramno);
		return;
	}
	ts = DatumGetTimestampTz(v->value);
	if (TIMESTAMP_NOT_FINITE(ts))
		return;					/* left to the local recheck */
	/* Stripe's created is whole seconds: turn each bound into gte/lte */
	switch (v->kind)
	{
		case PUSH_CREATED_GT:
			lo = ts_to_unix(ts, false) + 1;
			break;
		case PUSH_CREATED_GE:
			lo = ts_to_unix(ts, true);
			break;
		case PUSH_CREATED_LT:
			hi = ts_to_unix(ts, true) - 1;
			break;
		case PUSH_CREATED_LE:
			hi = ts_to_unix(ts, false);
			break;
		case PUSH_CREATED_EQ:
			lo = ts_to_unix(ts, true);
			hi = ts_to_unix(ts, false);
			break;
		default:
			break;
	}
	if (lo != PG_INT64_MIN && (!cr->have_lower || lo > cr->lower))
		cr->lower = lo, cr->have_lower = true;
	if (hi != PG_INT64_MAX && (!cr->have_upper || hi < cr->upper))
		cr->upper = hi, cr->have_upper = true;
}

/* The range's parameters; false when it is empty (no request needed) */
static bool
append_created(StringInfo buf, CreatedRange *cr)
{
	if (cr->have_lower && cr->have_upper && cr->lower > cr->upper)
		return false;
	if (cr->have_lower && cr->have_upper && cr->lower == cr->upper)
		appendStringInfo(buf, "&created=" INT64_FORMAT, cr->lower);
	else
	{
		if (cr->have_lower)
			appendStringInfo(buf, "&created%%5Bgte%%5D=" INT64_FORMAT, cr->lower);
		else if (cr->lower_param)
			appendStringInfo(buf, "&created%%5Bgte%%5D=%s", cr->lower_param);
		if (cr->have_upper)
			appendStringInfo(buf, "&created%%5Blte%%5D=" INT64_FORMAT, cr->upper);
		else if (cr->upper_param)
			appendStringInfo(buf, "&created%%5Blte%%5D=%s", cr->upper_param);
	}
	return true;
}

/*
 * Builds the requests for the scan from the pushed values.  Returns false
 * when the quals cannot match anything (a NULL value, an empty created range,
 * an id or a parent no object has), in which case no request is needed.  Sets
 * rp->lacks_parent when Stripe lists the object only under a parent and no
 * value names one.
 */
bool
stripe_build_request(const char *path, const StripeObjectDef *def,
					 PushValue *vals, int nvals, RequestPlan *rp)
{
	StringInfoData buf;
	CreatedRange cr = {0};
	char	   *all_param;
	bool		all_given = false;
	bool		parent_given = false;
	char	   *value;
	List	   *keys_done = NIL;
	ListCell   *lc;
	int			i;

	memset(rp, 0, sizeof(RequestPlan));
	rp->base_path = psprintf("/v1/%s", path);

	/* GET /v1/balance: one object, no parameters */
	if (def != NULL && def->rows_from == STRIPE_ROWS_ARRAYS)
	{
		rp->retrieve = true;
		rp->retrieve_paths = list_make1(rp->base_path);
		return true;
	}

	/* a retrieve by id wins over everything else: the recheck does the rest */
	for (i = 0; i < nvals; i++)
		if (vals[i].kind == PUSH_ID || vals[i].kind == PUSH_ID_ANY)
			/* several id quals: the first decides, the recheck keeps the rest honest */
			return build_retrieves(path, &vals[i], rp);

	/* Stripe has no list of it (mandates): only a retrieve, above, may be sent */
	if (def != NULL && def->no_list)
	{
		rp->no_list = true;
		return true;
	}
	if (def == NULL)
		def = stripe_object_by_path(path);
	all_param = stripe_list_all_param(def);

	initStringInfo(&buf);
	for (i = 0; i < nvals; i++)
	{
		PushValue  *v = &vals[i];
		bool		dup = false;

		if (v->known && v->isnull)
			return false;		/* col = NULL is never true */
		if (v->kind != PUSH_EQ)
		{
			narrow_created(&cr, v);
			continue;
		}

		/*
		 * A value outside the filter's enum would be a 400: it is not sent,
		 * and the local check finds what it matches (nothing, unless Stripe
		 * has values newer than the catalogue).
		 */
		if (v->known &&
			!stripe_filter_accepts(stripe_object_column(def, v->key),
								   datum_param_text(v->value, v->type)))
			continue;
		/* the same filter twice: send the first, the recheck does the rest */
		foreach(lc, keys_done)
			if (strcmp(strVal(lfirst(lc)), v->key) == 0)
				dup = true;
		if (dup)
			continue;
		keys_done = lappend(keys_done, makeString(v->key));
		if (all_param != NULL && strcmp(v->key, all_param) == 0)
			all_given = true;
		value = v->known ? stripe_urlencode(datum_param_text(v->value, v->type))
			: psprintf("$%d", v->paramno);
		if (def != NULL && def->required_filter != NULL &&
			strcmp(v->key, def->required_filter) == 0)
		{
			parent_given = true;
			/* a parent Stripe does not know has no children: no rows */
			rp->allow_404 = true;
			if (def->parent_path != NULL)
			{
				/* GET /v1/customers/cus_…/payment_methods */
				if (v->known &&
					(value = stripe_path_segment(datum_param_text(v->value, v->type))) == NULL)
					return false;	/* no parent has such an id: no rows */
				rp->base_path = psprintf("/v1/%s/%s/%s", def->parent_path, value,
										 def->child_path ? def->child_path : path);
				continue;
			}
		}
		appendStringInfo(&buf, "&%s=%s", v->key, value);
	}
	rp->filters = pstrdup(buf.data);
	rp->created = cr;
	if (!append_created(&buf, &cr))
		return false;
	/* what Stripe would leave out without asking: the catalogue says how to list it all */
	rp->suffixes = all_given ? list_make1(pstrdup("")) : stripe_list_all_queries(def);
	if (def != NULL && def->required_filter != NULL && !parent_given)
		rp->lacks_parent = true;
	return true;
}

/*
 * One of the plan's lists' parameters after limit= (the one suffix ends
 * with), with created narrowed to [lo, hi) (whole seconds; 0: no bound): a
 * window of a concurrent scan, or, with only hi, where a scan goes on from
 * the second of the last row it returned when Stripe no longer knows its
 * cursor.  NULL when nothing of the plan's range is left in it.
 */
char *
stripe_list_rest_window(RequestPlan *rp, const char *suffix, int64 lo, int64 hi)
{
	StringInfoData buf;
	CreatedRange cr = rp->created;

	if (lo != 0 && (!cr.have_lower || lo > cr.lower))
	{
		cr.lower = lo;
		cr.have_lower = true;
	}
	if (hi != 0 && (!cr.have_upper || hi - 1 < cr.upper))
	{
		cr.upper = hi - 1;
		cr.have_upper = true;
	}
	initStringInfo(&buf);
	appendStringInfoString(&buf, rp->filters);
	if (!append_created(&buf, &cr))
		return NULL;
	appendStringInfoString(&buf, suffix);
	return buf.data;
}

/* where a scan goes on from a second: not empty, a row of the range was created in it */
char *
stripe_list_rest_upto(RequestPlan *rp, const char *suffix, int64 upper)
{
	return stripe_list_rest_window(rp, suffix, 0, upper + 1);
}

/* A list page's request line: base?limit=n&filters[&starting_after=cursor] */
char *
stripe_list_request(const char *base, int limit, const char *rest, const char *cursor)
{
	return psprintf("%s?limit=%d%s%s%s", base, limit, rest,
					cursor ? "&starting_after=" : "", cursor ? cursor : "");
}

/* why a scan of an object without a list sends nothing */
char *
stripe_no_list_hint(const StripeObjectDef *def)
{
	return psprintf("Stripe has no list of %s, only a retrieve by id", def->path);
}

/* the request line(s) for EXPLAIN */
char *
stripe_describe_requests(RequestPlan *rp, const StripeObjectDef *def, int first_limit)
{
	StringInfoData buf;
	ListCell   *lc;
	int			n = 0;

	if (rp->lacks_parent)
		return psprintf("none (Stripe lists %s only per %s)",
						def->path, def->required_filter);
	if (rp->no_list)
		return psprintf("none (%s)", stripe_no_list_hint(def));
	initStringInfo(&buf);
	if (!rp->retrieve)
	{
		/* the first page of each list */
		foreach(lc, rp->suffixes)
			appendStringInfo(&buf, "%sGET %s", foreach_current_index(lc) ? ", " : "",
							 stripe_list_request(rp->base_path,
												 first_limit > 0 ? first_limit : STRIPE_PAGE_SIZE,
												 stripe_list_rest_window(rp, lfirst(lc), 0, 0),
												 NULL));
		return buf.data;
	}
	foreach(lc, rp->retrieve_paths)
	{
		if (n++ == 5)
		{
			appendStringInfo(&buf, ", … (%d in all)", list_length(rp->retrieve_paths));
			break;
		}
		appendStringInfo(&buf, "%sGET %s", n > 1 ? ", " : "", (char *) lfirst(lc));
	}
	return buf.data;
}

/* ---------- where a list scan is ---------- */

#define PLACE_ID_LEN	256

/* Sets pl up for a scan (again, at a rescan), its memory under parent. */
void
stripe_place_init(ScanPlace *pl, MemoryContext parent)
{
	if (pl->cxt == NULL)
		pl->cxt = AllocSetContextCreate(parent, "stripe_sync scan place", ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(pl->cxt);
	pl->known = false;
	pl->ids = NULL;
	pl->resumed = false;
	pl->resumptions = 0;
}

/*
 * A page the scan has returned every row of, before it asks for the next:
 * the place moves to its last row's second, with the page's ids of that
 * second (added to those before when the second has not changed).
 */
void
stripe_place_note(ScanPlace *pl, StripePage *page, int id_slot, int created_slot)
{
	int64		second;

	if (page->nrows == 0)
		return;
	if (!stripe_span_int64(&page->rows[page->nrows - 1].fields[created_slot], &second))
	{
		pl->known = false;
		return;
	}
	if (!pl->known || second != pl->second || pl->ids == NULL)
	{
		HASHCTL		ctl;

		MemoryContextReset(pl->cxt);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = PLACE_ID_LEN;
		ctl.entrysize = PLACE_ID_LEN;
		ctl.hcxt = pl->cxt;
		pl->ids = hash_create("stripe_sync scan place", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		pl->known = true;
		pl->second = second;
	}
	for (int i = page->nrows - 1; i >= 0; i--)
	{
		StripeSpan *id = &page->rows[i].fields[id_slot];
		int64		created;
		char		key[PLACE_ID_LEN] = {0};

		if (!stripe_span_int64(&page->rows[i].fields[created_slot], &created) || created != second)
			break;
		if (id->start == NULL || id->len < 2 || id->start[0] != '"' || id->len - 2 >= PLACE_ID_LEN)
			continue;
		memcpy(key, id->start + 1, id->len - 2);
		hash_search(pl->ids, key, HASH_ENTER, NULL);
	}
}

/* Whether the scan returned this row before it went on from its place. */
bool
stripe_place_returned(ScanPlace *pl, StripeRow *row, int id_slot, int created_slot)
{
	StripeSpan *id = &row->fields[id_slot];
	int64		created;
	char		key[PLACE_ID_LEN] = {0};

	if (!pl->resumed || pl->ids == NULL ||
		!stripe_span_int64(&row->fields[created_slot], &created) || created != pl->second ||
		id->start == NULL || id->len < 2 || id->start[0] != '"' || id->len - 2 >= PLACE_ID_LEN)
		return false;
	memcpy(key, id->start + 1, id->len - 2);
	return hash_search(pl->ids, key, HASH_FIND, NULL) != NULL;
}
