#!/usr/bin/env python3
"""Generate src/catalog_data.c: the typed columns of every catalogued Stripe object.

The columns are the fields of Stripe's current example objects (fixtures3.json); their
types come from the API description first (one example may hold 19 where Stripe sends
8.875), from the example only for a field the description lacks.  The description is
the vendored 2020 one with what Stripe's current one adds (openapi-current.json, see
tools/overlay_openapi.py).  List filters, the enums of their values, and whether an
object has a list at all come from its list parameters.  A few objects are special and
named in the tables below: balance (one object, a row per element of its arrays), the
objects Stripe lists only under a parent, those without a retrieve, and the lists that
leave objects out unless asked.  All inputs are vendored in test/fixtures/stripe.  Run
from the project root:

    python3 tools/gen_catalog.py > src/catalog_data.c
"""
import json
import sys

# table name, fixture resource, list path, extra list filters Stripe added since 2020
OBJECTS = [
    ("customers", "customer", "customers", []),
    ("charges", "charge", "charges", []),
    ("invoices", "invoice", "invoices", []),
    ("payment_intents", "payment_intent", "payment_intents", []),
    ("refunds", "refund", "refunds", []),
    ("subscriptions", "subscription", "subscriptions", ["status"]),
    ("events", "event", "events", ["type"]),
    ("products", "product", "products", []),
    ("prices", "price", "prices", []),
    ("plans", "plan", "plans", []),
    ("coupons", "coupon", "coupons", []),
    ("promotion_codes", "promotion_code", "promotion_codes", []),
    ("balance", "balance", "balance", []),
    ("balance_transactions", "balance_transaction", "balance_transactions", []),
    ("disputes", "dispute", "disputes", []),
    ("payouts", "payout", "payouts", []),
    ("transfers", "transfer", "transfers", []),
    ("topups", "topup", "topups", []),
    ("payment_methods", "payment_method", "payment_methods", ["allow_redisplay"]),
    ("tax_ids", "tax_id", "tax_ids", []),
    # /v1/balance_transactions is the account's: the customer's are a path of their own
    ("customer_balance_transactions", "customer_balance_transaction",
     "customer_balance_transactions", []),
    ("setup_intents", "setup_intent", "setup_intents", []),
    # /v1/setup_attempts is newer than the 2020 description
    ("setup_attempts", "setup_attempt", "setup_attempts", ["setup_intent", "created"]),
    ("checkout_sessions", "checkout.session", "checkout/sessions", []),
    ("credit_notes", "credit_note", "credit_notes", []),
    ("invoice_items", "invoiceitem", "invoiceitems", []),
    ("subscription_items", "subscription_item", "subscription_items", []),
    # the elements of an invoice's lines and a credit note's lines: local tables only
    ("invoice_line_items", "line_item", "invoices/{invoice}/lines", []),
    ("credit_note_lines", "credit_note_line_item", "credit_notes/{credit_note}/lines", []),
    ("subscription_schedules", "subscription_schedule", "subscription_schedules", []),
    ("tax_rates", "tax_rate", "tax_rates", []),
    ("application_fees", "application_fee", "application_fees", []),
    ("accounts", "account", "accounts", []),
    ("early_fraud_warnings", "radar.early_fraud_warning", "radar/early_fraud_warnings", []),
    ("files", "file", "files", []),
    ("file_links", "file_link", "file_links", []),
    ("mandates", "mandate", "mandates", []),
    ("billing_meters", "billing.meter", "billing/meters", []),
]

# Objects Stripe lists only under a parent: table -> (the filter the list requires,
# the parent path when the value goes into the path rather than the query).  Stripe's
# current reference lists a customer's payment methods at
# GET /v1/customers/{customer}/payment_methods (GET /v1/payment_methods is for Treasury
# flows now); setup_attempts need setup_intent=, subscription_items need subscription=.
# The 2020 description marks customer and type both required on /v1/payment_methods,
# which is no longer so: hence a table rather than its "required" flags.
PARENTS = {
    "payment_methods": ("customer", "customers"),
    "tax_ids": ("customer", "customers"),
    "customer_balance_transactions": ("customer", "customers"),
    "setup_attempts": ("setup_intent", None),
    "subscription_items": ("subscription", None),
}
# The list's last path segment under its parent, where it is not the object's path:
# GET /v1/customers/{customer}/balance_transactions.
CHILD_PATH = {"customer_balance_transactions": "balance_transactions"}
# Child tables: one row per element of a parent's nested list, kept by a source
# together with the parent (children.c): table -> (parent table, the parent's list
# field, the column of the parent's id).  An element's own parent field is not relied
# upon (a credit note line has none): the column is filled from the parent.  The new
# ones have no foreign table of their own (LOCAL_ONLY): a scan reads them in their
# parent's attrs, and their paths are the parent's, for the reader.
CHILDREN = {
    "invoice_line_items": ("invoices", "lines", "invoice"),
    "subscription_items": ("subscriptions", "items", "subscription"),
    "credit_note_lines": ("credit_notes", "lines", "credit_note"),
}
LOCAL_ONLY = {"invoice_line_items", "credit_note_lines"}
# Stripe has no retrieve (GET /v1/<path>/<id>) for these: an id qual must stay local.
# (A customer balance transaction is retrieved only under its customer.)
NO_RETRIEVE = {"balance", "setup_attempts", "customer_balance_transactions"}
# GET /v1/balance is one object whose top-level arrays (available, pending,
# connect_reserved, instant_available, ...) hold one amount per currency: the table has
# a row per element, and "kind" is the name of the array it came from.  livemode is the
# balance's own field, given to every row.
ARRAY_ROWS = {
    "balance": [("kind", "TEXT"), ("currency", "TEXT"), ("amount", "INT8"),
                ("source_types", "JSONB"), ("livemode", "BOOL")],
}

# What a source can sync (a list with created ranges, and events), and how each
# object's local table stays current after its backfill.
STAYS_CURRENT = {
    "customers": "events", "charges": "events", "invoices": "events",
    "payment_intents": "events", "refunds": "events", "subscriptions": "events",
    "products": "events", "prices": "events", "plans": "events", "coupons": "events",
    "promotion_codes": "events", "disputes": "events", "payouts": "events",
    "transfers": "events", "topups": "events", "setup_intents": "events",
    "credit_notes": "events", "subscription_schedules": "events", "tax_rates": "events",
    "application_fees": "events", "early_fraud_warnings": "events", "files": "events",
    "billing_meters": "events",
    # listed per customer (a walk of the source's customers), then kept by their events
    "payment_methods": "events (listed per customer; detached: deleted)",
    "tax_ids": "events (listed per customer)",
    # Stripe has no events of customer balance transactions: a customer's event lists them again
    "customer_balance_transactions": "listed per customer, again when a customer changes",
    # Stripe sends events for some of their changes only, or none: RELIST lists them again
    "balance_transactions": "a re-list each sync: created since the oldest pending one now due, "
                            "or since the newest (Stripe has no balance transaction events)",
    "checkout_sessions": "events (completed and expired) and a re-list of the open ones each sync",
    "invoice_items": "events (created and deleted) and a re-list each sync from the oldest "
                     "not yet on an invoice",
    "file_links": "a full re-list every stripe_sync.relist_interval (Stripe has no file link events)",
    "invoice_line_items": "with its invoice",
    "subscription_items": "with its subscription",
    "credit_note_lines": "with its credit note",
}
# The changes Stripe sends no event for, listed again by each sync (src/sync_relist.c):
# table -> (strategy, from, the list's filter, days).  "recent" lists the objects created
# since `from`, an aggregate over the local table's live rows (NULL: none may have changed;
# no `from`: the last `days`), never more than `days` back; "full" lists them all every
# stripe_sync.relist_interval.
# - balance transactions: Stripe has no events for them (balance.available is the
#   balance's); a pending one turns available at its available_on, silently, and new ones
#   come only by listing: from the oldest pending one now due, else the newest.  30 days:
#   longer than Stripe's payout delays.
# - checkout sessions: no event while open (the .completed and .expired ones end it); a
#   session expires at most 24 hours after its creation, so the open ones are the last
#   day's, status=open.
# - invoice items: .created and .deleted only; an item changes (amount, its invoice) until
#   an invoice takes it: from the oldest not yet on an invoice (its date is its creation,
#   which the list filters as created), within 35 days (a monthly cycle and its retries).
# - file links: no events at all, nothing to tell which changed (expires_at).
# - customer balance transactions: no events; each changes its customer's balance, which
#   Stripe reports as customer.updated: "parent" lists them again for every customer whose
#   row changed since the last listing (bf_parents.c).
RELIST = {
    "balance_transactions": ("RECENT", "coalesce(least(max(created), min(created) FILTER "
                             "(WHERE status = 'pending' AND available_on <= now())), '-infinity')",
                             None, 30),
    "checkout_sessions": ("RECENT", None, "status=open", 1),
    "invoice_items": ("RECENT", "min(date) FILTER (WHERE invoice IS NULL)", None, 35),
    "file_links": ("FULL", None, None, 0),
    "customer_balance_transactions": ("PARENT", None, None, 0),
}
# INSERT/UPDATE/DELETE through the foreign table: table -> what Stripe allows
WRITABLE = {
    "customers": "insert, update, delete", "products": "insert, update, delete",
    "prices": "insert, update", "coupons": "insert, update, delete",
    "subscriptions": "insert, update, delete", "refunds": "insert, update",
}

# Lists that leave objects out unless asked for them, and how a list of every object is
# had: one request's parameter, or several lists (|) that together hold them all.  The
# query's own value of that parameter replaces them.  Stripe's API reference:
# subscriptions: "By default, returns a list of subscriptions that have not been
# canceled"; status=all lists every status.
# prices: "Returns a list of your active prices ... For the list of inactive prices,
# set active to false": old subscriptions still point at archived prices.
# Customers and subscriptions on test clocks are left out too unless the list names
# the clock: .test_clocks marks the lists that take test_clock (see backfill.c).
LIST_ALL = {
    "subscriptions": "status=all",
    "prices": "active=true|active=false",
}

PAGINATION = {"limit", "starting_after", "ending_before", "expand", "created"}
# Stripe reports these in seconds since the epoch without marking all of them in 2020.
TIME_NAMES = {"created", "updated"}


def spec_type(prop):
    """Column type from an OpenAPI property, or None when it cannot tell."""
    if prop is None:
        return None
    if prop.get("format") == "unix-time":
        return "TIMESTAMPTZ"
    t = prop.get("type")
    if t == "boolean":
        return "BOOL"
    if t == "integer":
        return "INT8"
    if t == "number":
        return "NUMERIC"
    if t == "string":
        return "TEXT"
    if t in ("object", "array"):
        return "JSONB"
    alts = prop.get("anyOf") or prop.get("oneOf")
    if alts:
        # expandable references: an id string, or the object when expanded
        if any(a.get("type") == "string" for a in alts):
            return "TEXT"
        return "JSONB"
    return None


def value_type(name, value, prop, fallback):
    """The API description's type first (one example may hold 19 where Stripe sends
    8.875); the example's where the description has no such field."""
    st = spec_type(prop)
    if st == "INT8" and (name in TIME_NAMES or name.endswith("_at")):
        return "TIMESTAMPTZ"    # the 2020 description does not mark every Unix time
    if st:
        return st
    st = fallback.get(name)
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        if st == "TIMESTAMPTZ" or name in TIME_NAMES or name.endswith("_at"):
            return "TIMESTAMPTZ"
        return "INT8"
    if isinstance(value, float):
        return "NUMERIC"
    if isinstance(value, str):
        return "TEXT"
    if isinstance(value, (dict, list)):
        return "JSONB"
    # null in the example: the same field elsewhere in the description, else the JSON
    if st:
        return st
    if name.endswith("_at"):
        return "TIMESTAMPTZ"
    return "JSONB"


def load_spec(data):
    """The vendored 2020 description with what Stripe's current one adds
    (openapi-current.json, tools/overlay_openapi.py): fields new to an object, and the
    current parameters of each list endpoint, with the enums of their values."""
    spec = json.load(open(f"{data}/openapi-2020-03-02.json"))
    current = json.load(open(f"{data}/openapi-current.json"))
    for res, sch in current["components"]["schemas"].items():
        spec["components"]["schemas"].setdefault(res, {}).setdefault(
            "properties", {}).update(sch["properties"])
    spec["paths"].update(current["paths"])
    return spec


def is_list_schema(prop):
    """A sub-object Stripe pages: {"object": "list", "data": [...], "has_more", "url"}."""
    if not prop:
        return False
    props = prop.get("properties", {})
    if {"data", "has_more", "url"} <= set(props):
        return True
    return any(is_list_schema(a) for a in prop.get("anyOf", []) or [])


def nested_lists(obj, props):
    """The fields of an object that hold a list Stripe inlines a first page of (at most
    10 elements, has_more and the url of the rest): described as a list and present in
    Stripe's current example, which holds what Stripe returns by default (a list
    returned only when expanded, customer.subscriptions, is not in it)."""
    return [name for name, value in obj.items()
            if isinstance(value, dict) and value.get("object") == "list"
            and is_list_schema(props.get(name))]


def list_operation(spec, table, path):
    """The GET of the object's list, or None when Stripe has no list endpoint."""
    if table in PARENTS and PARENTS[table][1]:
        required, parent = PARENTS[table]
        child = CHILD_PATH.get(table, path)
        op = spec["paths"].get(f"/v1/{parent}/{{{required}}}/{child}", {}).get("get")
        if op is not None:
            return {"parameters": op["parameters"] + [{"in": "query", "name": required,
                                                      "schema": {"type": "string"}}]}
    return spec["paths"].get("/v1/" + path, {}).get("get")


def main(data):
    fixtures = json.load(open(f"{data}/fixtures3.json"))["resources"]
    spec = load_spec(data)
    schemas = spec["components"]["schemas"]
    # the type a field name has in most 2020 schemas, for fields new to an object
    votes = {}
    for sch in schemas.values():
        for name, prop in sch.get("properties", {}).items():
            t = spec_type(prop)
            if t:
                votes.setdefault(name, {}).setdefault(t, 0)
                votes[name][t] += 1
    fallback = {n: max(v, key=v.get) for n, v in votes.items()}
    out = []
    out.append("/* Generated by tools/gen_catalog.py from Stripe's example objects; do not edit. */")
    out.append('#include "postgres.h"\n\n#include "catalog.h"\n')
    defs = []
    for table, res, path, extra_filters in OBJECTS:
        obj = fixtures[res]
        props = schemas.get(res, {}).get("properties", {})
        listop = list_operation(spec, table, path) if table not in LOCAL_ONLY else None
        filters = set(extra_filters) - {"created"}   # "created" there means the range
        enums = {}                  # filter -> the values Stripe accepts
        for p in (listop or {}).get("parameters", []):
            if p.get("in") == "query" and p["name"] not in PAGINATION:
                if p.get("schema", {}).get("type") in ("string", "boolean", None):
                    filters.add(p["name"])
                    if p.get("schema", {}).get("enum"):
                        enums[p["name"]] = "|".join(p["schema"]["enum"])
        listop = listop or {}
        has_created_range = ("created" in extra_filters or
                             any(p["name"] == "created" for p in listop.get("parameters", [])))
        if table in ARRAY_ROWS:
            cols = ARRAY_ROWS[table]
        else:
            cols = [("id", "TEXT")]
            for name, value in obj.items():
                if name in ("id", "object") or name == "attrs":
                    continue
                cols.append((name, value_type(name, value, props.get(name), fallback)))
            if table in CHILDREN and CHILDREN[table][2] not in dict(cols):
                cols.insert(1, (CHILDREN[table][2], "TEXT"))
        special = []
        if table in STAYS_CURRENT:
            special.append(f'.stays_current = "{STAYS_CURRENT[table]}"')
        if table in RELIST:
            strategy, since, query, days = RELIST[table]
            special.append(f".relist = STRIPE_RELIST_{strategy}")
            if since:
                special.append(f'.relist_from = "{since}"')
            if query:
                special.append(f'.relist_query = "{query}"')
            if days:
                special.append(f".relist_days = {days}")
        if table in WRITABLE:
            special.append(f'.writable = "{WRITABLE[table]}"')
        if table in CHILDREN:
            parent, field, column = CHILDREN[table]
            special.append(f'.child_of = "{parent}", .child_list = "{field}", '
                           f'.parent_column = "{column}"')
        if table in LOCAL_ONLY:
            special.append(".local_only = true")
        if table in ARRAY_ROWS:
            special.append(".rows_from = STRIPE_ROWS_ARRAYS")
        if table in NO_RETRIEVE:
            special.append(".no_retrieve = true")
        if not listop and table not in ARRAY_ROWS and table not in LOCAL_ONLY:
            special.append(".no_list = true")   # mandates: retrieve only
        if table in LIST_ALL:
            special.append(f'.list_all = "{LIST_ALL[table]}"')
        if any(p["name"] == "test_clock" for p in listop.get("parameters", [])):
            special.append(".test_clocks = true")
        if table in PARENTS:
            required, parent_path = PARENTS[table]
            if required not in filters or required not in dict(cols):
                sys.exit(f"{table}: required filter {required} is not a filter column")
            # the parent's id prefix for hints: "cus_" from the example customer's id
            prefix = fixtures[required]["id"].split("_")[0] + "_"
            special.append(f'.required_filter = "{required}"')
            if parent_path:
                special.append(f'.parent_path = "{parent_path}"')
            if table in CHILD_PATH:
                special.append(f'.child_path = "{CHILD_PATH[table]}"')
            special.append(f'.required_example = "{prefix}"')
        nested = nested_lists(obj, props) if table not in ARRAY_ROWS else []
        if nested:
            special.append(f'.nested_lists = "{"|".join(nested)}"')
        sym = "cols_" + table
        out.append(f"static const StripeColumn {sym}[] = {{")
        for name, typ in cols:
            flags = []
            if name in filters:
                flags.append("STRIPE_FILTER_EQ")
            if name == "created" and has_created_range:
                flags.append("STRIPE_FILTER_RANGE")
            f = " | ".join(flags) if flags else "0"
            if name in filters and name in enums:
                f += f', "{enums[name]}"'
            out.append(f'\t{{"{name}", STRIPE_COL_{typ}, {f}}},')
        out.append("};\n")
        defs.append(f'\t{{"{table}", "{path}", "{res}", {sym}, lengthof({sym})'
                    + "".join(",\n\t\t" + x for x in special) + "},")
    out.append("const StripeObjectDef stripe_objects[] = {")
    out.extend(defs)
    out.append("};\n")
    out.append("const int stripe_nobjects = lengthof(stripe_objects);")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/stripe")
