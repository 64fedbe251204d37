/*-------------------------------------------------------------------------
 * nested.c
 *		Lists that Stripe inlines only the first page of: an invoice's lines,
 *		a subscription's items… ({"object": "list", "data": [at most 10],
 *		"has_more": true, "url": "/v1/invoices/in_…/lines"}).  For the objects
 *		of a page whose list has more, the rest is fetched (GET url, page
 *		after page, several objects' lists at once through an owned stream of
 *		http.c, so with its rate limit and retries) and spliced into the
 *		object's text: every element in "data", "has_more" false.  The row's
 *		spans then point into that text, so attrs and the list's column hold
 *		every element.
 *
 *		The cheap part runs on every page: an object is looked at only when
 *		its text says "has_more": true somewhere, which a page of objects
 *		whose lists are whole never does (a top-level list page's own
 *		has_more is outside the objects' spans).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "nested.h"
#include "rowconv.h"

/* one nested list of one object still to complete */
typedef struct NestedJob
{
	int			row;
	StripeSpan	has_more;		/* spans in the object's text */
	StripeSpan	data;
	char	   *url;
	char	   *after;			/* the last element's id */
	StringInfoData more;		/* the elements fetched, comma-separated */
	int			count;			/* elements in the list so far */
	bool		busy;
	bool		done;
	bool		whole;			/* has_more false at the end */
} NestedJob;

typedef struct NestedState
{
	const StripeObjectDef *def;
	NestedJob  *jobs;
	int			njobs;
	ErrorData **errors;
	StripeFieldSet *idfs;		/* "id" of a sub-list page's elements */
	int64		total;			/* elements fetched for all the rows */
	bool		full;			/* STRIPE_NESTED_PAGE_MAX reached */
} NestedState;

/* a sub-list page's answer, parsed as it arrives (a malformed one is retried) */
typedef struct NestedPage
{
	StripeFieldSet *fs;
	StripePage	page;
} NestedPage;

/* "has_more", optional blanks, ':', optional blanks, "true", anywhere in the text */
static bool
says_has_more(const char *text, int len)
{
	static const char key[] = "\"has_more\"";
	const char *end = text + len;
	const char *p = text;

	while (p < end && (p = memchr(p, '"', end - p)) != NULL)
	{
		const char *q;

		if (end - p < (ptrdiff_t) sizeof(key) - 1 || memcmp(p, key, sizeof(key) - 1) != 0)
		{
			p++;
			continue;
		}
		q = p + sizeof(key) - 1;
		while (q < end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r'))
			q++;
		if (q < end && *q == ':')
			q++;
		while (q < end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r'))
			q++;
		if (end - q >= 4 && memcmp(q, "true", 4) == 0)
			return true;
		p = q;
	}
	return false;
}

/* Whether some object of the rows may have a nested list to complete. */
bool
stripe_nested_pending(const StripeObjectDef *def, StripeRow *rows, int nrows)
{
	if (def == NULL || def->nested_lists == NULL)
		return false;
	for (int r = 0; r < nrows; r++)
		if (!rows[r].deleted && rows[r].object.start != NULL &&
			says_has_more(rows[r].object.start, rows[r].object.len))
			return true;
	return false;
}

static bool
nested_check(StripeResponse *resp, void *arg, const char **why)
{
	NestedPage *np = arg;

	return stripe_parse_page(resp->body, resp->len, true, np->fs, &np->page, why);
}

/* a path Stripe gave for the rest of a list: under /v1/, nothing that leaves it */
static bool
safe_list_path(const char *url)
{
	if (strncmp(url, "/v1/", 4) != 0 || strstr(url, "..") != NULL)
		return false;
	for (const char *p = url; *p; p++)
		if (!(isalnum((unsigned char) *p) || strchr("/_-.?=&", *p) != NULL))
			return false;
	return true;
}

/* an id Stripe gave, safe to put in a query string as it is */
static bool
safe_id(const char *id)
{
	if (*id == '\0')
		return false;
	for (const char *p = id; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '-'))
			return false;
	return true;
}

static ErrorData *
job_error(const char *table, const char *field, const char *why)
{
	ErrorData  *e = palloc0(sizeof(ErrorData));

	e->elevel = ERROR;
	e->sqlerrcode = ERRCODE_DATA_EXCEPTION;
	e->message = psprintf("the list \"%s\" of a Stripe %s cannot be read whole", field, table);
	e->detail = pstrdup(why);
	return e;
}

/*
 * Finds the nested lists of one object that say has_more; a list that is
 * not of Stripe's shape is the object's error.
 */
static void
find_jobs(NestedState *ns, StripeRow *row, int r, char **fields, int nfields,
		  StripeFieldSet *ofs, StripeFieldSet *lfs, List **jobs)
{
	StripePage obj;
	const char *why = NULL;
	char	   *text = pnstrdup(row->object.start, row->object.len);

	if (!stripe_parse_page(text, row->object.len, false, ofs, &obj, &why))
		return;					/* the upsert reports the object itself */
	for (int f = 0; f < nfields; f++)
	{
		StripeSpan *span = &obj.rows[0].fields[f];
		StripePage list,
					elems;
		NestedJob  *job;
		char	   *ltext;

		if (span->start == NULL || span->start[0] != '{' ||
			!says_has_more(span->start, span->len))
			continue;
		ltext = pnstrdup(span->start, span->len);
		if (!stripe_parse_page(ltext, span->len, false, lfs, &list, &why) ||
			!stripe_parse_page(ltext, span->len, true, ns->idfs, &elems, &why))
		{
			ns->errors[r] = job_error(ns->def->object, fields[f], why);
			return;
		}
		if (list.rows[0].fields[0].len != 4 || memcmp(list.rows[0].fields[0].start, "true", 4) != 0)
			continue;			/* an element's own has_more */
		job = palloc0(sizeof(NestedJob));
		job->row = r;
		/* the spans of the list's fields, moved from the copy into the object */
		job->has_more.start = row->object.start + (span->start - text) +
			(list.rows[0].fields[0].start - ltext);
		job->has_more.len = 4;
		job->data.start = row->object.start + (span->start - text) +
			(list.rows[0].fields[2].start - ltext);
		job->data.len = list.rows[0].fields[2].len;
		if (list.rows[0].fields[1].start == NULL || list.rows[0].fields[1].start[0] != '"' ||
			list.rows[0].fields[2].start == NULL || list.rows[0].fields[2].start[0] != '[' ||
			!safe_list_path(job->url = stripe_span_text(&list.rows[0].fields[1])) ||
			(job->after = stripe_page_next_cursor(&elems, 0, NULL, &why)) == NULL ||
			!safe_id(job->after))
		{
			ns->errors[r] = job_error(ns->def->object, fields[f],
									  "its url or its last element's id is not Stripe's");
			return;
		}
		job->count = elems.nrows;
		initStringInfo(&job->more);
		*jobs = lappend(*jobs, job);
	}
}

static bool
nested_feed(void *arg, StripeManyReq *req)
{
	NestedState *ns = arg;

	for (int j = 0; j < ns->njobs; j++)
	{
		NestedJob  *job = &ns->jobs[j];
		NestedPage *np;

		if (job->busy || job->done || ns->full || ns->errors[job->row] != NULL)
			continue;
		np = palloc0(sizeof(NestedPage));
		np->fs = ns->idfs;
		req->path = psprintf("%s%climit=%d&starting_after=%s", job->url,
							 strchr(job->url, '?') ? '&' : '?', STRIPE_PAGE_SIZE, job->after);
		req->check = nested_check;
		req->check_arg = np;
		req->cxt = CurrentMemoryContext;
		req->tag = j;
		/* Stripe refusing the sub-list fails this object alone */
		req->soft = true;
		job->busy = true;
		return true;
	}
	return false;
}

static void
nested_done(void *arg, StripeManyReq *req)
{
	NestedState *ns = arg;
	NestedJob  *job = &ns->jobs[req->tag];
	NestedPage *np = req->check_arg;
	const char *why = NULL;
	char	   *next;

	job->busy = false;
	if (req->error != NULL)
	{
		if (ns->errors[job->row] == NULL)
			ns->errors[job->row] = req->error;
		job->done = true;
		return;
	}
	for (int i = 0; i < np->page.nrows; i++)
	{
		if (ns->total >= STRIPE_NESTED_PAGE_MAX)
		{
			if (!ns->full)
				ereport(WARNING,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("the lists of a page of Stripe %ss hold more than %d elements: the rest is left out",
								ns->def->object, STRIPE_NESTED_PAGE_MAX),
						 errdetail("Their \"has_more\" stays true.")));
			ns->full = true;
			job->done = true;
			break;
		}
		if (job->count >= STRIPE_NESTED_MAX)
		{
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("a list of a Stripe %s holds more than %d elements: the rest is left out",
							ns->def->object, STRIPE_NESTED_MAX),
					 errdetail("It is %s; its \"has_more\" stays true.", job->url)));
			job->done = true;
			return;
		}
		if (job->more.len > 0)
			appendStringInfoChar(&job->more, ',');
		appendBinaryStringInfo(&job->more, np->page.rows[i].object.start,
							   np->page.rows[i].object.len);
		job->count++;
		ns->total++;
	}
	if (job->done)
		return;
	if (!np->page.has_more)
	{
		job->whole = true;
		job->done = true;
	}
	else if ((next = stripe_page_next_cursor(&np->page, 0, job->after, &why)) == NULL ||
			 !safe_id(next))
	{
		ns->errors[job->row] = job_error(ns->def->object, job->url,
										 why ? why : "an element's id is not Stripe's");
		job->done = true;
	}
	else
		job->after = next;
	/* the elements and the cursor are copied: the answer can go */
	pfree(req->resp.body);
	req->resp.body = NULL;
}

/*
 * The object's text with its lists' data arrays grown and their has_more
 * false, in the caller's context.  Jobs of one row come in text order.
 */
static char *
splice_object(StripeRow *row, NestedJob *jobs, int first, int last, MemoryContext out)
{
	MemoryContext old = MemoryContextSwitchTo(out);
	StringInfoData buf;
	const char *at = row->object.start;

	initStringInfo(&buf);
	for (int j = first; j < last; j++)
	{
		NestedJob  *job = &jobs[j];
		const char *close = memrchr(job->data.start, ']', job->data.len);
		bool		empty = true;

		/* the has_more and data fields come in either order */
		for (const char *p = job->data.start + 1; p < close; p++)
			if (!isspace((unsigned char) *p))
				empty = false;
		if (job->has_more.start < job->data.start && job->whole)
		{
			appendBinaryStringInfo(&buf, at, job->has_more.start - at);
			appendStringInfoString(&buf, "false");
			at = job->has_more.start + 4;
		}
		appendBinaryStringInfo(&buf, at, close - at);
		if (job->more.len > 0)
		{
			if (!empty)
				appendStringInfoChar(&buf, ',');
			appendBinaryStringInfo(&buf, job->more.data, job->more.len);
		}
		at = close;
		if (job->has_more.start > job->data.start && job->whole)
		{
			appendBinaryStringInfo(&buf, at, job->has_more.start - at);
			appendStringInfoString(&buf, "false");
			at = job->has_more.start + 4;
		}
	}
	appendBinaryStringInfo(&buf, at, row->object.start + row->object.len - at);
	MemoryContextSwitchTo(old);
	return buf.data;
}

/* the message, detail and hint of an error, in the current context */
static ErrorData *
copy_error(const ErrorData *from)
{
	ErrorData  *e = palloc0(sizeof(ErrorData));

	e->elevel = from->elevel;
	e->sqlerrcode = from->sqlerrcode;
	e->message = from->message ? pstrdup(from->message) : NULL;
	e->detail = from->detail ? pstrdup(from->detail) : NULL;
	e->hint = from->hint ? pstrdup(from->hint) : NULL;
	return e;
}

static int
job_cmp(const void *a, const void *b)
{
	const NestedJob *x = a;
	const NestedJob *y = b;

	if (x->row != y->row)
		return x->row < y->row ? -1 : 1;
	return x->data.start < y->data.start ? -1 : x->data.start > y->data.start;
}

/*
 * Completes in place the nested lists of the rows (parsed with fs) that say
 * has_more: each such row's spans then point into its whole object's text,
 * allocated in the caller's context.  A row whose list cannot be read whole
 * (Stripe refusing the request, an answer not of Stripe's shape) gets its
 * ERROR in errors[row] (an array of nrows, NULL-initialised) and stays as
 * it was; a refused key, rate limits past the retries and the network end
 * the whole call with an ERROR, as for any page.
 */
void
stripe_nested_complete(StripeConn *conn, const StripeObjectDef *def, StripeFieldSet *fs,
					   StripeRow *rows, int nrows, ErrorData **errors, StripeStats *stats)
{
	MemoryContext out = CurrentMemoryContext;
	MemoryContext cxt;
	MemoryContext old;
	NestedState ns = {0};
	StripeFieldSet *ofs;
	StripeFieldSet *lfs;
	char	  **fields;
	int			nfields = 0;
	List	   *jobs = NIL;
	ListCell   *lc;
	int			j;

	if (!stripe_nested_pending(def, rows, nrows))
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "stripe nested lists",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	ns.def = def;
	ns.errors = errors;
	ns.idfs = stripe_fieldset_create(1);
	stripe_fieldset_add(ns.idfs, "id", 0);
	stripe_fieldset_finish(ns.idfs);
	lfs = stripe_fieldset_create(3);
	stripe_fieldset_add(lfs, "has_more", 0);
	stripe_fieldset_add(lfs, "url", 1);
	stripe_fieldset_add(lfs, "data", 2);
	stripe_fieldset_finish(lfs);

	/* the def's fields, "lines|items" */
	{
		char	   *names = pstrdup(def->nested_lists);
		char	   *save = NULL;

		fields = palloc(sizeof(char *) * (strlen(names) / 2 + 1));
		for (char *t = strtok_r(names, "|", &save); t; t = strtok_r(NULL, "|", &save))
			fields[nfields++] = t;
		ofs = stripe_fieldset_create(nfields);
		for (int f = 0; f < nfields; f++)
			stripe_fieldset_add(ofs, fields[f], f);
		stripe_fieldset_finish(ofs);
	}

	for (int r = 0; r < nrows; r++)
		if (!rows[r].deleted && rows[r].object.start != NULL &&
			says_has_more(rows[r].object.start, rows[r].object.len))
			find_jobs(&ns, &rows[r], r, fields, nfields, ofs, lfs, &jobs);
	ns.njobs = list_length(jobs);
	ns.jobs = palloc0(sizeof(NestedJob) * Max(ns.njobs, 1));
	j = 0;
	foreach(lc, jobs)
		ns.jobs[j++] = *(NestedJob *) lfirst(lc);
	qsort(ns.jobs, ns.njobs, sizeof(NestedJob), job_cmp);

	if (ns.njobs > 0)
	{
		/* handles of its own: a caller may be inside a stream's done (bf_done) */
		StripeStream *ss = stripe_stream_open(conn, nested_feed, nested_done, &ns, stats);

		while (stripe_stream_step(ss))
			;
		stripe_stream_close(ss);
	}

	for (j = 0; j < ns.njobs;)
	{
		int			r = ns.jobs[j].row;
		int			last = j;
		StripePage	page;
		const char *why = NULL;
		char	   *text;

		while (last < ns.njobs && ns.jobs[last].row == r)
			last++;
		if (errors[r] == NULL)
		{
			text = splice_object(&rows[r], ns.jobs, j, last, out);
			MemoryContextSwitchTo(out);
			if (stripe_parse_page(text, strlen(text), false, fs, &page, &why))
			{
				bool		deleted = rows[r].deleted;

				rows[r] = page.rows[0];
				rows[r].deleted = deleted;
			}
			else
				errors[r] = job_error(def->object, "?", why);
			MemoryContextSwitchTo(cxt);
		}
		j = last;
	}
	MemoryContextSwitchTo(old);
	/* the errors live in cxt: copied out before it goes */
	for (int r = 0; r < nrows; r++)
		if (errors[r] != NULL)
			errors[r] = copy_error(errors[r]);
	MemoryContextDelete(cxt);
}

/*
 * Whether a scan's columns read a nested list: attrs, or the list's own
 * column.  A scan that reads neither pays nothing for them.
 */
bool
stripe_nested_wanted(const StripeObjectDef *def, const StripeRowConv *rc)
{
	if (def == NULL || def->nested_lists == NULL)
		return false;
	for (int i = 0; i < rc->natts; i++)
	{
		const char *names = def->nested_lists;
		size_t		n;

		if (rc->att_slot[i] == STRIPE_ATTRS_SLOT)
			return true;
		if (rc->att_field[i] == NULL)
			continue;
		n = strlen(rc->att_field[i]);
		for (const char *p = names; p != NULL; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL)
			if (strncmp(p, rc->att_field[i], n) == 0 && (p[n] == '|' || p[n] == '\0'))
				return true;
	}
	return false;
}

/*
 * A scan's page with its nested lists whole; an object whose list cannot be
 * read whole fails the scan, as its page would.
 */
void
stripe_nested_complete_page(StripeConn *conn, const StripeObjectDef *def,
							const StripeRowConv *rc, StripePage *page, StripeStats *stats)
{
	ErrorData **errors;

	if (page->nrows == 0 || !stripe_nested_pending(def, page->rows, page->nrows))
		return;
	errors = palloc0(sizeof(ErrorData *) * page->nrows);
	stripe_nested_complete(conn, def, rc->fs, page->rows, page->nrows, errors, stats);
	for (int r = 0; r < page->nrows; r++)
		if (errors[r] != NULL)
			ereport(ERROR,
					(errcode(errors[r]->sqlerrcode),
					 errmsg_internal("%s", errors[r]->message),
					 errors[r]->detail ? errdetail_internal("%s", errors[r]->detail) : 0));
}
