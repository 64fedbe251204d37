/*-------------------------------------------------------------------------
 * jsonb_fast.c
 *		jsonb from the text of one Stripe object, without a second pass of
 *		the generic JSON parser.
 *
 * jsonb_in lexes character by character, copies every string and sorts each
 * object's keys through callbacks; on a backfill that is a third of the CPU.
 * Stripe's objects are plain: strings without escapes, integers, a few
 * decimals.  This builds the same JsonbValue tree jsonb_in would (keys in
 * jsonb order, the last of equal keys kept) with strings pointing into the
 * text, and leaves the encoding to JsonbValueToJsonb, as jsonb_in does.  Any
 * input outside that plain subset (escapes, control characters, invalid
 * UTF-8, deep nesting, anything malformed) returns NULL, and the caller
 * checks the text and uses jsonb_in, which gives the usual result or error.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "rowconv.h"

/* deeper than this is left to jsonb_in (and its stack depth check) */
#define FAST_MAX_DEPTH	64

typedef struct FastParse
{
	const char *p;
	const char *end;
} FastParse;

static bool fast_value(FastParse *fp, JsonbValue *v, int depth);

static inline void
skip_space(FastParse *fp)
{
	while (fp->p < fp->end &&
		   (*fp->p == ' ' || *fp->p == '\n' || *fp->p == '\r' || *fp->p == '\t'))
		fp->p++;
}

/* a string without escapes or control characters, in UTF-8, pointing into the text */
static bool
fast_string(FastParse *fp, JsonbValue *v)
{
	const char *s = ++fp->p;
	unsigned char high = 0;		/* the bits of every byte: is any not ASCII? */

	while (fp->p < fp->end)
	{
		unsigned char c = (unsigned char) *fp->p;

		if (c == '"')
		{
			if ((high & 0x80) &&
				pg_encoding_verifymbstr(PG_UTF8, s, fp->p - s) != fp->p - s)
				return false;
			v->type = jbvString;
			v->val.string.val = (char *) s;
			v->val.string.len = fp->p - s;
			fp->p++;
			return true;
		}
		if (c == '\\' || c < 0x20)
			return false;
		high |= c;
		fp->p++;
	}
	return false;
}

/* JSON's number grammar; integers that fit go straight to numeric */
static bool
fast_number(FastParse *fp, JsonbValue *v)
{
	const char *s = fp->p;
	bool		integer = true;
	int			digits = 0;

	if (fp->p < fp->end && *fp->p == '-')
		fp->p++;
	if (fp->p >= fp->end || !isdigit((unsigned char) *fp->p))
		return false;
	if (*fp->p == '0')
		fp->p++, digits++;
	else
		while (fp->p < fp->end && isdigit((unsigned char) *fp->p))
			fp->p++, digits++;
	if (fp->p < fp->end && *fp->p == '.')
	{
		integer = false;
		fp->p++;
		if (fp->p >= fp->end || !isdigit((unsigned char) *fp->p))
			return false;
		while (fp->p < fp->end && isdigit((unsigned char) *fp->p))
			fp->p++;
	}
	if (fp->p < fp->end && (*fp->p == 'e' || *fp->p == 'E'))
	{
		integer = false;
		fp->p++;
		if (fp->p < fp->end && (*fp->p == '+' || *fp->p == '-'))
			fp->p++;
		if (fp->p >= fp->end || !isdigit((unsigned char) *fp->p))
			return false;
		while (fp->p < fp->end && isdigit((unsigned char) *fp->p))
			fp->p++;
	}
	v->type = jbvNumeric;
	if (integer && digits <= 18)
	{
		int64		n = 0;

		for (const char *c = (*s == '-') ? s + 1 : s; c < fp->p; c++)
			n = n * 10 + (*c - '0');
		v->val.numeric = int64_to_numeric(*s == '-' ? -n : n);
	}
	else
		v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
															 CStringGetDatum(pnstrdup(s, fp->p - s)),
															 ObjectIdGetDatum(InvalidOid),
															 Int32GetDatum(-1)));
	return true;
}

static bool
fast_literal(FastParse *fp, const char *word, int len)
{
	if (fp->end - fp->p < len || memcmp(fp->p, word, len) != 0)
		return false;
	fp->p += len;
	return true;
}

/* jsonb's key order: shorter first, then bytewise; of equal keys the later first */
static inline int
pair_cmp(const JsonbPair *a, const JsonbPair *b)
{
	if (a->key.val.string.len != b->key.val.string.len)
		return a->key.val.string.len < b->key.val.string.len ? -1 : 1;
	{
		int			r = memcmp(a->key.val.string.val, b->key.val.string.val,
							   a->key.val.string.len);

		if (r != 0)
			return r;
	}
	return a->order > b->order ? -1 : 1;
}

static int
pair_qsort_cmp(const void *a, const void *b)
{
	return pair_cmp(a, b);
}

/* sorts the pairs and keeps the last of equal keys, as pushJsonbValue does */
static int
sort_pairs(JsonbPair *pairs, int n)
{
	int			kept;

	/* a Stripe object has tens of keys, where insertion beats qsort's calls */
	if (n <= 64)
	{
		for (int i = 1; i < n; i++)
		{
			JsonbPair	x = pairs[i];
			int			j = i - 1;

			while (j >= 0 && pair_cmp(&pairs[j], &x) > 0)
			{
				pairs[j + 1] = pairs[j];
				j--;
			}
			pairs[j + 1] = x;
		}
	}
	else
		qsort(pairs, n, sizeof(JsonbPair), pair_qsort_cmp);
	kept = n > 0 ? 1 : 0;
	for (int i = 1; i < n; i++)
	{
		JsonbPair  *prev = &pairs[kept - 1];

		if (pairs[i].key.val.string.len == prev->key.val.string.len &&
			memcmp(pairs[i].key.val.string.val, prev->key.val.string.val,
				   prev->key.val.string.len) == 0)
			continue;			/* an earlier duplicate: the later one, first, stays */
		pairs[kept++] = pairs[i];
	}
	return kept;
}

/* after '{' or '[': whether the list is empty (its closer then consumed) */
static bool
list_empty(FastParse *fp, char close)
{
	fp->p++;
	skip_space(fp);
	if (fp->p < fp->end && *fp->p == close)
	{
		fp->p++;
		return true;
	}
	return false;
}

/* after an element: 1 for a comma, 0 for the closer (either consumed), -1 for anything else */
static int
list_next(FastParse *fp, char close)
{
	skip_space(fp);
	if (fp->p < fp->end && (*fp->p == ',' || *fp->p == close))
		return *fp->p++ == ',' ? 1 : 0;
	return -1;
}

static bool
fast_object(FastParse *fp, JsonbValue *v, int depth)
{
	int			cap = 16;
	int			n = 0;
	int			more = 1;
	JsonbPair  *pairs = palloc(sizeof(JsonbPair) * cap);

	if (list_empty(fp, '}'))
		more = 0;
	while (more > 0)
	{
		if (n == cap)
		{
			cap *= 2;
			pairs = repalloc(pairs, sizeof(JsonbPair) * cap);
		}
		skip_space(fp);
		if (fp->p >= fp->end || *fp->p != '"' || !fast_string(fp, &pairs[n].key))
			return false;
		skip_space(fp);
		if (fp->p >= fp->end || *fp->p != ':')
			return false;
		fp->p++;
		if (!fast_value(fp, &pairs[n].value, depth + 1))
			return false;
		pairs[n].order = n;
		n++;
		if ((more = list_next(fp, '}')) < 0)
			return false;
	}
	v->type = jbvObject;
	v->val.object.nPairs = sort_pairs(pairs, n);
	v->val.object.pairs = pairs;
	return true;
}

static bool
fast_array(FastParse *fp, JsonbValue *v, int depth)
{
	int			cap = 8;
	int			n = 0;
	int			more = 1;
	JsonbValue *elems = palloc(sizeof(JsonbValue) * cap);

	if (list_empty(fp, ']'))
		more = 0;
	while (more > 0)
	{
		if (n == cap)
		{
			cap *= 2;
			elems = repalloc(elems, sizeof(JsonbValue) * cap);
		}
		if (!fast_value(fp, &elems[n], depth + 1))
			return false;
		n++;
		if ((more = list_next(fp, ']')) < 0)
			return false;
	}
	v->type = jbvArray;
	v->val.array.nElems = n;
	v->val.array.elems = elems;
	v->val.array.rawScalar = false;
	return true;
}

static bool
fast_value(FastParse *fp, JsonbValue *v, int depth)
{
	if (depth > FAST_MAX_DEPTH)
		return false;
	skip_space(fp);
	if (fp->p >= fp->end)
		return false;
	switch (*fp->p)
	{
		case '{':
			return fast_object(fp, v, depth);
		case '[':
			return fast_array(fp, v, depth);
		case '"':
			return fast_string(fp, v);
		case 't':
			v->type = jbvBool;
			v->val.boolean = true;
			return fast_literal(fp, "true", 4);
		case 'f':
			v->type = jbvBool;
			v->val.boolean = false;
			return fast_literal(fp, "false", 5);
		case 'n':
			v->type = jbvNull;
			return fast_literal(fp, "null", 4);
		default:
			return fast_number(fp, v);
	}
}

/*
 * The jsonb of a JSON object's text (len bytes, not NUL-terminated), or NULL
 * when the text is not in the plain subset: then ask jsonb_in.  Allocates in
 * the current memory context.
 */
Jsonb *
stripe_jsonb_from_object(const char *text, int len)
{
	FastParse	fp = {text, text + len};
	JsonbValue	root;

	skip_space(&fp);
	if (fp.p >= fp.end || *fp.p != '{' || !fast_object(&fp, &root, 1))
		return NULL;
	skip_space(&fp);
	if (fp.p != fp.end)
		return NULL;
	return JsonbValueToJsonb(&root);
}
