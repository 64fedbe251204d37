/*-------------------------------------------------------------------------
 * payload.c
 *		The "data" of an Intempt event (SPEC §5), built from a Stripe object:
 *		stripe_sync.intempt_data(), currency_exponent() and major_units().
 *
 * One pass over the object's top-level keys; nested values are not
 * expanded.  The backfill writes a history event per object, so this runs
 * once per object of a first sync.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(stripe_intempt_data);
PG_FUNCTION_INFO_V1(stripe_currency_exponent_sql);
PG_FUNCTION_INFO_V1(stripe_major_units_sql);

/* scalar fields copied as they are when the object has them */
static const char *const telling_fields[] = {
	"email", "name", "description", "payment_intent", "invoice", "charge",
	"subscription", "number", "billing_reason", "reason", "failure_code",
	"failure_message", "paid", "refunded", "captured", "receipt_email",
	"collection_method", "cancel_at_period_end", "customer_email", NULL
};

/* names that mean an amount: these, alone or followed by "_…", and "…_amount" */
static const char *const amount_names[] = {
	"amount", "total", "subtotal", "tax", "unit_amount", "balance",
	"starting_balance", "ending_balance", NULL
};

/*
 * Digits after the point in Stripe's amounts: Stripe's zero-decimal and
 * three-decimal lists; the rest (ISK, HUF and TWD too) count hundredths.
 */
static int
currency_exponent(const char *cur, int len)
{
	static const char *const zero[] = {
		"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
		"ugx", "vnd", "vuv", "xaf", "xof", "xpf", NULL
	};
	static const char *const three[] = {"bhd", "jod", "kwd", "omr", "tnd", NULL};

	if (cur == NULL || len != 3)
		return 2;
	for (int i = 0; zero[i]; i++)
		if (pg_strncasecmp(cur, zero[i], 3) == 0)
			return 0;
	for (int i = 0; three[i]; i++)
		if (pg_strncasecmp(cur, three[i], 3) == 0)
			return 3;
	return 2;
}

static int
currency_exponent_text(text *cur)
{
	return cur ? currency_exponent(VARDATA_ANY(cur), VARSIZE_ANY_EXHDR(cur)) : 2;
}

/* 1234 in the minor unit is 12.34 (two decimals), 1234 (zero) or 1.234 (three) */
static Numeric
major_units(Numeric minor, int exponent)
{
	Datum		major;

	major = DirectFunctionCall2(numeric_div, NumericGetDatum(minor),
								NumericGetDatum(int64_to_numeric(exponent == 0 ? 1 : exponent == 3 ? 1000 : 100)));
	major = DirectFunctionCall2(numeric_round, major, Int32GetDatum(exponent));
	return DatumGetNumeric(DirectFunctionCall1(numeric_trim_scale, major));
}

Datum
stripe_currency_exponent_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(currency_exponent_text(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0)));
}

/* stripe_sync.major_units(minor numeric, currency text) */
Datum
stripe_major_units_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_NUMERIC(major_units(PG_GETARG_NUMERIC(0),
								  currency_exponent_text(PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1))));
}

static bool
name_is(const JsonbValue *key, const char *name)
{
	return key->val.string.len == (int) strlen(name) &&
		memcmp(key->val.string.val, name, key->val.string.len) == 0;
}

static bool
is_amount(const JsonbValue *key)
{
	const char *k = key->val.string.val;
	int			len = key->val.string.len;

	if (len > 7 && memcmp(k + len - 7, "_amount", 7) == 0)
		return true;
	for (int i = 0; amount_names[i]; i++)
	{
		int			n = strlen(amount_names[i]);

		if (len >= n && memcmp(k, amount_names[i], n) == 0 && (len == n || k[n] == '_'))
			return true;
	}
	return false;
}

static void
push_pair(JsonbParseState **st, const char *key, int keylen, JsonbValue *val)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = keylen;
	pushJsonbValue(st, WJB_KEY, &k);
	pushJsonbValue(st, WJB_VALUE, val);
}

static void
push_string(JsonbParseState **st, const char *key, const char *val, int len)
{
	JsonbValue	v;

	if (val == NULL)
		return;
	v.type = jbvString;
	v.val.string.val = (char *) val;
	v.val.string.len = len;
	push_pair(st, key, strlen(key), &v);
}

/* amount in major units (12.34) under key, Stripe's integer under key_minor */
static void
push_amount(JsonbParseState **st, const char *key, int keylen, Numeric minor, int exponent)
{
	JsonbValue	v;
	char	   *minor_key = psprintf("%.*s_minor", keylen, key);

	v.type = jbvNumeric;
	v.val.numeric = major_units(minor, exponent);
	push_pair(st, key, keylen, &v);
	v.val.numeric = minor;
	push_pair(st, minor_key, strlen(minor_key), &v);
}

/* text of a top-level value, as ->> gives it; NULL when absent or JSON null */
static char *
value_text(JsonbValue *v, int *len)
{
	char	   *s;

	switch (v->type)
	{
		case jbvString:
			*len = v->val.string.len;
			return v->val.string.val;
		case jbvNumeric:
			s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			break;
		case jbvBool:
			s = v->val.boolean ? "true" : "false";
			break;
		default:
			return NULL;
	}
	*len = strlen(s);
	return s;
}

/* a nested JSON object: only an object's container may be searched by key */
static bool
is_object(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/*
 * A subscription's amount per period: its items' price.unit_amount times
 * quantity (1 when absent), when every item has a price amount.
 */
static Numeric
subscription_amount(JsonbContainer *obj)
{
	JsonbValue	items,
				data,
				elem;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	Datum		sum = NumericGetDatum(int64_to_numeric(0));
	int			n = 0;

	if (getKeyJsonValueFromContainer(obj, "items", 5, &items) == NULL || !is_object(&items) ||
		getKeyJsonValueFromContainer(items.val.binary.data, "data", 4, &data) == NULL ||
		data.type != jbvBinary || !JsonContainerIsArray(data.val.binary.data))
		return NULL;
	it = JsonbIteratorInit(data.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		JsonbValue	price,
					unit,
					qty;
		Datum		q;

		if (tok != WJB_ELEM)
			continue;
		if (!is_object(&elem) ||
			getKeyJsonValueFromContainer(elem.val.binary.data, "price", 5, &price) == NULL ||
			!is_object(&price) ||
			getKeyJsonValueFromContainer(price.val.binary.data, "unit_amount", 11, &unit) == NULL ||
			unit.type != jbvNumeric)
			return NULL;
		q = (getKeyJsonValueFromContainer(elem.val.binary.data, "quantity", 8, &qty) != NULL &&
			 qty.type == jbvNumeric) ? NumericGetDatum(qty.val.numeric) : NumericGetDatum(int64_to_numeric(1));
		sum = DirectFunctionCall2(numeric_add, sum,
								  DirectFunctionCall2(numeric_mul, NumericGetDatum(unit.val.numeric), q));
		n++;
	}
	return n > 0 ? DatumGetNumeric(sum) : NULL;
}

/*
 * stripe_sync.intempt_data(object jsonb, event_id text, event_type text,
 *                          customer_id text) → jsonb
 */
Datum
stripe_intempt_data(PG_FUNCTION_ARGS)
{
	Jsonb	   *obj;
	char	   *event_id = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *event_type = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *customer_id = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	JsonbParseState *st = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	key,
				val,
				found,
				t;
	JsonbValue *res;
	int			exponent = 2;
	bool		subscription = false;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	obj = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(obj))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a Stripe object must be a JSON object")));

	if (getKeyJsonValueFromContainer(&obj->root, "currency", 8, &found) != NULL &&
		found.type == jbvString)
		exponent = currency_exponent(found.val.string.val, found.val.string.len);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	/* the ids first: a field of the object with the same name comes later and wins */
	push_string(&st, "stripe_event_id", event_id, event_id ? strlen(event_id) : 0);
	push_string(&st, "stripe_event_type", event_type, event_type ? strlen(event_type) : 0);
	push_string(&st, "customer_id", customer_id, customer_id ? strlen(customer_id) : 0);
	if (event_id && strncmp(event_id, "hist_", 5) == 0)
	{
		t.type = jbvBool;
		t.val.boolean = true;
		push_pair(&st, "historical", 10, &t);
	}
	it = JsonbIteratorInit(&obj->root);
	while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		char	   *s;
		int			len;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &val, true);
		if (name_is(&key, "id") || name_is(&key, "object") || name_is(&key, "status") ||
			name_is(&key, "currency"))
		{
			if ((s = value_text(&val, &len)) != NULL)
				push_string(&st, name_is(&key, "id") ? "stripe_object_id" : pnstrdup(key.val.string.val, key.val.string.len),
							s, len);
			if (name_is(&key, "object") && val.type == jbvString && name_is(&val, "subscription"))
				subscription = true;
		}
		else if (name_is(&key, "created") || name_is(&key, "livemode"))
		{
			/* a time is a number and livemode a boolean, or they are left out */
			if (val.type == (name_is(&key, "created") ? jbvNumeric : jbvBool))
				push_pair(&st, key.val.string.val, key.val.string.len, &val);
		}
		else if (val.type == jbvNumeric && is_amount(&key))
			push_amount(&st, key.val.string.val, key.val.string.len, val.val.numeric, exponent);
		else if (val.type == jbvString || val.type == jbvNumeric || val.type == jbvBool)
		{
			for (int i = 0; telling_fields[i]; i++)
				if (name_is(&key, telling_fields[i]))
					push_pair(&st, key.val.string.val, key.val.string.len, &val);
		}
	}
	if (subscription)
	{
		Numeric		amount = subscription_amount(&obj->root);

		if (amount)
			push_amount(&st, "amount", 6, amount, exponent);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
