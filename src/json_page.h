/*-------------------------------------------------------------------------
 * json_page.h
 *		One pass over a Stripe list page or object (json_page.c): the text
 *		spans of each object and of the top-level fields wanted.
 *-------------------------------------------------------------------------
 */
#ifndef STRIPE_JSON_PAGE_H
#define STRIPE_JSON_PAGE_H

/* A raw JSON value inside a response body. */
typedef struct StripeSpan
{
	char	   *start;			/* NULL when the field is absent */
	int			len;
} StripeSpan;

typedef struct StripeRow
{
	StripeSpan	object;			/* the whole object */
	StripeSpan *fields;			/* one per wanted field slot */
	bool		deleted;		/* {"deleted": true} */
} StripeRow;

typedef struct StripeFieldSet StripeFieldSet;

typedef struct StripePage
{
	StripeRow  *rows;
	int			nrows;
	bool		has_more;
} StripePage;

extern StripeFieldSet *stripe_fieldset_create(int nslots);
extern int	stripe_fieldset_add(StripeFieldSet *fs, const char *name, int slot);
extern void stripe_fieldset_finish(StripeFieldSet *fs);
extern void stripe_fieldset_rows_from_arrays(StripeFieldSet *fs, int kind_slot);
extern bool stripe_parse_page(char *json, size_t len, bool is_list,
							  StripeFieldSet *fs, StripePage *page,
							  const char **why);
extern char *stripe_span_text(StripeSpan *span);
extern bool stripe_span_is_null(StripeSpan *span);
extern bool stripe_span_int64(StripeSpan *span, int64 *out);
extern char *stripe_page_next_cursor(StripePage *page, int id_slot, const char *prev,
									 const char **why);

#endif							/* STRIPE_JSON_PAGE_H */
