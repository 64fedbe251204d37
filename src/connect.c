/*-------------------------------------------------------------------------
 * connect.c
 *		Connect fan-out: a platform source's connected accounts (GET
 *		/v1/accounts, every page, each run), each made a source of its own
 *		and synced, after the platform's own sync, inside the platform's run.
 *
 * A connected account's source holds its own backfill state, events cursor,
 * runs and outbox rows, and writes the platform's local tables with its own
 * account_id.  Its requests carry Stripe-Account and go by the platform's
 * rate limit (the key's: StripeConn.on_behalf is not the limiter's key).
 * One the list no longer has (deauthorized, or gone) stops syncing; its rows
 * and state stay, with deauthorized_at set; listed again, it syncs again.
 *
 * The accounts take turns (stripe_sync.connect_turn each), least recently
 * synced first (new ones first), round after round until no backfill is
 * left: a large platform's first sync backfills every account a little at a
 * time, and no big account keeps the others waiting for its whole history.
 * An account whose turn ends keeps its cursor, as after a crash, and resumes
 * in its next turn; one without a backfill to do is synced once (its events).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
/* PostgreSQL's SQL function json_object() and json-c's type share a name */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#undef json_object
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <json-c/json.h>

#include "account.h"
#include "guc.h"
#include "connect.h"
#include "run.h"
#include "xact.h"

#define ACCOUNTS_PAGE	100

/* a page of GET /v1/accounts, checked as it arrives */
typedef struct AccountsPage
{
	List	   *ids;			/* char *, in the caller's context */
	bool		has_more;
} AccountsPage;

/* every value's type checked: a page that is not Stripe's list is retried */
static bool
check_accounts(StripeResponse *resp, void *arg, const char **why)
{
	AccountsPage *page = arg;
	json_object *volatile root = json_tokener_parse(resp->body);
	bool		ok = false;

	page->ids = NIL;
	if (root == NULL)
	{
		*why = "malformed JSON from Stripe";
		return false;
	}
	PG_TRY();
	{
		json_object *data;
		json_object *more;

		if (!json_object_object_get_ex(root, "data", &data) || !json_object_is_type(data, json_type_array))
			*why = "Stripe's list of accounts has no data array";
		else if (!json_object_object_get_ex(root, "has_more", &more) ||
				 !json_object_is_type(more, json_type_boolean))
			*why = "Stripe's list of accounts has no has_more";
		else
		{
			size_t		n = json_object_array_length(data);

			ok = true;
			page->has_more = json_object_get_boolean(more);
			for (size_t i = 0; i < n && ok; i++)
			{
				json_object *acct = json_object_array_get_idx(data, i);
				json_object *id;
				const char *s;

				if (!json_object_is_type(acct, json_type_object) ||
					!json_object_object_get_ex(acct, "id", &id) || !json_object_is_type(id, json_type_string))
				{
					*why = "an account in Stripe's list has no id";
					ok = false;
					break;
				}
				s = json_object_get_string(id);
				if (!stripe_is_account_id(s) || strlen(s) >= NAMEDATALEN)
				{
					*why = "an account id in Stripe's list is not acct_ followed by letters and digits";
					ok = false;
					break;
				}
				page->ids = lappend(page->ids, pstrdup(s));
			}
			if (ok && page->has_more && page->ids == NIL)
			{
				*why = "Stripe's list of accounts has more but this page is empty";
				ok = false;
			}
		}
	}
	PG_FINALLY();
	{
		json_object_put(root);
	}
	PG_END_TRY();
	return ok;
}

/* the connected accounts the platform's key can see, every page (no transaction open) */
static List *
list_accounts(SyncRun *run)
{
	List	   *ids = NIL;
	const char *after = NULL;

	for (;;)
	{
		AccountsPage page = {NIL, false};
		StripeResponse resp = {0};
		char	   *path = after
			? psprintf("/v1/accounts?limit=%d&starting_after=%s", ACCOUNTS_PAGE, after)
			: psprintf("/v1/accounts?limit=%d", ACCOUNTS_PAGE);

		(void) stripe_request(run->conn, "GET", path, NULL, NULL, false, check_accounts, &page,
							  &resp, &run->stats);
		pfree(path);
		if (resp.body)
			pfree(resp.body);
		ids = list_concat(ids, page.ids);
		if (!page.has_more)
			break;
		after = llast(page.ids);
	}
	return ids;
}

/*
 * The platform's accounts as listed now (in a step): each listed one has its
 * source, authorized; the others stop.  Returns the names of the sources to
 * sync, least recently synced first.
 */
static List *
reconcile(SyncRun *run, List *ids, struct ConnectTally *tally)
{
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	Datum		values[2];
	ListCell   *lc;
	List	   *names = NIL;

	foreach(lc, ids)
		elems[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	values[0] = CStringGetTextDatum(run->src.name);
	values[1] = PointerGetDatum(construct_array(elems, list_length(ids), TEXTOID, -1, false, TYPALIGN_INT));
	stripe_spi("SELECT stripe_sync._connect_account($1, a) FROM unnest($2::text[]) a",
			   2, types, values, NULL, SPI_OK_SELECT);
	stripe_spi("UPDATE stripe_sync.sources c SET enabled = false, deauthorized_at = now() "
			   "WHERE c.platform = $1 AND c.deauthorized_at IS NULL AND c.account_id <> ALL ($2)",
			   2, types, values, NULL, SPI_OK_UPDATE);
	tally->deauthorized += (int) SPI_processed;
	if (SPI_processed > 0)
		ereport(run->own ? LOG : NOTICE,
				(errmsg("stripe_sync: source \"%s\": %d connected account(s) no longer listed: deauthorized, no longer synced",
						run->src.name, (int) SPI_processed)));
	stripe_spi("SELECT c.name FROM stripe_sync.sources c "
			   "WHERE c.platform = $1 AND c.enabled AND c.deauthorized_at IS NULL "
			   "ORDER BY (SELECT max(r.started_at) FROM stripe_sync.runs r WHERE r.source = c.name) "
			   "NULLS FIRST, c.name", 1, types, values, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
		names = lappend(names, MemoryContextStrdup(run->cxt,
												   SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1)));
	return names;
}

void
stripe_connect_fanout(SyncRun *run, struct ConnectTally *tally)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *ids = list_accounts(run);
	List	   *names;
	ListCell   *lc;

	tally->listed = list_length(ids);
	stripe_run_begin(run);
	names = reconcile(run, ids, tally);
	stripe_run_commit(run);
	for (int round = 0; names != NIL; round++)
	{
		List	   *again = NIL;

		foreach(lc, names)
		{
			bool		turn_over;
			TimestampTz turn_end = stripe_connect_turn > 0
				? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), stripe_connect_turn) : 0;

			CHECK_FOR_INTERRUPTS();
			if (stripe_sync_account(lfirst(lc), run->own, turn_end, &turn_over) && round == 0)
				tally->synced++;
			/* a worker's account sync ends in its own context */
			MemoryContextSwitchTo(cxt);
			if (turn_over)
				again = lappend(again, lfirst(lc));
		}
		names = again;
		tally->rounds = round + 1;
	}
}
