/*-------------------------------------------------------------------------
 * json_page.c
 *		The hot path: one pass of a validating JSON scanner over a Stripe list
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
#include "port/pg_bitutils.h"

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
	StripeFieldSet *fs;
	StripePage *page;
	ParseMode	mode;
	int			field_level;	/* level of an object's top-level fields */
	bool		in_data;		/* inside the list's "data" array, or (arrays
								 * mode) inside a top-level array */
	bool		saw_data;		/* the list had a "data" array */
	bool		saw_root;		/* the document is an object */
	StripeSpan	array_name;		/* arrays mode: the current array's name */
	StripeSpan *root_fields;	/* arrays mode: the root object's fields */
	int			root_slot;		/* slot of the root field being read, or -1 */
	StripeRow  *row;			/* object being read, or NULL */
	int			cur_slot;		/* slot of the field being read, or -1 */
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
 * The scanner.  It accepts exactly the documents pg_parse_json accepts when
 * it does not de-escape (as json_in does): RFC 8259's grammar, a string's
 * \u escapes checked for their four hex digits only (PostgreSQL's json type
 * takes "\ud800" and "\u0000" too), no byte below 0x20 unescaped in a
 * string, a number or a keyword not followed by a letter, digit, '_' or
 * non-ASCII byte.  Two differences, both refusals: nesting deeper than
 * MAX_DEPTH (where PostgreSQL's recursion stops at its stack limit), and a
 * backslash followed by a NUL byte (PostgreSQL's strchr() lets it through).
 * It keeps no token: strings are skipped eight bytes at a time, and the
 * field set sees only the levels it asks about.  pg_parse_json costs most of
 * a scan's CPU; this a fraction.
 */
#define MAX_DEPTH		6400
/* deeper, a refused document is not re-parsed by PostgreSQL's recursion */
#define PG_CHECK_DEPTH	1000

/*
 * The reason a document the scanner refused is not valid: PostgreSQL's own
 * words when its parser agrees (a second pass, on the failure path only),
 * the scanner's otherwise.  Deep documents are not handed to its recursion.
 */
static const char *
malformed_why(char *json, size_t len, const char *bad, int depth, size_t at)
{
	if (depth <= PG_CHECK_DEPTH)
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen(json, len, PG_UTF8, false);
		JsonParseErrorType err = pg_parse_json(lex, &nullSemAction);

		if (err != JSON_SUCCESS)
			return psprintf("malformed JSON from Stripe: %s", json_errdetail(err, lex));
	}
	return psprintf("malformed JSON from Stripe: %s (at byte %zu)", bad, at);
}

/* the bytes a number or a keyword may not be followed by (PostgreSQL's
 * JSON_ALPHANUMERIC_CHAR) */
static inline bool
is_word_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

static inline const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

#define BYTES(c)	(UINT64CONST(0x0101010101010101) * (c))

/* the bytes of w that end a string's plain run: '"', '\\', below 0x20 */
static inline uint64
string_stops(uint64 w)
{
	uint64		q = w ^ BYTES('"');
	uint64		b = w ^ BYTES('\\');

	return ((q - BYTES(1)) & ~q) | ((b - BYTES(1)) & ~b) |
		((w - BYTES(0x20)) & ~w);
}

/*
 * The string at *pp (its opening quote); *pp is left after its closing
 * quote.  *escaped says whether it holds a backslash.  NULL, or what is
 * wrong with it.
 */
static const char *
scan_string(const char **pp, const char *end, bool *escaped)
{
	const unsigned char *s = (const unsigned char *) *pp + 1;
	const unsigned char *e = (const unsigned char *) end;

	*escaped = false;
	for (;;)
	{
		while (e - s >= 8)
		{
			uint64		w;
			uint64		stops;

			memcpy(&w, s, 8);
			stops = string_stops(w) & BYTES(0x80);
			if (stops != 0)
			{
#ifndef WORDS_BIGENDIAN
				/* the lowest flag is exact (borrows only run upwards) */
				s += pg_rightmost_one_pos64(stops) / 8;
#endif
				break;
			}
			s += 8;
		}
		if (s >= e)
			return "the input ends inside a string";
		if (*s == '"')
			break;
		if (*s == '\\')
		{
			*escaped = true;
			if (++s >= e)
				return "the input ends inside a string";
			if (*s == 'u')
			{
				for (int i = 0; i < 4; i++)
				{
					if (++s >= e)
						return "the input ends inside a string";
					if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
						  (*s >= 'A' && *s <= 'F')))
						return "\\u is not followed by four hex digits";
				}
			}
			else if (*s == '\0' || strchr("\"\\/bfnrt", *s) == NULL)
				return "a string has an invalid escape";
		}
		else if (*s < 0x20)
			return "a string holds a control character";
		s++;
	}
	*pp = (const char *) s + 1;
	return NULL;
}

/* a number (PostgreSQL's json_lex_number), or a keyword; false if neither */
static bool
scan_scalar(const char **pp, const char *end)
{
	const char *s = *pp;

	if (*s == '-' || (*s >= '0' && *s <= '9'))
	{
		if (*s == '-')
			s++;
		if (s < end && *s == '0')
			s++;
		else if (s < end && *s >= '1' && *s <= '9')
			while (s < end && *s >= '0' && *s <= '9')
				s++;
		else
			return false;
		if (s < end && *s == '.')
		{
			if (++s == end || *s < '0' || *s > '9')
				return false;
			while (s < end && *s >= '0' && *s <= '9')
				s++;
		}
		if (s < end && (*s == 'e' || *s == 'E'))
		{
			s++;
			if (s < end && (*s == '+' || *s == '-'))
				s++;
			if (s == end || *s < '0' || *s > '9')
				return false;
			while (s < end && *s >= '0' && *s <= '9')
				s++;
		}
		if (s < end && is_word_char((unsigned char) *s))
			return false;
	}
	else
	{
		while (s < end && is_word_char((unsigned char) *s))
			s++;
		if (!((s - *pp == 4 && (memcmp(*pp, "true", 4) == 0 || memcmp(*pp, "null", 4) == 0)) ||
			  (s - *pp == 5 && memcmp(*pp, "false", 5) == 0)))
			return false;
	}
	*pp = s;
	return true;
}

/* the value at v is the token true (what follows it is checked later) */
static inline bool
is_true(const char *v, const char *end)
{
	return end - v >= 4 && memcmp(v, "true", 4) == 0;
}

static void
begin_row(ParseState *st, char *start)
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
	st->row->object.start = start;
	st->row->object.len = 0;
	st->row->fields = palloc0(sizeof(StripeSpan) * Max(st->fs->nslots, 1));
	st->row->deleted = false;
}

static void
end_row(ParseState *st, const char *end)
{
	st->row->object.len = end - st->row->object.start;
	/* the array's name wins over an element's own field of that name */
	if (st->mode == MODE_ARRAYS && st->fs->kind_slot >= 0)
		st->row->fields[st->fs->kind_slot] = st->array_name;
	st->page->nrows++;
	st->row = NULL;
}

/*
 * A field whose value starts at v, at level (1: the root object's fields).
 * plain: its name has no backslash; a name with an escape is no name Stripe
 * uses ("x\"id" is not "id"), so it is not looked up.
 */
static void
field_start(ParseState *st, int level, bool plain, const char *name, int len,
			char *v, const char *end)
{
	if (level == st->field_level && st->row != NULL)
	{
		st->cur_slot = -1;
		if (!plain)
			return;
		st->cur_slot = fieldset_lookup(st->fs, name, len);
		if (st->cur_slot >= 0)
			st->row->fields[st->cur_slot].start = v;
		if (len == 7 && memcmp(name, "deleted", 7) == 0 && is_true(v, end))
			st->row->deleted = true;
	}
	else if (st->mode == MODE_LIST && level == 1)
	{
		if (!plain)
			return;
		if (len == 4 && memcmp(name, "data", 4) == 0)
			st->in_data = st->saw_data = (*v == '[');
		else if (len == 8 && memcmp(name, "has_more", 8) == 0)
			st->page->has_more = is_true(v, end);
	}
	else if (st->mode == MODE_ARRAYS && level == 1)
	{
		st->root_slot = -1;
		st->in_data = (*v == '[');
		st->array_name.start = NULL;
		st->array_name.len = 0;
		if (!plain)
			return;				/* an escaped name: its rows get no kind */
		if (st->in_data)
		{
			/* the name with its quotes: a JSON string, like any other value */
			st->array_name.start = (char *) name - 1;
			st->array_name.len = len + 2;
		}
		st->root_slot = fieldset_lookup(st->fs, name, len);
		if (st->root_slot >= 0)
			st->root_fields[st->root_slot].start = v;
	}
}

/* the value of the field at level ended just before v */
static void
field_end(ParseState *st, int level, const char *v)
{
	if (level == st->field_level && st->row != NULL)
	{
		if (st->cur_slot >= 0)
		{
			StripeSpan *span = &st->row->fields[st->cur_slot];

			span->len = v - span->start;
		}
		st->cur_slot = -1;
	}
	else if (st->mode == MODE_LIST && level == 1)
		st->in_data = false;
	else if (st->mode == MODE_ARRAYS && level == 1)
	{
		if (st->root_slot >= 0)
		{
			StripeSpan *span = &st->root_fields[st->root_slot];

			span->len = v - span->start;
		}
		st->root_slot = -1;
		st->in_data = false;
	}
}

/*
 * The scanner's position: depth is the number of open containers, and so
 * the level of the fields or elements of the innermost one.
 */
typedef struct Scan
{
	ParseState *st;
	char	   *p;
	const char *end;
	const char *bad;			/* what is wrong, once something is */
	int			depth;
	int			max_depth;
	char		stack[MAX_DEPTH];	/* '{' or '[' per open level */
} Scan;

typedef enum ScanStep
{
	STEP_VALUE,					/* a value starts at p */
	STEP_KEY,					/* an object's key starts at p */
	STEP_ELEMENT,				/* an array's element starts at p */
	STEP_CLOSED,				/* an object ended just before p */
	STEP_AFTER,					/* a value ended just before p */
	STEP_DONE,
	STEP_BAD					/* bad says why */
} ScanStep;

static const char *const ENDED = "the input ended unexpectedly";

static inline ScanStep
scan_fail(Scan *sc, const char *bad)
{
	sc->bad = bad;
	return STEP_BAD;
}

/* skips whitespace; false when that is the end of the input */
static inline bool
scan_ws(Scan *sc)
{
	sc->p = (char *) skip_ws(sc->p, sc->end);
	return sc->p < sc->end;
}

/* a value at p: a container opens, or a scalar is skipped */
static ScanStep
scan_value(Scan *sc)
{
	ParseState *st = sc->st;
	const char *q = sc->p;
	char		c = *sc->p;

	if (c == '"')
	{
		bool		escaped;
		const char *bad = scan_string(&q, sc->end, &escaped);

		if (bad != NULL)
			return scan_fail(sc, bad);
		sc->p = (char *) q;
		return STEP_AFTER;
	}
	if (c != '{' && c != '[')
	{
		if (!scan_scalar(&q, sc->end))
			return scan_fail(sc, "a value is not valid");
		sc->p = (char *) q;
		return STEP_AFTER;
	}
	if (sc->depth == MAX_DEPTH)
		return scan_fail(sc, psprintf("nested more than %d deep", MAX_DEPTH));
	if (c == '{' && sc->depth == 0)
	{
		st->saw_root = true;
		if (st->mode == MODE_OBJECT)
			begin_row(st, sc->p);
	}
	sc->stack[sc->depth++] = c;
	sc->max_depth = Max(sc->max_depth, sc->depth);
	sc->p++;
	if (!scan_ws(sc))
		return scan_fail(sc, ENDED);
	if (*sc->p != (c == '{' ? '}' : ']'))
		return c == '{' ? STEP_KEY : STEP_ELEMENT;
	sc->p++;
	sc->depth--;
	return c == '{' ? STEP_CLOSED : STEP_AFTER;
}

/* a key, its ':' and the start of its value */
static ScanStep
scan_key(Scan *sc)
{
	const char *name = sc->p + 1;
	const char *q = sc->p;
	const char *bad;
	bool		escaped;

	if (*sc->p != '"')
		return scan_fail(sc, "an object's key is not a string");
	if ((bad = scan_string(&q, sc->end, &escaped)) != NULL)
		return scan_fail(sc, bad);
	sc->p = (char *) q;
	if (!scan_ws(sc))
		return scan_fail(sc, ENDED);
	if (*sc->p != ':')
		return scan_fail(sc, "a key is not followed by ':'");
	sc->p++;
	if (!scan_ws(sc))
		return scan_fail(sc, ENDED);
	field_start(sc->st, sc->depth, !escaped, name, q - 1 - name, sc->p, sc->end);
	return STEP_VALUE;
}

/* after a value: the end of the document, or a ',' or the container's end */
static ScanStep
scan_after(Scan *sc)
{
	ParseState *st = sc->st;
	char		open;

	if (sc->depth == 0)
		return skip_ws(sc->p, sc->end) == sc->end ? STEP_DONE :
			scan_fail(sc, "something follows the document");
	open = sc->stack[sc->depth - 1];
	if (open == '{')
		field_end(st, sc->depth, sc->p);
	else if (st->mode != MODE_OBJECT && st->in_data && sc->depth == 2 && st->row != NULL)
		end_row(st, sc->p);
	if (!scan_ws(sc))
		return scan_fail(sc, ENDED);
	if (*sc->p == ',')
	{
		sc->p++;
		if (!scan_ws(sc))
			return scan_fail(sc, ENDED);
		return open == '{' ? STEP_KEY : STEP_ELEMENT;
	}
	if (*sc->p != (open == '{' ? '}' : ']'))
		return scan_fail(sc, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
	sc->p++;
	sc->depth--;
	return open == '{' ? STEP_CLOSED : STEP_AFTER;
}

/* one pass over json[0..len): true, or false with sc->bad set */
static bool
scan_document(Scan *sc)
{
	ParseState *st = sc->st;
	ScanStep	step = STEP_VALUE;

	if (!scan_ws(sc))
	{
		sc->bad = ENDED;
		return false;
	}
	for (;;)
	{
		switch (step)
		{
			case STEP_VALUE:
				step = scan_value(sc);
				break;
			case STEP_KEY:
				step = scan_key(sc);
				break;
			case STEP_ELEMENT:
				/* the elements of "data", or of any top-level array in arrays mode */
				if (st->mode != MODE_OBJECT && st->in_data && sc->depth == 2 && *sc->p == '{')
					begin_row(st, sc->p);
				step = STEP_VALUE;
				break;
			case STEP_CLOSED:
				if (st->mode == MODE_OBJECT && sc->depth == 0 && st->row != NULL)
					end_row(st, sc->p);
				step = STEP_AFTER;
				break;
			case STEP_AFTER:
				step = scan_after(sc);
				break;
			case STEP_DONE:
				return true;
			case STEP_BAD:
				return false;
		}
	}
}

/*
 * Parses json[0..len) (not read beyond) into page: a list page (is_list), or
 * a single object, which is one row unless the field set says its arrays
 * hold the rows.  Allocates in the current memory context; the spans point
 * into json.  Returns false with *why set when the document is not valid
 * JSON of the expected shape.
 */
bool
stripe_parse_page(char *json, size_t len, bool is_list, StripeFieldSet *fs,
				  StripePage *page, const char **why)
{
	ParseState	st;
	Scan		sc;

	memset(page, 0, sizeof(StripePage));
	if (len == 0)
	{
		*why = "empty response body";
		return false;
	}
	memset(&st, 0, sizeof(st));
	st.fs = fs;
	st.page = page;
	st.mode = is_list ? MODE_LIST : fs->arrays ? MODE_ARRAYS : MODE_OBJECT;
	/* root {, then "data" or another array [, then each element { */
	st.field_level = st.mode == MODE_OBJECT ? 1 : 3;
	st.cur_slot = -1;
	st.root_slot = -1;
	if (st.mode == MODE_ARRAYS)
		st.root_fields = palloc0(sizeof(StripeSpan) * Max(fs->nslots, 1));

	sc.st = &st;
	sc.p = json;
	sc.end = json + len;
	sc.bad = NULL;
	sc.depth = sc.max_depth = 0;
	if (!scan_document(&sc))
	{
		*why = malformed_why(json, len, sc.bad, sc.max_depth, sc.p - json);
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
