/*-------------------------------------------------------------------------
 * text.c
 *		Text that crosses the network.  Going out: values percent-encoded
 *		for a URL, ids as path segments.  Coming back: anything a server
 *		sent (or could have echoed) made fit for a message, a log line or a
 *		table: valid UTF-8, scrubbed of keys, clipped at a character.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "text.h"

#define REDACTED			"[redacted]"
/* a configured key shorter than this is not a real key: scrubbing it would blank out ordinary text */
#define MIN_SCRUB_KEY_LEN	8

/*
 * The length of the Stripe key ("sk_live_…", "rk_test_…", a masked
 * "sk_test_****abcd") that starts at p in msg, or 0 when none does.
 */
static size_t
key_shaped_run(const char *msg, const char *p)
{
	const char *q = p;

	if (*p == '\0' || strchr("srpSRP", *p) == NULL ||
		(p > msg && isalnum((unsigned char) p[-1])) ||
		(pg_strncasecmp(p, "sk_", 3) != 0 && pg_strncasecmp(p, "rk_", 3) != 0 &&
		 pg_strncasecmp(p, "pk_", 3) != 0))
		return 0;
	while (*q && (isalnum((unsigned char) *q) || *q == '_' || *q == '*'))
		q++;
	return q - p > 3 ? q - p : 0;
}

/* Replaces anything that looks like a Stripe key with a marker, in place. */
void
stripe_scrub_secrets(char *msg)
{
	char	   *p = msg;

	while ((p = strpbrk(p, "srpSRP")) != NULL)
	{
		size_t		n = key_shaped_run(msg, p);

		if (n > 0)
		{
			static const char marker[] = REDACTED;
			size_t		mlen = Min(strlen(marker), n);

			memcpy(p, marker, mlen);
			memmove(p + mlen, p + n, strlen(p + n) + 1);
			p += mlen;
			continue;
		}
		p++;
	}
}

/*
 * text scrubbed of the configured key (exactly) and of anything shaped like
 * a key, each replaced by the whole marker.  The exact key goes first: the
 * shape scrubber stops at a '.' or '-' in a key and would leave the rest.
 */
static char *
scrub_copy(const char *text, const char *key)
{
	size_t		keylen = key ? strlen(key) : 0;
	const char *keyless = text;
	const char *s;
	StringInfoData out;

	if (keylen >= MIN_SCRUB_KEY_LEN && strstr(text, key) != NULL)
	{
		initStringInfo(&out);
		for (s = text; *s;)
		{
			if (strncmp(s, key, keylen) == 0)
			{
				appendStringInfoString(&out, REDACTED);
				s += keylen;
			}
			else
				appendStringInfoChar(&out, *s++);
		}
		keyless = out.data;
	}
	initStringInfo(&out);
	for (s = keyless; *s;)
	{
		size_t		n = key_shaped_run(keyless, s);

		if (n > 0)
		{
			appendStringInfoString(&out, REDACTED);
			s += n;
		}
		else
			appendStringInfoChar(&out, *s++);
	}
	return out.data;
}

/*
 * Text from the network (or anything a server could have echoed) made fit
 * for a message, a log line or a table: valid UTF-8, with '?' for each byte
 * that is not and for control characters other than newline and tab;
 * scrubbed of the configured key (key, which may be NULL) and of anything
 * shaped like a Stripe key; at most max bytes, cut at a character boundary.
 * Palloc'd.
 */
char *
stripe_safe_text(const char *s, size_t len, size_t max, const char *key)
{
	StringInfoData out;

	/* look a little past max, so that no key is cut in two before it is found */
	size_t		window = max + (key ? strlen(key) : 0) + 64;
	size_t		i = 0;
	char	   *res;

	initStringInfo(&out);
	while (i < len && (size_t) out.len < window)
	{
		const unsigned char *c = (const unsigned char *) s + i;
		int			l = pg_utf_mblen(c);

		if (*c < 0x20 ? (*c != '\n' && *c != '\t') :
			*c >= 0x80 && ((size_t) l > len - i || !pg_utf8_islegal(c, l)))
		{
			appendStringInfoChar(&out, '?');
			i++;
			continue;
		}
		appendBinaryStringInfo(&out, (const char *) c, l);
		i += l;
	}
	res = scrub_copy(out.data, key);
	res[pg_encoding_mbcliplen(PG_UTF8, res, strlen(res), max)] = '\0';
	return res;
}

char *
stripe_urlencode(const char *s)
{
	StringInfoData out;

	initStringInfo(&out);
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
			appendStringInfoChar(&out, c);
		else
			appendStringInfo(&out, "%%%02X", c);
	}
	return out.data;
}

/*
 * A value (an id) as one segment of a request path, percent-encoded; NULL
 * when it cannot be one: empty, "." or "..", which a URL resolves away
 * (/v1/customers/.. is /v1/).  No Stripe object has such an id.
 */
char *
stripe_path_segment(const char *s)
{
	if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return NULL;
	return stripe_urlencode(s);
}
