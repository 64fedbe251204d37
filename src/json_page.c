/*-------------------------------------------------------------------------
 * json_page.c
 *		The hot path: one pass of PostgreSQL's JSON parser over a Stripe list
 *		page (or a single object) that records, for each object, its text span
 *		and the spans of the top-level fields the scan wants.  Nothing is
 *		converted here; values and attrs are built later only when needed.
 *
 *		A field set marked with stripe_fieldset_rows_from_arrays() reads a
 *		single object differently: every object element of each of its
 *		top-level arrays is a row (GET /v1/balance: one row per kind and
 *		currency).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "catalog.h"
#include "json_page.h"

typedef struct FieldEntry
{
	const char *name;
	int			len;
	int			slot;
} FieldEntry;

#define MAX_FILTER_LEN 64

/*
 * Stripe's pages hold at most 100 objects.  Far more is not a Stripe page,
 * and each object costs a span per wanted field: a body of millions of {}
 * would take gigabytes.
 */
#define MAX_PAGE_ROWS	(STRIPE_PAGE_SIZE * 10)

struct StripeFieldSet
{
	FieldEntry *entries;
	int			n;
	int			cap;
	int			nslots;
	bool		has_len[MAX_FILTER_LEN];	/* a wanted name has this length */
	bool		arrays;			/* single objects: rows from top-level arrays */
	int			kind_slot;		/* slot for the array's name, or -1 */
};

typedef enum ParseMode
{
	MODE_LIST,					/* {"data": [row, …], "has_more": …} */
	MODE_OBJECT,				/* the root object is the row */
	MODE_ARRAYS					/* {"x": [row, …], "y": [row, …], …} */
} ParseMode;

typedef struct ParseState
{
	JsonLexContext *lex;
	StripeFieldSet *fs;
	StripePage *page;
	ParseMode	mode;
	int			field_level;	/* lex_level of an object's top-level fields */
	bool		in_data;		/* inside the list's "data" array, or (arrays
								 * mode) inside a top-level array */
	bool		saw_data;		/* the list had a "data" array */
	bool		saw_root;		/* the document is an object */
	StripeSpan	array_name;		/* arrays mode: the current array's name */
	StripeSpan *root_fields;	/* arrays mode: the root object's fields */
	int			root_slot;		/* slot of the root field being read, or -1 */
	StripeRow  *row;			/* object being read, or NULL */
	int			cur_slot;		/* slot of the field being read, or -1 */
	bool		cur_deleted;	/* the field being read is "deleted" */
	int			rows_cap;
} ParseState;

StripeFieldSet *
stripe_fieldset_create(int nslots)
{
	StripeFieldSet *fs = palloc0(sizeof(StripeFieldSet));

	fs->nslots = nslots;
	fs->kind_slot = -1;
	fs->cap = 8;
	fs->entries = palloc(sizeof(FieldEntry) * fs->cap);
	return fs;
}

/*
 * Asks for a field in the given slot; returns the slot that will hold it,
 * an earlier one when the field was already asked for.
 */
int
stripe_fieldset_add(StripeFieldSet *fs, const char *name, int slot)
{
	for (int i = 0; i < fs->n; i++)
		if (strcmp(fs->entries[i].name, name) == 0)
			return fs->entries[i].slot;
	if (fs->n == fs->cap)
	{
		fs->cap *= 2;
		fs->entries = repalloc(fs->entries, sizeof(FieldEntry) * fs->cap);
	}
	fs->entries[fs->n].name = pstrdup(name);
	fs->entries[fs->n].len = strlen(name);
	fs->entries[fs->n].slot = slot;
	fs->n++;
	if (strlen(name) < MAX_FILTER_LEN)
		fs->has_len[strlen(name)] = true;
	return slot;
}

static int
entry_cmp(const void *a, const void *b)
{
	const FieldEntry *x = a;
	const FieldEntry *y = b;
	int			c = memcmp(x->name, y->name, Min(x->len, y->len));

	return c != 0 ? c : x->len - y->len;
}

void
stripe_fieldset_finish(StripeFieldSet *fs)
{
	qsort(fs->entries, fs->n, sizeof(FieldEntry), entry_cmp);
}

/*
 * Single objects parsed with this field set give one row per object element
 * of each top-level array, instead of one row for the whole object.  The
 * name of the array goes to kind_slot (as a JSON string) when that is not
 * -1.  A wanted field an element lacks is taken from the root object, so
 * that a balance's "livemode" is on each of its rows.
 */
void
stripe_fieldset_rows_from_arrays(StripeFieldSet *fs, int kind_slot)
{
	Assert(kind_slot >= -1 && kind_slot < fs->nslots);
	fs->arrays = true;
	fs->kind_slot = kind_slot;
}

static int
fieldset_lookup(StripeFieldSet *fs, const char *name, int len)
{
	FieldEntry	key = {name, len, 0};
	FieldEntry *hit;

	/* most fields of an object are not wanted: reject them by length first */
	if (len < MAX_FILTER_LEN && !fs->has_len[len])
		return -1;
	hit = bsearch(&key, fs->entries, fs->n, sizeof(FieldEntry), entry_cmp);
	return hit ? hit->slot : -1;
}

/*
 * The name of the field whose value is the current token.  The lexer runs
 * without de-escaping (much faster), so take the name's raw text back from
 * the input: it is the string just before the ':' that precedes the value.
 * Returns false for names with escapes, which no Stripe field has: walking
 * back from the closing quote, a backslash, or a quote that a backslash
 * escapes ("x\"id" is not "id").
 */
static bool
current_field_name(JsonLexContext *lex, const char **name, int *len)
{
	const char *p = lex->prev_token_terminator - 1;	/* the ':' */
	const char *end;

	p--;
	while (p > lex->input && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p--;
	if (p <= lex->input || *p != '"')
		return false;
	end = p;
	p--;
	while (p >= lex->input && *p != '"')
	{
		if (*p == '\\')
			return false;
		p--;
	}
	if (p < lex->input || (p > lex->input && p[-1] == '\\'))
		return false;
	*name = p + 1;
	*len = end - (p + 1);
	return true;
}

static void
begin_row(ParseState *st)
{
	StripePage *page = st->page;

	if (page->nrows == MAX_PAGE_ROWS)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("Stripe's answer holds more than %d objects", MAX_PAGE_ROWS),
				 errdetail("A page of a Stripe list holds at most %d.", STRIPE_PAGE_SIZE)));
	if (page->nrows == st->rows_cap)
	{
		st->rows_cap = st->rows_cap ? st->rows_cap * 2 : STRIPE_PAGE_SIZE;
		page->rows = page->rows ? repalloc(page->rows, sizeof(StripeRow) * st->rows_cap)
			: palloc(sizeof(StripeRow) * st->rows_cap);
	}
	st->row = &page->rows[page->nrows];
	st->row->object.start = st->lex->token_start;
	st->row->object.len = 0;
	st->row->fields = palloc0(sizeof(StripeSpan) * Max(st->fs->nslots, 1));
	st->row->deleted = false;
}

static void
end_row(ParseState *st)
{
	st->row->object.len = st->lex->prev_token_terminator - st->row->object.start;
	/* the array's name wins over an element's own field of that name */
	if (st->mode == MODE_ARRAYS && st->fs->kind_slot >= 0)
		st->row->fields[st->fs->kind_slot] = st->array_name;
	st->page->nrows++;
	st->row = NULL;
}

static void
ps_object_field_start(void *state, char *fname, bool isnull)
{
	ParseState *st = state;
	JsonLexContext *lex = st->lex;
	const char *name;
	int			len;

	if (lex->lex_level == st->field_level && st->row != NULL)
	{
		st->cur_slot = -1;
		st->cur_deleted = false;
		if (!current_field_name(lex, &name, &len))
			return;
		st->cur_slot = fieldset_lookup(st->fs, name, len);
		if (st->cur_slot >= 0)
			st->row->fields[st->cur_slot].start = lex->token_start;
		if (len == 7 && memcmp(name, "deleted", 7) == 0 &&
			lex->token_type == JSON_TOKEN_TRUE)
			st->row->deleted = true;
	}
	else if (st->mode == MODE_LIST && lex->lex_level == 1)
	{
		if (!current_field_name(lex, &name, &len))
			return;
		if (len == 4 && memcmp(name, "data", 4) == 0)
			st->in_data = st->saw_data = (lex->token_type == JSON_TOKEN_ARRAY_START);
		else if (len == 8 && memcmp(name, "has_more", 8) == 0)
			st->page->has_more = (lex->token_type == JSON_TOKEN_TRUE);
	}
	else if (st->mode == MODE_ARRAYS && lex->lex_level == 1)
	{
		st->root_slot = -1;
		st->in_data = (lex->token_type == JSON_TOKEN_ARRAY_START);
		st->array_name.start = NULL;
		st->array_name.len = 0;
		if (!current_field_name(lex, &name, &len))
			return;				/* an escaped name: its rows get no kind */
		if (st->in_data)
		{
			/* the name with its quotes: a JSON string, like any other value */
			st->array_name.start = (char *) name - 1;
			st->array_name.len = len + 2;
		}
		st->root_slot = fieldset_lookup(st->fs, name, len);
		if (st->root_slot >= 0)
			st->root_fields[st->root_slot].start = lex->token_start;
	}
}

static void
ps_object_field_end(void *state, char *fname, bool isnull)
{
	ParseState *st = state;
	JsonLexContext *lex = st->lex;

	if (lex->lex_level == st->field_level && st->row != NULL)
	{
		if (st->cur_slot >= 0)
		{
			StripeSpan *span = &st->row->fields[st->cur_slot];

			span->len = lex->prev_token_terminator - span->start;
		}
		st->cur_slot = -1;
	}
	else if (st->mode == MODE_LIST && lex->lex_level == 1)
		st->in_data = false;
	else if (st->mode == MODE_ARRAYS && lex->lex_level == 1)
	{
		if (st->root_slot >= 0)
		{
			StripeSpan *span = &st->root_fields[st->root_slot];

			span->len = lex->prev_token_terminator - span->start;
		}
		st->root_slot = -1;
		st->in_data = false;
	}
}

static void
ps_array_element_start(void *state, bool isnull)
{
	ParseState *st = state;

	/* the elements of "data", or of any top-level array in arrays mode */
	if (st->mode != MODE_OBJECT && st->in_data && st->lex->lex_level == 2 &&
		st->lex->token_type == JSON_TOKEN_OBJECT_START)
		begin_row(st);
}

static void
ps_array_element_end(void *state, bool isnull)
{
	ParseState *st = state;

	if (st->mode != MODE_OBJECT && st->in_data && st->lex->lex_level == 2 &&
		st->row != NULL)
		end_row(st);
}

/* single-object documents: the root object is the row */
static void
ps_object_start(void *state)
{
	ParseState *st = state;

	if (st->lex->lex_level != 0)
		return;
	st->saw_root = true;
	if (st->mode == MODE_OBJECT)
		begin_row(st);
}

static void
ps_object_end(void *state)
{
	ParseState *st = state;

	if (st->mode == MODE_OBJECT && st->lex->lex_level == 0 && st->row != NULL)
		end_row(st);
}

/*
 * Parses json[0..len) (NUL-terminated) into page: a list page (is_list), or
 * a single object, which is one row unless the field set says its arrays
 * hold the rows.  Allocates in the current memory context; the spans point
 * into json.  Returns false with *why set when the document is not valid
 * JSON of the expected shape.
 */
bool
stripe_parse_page(char *json, size_t len, bool is_list, StripeFieldSet *fs,
				  StripePage *page, const char **why)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	ParseState	st;
	JsonParseErrorType err;

	memset(page, 0, sizeof(StripePage));
	if (len == 0)
	{
		*why = "empty response body";
		return false;
	}
	/* don't de-escape strings while lexing: that is most of the cost */
	lex = makeJsonLexContextCstringLen(json, len, PG_UTF8, false);

	memset(&st, 0, sizeof(st));
	st.lex = lex;
	st.fs = fs;
	st.page = page;
	st.mode = is_list ? MODE_LIST : fs->arrays ? MODE_ARRAYS : MODE_OBJECT;
	/* root {, then "data" or another array [, then each element { */
	st.field_level = st.mode == MODE_OBJECT ? 1 : 3;
	st.cur_slot = -1;
	st.root_slot = -1;
	if (st.mode == MODE_ARRAYS)
		st.root_fields = palloc0(sizeof(StripeSpan) * Max(fs->nslots, 1));

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_field_start = ps_object_field_start;
	sem.object_field_end = ps_object_field_end;
	if (st.mode != MODE_OBJECT)
	{
		sem.array_element_start = ps_array_element_start;
		sem.array_element_end = ps_array_element_end;
	}
	if (st.mode != MODE_LIST)
	{
		sem.object_start = ps_object_start;
		sem.object_end = ps_object_end;
	}

	err = pg_parse_json(lex, &sem);
	if (err != JSON_SUCCESS)
	{
		*why = psprintf("malformed JSON from Stripe: %s", json_errdetail(err, lex));
		return false;
	}
	if ((st.mode == MODE_OBJECT && page->nrows != 1) ||
		(st.mode == MODE_ARRAYS && !st.saw_root))
	{
		*why = "Stripe's answer is not a JSON object";
		return false;
	}
	if (st.mode == MODE_LIST && !st.saw_data)
	{
		*why = "Stripe's answer is not a list";
		return false;
	}
	/* the fields an element lacks come from the root object (livemode) */
	if (st.mode == MODE_ARRAYS)
		for (int r = 0; r < page->nrows; r++)
			for (int slot = 0; slot < fs->nslots; slot++)
				if (page->rows[r].fields[slot].start == NULL)
					page->rows[r].fields[slot] = st.root_fields[slot];
	return true;
}

/*
 * The cursor for the page after this list page (has_more): the id of its
 * last object, de-escaped.  NULL, with *why set ("it holds no object"), when
 * the page cannot lead on: it has no object, its last object's id is not a
 * non-empty string, or that id is prev, the cursor this page was asked with
 * (the next request would be this one again, forever).  For every scan that
 * follows cursors: the FDW's, the sync's windows.
 */
char *
stripe_page_next_cursor(StripePage *page, int id_slot, const char *prev, const char **why)
{
	StripeSpan *span;
	char	   *id;

	if (page->nrows == 0)
	{
		*why = "it holds no object";
		return NULL;
	}
	span = &page->rows[page->nrows - 1].fields[id_slot];
	if (span->start == NULL || span->len <= 2 || span->start[0] != '"')
	{
		*why = "its last object has no id";
		return NULL;
	}
	id = stripe_span_text(span);
	if (prev != NULL && strcmp(id, prev) == 0)
	{
		*why = "its last object is the one it was asked to start after";
		return NULL;
	}
	return id;
}

/*
 * A JSON integer that fits an int64 (no sign other than '-', no fraction, no
 * exponent, no string), into *out; false for anything else.
 */
bool
stripe_span_int64(StripeSpan *span, int64 *out)
{
	const char *p;
	const char *end;
	bool		neg;
	uint64		v = 0;

	if (span->start == NULL || span->len <= 0 || span->len > 20)
		return false;
	p = span->start;
	end = p + span->len;
	neg = (*p == '-');
	if (neg)
		p++;
	if (p == end)
		return false;
	for (; p < end; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		if (v > (PG_UINT64_MAX - (*p - '0')) / 10)
			return false;
		v = v * 10 + (*p - '0');
	}
	if (neg ? v > (uint64) PG_INT64_MAX + 1 : v > (uint64) PG_INT64_MAX)
		return false;
	*out = neg ? (int64) (0 - v) : (int64) v;
	return true;
}

bool
stripe_span_is_null(StripeSpan *span)
{
	return span->start == NULL || (span->len == 4 && memcmp(span->start, "null", 4) == 0);
}

/*
 * The text of a value: strings de-escaped, other scalars and structures as
 * their JSON text.  Palloc'd, NUL-terminated.
 */
char *
stripe_span_text(StripeSpan *span)
{
	if (span->len >= 2 && span->start[0] == '"')
	{
		if (memchr(span->start, '\\', span->len) == NULL)
			return pnstrdup(span->start + 1, span->len - 2);
		else
		{
			JsonLexContext *lex;
			JsonParseErrorType err;

			lex = makeJsonLexContextCstringLen(span->start, span->len,
											   GetDatabaseEncoding(), true);
			err = json_lex(lex);
			if (err != JSON_SUCCESS)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("invalid JSON string from Stripe: %s",
								json_errdetail(err, lex))));
			return pstrdup(lex->strval->data);
		}
	}
	return pnstrdup(span->start, span->len);
}
