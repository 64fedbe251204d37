#!/usr/bin/env python3
"""Fake Stripe API server for stripe_sync's tests and benchmarks (stdlib only).

Seeds deterministic objects shaped like Stripe's own fixtures
(test/fixtures/stripe/fixtures3.json) and serves them the way api.stripe.com does:
bearer/basic auth, list pagination and filters, retrieve, create/update/delete
with events and idempotency keys.  /_control/* (no auth, JSON) lets tests inject
faults, read the request log, add latency or a rate limit, reseed, and change
objects directly (GET /_control/balance shows the balance).  A change made through
/_control/objects makes the events Stripe sends for it, and no others: a balance
transaction (pending to available) or a file link changes silently, a checkout session has
events only for its end (completed, expired), an invoice item for its creation and deletion.

It follows Stripe's documented defaults: rate limits of 25 requests a second in all and
per endpoint (test mode; 429 with Stripe-Rate-Limited-Reason; --rate-limit and
--endpoint-rate-limit, 0 for none), 100 in all for a live key (sk_live_, rk_live_;
--live-rate-limit); lists that leave out inactive prices, canceled
subscriptions and objects on test clocks unless asked for them; list filters checked
against their enums; an Idempotency-Key's first answer replayed, errors included.

A fault takes the requests whose path starts with its "path" and has its "contains"
anywhere, made as its "account" (Stripe-Account) (all optional).  A "hold" fault ({"kind": "hold", "path": "/v1/customers",
"count": 1, "timeout": 300})
keeps the requests it takes waiting, before they are carried out, until POST
/_control/release (or DELETE /_control/faults, or its timeout); GET /_control/held lists
the requests waiting.  A test can so stop a client at a chosen request, change the
account meanwhile, and let it go on: the answer is computed after the release.

Besides the top-level lists it serves GET /v1/balance (one object, with amounts in a few
currencies), the lists Stripe keeps only under a parent (GET
/v1/customers/{customer}/payment_methods, /v1/setup_attempts?setup_intent=…,
/v1/subscription_items?subscription=…, each 400 parameter_missing without its parent, as
on Stripe; subscription items are read from their subscriptions' items).

Like Stripe it also answers a restricted key (rk_…, set up with POST /_control/config
{"restricted_keys": {"rk_test_…": ["customer_read", …]}}) 403 on an endpoint it has no
permission for, naming the permission (GET /v1/account needs one such keys lack); refuses
a list cursor (starting_after, ending_before) that names a deleted object or one the
list's filters no longer take (400 resource_missing); renders an event's object in the
event's api_version (the account's default version, POST /_control/config
{"event_api_version": "2024-06-20"}, or per event) and a retrieve in the request's
Stripe-Version, for the changes listed in VERSION_CHANGES; and sends invoice.upcoming,
whose invoice has no id (POST /_control/upcoming_invoice {"subscription": "sub_…"}).

Like Stripe it inlines only the first 10 of an invoice's or a credit note's lines and a
subscription's items (has_more true, the rest at the list's url: GET
/v1/invoices/{invoice}/lines, /v1/credit_notes/{credit_note}/lines,
/v1/subscription_items?subscription=…).  POST /_control/nested {"object": "invoices",
"credit_notes" or "subscriptions", "count": N} makes one with N of them (credit notes are
made only so); POST /_control/nested_remove {"object": "invoices", "id": "in_…",
"element": "il_…" (default the last)} takes one out, with its invoice.updated event.

POST /_control/webhook {"event": "evt_…", "secret": "whsec_…" (or a list, as while a
secret is rolled), "timestamp": T (default now)} answers what Stripe would deliver to an
endpoint: {"payload": the event as the request body (pretty-printed JSON, as Stripe
sends it), "signature": its Stripe-Signature header}: t=T, a v1 per secret, each
HMAC-SHA256(secret, "T.payload") in hex, and a v0 (another scheme, made with a key no
endpoint has: a receiver must ignore it).

    python3 test/fake_stripe.py --port 0 --port-file /tmp/x.port \
        [--host 127.0.0.1] [--fixtures PATH] [--counts charges=100000,...] \
        [--api-key sk_test_fake] [--seed 1]

Performance notes: objects are kept only as compact JSON bytes plus the few
values list filters need (a parsed charge costs ~16 KB of Python objects, its
JSON ~3 KB), so 100k charges fit easily; list pages are built by slicing a
pre-sorted list of those bytes and joining them.
"""

import argparse
import base64
import bisect
import collections
import hashlib
import hmac
import heapq
import itertools
import json
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import fakelib
from fakelib import serve_until_signalled
from urllib.parse import parse_qsl

API_VERSION = "2026-10-28.endive"
BASE_CREATED = 1700000000
ACCOUNT_ID = "acct_fake000000000"
ACCOUNT_NAME = "Fake Stripe Account"
CURRENCIES = ("usd", "eur", "jpy", "kwd")
CHARGE_STATUSES = ("succeeded", "failed", "pending")
PI_STATUSES = ("succeeded", "requires_payment_method", "canceled", "processing")
INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
SUB_STATUSES = ("active", "past_due", "canceled", "trialing", "incomplete",
                "unpaid", "paused", "incomplete_expired")
# Stripe's subscription list hides these unless a status filter is given.
SUB_HIDDEN = frozenset(("canceled", "incomplete_expired"))
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
DEFAULT_COUNTS = {"customers": 30, "charges": 60, "invoices": 30, "payment_intents": 40,
                  "refunds": 15, "subscriptions": 24, "products": 5, "prices": 10,
                  "coupons": 0, "events": 40,
                  # a few per customer (and attempts per setup intent), oldest parents first
                  "payment_methods": 60, "setup_intents": 12, "setup_attempts": 20}
PM_REDISPLAY = ("always", "limited", "unspecified")
# a payout's statuses; its list filters by four of them (not in_transit)
PAYOUT_STATUSES = ("pending", "in_transit", "paid", "failed", "canceled")
PAYOUT_STATUS_FILTER = ("pending", "paid", "failed", "canceled")
DISPUTE_STATUSES = ("warning_needs_response", "warning_under_review", "needs_response",
                    "under_review", "won", "lost")
DISPUTE_CLOSED = ("won", "lost", "warning_closed")
# Stripe's limits in test mode (docs.stripe.com/rate-limits): 25 requests a second in all,
# and 25 a second to any one endpoint unless documented otherwise.  0 switches one off.
GLOBAL_RATE, ENDPOINT_RATE, LIVE_RATE = 25, 25, 100
# The index key of an object with no test clock: no query value can name it.
NO_CLOCK = "\x00none"
CARD_BRANDS = ("visa", "mastercard", "amex")

# Fields that clients may never set; "id" is allowed where Stripe allows it.
READ_ONLY = frozenset(("id", "object", "created", "livemode", "deleted", "status", "updated"))
# Form values decoded as numbers / booleans (everything else stays a string).
INT_FIELDS = frozenset(("amount", "unit_amount", "quantity", "balance", "amount_off",
                        "duration_in_months", "max_redemptions", "redeem_by", "trial_end",
                        "trial_period_days", "interval_count", "cancel_at", "days_until_due",
                        "billing_cycle_anchor", "next_invoice_sequence"))
FLOAT_FIELDS = frozenset(("percent_off",))
BOOL_FIELDS = frozenset(("active", "shippable", "cancel_at_period_end", "deleted"))

JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# Placeholder spliced out of an event envelope so that data.object can be the
# object's already-serialized bytes (no re-parse / re-dump per event).
OBJ_PLACEHOLDER = "\x00object\x00"
OBJ_PLACEHOLDER_JSON = JSON_ENCODER.encode(OBJ_PLACEHOLDER).encode()


def dumps(value):
    return JSON_ENCODER.encode(value).encode("utf-8")


# ---- API versions: an object is rendered in the version a request asks for
# (Stripe-Version) and an event's data.object in the version in force when the event
# was created (the account's default API version then: the event's api_version).
# The fake keeps its objects in API_VERSION's shape and renders older versions for the
# changes listed here (single-object answers and events; list pages stay in the
# current shape).

def invoice_before_basil(obj):
    """2025-03-31.basil moved an invoice's subscription, subscription_details and quote
    under parent (Stripe's changelog, "Invoicing resources now specify how they were
    generated"): before it they are top-level fields and there is no parent."""
    parent = obj.pop("parent", None) or {}
    sub = parent.get("subscription_details") or {}
    obj["subscription"] = sub.get("subscription")
    obj["subscription_details"] = {"metadata": sub.get("metadata")} if sub else None
    obj["quote"] = (parent.get("quote_details") or {}).get("quote")
    obj["subscription_proration_date"] = sub.get("subscription_proration_date")
    return obj


# (first version with the current shape, object type, to the shape before it)
VERSION_CHANGES = (("2025-03-31", "invoice", invoice_before_basil),)
NEWEST_CHANGE = max(since for since, _, _ in VERSION_CHANGES)


def render_version(blob, version):
    """An object's JSON bytes as API `version` shows it (None: the current one)."""
    if not version or version[:10] >= NEWEST_CHANGE:
        return blob
    obj = None
    for since, obj_type, downgrade in reversed(VERSION_CHANGES):
        if version[:10] < since and b'"object":"%s"' % obj_type.encode() in blob[:4096]:
            obj = downgrade(json.loads(blob) if obj is None else obj)
    return blob if obj is None else dumps(obj)


# ---- restricted keys (rk_…): each endpoint needs a permission on its resource,
# rak_<resource>_read (GET) or rak_<resource>_write (which includes read).  A key
# without it gets Stripe's 403, which names the permission.  GET /v1/account needs one
# restricted keys are not given in practice (stripe-node#2246 shows Stripe naming
# rak_accounts_kyc_id_numbers_read for a key with every read permission).
ACCOUNT_PERMISSION = "accounts_kyc_id_numbers_read"
PATH_RESOURCE = {"account": None, "balance": "balance", "subscription_items": "subscription_item"}


def required_permission(method, path):
    """The permission a request needs (without "rak_"), or None for a URL Stripe
    does not know (its 404 comes first)."""
    parts = path[4:].split("/") if path.startswith("/v1/") else []
    if not parts:
        return None
    if parts[0] == "account":
        return ACCOUNT_PERMISSION
    if parts[0] == "customers" and len(parts) == 3 and parts[2] == "payment_methods":
        parts = ["payment_methods"]
    elif parts[0] == "customers" and len(parts) == 3:
        parts = ["customers"]       # a customer's tax ids and balance transactions
    kind = KINDS.get(parts[0])
    resource = PATH_RESOURCE.get(parts[0]) or (kind.obj if kind else None)
    if resource is None:
        return None
    return resource + ("_read" if method == "GET" else "_write")


def permitted(needed, granted):
    return needed in granted or (needed.endswith("_read") and needed[:-5] + "_write" in granted)


# ASCII order (0-9 < A-Z < a-z): fixed-width encodings sort like the numbers.
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62(n, width):
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(B62[r])
    return "".join(reversed(out))


def hashed_id(prefix, *parts, width=14):
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).digest()
    return prefix + b62(int.from_bytes(digest, "big"), width)


def seeded_created(i):
    """Index 0 is the oldest; pairs share a timestamp to exercise tie ordering."""
    return BASE_CREATED + (i // 2) * 3600


class ApiError(Exception):
    """A Stripe-style error response."""

    def __init__(self, status, message, type="invalid_request_error", code=None, param=None,
                 headers=None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers or {}

    def body(self, request_id):
        err = {}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code
        err["message"] = self.message
        if self.param:
            err["param"] = self.param
        err["request_log_url"] = "https://dashboard.stripe.com/test/logs/" + request_id
        err["type"] = self.type
        return dumps({"error": err})


def no_such(obj_name, oid, param="id", status=404):
    return ApiError(status, f"No such {obj_name}: '{oid}'", code="resource_missing", param=param)


def unknown_param(name):
    return ApiError(400, "Received unknown parameter: " + name, code="parameter_unknown",
                    param=name)


def interval_bounds(key, sub, value):
    """created=x, created[gte]=x, ... (and the like of other timestamps) -> (low, high),
    either None when open."""
    if sub not in (None, "gt", "gte", "lt", "lte"):
        raise unknown_param(key)
    t = parse_int(value, key)
    return {None: t, "gte": t, "gt": t + 1}.get(sub), {None: t, "lte": t, "lt": t - 1}.get(sub)


def parse_int(text, param):
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, "Invalid integer: " + text, code="parameter_invalid_integer",
                       param=param) from None


# --------------------------------------------------------------------------- kinds

class Filter:
    """A list filter: `extract(obj)` gives the values an object is indexed under."""

    def __init__(self, extract, array=False, boolean=False, choices=None, wildcard=False,
                 fold=False, interval=False):
        self.extract, self.array, self.boolean = extract, array, boolean
        self.choices, self.wildcard = choices, wildcard
        self.fold = fold            # matched case-insensitively (extract gives lower case)
        self.interval = interval    # a timestamp taken like created: x, x[gte], x[lt], ...


def field(name):
    return lambda obj: (obj.get(name),)


def test_clock(obj):
    """A customer's or subscription's test clock (an id, or expanded), NO_CLOCK if none."""
    clock = obj.get("test_clock")
    return ((clock.get("id") if isinstance(clock, dict) else clock) or NO_CLOCK,)


def subscription_prices(obj):
    return [(item.get("price") or {}).get("id") for item in (obj.get("items") or {}).get("data", [])]


class Kind:
    def __init__(self, path, obj, prefix, filters, writable=False, deletable=False,
                 updatable=None, create_params=None, event_prefix=None, id_width=14,
                 parent=None, retrievable=True, created=True, seed_events=True,
                 top_level=True, event_types=None):
        self.path, self.obj, self.prefix = path, obj, prefix
        self.filters = filters
        self.writable, self.deletable = writable, deletable
        self.updatable = updatable          # None: every non-read-only template field
        self.create_params = create_params  # None: every non-read-only template field
        self.event_prefix = event_prefix or obj
        self.id_width = id_width
        # (filter the list requires, path of the parent it names, the parent's name in
        # Stripe's "No such …" message): Stripe lists these objects only per parent.
        self.parent = parent
        self.retrievable = retrievable      # False: Stripe has no GET /v1/<path>/<id>
        self.created = created              # the list takes created[...]
        self.seed_events = seed_events      # seeded objects get creation events
        self.top_level = top_level          # False: listed only under its parent's path
        # None: every event of its kind; else the only ones Stripe sends for it, the
        # other changes being silent (Store.sent_events)
        self.event_types = event_types
        self.url = ("/v1/" + path).encode()


KINDS = {k.path: k for k in (
    Kind("customers", "customer", "cus_", {"email": Filter(field("email")),
                                           "test_clock": Filter(test_clock)},
         writable=True, deletable=True),
    Kind("charges", "charge", "ch_", {"customer": Filter(field("customer")),
                                      "payment_intent": Filter(field("payment_intent")),
                                      "transfer_group": Filter(field("transfer_group"))}),
    Kind("invoices", "invoice", "in_", {
        "customer": Filter(field("customer")),
        "status": Filter(field("status"), choices=INVOICE_STATUSES),
        "subscription": Filter(field("subscription")),
        "collection_method": Filter(field("collection_method"), choices=COLLECTION_METHODS)}),
    Kind("payment_intents", "payment_intent", "pi_", {"customer": Filter(field("customer"))}),
    Kind("refunds", "refund", "re_", {"charge": Filter(field("charge")),
                                      "payment_intent": Filter(field("payment_intent"))},
         writable=True, updatable={"metadata"},
         create_params={"charge", "payment_intent", "amount", "reason", "metadata"}),
    Kind("subscriptions", "subscription", "sub_", {
        "customer": Filter(field("customer")),
        "price": Filter(subscription_prices),
        # "all" and "ended" are handled by the list code, not the index.
        "status": Filter(field("status"), choices=SUB_STATUSES + ("all", "ended")),
        "collection_method": Filter(field("collection_method"), choices=COLLECTION_METHODS),
        "test_clock": Filter(test_clock)},
         writable=True, deletable=True, event_prefix="customer.subscription"),
    Kind("products", "product", "prod_", {"active": Filter(field("active"), boolean=True),
                                          "shippable": Filter(field("shippable"), boolean=True),
                                          "url": Filter(field("url")),
                                          "ids": Filter(field("id"), array=True)},
         writable=True, deletable=True),
    Kind("prices", "price", "price_", {
        "active": Filter(field("active"), boolean=True),
        "currency": Filter(field("currency")),
        "product": Filter(field("product")),
        "type": Filter(field("type"), choices=("one_time", "recurring")),
        "lookup_keys": Filter(field("lookup_key"), array=True)},
         writable=True, updatable={"active", "metadata", "nickname", "lookup_key", "tax_behavior"}),
    Kind("coupons", "coupon", "", {}, writable=True, deletable=True,
         updatable={"name", "metadata"}, id_width=8),
    Kind("events", "event", "evt_", {
        "type": Filter(field("type"), wildcard=True),
        "types": Filter(field("type"), array=True),
        "delivery_success": Filter(lambda e: (e.get("pending_webhooks", 0) == 0,), boolean=True)}),
    # Listed per customer: GET /v1/customers/{customer}/payment_methods (current API), or
    # GET /v1/payment_methods?customer=… as the 2020 API had it.
    Kind("payment_methods", "payment_method", "pm_", {
        "customer": Filter(field("customer")),
        "type": Filter(field("type")),
        "allow_redisplay": Filter(field("allow_redisplay"), choices=PM_REDISPLAY)},
         parent=("customer", "customers", "customer"), created=False, seed_events=False),
    # Listed per customer only: GET /v1/customers/{customer}/tax_ids (GET /v1/tax_ids lists
    # the account's own), with customer.tax_id.* events; and
    # GET /v1/customers/{customer}/balance_transactions, which Stripe sends no event of (a
    # transaction changes its customer's balance: customer.updated), retrieved only under
    # its customer.
    Kind("tax_ids", "tax_id", "txi_", {"customer": Filter(field("customer"))},
         parent=("customer", "customers", "customer"), created=False, seed_events=False,
         top_level=False, event_prefix="customer.tax_id"),
    Kind("customer_balance_transactions", "customer_balance_transaction", "cbtxn_",
         {"customer": Filter(field("customer"))},
         parent=("customer", "customers", "customer"), created=False, seed_events=False,
         top_level=False, retrievable=False, event_types=()),
    # GET /v1/billing/meters: no created filter; status active or inactive
    Kind("billing/meters", "billing.meter", "mtr_", {
        "status": Filter(field("status"), choices=("active", "inactive"))},
         created=False, seed_events=False),
    Kind("setup_intents", "setup_intent", "seti_", {
        "customer": Filter(field("customer")),
        "payment_method": Filter(field("payment_method"))}, seed_events=False),
    Kind("setup_attempts", "setup_attempt", "setatt_", {
        "setup_intent": Filter(field("setup_intent"))},
         parent=("setup_intent", "setup_intents", "setupintent"), retrievable=False,
         seed_events=False),
    # none seeded: tests make them through /_control/objects
    Kind("tax_rates", "tax_rate", "txr_", {"active": Filter(field("active"), boolean=True),
                                           "inclusive": Filter(field("inclusive"), boolean=True)},
         seed_events=False),
    Kind("test_helpers/test_clocks", "test_helpers.test_clock", "clock_", {}, seed_events=False),
    # Objects Stripe sends events for some changes of only, or none (none seeded).
    # Balance transactions have no events (balance.available is the balance's): one
    # turns from pending to available, at its available_on, silently.
    Kind("balance_transactions", "balance_transaction", "txn_", {
        "currency": Filter(field("currency")), "payout": Filter(field("payout")),
        "source": Filter(field("source")), "type": Filter(field("type"))},
         seed_events=False, event_types=()),
    # A checkout session has no .created or .updated event: only its end is told
    # (completed, expired), and its later asynchronous payment.
    Kind("checkout/sessions", "checkout.session", "cs_test_", {
        "customer": Filter(field("customer")), "payment_intent": Filter(field("payment_intent")),
        "payment_link": Filter(field("payment_link")), "subscription": Filter(field("subscription")),
        "status": Filter(field("status"), choices=("complete", "expired", "open"))},
         seed_events=False, event_types=("checkout.session.completed", "checkout.session.expired",
                                         "checkout.session.async_payment_succeeded",
                                         "checkout.session.async_payment_failed")),
    # Invoice items: invoiceitem.created and .deleted, nothing when one changes or an
    # invoice takes it.
    Kind("invoiceitems", "invoiceitem", "ii_", {
        "customer": Filter(field("customer")), "invoice": Filter(field("invoice")),
        "pending": Filter(lambda o: (o.get("invoice") is None,), boolean=True)},
         seed_events=False, deletable=True,
         event_types=("invoiceitem.created", "invoiceitem.deleted")),
    # File links: no events at all.
    Kind("file_links", "file_link", "link_", {
        "expired": Filter(field("expired"), boolean=True), "file": Filter(field("file"))},
         seed_events=False, event_types=()),
    # none seeded: tests make them through /_control/nested
    Kind("credit_notes", "credit_note", "cn_", {"customer": Filter(field("customer")),
                                                "invoice": Filter(field("invoice"))},
         seed_events=False),
    # Money movements and promotion codes (none seeded unless counted).  A dispute's
    # events are charge.dispute.*; a promotion code's coupon is promotion.coupon now.
    Kind("promotion_codes", "promotion_code", "promo_", {
        "active": Filter(field("active"), boolean=True),
        "code": Filter(lambda o: ((o.get("code") or "").lower(),), fold=True),
        "coupon": Filter(lambda o: ((o.get("promotion") or {}).get("coupon"),)),
        "customer": Filter(field("customer")),
        "customer_account": Filter(field("customer_account"))}),
    Kind("disputes", "dispute", "dp_", {"charge": Filter(field("charge")),
                                        "payment_intent": Filter(field("payment_intent"))},
         event_prefix="charge.dispute"),
    Kind("payouts", "payout", "po_", {
        "arrival_date": Filter(field("arrival_date"), interval=True),
        "destination": Filter(field("destination")),
        "status": Filter(field("status"), choices=PAYOUT_STATUS_FILTER)}),
    Kind("transfers", "transfer", "tr_", {"destination": Filter(field("destination")),
                                          "transfer_group": Filter(field("transfer_group"))}),
)}
# /_control/objects/<name> for kinds whose path has a slash
CONTROL_NAMES = {"test_clocks": "test_helpers/test_clocks", "billing_meters": "billing/meters",
                 "checkout_sessions": "checkout/sessions"}
# a customer's lists: GET /v1/customers/{customer}/<segment>
CUSTOMER_LISTS = {"payment_methods": "payment_methods", "tax_ids": "tax_ids",
                  "balance_transactions": "customer_balance_transactions"}
# the words of Stripe's paths; any other segment is an id (RateLimiter.endpoint)
PATH_WORDS = {"", "v1", "account", "balance", "subscription_items", "test_helpers",
              "balance_transactions"}.union(
    *(k.path.split("/") for k in KINDS.values()))

# Subscription items live inside their subscriptions (items.data); the list and the
# retrieve read them there.  Not in KINDS: nothing stores them separately.
SUBSCRIPTION_ITEMS = Kind("subscription_items", "subscription_item", "si_", {
    "subscription": Filter(field("subscription"))},
    parent=("subscription", "subscriptions", "subscription"), created=False)


# An invoice's lines: GET /v1/invoices/{invoice}/lines, a list without filters.
INVOICE_LINES = Kind("invoices/lines", "line_item", "il_", {}, created=False)
# A credit note's lines: GET /v1/credit_notes/{credit_note}/lines, likewise.
CREDIT_NOTE_LINES = Kind("credit_notes/lines", "credit_note_line_item", "cnli_", {}, created=False)
# A transfer's reversals: GET /v1/transfers/{id}/reversals, a list without filters.
TRANSFER_REVERSALS = Kind("transfers/reversals", "transfer_reversal", "trr_", {}, created=False)


def few_per_parent(nchildren, nparents):
    """Parent index of each child: parent p gets 1 + p % 3 children, oldest parents
    first, wrapping round when there are more children than that."""
    out, p, left = [], 0, 1
    for _ in range(nchildren if nparents else 0):
        out.append(p)
        left -= 1
        if left == 0:
            p = (p + 1) % nparents
            left = 1 + p % 3
    return out


def filter_key(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


# Lists Stripe inlines only the first page of (at most NESTED_INLINE elements, has_more
# true, the rest at its url): an invoice's lines, a subscription's items.
NESTED = {"invoices": "lines", "subscriptions": "items", "credit_notes": "lines",
          "transfers": "reversals"}
NESTED_INLINE = 10


def nested_order(field, data):
    """The elements in their list's order: items newest first, like their list
    (Store.subscription_items); lines as the invoice has them."""
    if field in ("items", "reversals"):
        return sorted(data, key=lambda it: (it["created"], it["id"]), reverse=True)
    return data


class Record:
    """One stored object: its JSON bytes plus the values its list filters use.  An
    object with a nested list longer than Stripe inlines is shown (blob) with its first
    page only; full keeps it whole."""
    __slots__ = ("id", "created", "blob", "keys", "full")

    def __init__(self, kind, obj):
        self.id, self.created = obj["id"], obj["created"]
        self.full = None
        field = NESTED.get(kind.path)
        lst = obj.get(field) if field else None
        if isinstance(lst, dict) and isinstance(lst.get("data"), list):
            data = nested_order(field, lst["data"])
            lst = dict(lst, data=data, total_count=len(data), has_more=False)
            obj = dict(obj, **{field: lst})
            if len(data) > NESTED_INLINE:
                self.full = dumps(obj)
                obj = dict(obj, **{field: dict(lst, data=data[:NESTED_INLINE], has_more=True)})
        self.blob = dumps(obj)
        self.keys = {name: tuple(dict.fromkeys(filter_key(v) for v in f.extract(obj)
                                               if v is not None))
                     for name, f in kind.filters.items()}

    def obj(self):
        """The object whole, nested lists included."""
        return json.loads(self.full or self.blob)


class Collection:
    """Live objects of one kind, sorted lazily newest first (created desc, id desc)."""

    def __init__(self):
        self.records = {}
        self.deleted = set()
        self._dirty = True
        self._indexes = {}

    def put(self, rec):
        old = self.records.get(rec.id)
        self.records[rec.id] = rec
        if old is not None and not self._dirty and old.created == rec.created:
            # In-place update: the order is unchanged, patch it instead of re-sorting.
            i = self.pos[rec.id]
            self.order[i] = rec
            self.blobs[i] = rec.blob
            if old.keys != rec.keys:
                self._indexes.clear()
        else:
            self._dirty = True

    def remove(self, oid):
        del self.records[oid]
        self.deleted.add(oid)
        self._dirty = True

    def sort(self):
        if self._dirty:
            self.order = sorted(self.records.values(), key=lambda r: (r.created, r.id),
                                reverse=True)
            self.blobs = [r.blob for r in self.order]
            # Ascending, so bisect can find created ranges.
            self.neg_created = [-r.created for r in self.order]
            self.pos = {r.id: i for i, r in enumerate(self.order)}
            self._indexes = {}
            self._dirty = False

    def index(self, name):
        """filter value -> ascending positions in self.order (call after sort())."""
        idx = self._indexes.get(name)
        if idx is None:
            idx = {}
            for i, rec in enumerate(self.order):
                for key in rec.keys[name]:
                    idx.setdefault(key, []).append(i)
            self._indexes[name] = idx
        return idx


def intersect(a, b):
    """Sorted intersection of two sorted position lists."""
    if len(a) > len(b):
        a, b = b, a
    out = []
    for p in a:
        i = bisect.bisect_left(b, p)
        if i < len(b) and b[i] == p:
            out.append(p)
    return out


def deep_merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


# --------------------------------------------------------------------------- store

class Store:
    """All data.  Every method expects the caller to hold `self.lock`."""

    def __init__(self, fixtures, livemode=False):
        self.lock = threading.Lock()
        # a live key's account holds live mode objects, a test key's test mode ones
        self.livemode = livemode
        res = fixtures["resources"]
        # Templates are kept as JSON text: json.loads is a faster deep copy than copy.deepcopy.
        self.templates = {k.path: json.dumps(res[k.obj]) for k in KINDS.values()}
        self.template_keys = {k.path: set(res[k.obj]) for k in KINDS.values()}
        self.item_template = json.dumps(res["subscription"]["items"]["data"][0])
        self.line_template = json.dumps(res["invoice"]["lines"]["data"][0])
        self.cn_line_template = json.dumps(res["credit_note"]["lines"]["data"][0])
        account = res["account"]
        account["id"] = ACCOUNT_ID
        account["business_profile"]["name"] = ACCOUNT_NAME
        account["settings"]["dashboard"]["display_name"] = ACCOUNT_NAME
        account["external_accounts"]["url"] = f"/v1/accounts/{ACCOUNT_ID}/external_accounts"
        self.account = account
        self.balance = balance_object(res["balance"], livemode)
        self.seed_value = 1
        self.counter = itertools.count()
        # the account's default API version, which new events are rendered in
        self.event_api_version = API_VERSION
        # a connected account's id: its events name it (Event.account), as Stripe's do
        self.connected_id = None

    def template(self, kind):
        return json.loads(self.templates[kind.path])

    # ---- ids, events

    def new_id(self, kind):
        coll = self.colls[kind.path]
        while True:
            oid = hashed_id(kind.prefix, self.seed_value, kind.path, "new", next(self.counter),
                            width=kind.id_width)
            if oid not in coll.records and oid not in coll.deleted:
                return oid

    def put(self, kind, obj):
        self.colls[kind.path].put(Record(kind, obj))

    def emit(self, type_, obj_blob, previous=None, request=None, created=None, api_version=None):
        """Append an event whose data.object is `obj_blob`, rendered in api_version (else
        the account's default version, event_api_version); ids increase with each event."""
        api_version = api_version or self.event_api_version
        obj_blob = render_version(obj_blob, api_version)
        if created is None:
            created = max(int(time.time()), self.last_event_created)
        self.last_event_created = max(self.last_event_created, created)
        self.event_seq += 1
        # A sequence number leads the id (b62 sorts like numbers), so among events with the
        # same `created`, id order is creation order, as with Stripe's time-based ids.
        eid = ("evt_" + b62(62 ** 5 + self.event_seq, 6)
               + hashed_id("", self.seed_value, "evt", self.event_seq, width=8))
        data = {"object": OBJ_PLACEHOLDER}
        if previous is not None:
            data["previous_attributes"] = previous
        env = {"id": eid, "object": "event", "api_version": api_version, "created": created,
               "data": data, "livemode": self.livemode, "pending_webhooks": 0,
               "request": request or {"id": None, "idempotency_key": None}, "type": type_}
        if self.connected_id:
            env["account"] = self.connected_id
        head, tail = dumps(env).split(OBJ_PLACEHOLDER_JSON, 1)
        rec = Record(KINDS["events"], env)
        rec.blob = head + obj_blob + tail
        self.colls["events"].put(rec)
        return eid

    @staticmethod
    def sent_events(kind, types):
        """Of the events a change makes, those Stripe sends for its kind."""
        return [t for t in types if kind.event_types is None or t in kind.event_types]

    @staticmethod
    def created_events(kind, obj):
        if kind.obj == "charge":
            return ["charge." + obj.get("status", "succeeded")]
        types = [kind.event_prefix + ".created"]
        if kind.obj == "payment_intent" and obj.get("status") == "succeeded":
            types.append("payment_intent.succeeded")
        if kind.obj == "dispute" and obj.get("balance_transactions"):
            # the disputed amount taken from the balance as the dispute opens
            types.append("charge.dispute.funds_withdrawn")
        return Store.sent_events(kind, types)

    @staticmethod
    def event_state(kind, obj):
        """What a change's events depend on: the status, or how much of a transfer is
        reversed (a transfer has no status)."""
        return obj.get("amount_reversed" if kind.obj == "transfer" else "status")

    @staticmethod
    def updated_events(kind, old_status, new_status):
        return Store.sent_events(kind, Store.all_updated_events(kind, old_status, new_status))

    @staticmethod
    def all_updated_events(kind, old_status, new_status):
        if kind.obj == "billing.meter" and old_status != new_status:
            # POST /v1/billing/meters/{id}/deactivate and /reactivate
            return ["billing.meter." + ("deactivated" if new_status == "inactive" else "reactivated")]
        if kind.obj == "transfer" and old_status != new_status:
            # "transfer.reversed: whenever a transfer is reversed, including partial
            # reversals"; .updated is for its description or metadata
            return ["transfer.reversed"]
        if kind.obj == "dispute" and old_status != new_status and new_status in DISPUTE_CLOSED:
            # a dispute won gives the funds back
            return ["charge.dispute.closed"] + (["charge.dispute.funds_reinstated"]
                                                if new_status == "won" else [])
        types = [kind.event_prefix + ".updated"]
        if old_status == new_status:
            return types
        extra = {
            "invoice": {"open": "invoice.finalized", "paid": "invoice.paid",
                        "void": "invoice.voided", "uncollectible": "invoice.marked_uncollectible"},
            "charge": {s: "charge." + s for s in CHARGE_STATUSES},
            "payment_intent": {"succeeded": "payment_intent.succeeded",
                               "canceled": "payment_intent.canceled",
                               "processing": "payment_intent.processing",
                               "requires_payment_method": "payment_intent.payment_failed"},
            "subscription": {"paused": "customer.subscription.paused"},
            "payout": {"paid": "payout.paid", "failed": "payout.failed",
                       "canceled": "payout.canceled"},
            "checkout.session": {"complete": "checkout.session.completed",
                                 "expired": "checkout.session.expired"},
        }.get(kind.obj, {})
        if new_status in extra:
            types.append(extra[new_status])
        elif kind.obj == "subscription" and old_status == "paused":
            types.append("customer.subscription.resumed")
        return types

    # ---- seeding

    def reseed(self, counts, seed):
        self.colls = {path: Collection() for path in KINDS}
        self.idempotency = {}
        self.last_event_created = 0
        self.event_seq = 0
        self.seed_value = seed
        Seeder(self, counts, seed).run()

    # ---- reads

    def list_page(self, kind, limit, gte, lte, filters, starting_after, ending_before, url=None):
        """One list page as JSON bytes.  `filters`: [(name, keys_of(index) -> keys)]."""
        coll = self.colls[kind.path]
        coll.sort()
        lo, hi = 0, len(coll.order)
        if gte is not None:
            hi = bisect.bisect_right(coll.neg_created, -gte)
        if lte is not None:
            lo = bisect.bisect_left(coll.neg_created, -lte)
        cursor_at = None
        for param, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
            if cursor is not None:
                p = coll.pos.get(cursor)
                if p is None:
                    raise no_such(kind.obj, cursor, param, status=400)
                cursor_at = (param, cursor, p)
                if param == "starting_after":
                    lo = max(lo, p + 1)
                else:
                    hi = min(hi, p)
        cands = None
        for name, keys_of in filters:
            idx = coll.index(name)
            lists = [idx[k] for k in keys_of(idx) if k in idx]
            pos = lists[0] if len(lists) == 1 else sorted(set(itertools.chain.from_iterable(lists)))
            cands = pos if cands is None else intersect(cands, pos)
        self.check_cursor_listed(kind, cands, cursor_at)
        if cands is None:
            if ending_before is not None:
                a, b = max(lo, hi - limit), hi
                more = a > lo
            else:
                a, b = lo, min(hi, lo + limit)
                more = b < hi
            blobs = coll.blobs[a:b] if a < b else []
        else:
            i0, i1 = bisect.bisect_left(cands, lo), bisect.bisect_left(cands, hi)
            if ending_before is not None:
                a, b = max(i0, i1 - limit), i1
                more = a > i0
            else:
                a, b = i0, min(i1, i0 + limit)
                more = b < i1
            blobs = [coll.blobs[p] for p in cands[a:b]]
        return b"".join((b'{"object":"list","data":[', b",".join(blobs), b'],"has_more":',
                         b"true" if more else b"false", b',"url":"', url or kind.url, b'"}'))

    @staticmethod
    def check_cursor_listed(kind, cands, cursor_at):
        """A cursor must name an object of the list as it is now: a deleted one is "No
        such …" (list_page), and so is one the list's filters no longer take (a
        subscription canceled under the default status filter, stripe-node#2368)."""
        if cursor_at is None or cands is None:
            return
        param, cursor, p = cursor_at
        i = bisect.bisect_left(cands, p)
        if i == len(cands) or cands[i] != p:
            raise no_such(kind.obj, cursor, param, status=400)

    def check_parent(self, kind, oid):
        """404 when the parent a per-parent list names does not exist (a deleted one
        neither): it has no children to list."""
        _, path, name = kind.parent
        if oid not in self.colls[path].records:
            raise no_such(name, oid, kind.parent[0])

    def subscription_items(self, sub_id):
        """The items of a subscription, newest first like the other lists."""
        self.check_parent(SUBSCRIPTION_ITEMS, sub_id)
        items = self.get(KINDS["subscriptions"], sub_id)["items"]["data"]
        return sorted(items, key=lambda it: (it["created"], it["id"]), reverse=True)

    def subscription_item(self, item_id):
        needle = dumps(item_id)
        for rec in self.colls["subscriptions"].records.values():
            if needle in rec.blob:
                for item in rec.obj()["items"]["data"]:
                    if item["id"] == item_id:
                        return dumps(item)
        raise no_such("subscription_item", item_id)

    def retrieve(self, kind, oid):
        if not kind.retrievable:
            raise App.unrecognized("GET", f"/v1/{kind.path}/{oid}")
        coll = self.colls[kind.path]
        rec = coll.records.get(oid)
        if rec is not None:
            return rec.blob
        if oid in coll.deleted:
            return dumps({"id": oid, "object": kind.obj, "deleted": True})
        raise no_such(kind.obj, oid)

    def get(self, kind, oid, param="id", status=404):
        rec = self.colls[kind.path].records.get(oid)
        if rec is None:
            raise no_such(kind.obj, oid, param, status)
        return rec.obj()

    def live(self, kind):
        coll = self.colls[kind.path]
        coll.sort()
        return coll.blobs

    # ---- generic mutations (used by the API writes and /_control)

    def create(self, kind, obj, request=None):
        self.put(kind, obj)
        blob = self.colls[kind.path].records[obj["id"]].blob
        for t in self.created_events(kind, obj):
            self.emit(t, blob, request=request)
        return blob

    def replace(self, kind, old, new, previous, request=None):
        """Store `new` (an updated copy of `old`) and emit its events if anything changed."""
        self.put(kind, new)
        blob = self.colls[kind.path].records[new["id"]].blob
        if previous:
            for t in self.updated_events(kind, self.event_state(kind, old),
                                         self.event_state(kind, new)):
                self.emit(t, blob, previous=previous, request=request)
        return blob

    def upcoming_invoice(self, sub_id):
        """invoice.upcoming for a subscription: its next invoice as a preview, which
        has no id (Stripe: "The received Invoice object will not have an invoice ID")
        and is in no list.  Returns the event's id."""
        sub = self.get(KINDS["subscriptions"], sub_id, "subscription", 400)
        inv = self.template(KINDS["invoices"])
        del inv["id"]
        now = int(time.time())
        total = sum((it["price"].get("unit_amount") or 0) * (it.get("quantity") or 1)
                    for it in sub["items"]["data"])
        inv.update(object="invoice", livemode=self.livemode, metadata={}, created=now,
                   customer=sub["customer"], subscription=sub_id, status="draft",
                   billing_reason="upcoming", number=None, hosted_invoice_url=None,
                   invoice_pdf=None, currency=sub.get("currency"), total=total, subtotal=total,
                   amount_due=total, amount_paid=0, amount_remaining=total,
                   parent={"type": "subscription_details", "quote_details": None,
                           "subscription_details": {"metadata": {}, "subscription": sub_id}})
        inv["lines"] = {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": "/v1/invoices/upcoming/lines"}
        return self.emit("invoice.upcoming", dumps(inv))

    def delete(self, kind, oid, request=None, created=None):
        """Delete (subscriptions: cancel).  Returns the response body.  created
        backdates the event (the control interface's, for tests of old events)."""
        obj = self.get(kind, oid)
        if kind.obj == "subscription":
            now = int(time.time())
            new = dict(obj, status="canceled", canceled_at=now, ended_at=now,
                       cancel_at_period_end=False)
            self.put(kind, new)
            blob = self.colls[kind.path].records[oid].blob
            self.emit("customer.subscription.deleted", blob,
                      previous={"status": obj["status"], "canceled_at": obj.get("canceled_at"),
                                "ended_at": obj.get("ended_at")}, request=request, created=created)
            return blob
        blob = self.colls[kind.path].records[oid].blob
        self.colls[kind.path].remove(oid)
        for t in self.sent_events(kind, [kind.event_prefix + ".deleted"]):
            self.emit(t, blob, request=request, created=created)
        return dumps({"id": oid, "object": kind.obj, "deleted": True})


class Seeder:
    """Deterministic seed data; all links are computed from indexes."""

    def __init__(self, store, counts, seed):
        self.store, self.counts, self.seed = store, counts, seed
        self.ids = {}
        for path, kind in KINDS.items():
            if path != "events":
                self.ids[path] = self._ids(kind, counts.get(path, 0))

    def _ids(self, kind, n):
        used, out = set(), []
        for i in range(n):
            attempt = 0
            while True:
                oid = hashed_id(kind.prefix, self.seed, kind.path, i, attempt, width=kind.id_width)
                if oid not in used:
                    break
                attempt += 1
            used.add(oid)
            out.append(oid)
        return out

    def n(self, path):
        return len(self.ids[path])

    def base(self, path, i):
        kind = KINDS[path]
        obj = self.store.template(kind)
        obj.update(id=self.ids[path][i], object=kind.obj, created=seeded_created(i),
                   livemode=self.store.livemode, metadata={})
        return obj

    # Formulas shared by several types.
    def customer_of_charge(self, i):
        """Charge i and payment intent i belong to the same customer (None = guest)."""
        ncust = self.n("customers")
        return None if (i % 10 == 9 or not ncust) else i % ncust

    @staticmethod
    def customer_email(i):
        return None if i % 7 == 6 else f"user{i}@example.com"

    @staticmethod
    def charge_amount(i):
        return 100 + 37 * i

    @staticmethod
    def charge_captured(i):
        return CHARGE_STATUSES[i % 3] == "succeeded" and i % 9 != 6

    def ref(self, path, i):
        return None if i is None else self.ids[path][i]

    def run(self):
        put = self.store.put
        for path, build in (("products", self.product), ("prices", self.price),
                            ("customers", self.customer), ("payment_intents", self.payment_intent),
                            ("coupons", self.coupon)):
            kind = KINDS[path]
            for i in range(self.n(path)):
                put(kind, build(i))
        self.charges_and_refunds()
        self.subscriptions_and_invoices()
        self.payment_methods()
        self.customer_children()
        self.setup_intents_and_attempts()
        for path, build in (("promotion_codes", self.promotion_code), ("disputes", self.dispute),
                            ("payouts", self.payout), ("transfers", self.transfer)):
            for i in range(self.n(path)):
                put(KINDS[path], build(i))
        self.events()

    def product(self, i):
        o = self.base("products", i)
        o.update(name=f"Product {i}", description=f"Description of product {i}",
                 active=i % 5 != 4, shippable=i % 2 == 0, updated=o["created"],
                 url=f"https://example.com/products/{i}", package_dimensions=None,
                 default_price=self.ref("prices", i) if i < self.n("prices") else None)
        return o

    def price(self, i):
        o = self.base("prices", i)
        nprod = self.n("products")
        amount = 500 + 250 * i
        recurring = i % 2 == 0
        o.update(product=self.ref("products", i % nprod) if nprod else None,
                 active=i % 4 != 3, currency=CURRENCIES[i % 4], unit_amount=amount,
                 unit_amount_decimal=str(amount), nickname=f"Price {i}",
                 lookup_key=f"lookup_{i}" if i % 2 == 0 else None,
                 type="recurring" if recurring else "one_time", transform_quantity=None,
                 custom_unit_amount=None)
        if not recurring:
            o["recurring"] = None
        return o

    def customer(self, i):
        o = self.base("customers", i)
        o.update(email=self.customer_email(i), name=f"Customer {i}", discount=None,
                 invoice_prefix=o["id"][4:12].upper(), currency=CURRENCIES[i % 4])
        return o

    def payment_intent(self, i):
        o = self.base("payment_intents", i)
        status = PI_STATUSES[i % 4]
        amount = self.charge_amount(i)
        o.update(customer=self.ref("customers", self.customer_of_charge(i)), amount=amount,
                 currency=CURRENCIES[i % 4], status=status,
                 amount_received=amount if status == "succeeded" else 0,
                 client_secret=f"{o['id']}_secret_{o['id'][3:]}",
                 canceled_at=o["created"] + 60 if status == "canceled" else None,
                 cancellation_reason="abandoned" if status == "canceled" else None,
                 last_payment_error=None, next_action=None,
                 processing={"type": "card"} if status == "processing" else None,
                 latest_charge=self.ref("charges", i) if i < self.n("charges") else None,
                 description=f"Payment {i}")
        return o

    def coupon(self, i):
        o = self.base("coupons", i)
        percent = i % 2 == 0
        o.update(name=f"Coupon {i}", percent_off=10.0 + i if percent else None,
                 amount_off=None if percent else 500 + 100 * i,
                 currency=None if percent else "usd", duration="forever",
                 duration_in_months=None, redeem_by=None)
        return o

    def charges_and_refunds(self):
        nch, nref = self.n("charges"), self.n("refunds")
        # Each refund points at a captured charge, spread over the charges' history;
        # a charge's amount_refunded is the sum of its refunds.
        captured = [i for i in range(nch) if self.charge_captured(i)]
        target = {}
        if captured:
            stride = max(1, len(captured) // max(nref, 1))
            for k in range(nref):
                target[k] = captured[(k * stride) % len(captured)]
        per_charge = collections.Counter(target.values())
        refund_amount, refunded = {}, collections.Counter()
        for k, j in target.items():
            amount = self.charge_amount(j)
            m = per_charge[j]
            refund_amount[k] = amount // (m + 1) if m > 1 else (amount if k % 2 == 0 else amount // 2)
            refunded[j] += refund_amount[k]

        kind = KINDS["charges"]
        for i in range(nch):
            self.store.put(kind, self.charge(i, refunded[i]))
        kind = KINDS["refunds"]
        for k in range(nref):
            self.store.put(kind, self.refund(k, target.get(k), refund_amount.get(k, 100)))

    def charge(self, i, amount_refunded):
        o = self.base("charges", i)
        status = CHARGE_STATUSES[i % 3]
        amount = self.charge_amount(i)
        captured = self.charge_captured(i)
        cust = self.customer_of_charge(i)
        email = f"guest{i}@example.com" if cust is None else self.customer_email(cust)
        o["billing_details"]["email"] = email
        o["billing_details"]["name"] = f"Customer {cust}" if cust is not None else f"Guest {i}"
        o["refunds"]["url"] = f"/v1/charges/{o['id']}/refunds"
        o["outcome"].update(type="authorized" if status == "succeeded" else
                            "issuer_declined" if status == "failed" else "manual_review",
                            seller_message="Payment complete." if status == "succeeded" else None)
        o.update(customer=self.ref("customers", cust), amount=amount, currency=CURRENCIES[i % 4],
                 status=status, paid=status == "succeeded", captured=captured,
                 amount_captured=amount if captured else 0, amount_refunded=amount_refunded,
                 refunded=amount_refunded == amount,
                 payment_intent=self.ref("payment_intents", i) if i < self.n("payment_intents") else None,
                 balance_transaction="txn_" + o["id"][3:] if status == "succeeded" else None,
                 failure_code="card_declined" if status == "failed" else None,
                 failure_message="Your card was declined." if status == "failed" else None,
                 transfer_group=f"group_{i // 5}" if i % 5 == 0 else None,
                 receipt_email=email, description=f"Charge {i}",
                 receipt_url=f"https://pay.stripe.com/receipts/fake/{o['id']}")
        return o

    def refund(self, k, charge_index, amount):
        o = self.base("refunds", k)
        ch = charge_index
        o.update(charge=self.ref("charges", ch), amount=amount,
                 payment_intent=(self.ref("payment_intents", ch)
                                 if ch is not None and ch < self.n("payment_intents") else None),
                 customer=self.ref("customers", self.customer_of_charge(ch)) if ch is not None else None,
                 currency=CURRENCIES[ch % 4] if ch is not None else "usd",
                 status="pending" if k % 5 == 4 else "succeeded",
                 reason="requested_by_customer" if k % 3 == 0 else None)
        return o

    def subscriptions_and_invoices(self):
        nsub, ninv, ncust = self.n("subscriptions"), self.n("invoices"), self.n("customers")
        # invoice i belongs to subscription i % nsub, except every third is one-off.
        inv_sub = {i: i % nsub for i in range(ninv) if nsub and i % 3 != 2}
        latest_invoice = {}
        for i, s in inv_sub.items():
            latest_invoice[s] = i
        prices = [self.store.colls["prices"].records[pid].obj() for pid in self.ids["prices"]]
        recurring = [p for p in prices if p["type"] == "recurring"] or prices
        kind = KINDS["subscriptions"]
        for s in range(nsub):
            self.store.put(kind, self.subscription(s, s % ncust if ncust else None,
                                                   recurring[s % len(recurring)] if recurring else None,
                                                   latest_invoice.get(s)))
        kind = KINDS["invoices"]
        for i in range(ninv):
            s = inv_sub.get(i)
            cust = (s % ncust if s is not None else i % ncust) if ncust else None
            self.store.put(kind, self.invoice(i, s, cust))

    def subscription(self, s, cust, price, latest_invoice):
        o = self.base("subscriptions", s)
        created = o["created"]
        status = SUB_STATUSES[s % 8]
        ended = status in SUB_HIDDEN
        send_invoice = s % 4 == 3
        o["items"] = {"object": "list", "has_more": False, "total_count": 1,
                      "url": f"/v1/subscription_items?subscription={o['id']}",
                      "data": [subscription_item(self.store, o["id"], price, 1, created,
                                                 hashed_id("si_", self.seed, o["id"], 0))]
                      if price else []}
        o.update(customer=self.ref("customers", cust), status=status,
                 currency=price["currency"] if price else "usd",
                 start_date=created, billing_cycle_anchor=created,
                 billing_cycle_anchor_config=None, cancel_at=None, cancel_at_period_end=False,
                 canceled_at=created + 86400 if ended else None,
                 ended_at=created + 86400 if ended else None,
                 trial_start=created if status == "trialing" else None,
                 trial_end=created + 14 * 86400 if status == "trialing" else None,
                 collection_method=COLLECTION_METHODS[1 if send_invoice else 0],
                 days_until_due=30 if send_invoice else None,
                 latest_invoice=self.ref("invoices", latest_invoice),
                 next_pending_invoice_item_invoice=None, pause_collection=None,
                 pending_invoice_item_interval=None, pending_update=None, transfer_data=None,
                 description=f"Subscription {s}")
        return o

    def invoice(self, i, sub, cust):
        o = self.base("invoices", i)
        created = o["created"]
        status = INVOICE_STATUSES[i % 5]
        send_invoice = i % 3 == 1
        total = 1000 + 125 * i
        paid = total if status == "paid" else 0
        sub_id = self.ref("subscriptions", sub)
        currency = CURRENCIES[i % 4]
        line = json.loads(self.store.line_template)
        line.update(id=hashed_id("il_", self.seed, o["id"]), invoice=o["id"], amount=total,
                    livemode=self.store.livemode,
                    currency=currency, subscription=sub_id, subtotal=total, parent=None,
                    description=f"Invoice {i} item", period={"start": created, "end": created})
        o["lines"] = {"object": "list", "has_more": False, "total_count": 1, "data": [line],
                      "url": f"/v1/invoices/{o['id']}/lines"}
        finalized = status != "draft"
        o["status_transitions"] = {
            "finalized_at": created + 3600 if finalized else None,
            "paid_at": created + 7200 if status == "paid" else None,
            "voided_at": created + 7200 if status == "void" else None,
            "marked_uncollectible_at": created + 7200 if status == "uncollectible" else None}
        o.update(customer=self.ref("customers", cust),
                 customer_email=self.customer_email(cust) if cust is not None else None,
                 customer_name=f"Customer {cust}" if cust is not None else None,
                 subscription=sub_id, status=status,
                 collection_method=COLLECTION_METHODS[1 if send_invoice else 0],
                 currency=currency, total=total, subtotal=total, subtotal_excluding_tax=total,
                 total_excluding_tax=total, amount_due=total, amount_paid=paid,
                 amount_remaining=total - paid, amount_overpaid=0, attempted=status == "paid",
                 attempt_count=1 if status == "paid" else 0, auto_advance=status == "draft",
                 billing_reason="subscription_create" if sub_id else "manual",
                 number=f"{o['id'][3:11].upper()}-{i:04d}" if finalized else None,
                 due_date=created + 30 * 86400 if send_invoice else None,
                 effective_at=created + 3600 if finalized else None,
                 period_start=created, period_end=created, webhooks_delivered_at=created,
                 next_payment_attempt=None, last_finalization_error=None, from_invoice=None,
                 shipping_cost=None,
                 parent=({"type": "subscription_details", "quote_details": None,
                          "subscription_details": {"metadata": {}, "subscription": sub_id}}
                         if sub_id else None),
                 hosted_invoice_url=f"https://invoice.stripe.com/i/fake/{o['id']}" if finalized else None)
        return o

    def events(self):
        """One creation event for each of the most recent seeded objects."""
        wanted = self.counts.get("events", 0)
        if not wanted:
            return
        cands = [(rec.created, rec.id, kind, rec)
                 for path, kind in KINDS.items() if path != "events" and kind.seed_events
                 for rec in self.store.colls[path].records.values()]
        newest = heapq.nlargest(wanted, cands, key=lambda c: (c[0], c[1]))
        for created, _, kind, rec in reversed(newest):
            obj_status = json.loads(rec.blob).get("status") if kind.obj == "charge" else None
            type_ = "charge." + obj_status if obj_status else kind.event_prefix + ".created"
            self.store.emit(type_, rec.blob, created=created)


    def payment_methods(self):
        """Cards (every fourth a Link) attached to the oldest customers, a few each."""
        kind = KINDS["payment_methods"]
        owner = few_per_parent(self.n("payment_methods"), self.n("customers"))
        per_customer = collections.Counter()
        for i, cust in enumerate(owner):
            k = per_customer[cust]
            per_customer[cust] += 1
            self.store.put(kind, self.payment_method(i, cust, k))

    def payment_method(self, i, cust, k):
        o = self.base("payment_methods", i)
        email = self.customer_email(cust)
        o["billing_details"].update(email=email, name=f"Customer {cust}", phone=None)
        o.update(customer=self.ref("customers", cust), created=seeded_created(cust) + 600 * (k + 1),
                 allow_redisplay=PM_REDISPLAY[i % 3], customer_account=None)
        if i % 4 == 3:
            del o["card"]
            o.update(type="link", link={"email": email, "persistent_token": None})
        else:
            brand = CARD_BRANDS[i % 3]
            o["card"].update(brand=brand, display_brand=brand, last4=f"{(4242 + 97 * i) % 10000:04d}",
                             exp_month=1 + i % 12, exp_year=2027 + i % 5, generated_from=None,
                             fingerprint=hashed_id("", self.seed, o["id"], width=16), wallet=None,
                             networks={"available": [brand], "preferred": None})
            o["type"] = "card"
        return o

    def promotion_code(self, i):
        """Codes of the seeded coupons (none if there are none), every third for one
        customer only, every fourth inactive."""
        o = self.base("promotion_codes", i)
        ncoup, ncust = self.n("coupons"), self.n("customers")
        o.update(code=f"CODE{i:03d}", active=i % 4 != 3, times_redeemed=i % 5,
                 customer=self.ref("customers", i % ncust) if ncust and i % 3 == 2 else None,
                 expires_at=None, customer_account=None,
                 promotion={"type": "coupon",
                            "coupon": self.ref("coupons", i % ncoup) if ncoup else None})
        return o

    def dispute(self, i):
        """A dispute of charge i (and its payment intent), in every status."""
        o = self.base("disputes", i)
        nch, npi = self.n("charges"), self.n("payment_intents")
        status = DISPUTE_STATUSES[i % len(DISPUTE_STATUSES)]
        o.update(charge=self.ref("charges", i % nch) if nch else None,
                 payment_intent=self.ref("payment_intents", i % nch) if nch and i % nch < npi else None,
                 amount=self.charge_amount(i), currency=CURRENCIES[i % 4], status=status,
                 reason=("fraudulent", "general", "duplicate")[i % 3],
                 is_charge_refundable=status.startswith("warning"), balance_transactions=[])
        return o

    def payout(self, i):
        """Payouts to two bank accounts, arriving two days after they are made."""
        o = self.base("payouts", i)
        status = PAYOUT_STATUSES[i % len(PAYOUT_STATUSES)]
        o.update(amount=1000 + 10 * i, currency=CURRENCIES[i % 4], status=status,
                 arrival_date=o["created"] + 2 * 86400, automatic=i % 2 == 0,
                 destination=("ba_fake_one", "ba_fake_two")[i % 2],
                 balance_transaction=None, failure_balance_transaction=None,
                 failure_code="account_closed" if status == "failed" else None,
                 failure_message="The bank account has been closed." if status == "failed" else None,
                 description=f"Payout {i}", reconciliation_status="not_applicable")
        return o

    def transfer(self, i):
        """Transfers to three connected accounts, in three groups; none reversed."""
        o = self.base("transfers", i)
        o.update(amount=500 + 5 * i, amount_reversed=0, reversed=False, currency=CURRENCIES[i % 4],
                 destination=f"acct_fake{i % 3}", transfer_group=f"group_{i % 3}",
                 balance_transaction=None, destination_payment=None, description=f"Transfer {i}",
                 reversals={"object": "list", "data": [], "has_more": False, "total_count": 0,
                            "url": f"/v1/transfers/{o['id']}/reversals"})
        return o

    def customer_children(self):
        """Tax ids and balance transactions of the oldest customers, a few each."""
        for path in ("tax_ids", "customer_balance_transactions"):
            kind = KINDS[path]
            owner = few_per_parent(self.n(path), self.n("customers"))
            seen = collections.Counter()
            for i, cust in enumerate(owner):
                k = seen[cust]
                seen[cust] += 1
                o = self.base(path, i)
                o.update(customer=self.ref("customers", cust), customer_account=None,
                         created=seeded_created(cust) + 300 * (k + 1))
                if path == "tax_ids":
                    del o["metadata"]       # a tax id has none
                    o["owner"].update(customer=o["customer"])
                    o["value"] = f"DE{100000000 + i}"
                else:
                    o.update(amount=-100 * (k + 1), ending_balance=-100 * (k + 1) * (k + 2) // 2,
                             metadata=None)
                self.store.put(kind, o)

    def setup_intents_and_attempts(self):
        """Setup intents of the oldest customers; attempts a few per intent, the last one
        succeeded when its intent did."""
        pm_of = {}
        for rec in self.store.colls["payment_methods"].records.values():
            pm_of.setdefault(rec.keys["customer"][0] if rec.keys["customer"] else None, rec.id)
        nsi, ncust = self.n("setup_intents"), self.n("customers")
        owner = few_per_parent(self.n("setup_attempts"), nsi)
        attempts = collections.defaultdict(list)
        for j, s in enumerate(owner):
            attempts[s].append(j)
        si_kind, att_kind = KINDS["setup_intents"], KINDS["setup_attempts"]
        for s in range(nsi):
            cust = None if (s % 5 == 4 or not ncust) else s % ncust
            cust_id = self.ref("customers", cust)
            pm = pm_of.get(cust_id) or hashed_id("pm_", self.seed, "setup", s)
            tried = attempts.get(s, [])
            status = ("requires_payment_method" if not tried or s % 3 == 1 else "succeeded")
            si = self.base("setup_intents", s)
            declined = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                        "message": "Your card was declined."}
            for k, j in enumerate(tried):
                last = k == len(tried) - 1
                ok = last and status == "succeeded"
                a = self.base("setup_attempts", j)
                a.update(created=si["created"] + 60 * (k + 1), customer=cust_id, payment_method=pm,
                         setup_intent=si["id"], status="succeeded" if ok else "failed",
                         setup_error=None if ok else declined, usage="off_session",
                         flow_directions=None, customer_account=None)
                a["payment_method_details"] = {"card": {"three_d_secure": None}, "type": "card"}
                self.store.put(att_kind, a)
            si.update(customer=cust_id, status=status, description=f"Setup {s}",
                      client_secret=f"{si['id']}_secret_{si['id'][5:]}",
                      payment_method=pm if status == "succeeded" else None,
                      latest_attempt=self.ref("setup_attempts", tried[-1]) if tried else None,
                      last_setup_error=declined if tried and status != "succeeded" else None,
                      next_action=None, payment_method_configuration_details=None,
                      automatic_payment_methods={"enabled": True, "allow_redirects": "always"})
            self.store.put(si_kind, si)


def balance_object(template, livemode=False):
    """The account's balance: a few currencies available and pending (one of them
    negative, as Stripe allows), and the nested prefunding balance, whose arrays are
    not top-level."""
    b = json.loads(json.dumps(template))
    card = lambda amount, **more: dict(amount=amount, **more, source_types={"card": amount})
    b.update(available=[{"amount": 1234567, "currency": "usd",
                         "source_types": {"bank_account": 34567, "card": 1200000}},
                        card(250000, currency="eur"), card(98000, currency="jpy")],
             connect_reserved=[{"amount": 0, "currency": "usd"}],
             instant_available=[card(1200000, currency="usd")],
             livemode=livemode, object="balance",
             pending=[card(45000, currency="usd"), card(-1500, currency="eur")],
             refund_and_dispute_prefunding={"available": [{"amount": 0, "currency": "usd"}],
                                            "pending": [{"amount": 0, "currency": "usd"}]})
    return b


def subscription_item(store, sub_id, price, quantity, created, item_id):
    item = json.loads(store.item_template)
    item.update(id=item_id, created=created, price=price, quantity=quantity, metadata={},
                subscription=sub_id, discounts=[], tax_rates=[], billing_thresholds=None,
                current_period_start=created, current_period_end=created + 30 * 86400)
    recurring = price.get("recurring") or {}
    item["plan"].update(id=price["id"], active=price["active"], amount=price["unit_amount"],
                        amount_decimal=price.get("unit_amount_decimal"), created=price["created"],
                        currency=price["currency"], livemode=store.livemode, metadata={},
                        product=price["product"], billing_scheme="per_unit",
                        interval=recurring.get("interval", "month"),
                        interval_count=recurring.get("interval_count", 1), transform_usage=None)
    return item


# --------------------------------------------------------------------------- form bodies

KEY_RE = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)$")
SUBKEY_RE = re.compile(r"\[([^\[\]]*)\]")


def decode_form(body):
    """`a[b][0][c]=v&list[]=x` -> nested dicts/lists of strings (like Stripe's parser)."""
    root = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        m = KEY_RE.match(key)
        if not m:
            raise ApiError(400, f"Invalid parameter name: {key}", code="parameter_unknown",
                           param=key)
        segs = [m.group(1)] + SUBKEY_RE.findall(m.group(2))
        node = root
        for seg in segs[:-1]:
            seg = seg or str(len(node))
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[segs[-1] or str(len(node))] = value
    return listify(root)


def listify(node):
    """Dicts keyed 0..n (outside metadata) become lists."""
    for k, v in node.items():
        if isinstance(v, dict) and k != "metadata":
            node[k] = listify(v)
    if node and all(k.isdigit() for k in node):
        return [node[k] for k in sorted(node, key=int)]
    return node


def coerce(value, key, param):
    """Decode numbers and booleans of known fields; "" stays (it means unset)."""
    if isinstance(value, dict):
        if key == "metadata":
            return check_metadata(value, param)
        return {k: coerce(v, k, f"{param}[{k}]") for k, v in value.items()}
    if isinstance(value, list):
        return [coerce(v, key, f"{param}[{i}]") for i, v in enumerate(value)]
    if value == "":
        return value
    if key in INT_FIELDS:
        return parse_int(value, param)
    if key in FLOAT_FIELDS:
        try:
            return float(value)
        except ValueError:
            raise ApiError(400, "Invalid decimal: " + value, code="parameter_invalid_decimal",
                           param=param) from None
    if key in BOOL_FIELDS:
        if value not in ("true", "false"):
            raise ApiError(400, "Invalid boolean: " + value, code="parameter_invalid_boolean",
                           param=param)
        return value == "true"
    return value


METADATA_MAX_KEYS, METADATA_KEY_LEN, METADATA_VALUE_LEN = 50, 40, 500


def check_metadata(meta, param):
    """Stripe's metadata is flat: up to 50 keys of at most 40 characters, each value a
    string of at most 500 characters.  A nested value (metadata[a][b]=…) is refused
    with a 400 invalid_request_error naming the parameter, as Stripe refuses it."""
    if len(meta) > METADATA_MAX_KEYS:
        raise ApiError(400, f"Metadata can have at most {METADATA_MAX_KEYS} keys.",
                       code="parameter_invalid_string", param=param)
    for k, v in meta.items():
        where = f"{param}[{k}]"
        if not isinstance(v, str):
            raise ApiError(400, f"Invalid value for {where}: metadata values must be strings, "
                           "not nested objects or arrays.", code="parameter_invalid_string",
                           param=where)
        if len(k) > METADATA_KEY_LEN:
            raise ApiError(400, f"Metadata keys can be at most {METADATA_KEY_LEN} characters "
                           f"long: {k!r}.", code="parameter_invalid_string", param=where)
        if len(v) > METADATA_VALUE_LEN:
            raise ApiError(400, f"Metadata values can be at most {METADATA_VALUE_LEN} "
                           f"characters long: {where}.", code="parameter_invalid_string",
                           param=where)
    return meta


def write_params(body):
    params = decode_form(body)
    params.pop("expand", None)
    return {k: coerce(v, k, k) for k, v in params.items()}


def apply_update(obj, params):
    """Stripe update semantics: replace top-level fields ("" unsets), merge metadata
    ("" removes a key).  Returns previous_attributes of what changed."""
    prev = {}
    for k, v in params.items():
        if k == "metadata":
            old = obj.get("metadata") or {}
            new = {} if v == "" else dict(old)
            if isinstance(v, dict):
                for mk, mv in v.items():
                    if mv == "":
                        new.pop(mk, None)
                    else:
                        new[mk] = mv
            changed = {mk: old.get(mk) for mk in sorted(set(old) | set(new))
                       if old.get(mk) != new.get(mk)}
            if changed:
                prev["metadata"] = changed
                obj["metadata"] = new
        else:
            v = None if v == "" else v
            if obj.get(k) != v:
                prev[k] = obj.get(k)
                obj[k] = v
    return prev


def require(params, name):
    if params.get(name) in (None, ""):
        raise ApiError(400, f"Missing required param: {name}.", code="parameter_missing",
                       param=name)
    return params[name]


# --------------------------------------------------------------------------- API writes

class Writes:
    """POST/DELETE /v1 handlers.  Called with the store lock held."""

    def __init__(self, store):
        self.store = store

    @staticmethod
    def check_params(params, allowed):
        for k in params:
            if k not in allowed:
                raise unknown_param(k)

    def create_allowed(self, kind):
        if kind.create_params is not None:
            return kind.create_params
        allowed = self.store.template_keys[kind.path] - READ_ONLY
        if kind.obj in ("product", "coupon"):
            allowed = allowed | {"id"}
        if kind.obj == "subscription":
            allowed = allowed | {"trial_period_days"}
        return allowed

    def fresh(self, kind, params):
        """Template copy with id/created set; `params` may name the id (products, coupons)."""
        obj = self.store.template(kind)
        oid = params.pop("id", None)
        if oid is not None:
            coll = self.store.colls[kind.path]
            if oid in coll.records or oid in coll.deleted:
                raise ApiError(400, f"{kind.obj.capitalize()} already exists.",
                               code="resource_already_exists", param="id")
        obj.update(id=oid or self.store.new_id(kind), object=kind.obj,
                   created=int(time.time()), livemode=self.store.livemode, metadata={})
        return obj

    def create(self, kind, params, request):
        self.check_params(params, self.create_allowed(kind))
        build = getattr(self, "create_" + kind.obj)
        return self.store.create(kind, build(kind, params, request), request)

    def create_customer(self, kind, params, request):
        obj = self.fresh(kind, params)
        obj.update(email=None, name=None, discount=None, currency=None,
                   invoice_prefix=obj["id"][4:12].upper())
        apply_update(obj, params)
        return obj

    def create_product(self, kind, params, request):
        require(params, "name")
        obj = self.fresh(kind, params)
        obj.update(description=None, default_price=None, package_dimensions=None,
                   active=True, updated=obj["created"])
        apply_update(obj, params)
        return obj

    def create_price(self, kind, params, request):
        require(params, "currency")
        product = require(params, "product")
        self.store.get(KINDS["products"], product, "product", 400)
        require(params, "unit_amount")
        obj = self.fresh(kind, params)
        recurring = params.pop("recurring", None)
        if isinstance(recurring, dict):
            obj["recurring"].update(recurring)
            obj["type"] = "recurring"
        else:
            obj.update(recurring=None, type="one_time")
        obj.update(custom_unit_amount=None, transform_quantity=None, nickname=None,
                   lookup_key=None, active=True)
        apply_update(obj, params)
        obj["unit_amount_decimal"] = str(obj["unit_amount"])
        return obj

    def create_coupon(self, kind, params, request):
        if params.get("percent_off") in (None, "") and params.get("amount_off") in (None, ""):
            raise ApiError(400, "Must provide either percent_off or amount_off.",
                           code="parameter_missing", param="percent_off")
        if params.get("amount_off") not in (None, ""):
            require(params, "currency")
        obj = self.fresh(kind, params)
        obj.update(name=None, percent_off=None, amount_off=None, currency=None,
                   duration="once", duration_in_months=None, redeem_by=None,
                   max_redemptions=None, times_redeemed=0, valid=True)
        apply_update(obj, params)
        return obj

    def create_subscription(self, kind, params, request):
        customer = require(params, "customer")
        clock = self.store.get(KINDS["customers"], customer, "customer", 400).get("test_clock")
        items = require(params, "items")
        if not isinstance(items, list):
            raise ApiError(400, "Invalid array", code="parameter_invalid_array", param="items")
        trial_days = params.pop("trial_period_days", None)
        obj = self.fresh(kind, params)
        now = obj["created"]
        params["items"] = self.sub_items(obj, [], params.pop("items"))
        trial_end = params.pop("trial_end", None) or (now + trial_days * 86400 if trial_days else None)
        first_price = params["items"]["data"][0]["price"]
        obj.update(status="trialing" if trial_end else "active", start_date=now,
                   billing_cycle_anchor=trial_end or now, billing_cycle_anchor_config=None,
                   cancel_at=None, canceled_at=None, ended_at=None, cancel_at_period_end=False,
                   trial_start=now if trial_end else None, trial_end=trial_end,
                   currency=first_price["currency"], latest_invoice=None, pending_update=None,
                   pause_collection=None, next_pending_invoice_item_invoice=None,
                   pending_invoice_item_interval=None, transfer_data=None,
                   test_clock=clock)  # a subscription runs on its customer's clock
        apply_update(obj, params)
        return obj

    def sub_items(self, sub, current, changes):
        """Apply `items[n][id|price|quantity|deleted]` to the current item list."""
        items = {it["id"]: it for it in current}
        for n, change in enumerate(changes):
            param = f"items[{n}]"
            if not isinstance(change, dict):
                raise ApiError(400, "Invalid hash", code="parameter_invalid_hash", param=param)
            item_id = change.get("id")
            if item_id is not None and item_id not in items:
                raise no_such("subscription_item", item_id, param + "[id]", 400)
            if change.get("deleted"):
                items.pop(item_id, None)
                continue
            price_id = change.get("price")
            price = (self.store.get(KINDS["prices"], price_id, param + "[price]", 400)
                     if price_id else None)
            quantity = change.get("quantity", 1)
            if item_id is None:
                if price is None:
                    require({}, param + "[price]")
                new_id = hashed_id("si_", self.store.seed_value, sub["id"], next(self.store.counter))
                items[new_id] = subscription_item(self.store, sub["id"], price, quantity,
                                                  int(time.time()), new_id)
            else:
                item = items[item_id]
                if price is not None:
                    item = subscription_item(self.store, sub["id"], price,
                                             change.get("quantity", item["quantity"]),
                                             item["created"], item_id)
                elif "quantity" in change:
                    item["quantity"] = quantity
                items[item_id] = item
        return {"object": "list", "data": list(items.values()), "has_more": False,
                "total_count": len(items), "url": f"/v1/subscription_items?subscription={sub['id']}"}

    def create_refund(self, kind, params, request):
        charges = KINDS["charges"]
        if params.get("charge"):
            charge = self.store.get(charges, params["charge"], "charge", 400)
        elif params.get("payment_intent"):
            pi = params["payment_intent"]
            self.store.get(KINDS["payment_intents"], pi, "payment_intent", 400)
            found = [r for r in self.store.colls["charges"].records.values()
                     if r.keys["payment_intent"] == (pi,)]
            if not found:
                raise ApiError(400, f"This PaymentIntent ({pi}) does not have a successful charge "
                               "to refund.", code="charge_not_refundable", param="payment_intent")
            charge = max(found, key=lambda r: (r.created, r.id)).obj()
        else:
            require(params, "charge")
        remaining = charge["amount"] - charge["amount_refunded"]
        if charge["status"] != "succeeded":
            raise ApiError(400, f"Charge {charge['id']} has not succeeded and cannot be refunded.",
                           code="charge_not_refundable", param="charge")
        if remaining <= 0:
            raise ApiError(400, f"Charge {charge['id']} has already been refunded.",
                           code="charge_already_refunded")
        amount = params.pop("amount", None) or remaining
        if amount > remaining:
            raise ApiError(400, f"Refund amount ({amount}) is greater than unrefunded amount on "
                           f"charge ({remaining})", param="amount")
        obj = self.fresh(kind, params)
        obj.update(charge=charge["id"], payment_intent=charge.get("payment_intent"),
                   customer=charge.get("customer"), currency=charge["currency"], amount=amount,
                   status="succeeded", balance_transaction="txn_" + obj["id"][3:])
        params.pop("charge", None)
        params.pop("payment_intent", None)
        apply_update(obj, params)
        new_charge = dict(charge)
        prev = apply_update(new_charge, {"amount_refunded": charge["amount_refunded"] + amount,
                                         "refunded": charge["amount_refunded"] + amount == charge["amount"]})
        self.store.put(charges, new_charge)
        self.store.emit("charge.refunded", self.store.colls["charges"].records[charge["id"]].blob,
                        previous=prev, request=request)
        return obj

    def update(self, kind, oid, params, request):
        old = self.store.get(kind, oid)
        allowed = kind.updatable or (self.store.template_keys[kind.path] - READ_ONLY)
        self.check_params(params, allowed)
        new = self.store.get(kind, oid)
        if kind.obj == "subscription" and "items" in params:
            if not isinstance(params["items"], list):
                raise ApiError(400, "Invalid array", code="parameter_invalid_array", param="items")
            params["items"] = self.sub_items(new, new["items"]["data"], params["items"])
        prev = apply_update(new, params)
        if prev and kind.obj == "product":
            new["updated"] = int(time.time())
        return self.store.replace(kind, old, new, prev, request)

    def delete(self, kind, oid, request):
        store = self.store
        obj = store.get(kind, oid)
        if kind.obj == "subscription" and obj["status"] in SUB_HIDDEN:
            raise ApiError(400, "This subscription has already been canceled.", param="id")
        if kind.obj == "product":
            if any(r.keys["product"] == (oid,) for r in store.colls["prices"].records.values()):
                raise ApiError(400, "This product cannot be deleted because it has one or more "
                               "user-created prices.", code="product_has_prices")
        if kind.obj == "customer":
            # Like Stripe: deleting a customer cancels its subscriptions at once.
            subs = KINDS["subscriptions"]
            for rec in list(store.colls["subscriptions"].records.values()):
                if rec.keys["customer"] == (oid,) and rec.keys["status"][0] not in SUB_HIDDEN:
                    store.delete(subs, rec.id, request)
        return store.delete(kind, oid, request)


# --------------------------------------------------------------------------- faults, log

FAULT_KINDS = ("429", "500", "503", "status", "401", "delay", "drop", "reset", "truncate",
               "malformed", "empty", "redirect", "body", "hold")


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []

    def add(self, spec):
        kind = str(spec.get("kind"))
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        fault = {"kind": kind, "count": int(spec.get("count", 1)), "path": spec.get("path"),
                 "contains": spec.get("contains"), "account": spec.get("account")}
        if fault["count"] < 1:
            raise ValueError("count must be >= 1")
        if kind == "status":
            fault["status"] = int(spec["status"])
            if not 100 <= fault["status"] <= 599:
                raise ValueError("status must be an HTTP status code")
        if kind == "delay":
            fault["delay"] = float(spec["delay"])
        if kind == "hold":
            fault["timeout"] = float(spec.get("timeout", 300))
            if fault["timeout"] <= 0:
                raise ValueError("timeout must be > 0")
        if kind == "redirect":
            fault["status"] = int(spec.get("status", 302))
            if fault["status"] not in (301, 302, 303, 307, 308):
                raise ValueError("a redirect's status is 301, 302, 303, 307 or 308")
            fault["location"] = str(spec["location"])
        if kind == "body":
            # a hostile answer as it is: any status, text or raw bytes (base64), headers
            fault["status"] = int(spec.get("status", 200))
            if not 100 <= fault["status"] <= 599:
                raise ValueError("status must be an HTTP status code")
            raw = spec.get("body_b64")
            fault["body"] = (base64.b64decode(raw) if raw is not None
                             else str(spec.get("body", "")).encode("utf-8"))
            headers = spec.get("headers") or {}
            if not isinstance(headers, dict):
                raise ValueError("headers must be a JSON object")
            fault["headers"] = [(str(k), str(v)) for k, v in headers.items()]
        for key in ("retry_after", "should_retry", "after", "message", "code", "param", "reason"):
            if spec.get(key) is not None:
                fault[key] = spec[key]
        with self.lock:
            self.queue.append(fault)
        return self.shown(fault)

    @staticmethod
    def shown(fault):
        """A fault as the control API shows it (a body's bytes are not JSON)."""
        return {k: v for k, v in fault.items() if k != "body"}

    def take(self, raw_path, account=None):
        """The first pending fault matching this request (its count is used up)."""
        if not self.queue:
            return None
        with self.lock:
            for i, fault in enumerate(self.queue):
                # a path prefix, text anywhere in the path and query ("starting_after="),
                # and the request's Stripe-Account
                if ((not fault["path"] or raw_path.startswith(fault["path"])) and
                        (not fault["contains"] or fault["contains"] in raw_path) and
                        (not fault["account"] or fault["account"] == account)):
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        del self.queue[i]
                    return dict(fault)
        return None

    def pending(self):
        with self.lock:
            return [self.shown(f) for f in self.queue]

    def clear(self):
        with self.lock:
            self.queue.clear()


class Holds:
    """Requests a "hold" fault keeps waiting until they are released."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiting = []  # [(entry dict, threading.Event)]

    def wait(self, method, path, timeout):
        entry, released = {"method": method, "path": path, "since": time.time()}, threading.Event()
        with self.lock:
            self.waiting.append((entry, released))
        try:
            released.wait(timeout)
        finally:
            with self.lock:
                self.waiting = [w for w in self.waiting if w[1] is not released]

    def held(self):
        with self.lock:
            return [dict(e) for e, _ in self.waiting]

    def release(self):
        """Lets every waiting request go on; -> how many."""
        with self.lock:
            for _, released in self.waiting:
                released.set()
            return len(self.waiting)


LOG_FIELDS = ("method", "path", "status", "stripe_version", "stripe_account", "idempotency_key",
              "authorized", "fault", "time")


class RequestLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.clear()

    def clear(self):
        with self.lock:
            self.entries = []
            self.rate_limited = 0

    def add(self, entry, rate_limited):
        with self.lock:
            self.entries.append(entry)
            self.rate_limited += rate_limited

    def snapshot(self):
        with self.lock:
            return list(self.entries), self.rate_limited


class RateLimiter:
    """Stripe's rate limiters (docs.stripe.com/rate-limits), as sliding one-second
    windows over the /v1 requests let through: `rate` for the account in all
    (global-rate) and `endpoint_rate` for each endpoint (endpoint-rate), an endpoint
    being a method and a path with its ids taken out (GET /v1/customers/{id} is one,
    whatever the id).  Both default to Stripe's test-mode limits; 0 switches one off.
    A live key (sk_live_, rk_live_) goes by `live_rate` in all instead (Stripe's 100),
    in windows of its own: live and test mode are counted apart."""

    def __init__(self, rate=GLOBAL_RATE, endpoint_rate=ENDPOINT_RATE, live_rate=LIVE_RATE):
        self.lock = threading.Lock()
        self.rate, self.endpoint_rate, self.live_rate = rate, endpoint_rate, live_rate
        self.windows = collections.defaultdict(collections.deque)
        self.endpoints = collections.defaultdict(collections.deque)

    @staticmethod
    def endpoint(method, path):
        words = [w if w in PATH_WORDS else "{id}" for w in path.split("?", 1)[0].split("/")]
        return method + " " + "/".join(words)

    def refusal(self, method, path, live=False):
        """None when the request may go, else the Stripe-Rate-Limited-Reason."""
        rate = self.live_rate if live else self.rate
        if not rate and not self.endpoint_rate:
            return None
        now = time.monotonic()
        with self.lock:
            windows = (("global-rate", rate, self.windows[live]),
                       ("endpoint-rate", self.endpoint_rate,
                        self.endpoints[(live, self.endpoint(method, path))]))
            for reason, rate, window in windows:
                while window and window[0] <= now - 1.0:
                    window.popleft()
                if rate and len(window) >= rate:
                    return reason
            for _, _, window in windows:
                window.append(now)
            return None


# --------------------------------------------------------------------------- HTTP

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Request Failed",
           403: "Forbidden", 404: "Not Found", 409: "Conflict", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}
KEY_PREFIX_RE = re.compile(r"^[a-z]{2,4}_(?:test|live)_")
LIVE_KEY_RE = re.compile(r"^(?:sk|rk)_live_")


def send(handler, status, body, headers=(), truncate=False):
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if truncate:
        # Promise the whole body, deliver half of it, then hang up.
        body = body[:len(body) // 2]
        handler.close_connection = True
    if handler.close_connection:
        lines.append("Connection: close")
    handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


class App:
    def __init__(self, fixtures, counts, seed, api_key):
        self.fixtures = fixtures
        # a live key's account holds live-mode objects
        self.livemode = api_key.startswith(("sk_live_", "rk_live_"))
        self.platform = Store(fixtures, livemode=self.livemode)
        self.platform.reseed(counts, seed)
        # Connect: the platform's connected accounts (acct_… -> Store, oldest first), the
        # ones deauthorized, and the store the current request reads (Stripe-Account)
        self.connected = {}
        self.deauthorized = {}
        self.writers = {id(self.platform): Writes(self.platform)}
        self.current = threading.local()
        self.api_keys = {api_key}
        self.restricted_keys = {}  # rk_… -> the permissions it has (customer_read, …)
        self.latency_ms = 0.0
        self.faults = Faults()
        self.holds = Holds()
        self.log = RequestLog()
        self.limiter = RateLimiter()
        self.req_prefix = "req_" + b62(int.from_bytes(os.urandom(5), "big"), 6)
        self.req_counter = itertools.count(1)
        self.flight_lock = threading.Lock()
        self.in_flight = 0
        self.in_flight_peak = 0  # reset with the request log

    @property
    def store(self):
        return getattr(self.current, "store", None) or self.platform

    @property
    def writes(self):
        return self.writers[id(self.store)]

    def account_store(self, hdrs, control=False):
        """The store a request's Stripe-Account selects (none: the platform's).  Like
        Stripe, a connected account the platform may not reach (deauthorized, or never
        connected) is a 403 naming it; while no account is connected, any header reads
        the platform's objects, as the tests of a server's "account" option expect."""
        acct = hdrs.get("Stripe-Account")
        if not acct or acct == ACCOUNT_ID:
            return self.platform
        with self.platform.lock:
            store = self.connected.get(acct)
            known = bool(self.connected or self.deauthorized)
        if store is not None:
            return store
        if not known:
            return self.platform
        if control:
            raise ApiError(404, f"no connected account {acct}")
        key = self.request_key(hdrs) or ""
        m = KEY_PREFIX_RE.match(key)
        masked = (m.group(0) if m else "") + "*" * 4 + key[-4:]
        raise ApiError(403, f"The provided key '{masked}' does not have access to account '{acct}' "
                       "(or that account does not exist). Application access may have been revoked.",
                       code="account_invalid")

    def handle(self, h):
        length = h.headers.get("Content-Length")
        body = h.rfile.read(int(length)) if length and length.isdigit() else b""
        path = h.path.split("?", 1)[0]
        if path == "/_control" or path.startswith("/_control/"):
            self.control(h, h.command, path, body)
        else:
            self.api(h, body)

    # ---- /v1

    @staticmethod
    def request_key(headers):
        """The API key a request carries (bearer or basic auth), or None."""
        value = headers.get("Authorization") or ""
        scheme, _, cred = value.partition(" ")
        key = None
        if scheme.lower() == "bearer":
            key = cred.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(cred.strip()).decode("utf-8").split(":", 1)[0]
            except ValueError:
                key = cred.strip()
        return key

    def auth_error(self, headers, force=False):
        """None if the request carries a valid key, else the 401 ApiError."""
        key = self.request_key(headers)
        if not key:
            return ApiError(401, "You did not provide an API key. You need to provide your API "
                            "key in the Authorization header, using Bearer auth (e.g. "
                            "'Authorization: Bearer YOUR_SECRET_KEY').")
        if (key in self.api_keys or key in self.restricted_keys) and not force:
            return None
        m = KEY_PREFIX_RE.match(key)
        masked = (m.group(0) if m else "") + "****" + key[-4:]
        return ApiError(401, "Invalid API Key provided: " + masked)

    def api(self, h, body):
        """One /v1 request; counts the requests in flight at once (their peak is in
        /_control/stats), from arrival until just before the answer is written,
        latency included: a client that has its answer may send its next request
        at once without the two counting as in flight together."""
        with self.flight_lock:
            self.in_flight += 1
            self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        h.in_flight = True
        try:
            self.serve_api(h, body)
        finally:
            self.landed(h)

    def landed(self, h):
        """The request is no longer in flight (once, whichever way it ends)."""
        if h.in_flight:
            h.in_flight = False
            with self.flight_lock:
                self.in_flight -= 1

    def serve_api(self, h, body):
        started = time.time()
        hdrs = h.headers
        raw_path = h.path
        rid = f"{self.req_prefix}{b62(next(self.req_counter), 8)}"
        version = hdrs.get("Stripe-Version")
        fault = self.faults.take(raw_path, hdrs.get("Stripe-Account"))
        kind = fault["kind"] if fault else None
        if kind == "hold":
            self.holds.wait(h.command, raw_path, fault["timeout"])
        auth = self.auth_error(hdrs)

        def record(status, rate_limited=0):
            # Logged before the response goes out, so a client that has its answer
            # always finds its request in the log.
            self.log.add((h.command, raw_path, status, version, hdrs.get("Stripe-Account"),
                          hdrs.get("Idempotency-Key"), auth is None, kind, started), rate_limited)

        if kind in ("drop", "reset"):
            record(None)
            self.landed(h)
            h.close_connection = True
            if kind == "reset":
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.server.to_reset.add(h.connection)
            return
        headers = [("Request-Id", rid), ("Stripe-Version", version or API_VERSION)]
        if kind == "redirect":
            record(fault["status"])
            self.landed(h)
            send(h, fault["status"], b"", headers + [("Location", fault["location"])])
            return
        if kind == "body":
            # served as given, before auth and routing; its headers come last and win
            record(fault["status"])
            self.landed(h)
            send(h, fault["status"], fault["body"], headers + fault["headers"])
            return
        if fault:
            if "retry_after" in fault:
                headers.append(("Retry-After", fault["retry_after"]))
            if "should_retry" in fault:
                headers.append(("Stripe-Should-Retry",
                                "true" if fault["should_retry"] in (True, "true") else "false"))
        rate_limited = 0
        try:
            # "after": the request is carried out, then its answer is lost to the error
            failing = kind in ("429", "500", "503", "status", "401")
            if failing and not fault.get("after"):
                raise self.fault_error(kind, fault, hdrs)
            refusal = self.limiter.refusal(h.command, raw_path,
                                           live=LIVE_KEY_RE.match(self.request_key(hdrs) or "") is not None)
            if refusal:
                rate_limited = 1
                raise ApiError(429, "Request rate limit exceeded. Learn more about rate limits "
                               "here https://stripe.com/docs/rate-limits.", code="rate_limit",
                               headers={"Retry-After": "1", "Stripe-Rate-Limited-Reason": refusal})
            if auth is not None:
                raise auth
            self.check_permission(hdrs, h.command, raw_path.partition("?")[0])
            self.current.store = self.account_store(hdrs)
            status, out, extra = self.route(h, raw_path, body, rid)
            if failing:
                err = self.fault_error(kind, fault, hdrs)
                # the endpoint ran: its failure is the answer a retry gets replayed
                self.resave_idempotent(hdrs.get("Idempotency-Key"), extra, err, rid)
                raise err
            headers.extend(extra)
        except ApiError as e:
            status, out = e.status, e.body(rid)
            headers.extend(e.headers.items())
        except Exception:  # a bug here: say so like Stripe would, and show it on stderr
            traceback.print_exc()
            status, out = 500, ApiError(500, "An unknown error occurred", "api_error").body(rid)
        finally:
            self.current.store = None
        if kind == "delay":
            time.sleep(fault["delay"])
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)
        if kind == "malformed":
            status, out = 200, out[:len(out) // 2]
        elif kind == "empty":
            status, out = 200, b""
        record(status, rate_limited)
        self.landed(h)
        send(h, status, out, headers, truncate=kind == "truncate")

    def check_permission(self, hdrs, method, path):
        """A restricted key without the permission the endpoint needs gets Stripe's 403
        (invalid_request_error, no code), which names the permission; the key is shown
        masked, as Stripe shows it."""
        key = self.request_key(hdrs)
        granted = self.restricted_keys.get(key)
        if granted is None:
            return
        needed = required_permission(method, path)
        if needed is None or permitted(needed, granted):
            return
        m = KEY_PREFIX_RE.match(key)
        prefix = m.group(0) if m else ""
        masked = prefix + "*" * max(len(key) - len(prefix) - 6, 4) + key[-6:]
        account = hdrs.get("Stripe-Account") or ACCOUNT_ID
        raise ApiError(403, f"The provided key '{masked}' does not have the required permissions "
                       f"for this endpoint on account '{account}'. Having the 'rak_{needed}' "
                       "permission would allow this request to continue.")

    def fault_error(self, kind, fault, hdrs):
        if kind == "401":
            return self.auth_error(hdrs, force=True)
        if kind == "429":
            return ApiError(429, fault.get("message", "Request rate limit exceeded. Learn more about "
                                           "rate limits here https://stripe.com/docs/rate-limits."),
                            code="rate_limit",
                            headers={"Stripe-Rate-Limited-Reason": fault.get("reason", "global-rate")})
        status = fault["status"] if kind == "status" else int(kind)
        # Stripe labels its own failures (5xx) api_error and a refused request (4xx)
        # invalid_request_error; 402 is a card_error
        type_ = ("api_error" if status >= 500 else "card_error" if status == 402
                 else "invalid_request_error")
        default = ("An unknown error occurred" if status >= 500
                   else f"The request failed with status {status} (injected).")
        return ApiError(status, fault.get("message", default), type_, code=fault.get("code"),
                        param=fault.get("param"))

    def route(self, h, raw_path, body, rid):
        """-> (status, body, extra headers) or raises ApiError."""
        method = h.command
        path, _, query = raw_path.partition("?")
        parts = path[4:].split("/") if path.startswith("/v1/") else []
        if parts[:2] in (["test_helpers", "test_clocks"], ["checkout", "sessions"], ["billing", "meters"]):
            parts = ["/".join(parts[:2])] + parts[2:]
        kind = KINDS.get(parts[0]) if parts else None
        if parts == ["account"] and method == "GET":
            self.check_retrieve_params(query)
            with self.store.lock:
                account = dict(self.store.account)
            account["id"] = h.headers.get("Stripe-Account") or ACCOUNT_ID
            return 200, dumps(account), []
        if parts == ["accounts"] and method == "GET":
            return 200, self.list_accounts(h.headers, query), []
        if parts == ["balance"] and method == "GET":
            self.check_retrieve_params(query)
            with self.store.lock:
                return 200, dumps(self.store.balance), []
        if (len(parts) == 3 and parts[0] == "customers" and parts[1] and
                parts[2] in CUSTOMER_LISTS and method == "GET"):
            # a customer's list (payment methods in the current API, tax ids, balance
            # transactions): the customer is in the path, not a parameter
            child = KINDS[CUSTOMER_LISTS[parts[2]]]
            args = self.list_args(child, query, path_filter=("customer", parts[1]))
            with self.store.lock:
                self.store.check_parent(child, parts[1])
                return 200, self.store.list_page(child, *args, url=path.encode()), []
        if parts and parts[0] == "subscription_items" and method == "GET" and len(parts) <= 2:
            return 200, self.subscription_items(parts, query), []
        if len(parts) == 3 and parts[0] == "invoices" and parts[2] == "lines" and method == "GET":
            return 200, self.invoice_lines(parts[1], query), []
        if len(parts) == 3 and parts[0] == "credit_notes" and parts[2] == "lines" and method == "GET":
            return 200, self.credit_note_lines(parts[1], query), []
        if len(parts) == 3 and parts[0] == "transfers" and parts[2] == "reversals" and method == "GET":
            return 200, self.transfer_reversals(parts[1], query), []
        if kind is None or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            raise self.unrecognized(method, path)
        if method == "GET":
            if len(parts) == 1:
                if not kind.top_level:
                    raise self.unrecognized(method, path)
                args = self.list_args(kind, query)
                with self.store.lock:
                    if kind.parent:
                        self.store.check_parent(kind, dict(parse_qsl(query))[kind.parent[0]])
                    return 200, self.store.list_page(kind, *args), []
            self.check_retrieve_params(query)
            with self.store.lock:
                blob = self.store.retrieve(kind, parts[1])
            return 200, render_version(blob, h.headers.get("Stripe-Version")), []
        if method == "POST" and kind.writable:
            params = write_params(body)
            if len(parts) == 1:
                op = lambda req: self.writes.create(kind, params, req)
            else:
                op = lambda req: self.writes.update(kind, parts[1], params, req)
            return self.idempotent(h, method, path, body, rid, op)
        if method == "DELETE" and len(parts) == 2:
            if kind.obj == "price":
                raise ApiError(400, "Prices cannot be deleted through the API; archive the price "
                               "by setting `active` to false instead.", param="id")
            if kind.deletable:
                write_params(body)  # only expand[] is meaningful; reject malformed bodies
                return self.idempotent(h, method, path, body, rid,
                                       lambda req: self.writes.delete(kind, parts[1], req))
        raise self.unrecognized(method, path)

    @staticmethod
    def unrecognized(method, path):
        return ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                        "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def idempotent(self, h, method, path, body, rid, op):
        """Run a write once per Idempotency-Key and replay its saved answer afterwards,
        errors included.  Stripe: "saves the status code and body of the first request
        made with a given idempotency key after endpoint execution begins. Retries with
        the same key return the saved response, including 500 errors"; nothing is saved
        when "incoming parameters fail validation" (here: a parameter_* code), nor for a
        request refused before it ran (a rate limit, a fault answered instead)."""
        key = h.headers.get("Idempotency-Key")
        extra = [("Idempotency-Key", key)] if key else []
        store = self.store
        with store.lock:
            if key:
                saved = store.idempotency.get(key)
                if saved is not None:
                    if saved[0] != (method, path, body):
                        raise ApiError(400, "Keys for idempotent requests can only be used with "
                                       "the same parameters they were first used with. Try using "
                                       f"a key other than '{key}' if you meant to execute a "
                                       "different request.", type="idempotency_error")
                    return saved[1], saved[2], extra + [("Idempotent-Replayed", "true")]
            try:
                out = op({"id": rid, "idempotency_key": key})
            except ApiError as e:
                if key and not (e.code or "").startswith("parameter_"):
                    store.idempotency[key] = ((method, path, body), e.status, e.body(rid))
                raise
            if key:
                store.idempotency[key] = ((method, path, body), 200, out)
        return 200, out, extra

    def resave_idempotent(self, key, extra, err, rid):
        """A write that ran and then failed (a fault "after" it): a retry with its key
        gets the failure replayed, as Stripe saves whatever the endpoint answered."""
        if key and ("Idempotent-Replayed", "true") not in extra:
            with self.store.lock:
                saved = self.store.idempotency.get(key)
                if saved is not None:
                    self.store.idempotency[key] = (saved[0], err.status, err.body(rid))

    def subscription_items(self, parts, query):
        """GET /v1/subscription_items?subscription=… and /v1/subscription_items/si_…"""
        if len(parts) == 2:
            self.check_retrieve_params(query)
            with self.store.lock:
                return self.store.subscription_item(parts[1])
        args = self.list_args(SUBSCRIPTION_ITEMS, query)
        with self.store.lock:
            items = self.store.subscription_items(dict(parse_qsl(query))["subscription"])
        return self.array_page(items, args, "subscription_item", "/v1/subscription_items")

    def invoice_lines(self, inv_id, query):
        """GET /v1/invoices/{invoice}/lines: every line of the invoice, in its order."""
        args = self.list_args(INVOICE_LINES, query)
        with self.store.lock:
            lines = self.store.get(KINDS["invoices"], inv_id, "invoice")["lines"]["data"]
        return self.array_page(lines, args, "line_item", f"/v1/invoices/{inv_id}/lines")

    def credit_note_lines(self, cn_id, query):
        """GET /v1/credit_notes/{credit_note}/lines: every line of the credit note."""
        args = self.list_args(CREDIT_NOTE_LINES, query)
        with self.store.lock:
            lines = self.store.get(KINDS["credit_notes"], cn_id, "credit_note")["lines"]["data"]
        return self.array_page(lines, args, "credit_note_line_item", f"/v1/credit_notes/{cn_id}/lines")

    def transfer_reversals(self, tr_id, query):
        """GET /v1/transfers/{id}/reversals: every reversal of the transfer, newest first."""
        args = self.list_args(TRANSFER_REVERSALS, query)
        with self.store.lock:
            revs = self.store.get(KINDS["transfers"], tr_id, "transfer")["reversals"]["data"]
        return self.array_page(revs, args, "transfer_reversal", f"/v1/transfers/{tr_id}/reversals")

    @staticmethod
    def array_page(items, args, obj_name, url):
        """A list page over a list held in memory (items, lines)."""
        limit, _, _, _, after, before = args
        ids = [it["id"] for it in items]
        lo, hi = 0, len(items)
        for param, cursor in (("starting_after", after), ("ending_before", before)):
            if cursor is not None:
                if cursor not in ids:
                    raise no_such(obj_name, cursor, param, status=400)
                if param == "starting_after":
                    lo = ids.index(cursor) + 1
                else:
                    hi = ids.index(cursor)
        a, b = (max(lo, hi - limit), hi) if before is not None else (lo, min(hi, lo + limit))
        more = a > lo if before is not None else b < hi
        return dumps({"object": "list", "data": items[a:b], "has_more": more, "url": url})

    @staticmethod
    def check_retrieve_params(query):
        for key, _ in parse_qsl(query, keep_blank_values=True):
            if not (key == "expand" or key.startswith("expand[")):
                raise unknown_param(key)

    def list_args(self, kind, query, path_filter=None):
        """`path_filter`: (filter, value) that the URL's path gives, which may then not
        be a parameter too."""
        limit, gte, lte = 10, None, None
        cursors = {"starting_after": None, "ending_before": None}
        wanted = {}  # filter name -> accepted values, or ("prefix", p) for wildcards
        for key, value in parse_qsl(query, keep_blank_values=True):
            m = re.fullmatch(r"([^\[\]]+)(?:\[([^\[\]]*)\])?", key)
            if not m:
                raise unknown_param(key)
            name, sub = m.group(1), m.group(2)
            if name == "expand" and (sub is None or sub == "" or sub.isdigit()):
                continue
            f = kind.filters.get(name)
            if path_filter and name == path_filter[0]:
                f = None
            known = (name in ("limit", "starting_after", "ending_before") or f is not None or
                     (name == "created" and kind.created))
            if not known or (sub is not None and name != "created" and
                             not (f and (f.array or f.interval))):
                raise unknown_param(key)
            if value == "":
                raise ApiError(400, f"You passed an empty string for '{key}'. We assume empty "
                               "values are an attempt to unset a parameter; however "
                               f"'{key}' cannot be unset. You should remove '{key}' from "
                               "your request or supply a non-empty value.",
                               code="parameter_invalid_empty", param=key)
            if name == "limit":
                limit = parse_int(value, "limit")
                if limit < 1:
                    raise ApiError(400, "This value must be greater than or equal to 1.",
                                   code="parameter_invalid_integer", param="limit")
                if limit > 100:
                    raise ApiError(400, "This value must be less than or equal to 100.",
                                   code="parameter_invalid_integer", param="limit")
            elif name in cursors:
                cursors[name] = value
            elif name == "created":
                low, high = interval_bounds(key, sub, value)
                if low is not None:
                    gte = low if gte is None else max(gte, low)
                if high is not None:
                    lte = high if lte is None else min(lte, high)
            elif f.interval:
                low, high = interval_bounds(key, sub, value)
                _, plow, phigh = wanted.get(name, ("interval", None, None))
                lows = [x for x in (low, plow) if x is not None]
                highs = [x for x in (high, phigh) if x is not None]
                wanted[name] = ("interval", max(lows) if lows else None,
                                min(highs) if highs else None)
            elif f.array:
                if sub is None:
                    raise ApiError(400, "Invalid array", code="parameter_invalid_array",
                                   param=name)
                wanted.setdefault(name, set()).add(value)
            else:
                if f.boolean and value not in ("true", "false"):
                    raise ApiError(400, "Invalid boolean: " + value,
                                   code="parameter_invalid_boolean", param=name)
                if f.choices and value not in f.choices:
                    raise ApiError(400, f"Invalid {name}: must be one of "
                                   f"{', '.join(f.choices)}", code="parameter_invalid_string",
                                   param=name)
                if f.fold:
                    value = value.lower()
                wanted[name] = (("prefix", value[:-1]) if f.wildcard and value.endswith("*")
                                else {value})
        if path_filter:
            wanted[path_filter[0]] = {path_filter[1]}
        if kind.parent and kind.parent[0] not in wanted:
            raise ApiError(400, f"Missing required param: {kind.parent[0]}.",
                           code="parameter_missing", param=kind.parent[0])
        if cursors["starting_after"] and cursors["ending_before"]:
            raise ApiError(400, "You may only specify one of these parameters: ending_before, "
                           "starting_after.", param="ending_before")
        list_defaults(kind, wanted)
        filters = [(name, self.key_selector(sel)) for name, sel in wanted.items()]
        return limit, gte, lte, filters, cursors["starting_after"], cursors["ending_before"]

    @staticmethod
    def key_selector(sel):
        """-> function(index) giving the index keys a filter accepts."""
        if isinstance(sel, set):
            return lambda idx: sel
        how, arg = sel[0], sel[1]
        if how == "prefix":
            return lambda idx: [k for k in idx if k.startswith(arg)]
        if how == "interval":
            lo, hi = sel[1], sel[2]
            return lambda idx: [k for k in idx if k.lstrip("-").isdigit() and
                                (lo is None or int(k) >= lo) and (hi is None or int(k) <= hi)]
        return lambda idx: [k for k in idx if k not in arg]

    # ---- /_control

    def control(self, h, method, path, body):
        try:
            data = json.loads(body) if body.strip() else {}
            self.current.store = self.account_store(h.headers, control=True)
            status, out = self.control_route(method, path.split("/")[2:], data)
        except ApiError as e:
            status, out = e.status, {"error": e.message}
        except (ValueError, TypeError, KeyError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            status, out = 400, {"error": msg}
        except Exception as e:  # a bug: answer anyway, and show it on stderr
            traceback.print_exc()
            status, out = 500, {"error": repr(e)}
        finally:
            self.current.store = None
        send(h, status, out if isinstance(out, RawJSON) else dumps(out))

    def control_route(self, method, parts, data):
        store = self.store
        route = (method, parts[0] if parts else "", len(parts))
        if route == ("POST", "faults", 1):
            return 200, {"fault": self.faults.add(data), "faults": self.faults.pending()}
        if route == ("GET", "faults", 1):
            return 200, {"faults": self.faults.pending()}
        if route == ("DELETE", "faults", 1):
            self.faults.clear()
            self.holds.release()
            return 200, {"faults": []}
        if route == ("GET", "held", 1):
            return 200, {"held": self.holds.held()}
        if route == ("POST", "release", 1):
            return 200, {"released": self.holds.release()}
        if route == ("GET", "requests", 1):
            entries, _ = self.log.snapshot()
            return 200, {"requests": [dict(zip(LOG_FIELDS, e)) for e in entries]}
        if route == ("DELETE", "requests", 1):
            self.log.clear()
            with self.flight_lock:
                self.in_flight_peak = self.in_flight
            return 200, {"requests": []}
        if route == ("GET", "stats", 1):
            entries, rate_limited = self.log.snapshot()
            with self.flight_lock:
                peak = self.in_flight_peak
            return 200, {"requests": len(entries), "rate_limited": rate_limited,
                         "in_flight_peak": peak}
        if route[0] in ("GET", "POST") and route[1:] == ("config", 1):
            if method == "POST":
                self.configure(data)
            return 200, {"latency_ms": self.latency_ms, "rate_limit": self.limiter.rate,
                         "endpoint_rate_limit": self.limiter.endpoint_rate,
                         "live_rate_limit": self.limiter.live_rate,
                         "api_keys": sorted(self.api_keys),
                         "restricted_keys": {k: sorted(v) for k, v in self.restricted_keys.items()},
                         "event_api_version": store.event_api_version}
        if route == ("POST", "reseed", 1):
            counts = self.parse_counts(data.get("counts", {}), only=bool(data.get("only")))
            with store.lock:
                store.reseed(counts, int(data.get("seed", store.seed_value)))
                sizes = {p: len(c.records) for p, c in store.colls.items()}
            self.log.clear()
            return 200, {"counts": sizes}
        if route == ("POST", "events", 1):
            return 200, self.control_event(data)
        if route in (("POST", "attach", 1), ("POST", "detach", 1)):
            with store.lock:
                return 200, RawJSON(self.control_attach(data, parts[0] == "attach"))
        if route[1] == "accounts":
            return self.control_accounts(method, parts, data)
        if route == ("POST", "churn", 1):
            return 200, self.control_churn(data)
        if route == ("POST", "webhook", 1):
            return 200, self.control_webhook(data)
        if route == ("POST", "upcoming_invoice", 1):
            with store.lock:
                eid = store.upcoming_invoice(str(data["subscription"]))
                return 200, RawJSON(store.colls["events"].records[eid].blob)
        if route == ("POST", "nested", 1):
            with store.lock:
                return 200, RawJSON(self.control_nested(data))
        if route == ("POST", "nested_remove", 1):
            with store.lock:
                return 200, RawJSON(self.control_nested_remove(data))
        if route == ("GET", "balance", 1):
            # what GET /v1/balance answers, for tests to compare with (no key needed)
            with store.lock:
                return 200, RawJSON(dumps(store.balance))
        if route[1] == "objects" and len(parts) in (2, 3):
            kind = KINDS.get(CONTROL_NAMES.get(parts[1], parts[1]))
            if kind is None:
                return 404, {"error": f"unknown type {parts[1]!r}"}
            if method == "GET" and len(parts) == 2:
                with store.lock:
                    blobs = store.live(kind)
                    return 200, RawJSON(b'{"data":[' + b",".join(blobs) + b"]}")
            if kind.obj == "event":
                return 400, {"error": "use /_control/events to add events"}
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            with store.lock:
                if method == "POST" and len(parts) == 2:
                    return 200, RawJSON(self.control_create(kind, data))
                if method == "POST":
                    return 200, RawJSON(self.control_update(kind, parts[2], data))
                if method == "DELETE" and len(parts) == 3:
                    created = data.get("created")
                    return 200, RawJSON(store.delete(kind, parts[2],
                                                     created=None if created is None else int(created)))
        return 404, {"error": f"unknown control endpoint {method} /_control/{'/'.join(parts)}"}

    def configure(self, data):
        if "latency_ms" in data:
            latency = float(data["latency_ms"])
            if latency < 0:
                raise ValueError("latency_ms must be >= 0")
            self.latency_ms = latency
        for name, attr in (("rate_limit", "rate"), ("endpoint_rate_limit", "endpoint_rate"),
                           ("live_rate_limit", "live_rate")):
            if name in data:
                rate = int(data[name])
                if rate < 0:
                    raise ValueError(f"{name} must be >= 0")
                setattr(self.limiter, attr, rate)
        if "api_keys" in data:
            keys = data["api_keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("api_keys must be a list of non-empty strings")
            self.api_keys = set(keys)
        if "restricted_keys" in data:
            self.restricted_keys = self.parse_restricted(data["restricted_keys"])
        if "event_api_version" in data:
            version = data["event_api_version"]
            if not isinstance(version, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", version):
                raise ValueError("event_api_version must be a version such as 2024-06-20")
            with self.store.lock:
                self.store.event_api_version = version

    @staticmethod
    def parse_restricted(keys):
        """{"rk_test_…": ["customer_read", "rak_invoice_write", …]} -> key -> permissions"""
        if not isinstance(keys, dict):
            raise ValueError("restricted_keys must map keys to lists of permissions")
        out = {}
        for key, perms in keys.items():
            if not key.startswith("rk_") or not isinstance(perms, list) or \
                    not all(isinstance(p, str) for p in perms):
                raise ValueError("restricted_keys: each rk_… key maps to a list of permissions")
            out[key] = frozenset(p[4:] if p.startswith("rak_") else p for p in perms)
        return out

    @staticmethod
    def parse_counts(counts, only=False):
        out = {} if only else dict(DEFAULT_COUNTS)
        for name, n in counts.items():
            if name not in KINDS:
                raise ValueError(f"unknown type {name!r} (one of {', '.join(KINDS)})")
            n = int(n)
            if n < 0:
                raise ValueError(f"count for {name} must be >= 0")
            out[name] = n
        return out

    def control_create(self, kind, fields):
        store = self.store
        obj = store.template(kind)
        obj.update(object=kind.obj, livemode=store.livemode)
        deep_merge(obj, fields)
        obj["id"] = fields.get("id") or store.new_id(kind)
        obj["created"] = int(fields.get("created") or time.time())
        # an invoice item's creation is its date (Stripe's list filters it as created)
        if "date" in store.template_keys[kind.path] and "created" not in store.template_keys[kind.path]:
            obj["date"] = int(fields.get("date") or obj["created"])
        if kind.obj == "transfer":
            # the template's reversals are at its own transfer's url
            obj["reversals"]["url"] = f"/v1/transfers/{obj['id']}/reversals"
        coll = store.colls[kind.path]
        if obj["id"] in coll.records:
            raise ApiError(400, f"{kind.obj} {obj['id']} already exists")
        coll.deleted.discard(obj["id"])
        if kind.obj == "customer_balance_transaction":
            self.control_balance_transaction(obj)
        return store.create(kind, obj)

    def control_attach(self, data, attach):
        """{"payment_method": "pm_…", "customer": "cus_…"}: what POST
        /v1/payment_methods/{id}/attach (or /detach, without customer) does: the payment
        method's customer set (or unset), with payment_method.attached (.detached)."""
        store = self.store
        kind = KINDS["payment_methods"]
        pm = store.get(kind, str(data["payment_method"]), "payment_method", 400)
        customer = None
        if attach:
            customer = str(data["customer"])
            store.get(KINDS["customers"], customer, "customer", 400)
        elif pm.get("customer") is None:
            raise ApiError(400, f"The payment method you provided is not attached to a customer "
                           "so detachment is impossible.", param="payment_method")
        pm["customer"] = customer
        store.put(kind, pm)
        blob = store.colls[kind.path].records[pm["id"]].blob
        store.emit("payment_method." + ("attached" if attach else "detached"), blob)
        return blob

    def control_balance_transaction(self, obj):
        """A customer balance transaction changes its customer's balance (Stripe: "each
        time a customer's balance changes"): its ending_balance, and customer.updated."""
        store = self.store
        ckind = KINDS["customers"]
        cust = store.get(ckind, str(obj.get("customer")), "customer", 400)
        old = dict(cust)
        cust["balance"] = (cust.get("balance") or 0) + int(obj.get("amount") or 0)
        obj["ending_balance"] = cust["balance"]
        store.replace(ckind, old, cust, {"balance": old.get("balance")})

    def control_update(self, kind, oid, fields):
        store = self.store
        old = store.get(kind, oid)
        fields = {k: v for k, v in fields.items() if k not in ("id", "object")}
        new = deep_merge(store.get(kind, oid), fields)
        prev = {k: old.get(k) for k in fields if old.get(k) != new.get(k)}
        return store.replace(kind, old, new, prev)

    def control_nested(self, data):
        """{"object": "invoices", "subscriptions" or "credit_notes", "count": N, "fields":
        {...}}: a new invoice or credit note with N lines, or subscription with N items, and
        its .created event.
        Returns the object as Stripe shows it (its first NESTED_INLINE elements)."""
        store = self.store
        path = data.get("object")
        n = int(data.get("count", 0))
        if path not in NESTED or not 0 <= n <= 100_000:
            raise ValueError("object must be invoices, subscriptions or credit_notes, "
                             "count 0 to 100,000")
        kind = KINDS[path]
        obj = store.template(kind)
        obj.update(object=kind.obj, livemode=store.livemode)
        deep_merge(obj, data.get("fields") or {})
        obj["id"] = store.new_id(kind)
        obj["created"] = now = int(time.time())
        field = NESTED[path]
        if path == "invoices":
            elems = []
            for i in range(n):
                line = json.loads(store.line_template)
                line.update(id=hashed_id("il_", store.seed_value, obj["id"], i), invoice=obj["id"],
                            livemode=store.livemode,
                            amount=100 + i, description=f"Line {i}", parent=None,
                            period={"start": now, "end": now})
                elems.append(line)
            url = f"/v1/invoices/{obj['id']}/lines"
        elif path == "credit_notes":
            elems = []
            for i in range(n):
                line = json.loads(store.cn_line_template)
                line.update(id=hashed_id("cnli_", store.seed_value, obj["id"], i), amount=100 + i,
                            description=f"Credit line {i}", livemode=store.livemode)
                elems.append(line)
            obj.update(amount=sum(e["amount"] for e in elems), effective_at=now)
            url = f"/v1/credit_notes/{obj['id']}/lines"
        else:
            prices = store.live(KINDS["prices"])
            if not prices:
                raise ValueError("no price to subscribe to")
            price = json.loads(prices[0])
            elems = [subscription_item(store, obj["id"], price, 1, now - i,
                                       hashed_id("si_", store.seed_value, obj["id"], i))
                     for i in range(n)]
            url = f"/v1/subscription_items?subscription={obj['id']}"
        obj[field] = {"object": "list", "data": elems, "has_more": False, "total_count": n,
                      "url": url}
        return store.create(kind, obj)

    def control_nested_remove(self, data):
        """{"object": "invoices", "id": "in_…", "element": "il_…" (default the last)}:
        that element taken out of the object's nested list, with its .updated event."""
        store = self.store
        path = data.get("object")
        if path not in NESTED:
            raise ValueError("object must be invoices, subscriptions or credit_notes")
        kind = KINDS[path]
        old = store.get(kind, str(data["id"]))
        field = NESTED[path]
        elems = old[field]["data"]
        gone = data.get("element") or (elems[-1]["id"] if elems else None)
        if gone not in [e["id"] for e in elems]:
            raise ValueError(f"{gone} is not in that list")
        new = dict(old, **{field: dict(old[field], data=[e for e in elems if e["id"] != gone])})
        return store.replace(kind, old, new, {field: {"total_count": len(elems)}})

    def control_churn(self, data):
        """{"object": path, "events": N}: N updates of that kind's objects, round robin,
        each a metadata change with its .updated event, as a busy account makes them."""
        kind = KINDS.get(data.get("object"))
        n = int(data.get("events", 0))
        if kind is None or kind.obj == "event" or not 0 < n <= 10_000_000:
            raise ValueError("object must be a listed type and events between 1 and 10,000,000")
        store = self.store
        with store.lock:
            ids = sorted(store.colls[kind.path].records)
            if not ids:
                raise ValueError(f"no {kind.path} to update")
            for i in range(n):
                oid = ids[i % len(ids)]
                old = store.get(kind, oid)
                new = dict(old, metadata=dict(old.get("metadata") or {}, churn=str(i)))
                store.replace(kind, old, new, {"metadata": old.get("metadata")})
        return {"events": n, "objects": len(ids)}

    def list_accounts(self, hdrs, query):
        """GET /v1/accounts: the platform's connected accounts, newest first, paged
        like any list (limit, starting_after); a deauthorized one is not listed."""
        params = dict(parse_qsl(query))
        for name in params:
            if name not in ("limit", "starting_after", "ending_before"):
                raise unknown_param(name)
        limit = parse_int(params.get("limit", "10"), "limit")
        if not 1 <= limit <= 100:
            raise ApiError(400, "Invalid limit: must be between 1 and 100", param="limit")
        if hdrs.get("Stripe-Account") not in (None, "", ACCOUNT_ID):
            # a connected account has no connected accounts of its own
            accounts = []
        else:
            with self.platform.lock:
                accounts = [dict(st.account) for st in reversed(list(self.connected.values()))]
        ids = [a["id"] for a in accounts]
        after = params.get("starting_after")
        start = 0
        if after is not None:
            if after not in ids:
                raise no_such("account", after, "starting_after", 400)
            start = ids.index(after) + 1
        page = accounts[start:start + limit]
        return dumps({"object": "list", "data": page, "has_more": start + limit < len(accounts),
                      "url": "/v1/accounts"})

    def control_accounts(self, method, parts, data):
        """POST /_control/accounts {"id": "acct_…" (default made up), "counts": {…},
        "only": bool, "seed": N}: connects an account with its own seeded objects and
        events; GET lists them; POST /_control/accounts/<id>/deauthorize takes its
        authorization away (Stripe then refuses its requests: 403) and sends the
        platform account.application.deauthorized (with "account")."""
        if method == "GET" and len(parts) == 1:
            with self.platform.lock:
                return 200, {"accounts": [{"id": a, "state": "connected"} for a in self.connected]
                             + [{"id": a, "state": "deauthorized"} for a in self.deauthorized]}
        if method == "POST" and len(parts) == 1:
            counts = self.parse_counts(data.get("counts", {}), only=bool(data.get("only")))
            with self.platform.lock:
                n = len(self.connected) + len(self.deauthorized) + 1
            acct = str(data.get("id") or "acct_" + b62(62 ** 9 + n, 10) + "C0nn")
            if not re.fullmatch(r"acct_[A-Za-z0-9]+", acct) or acct == ACCOUNT_ID:
                raise ValueError(f"bad account id {acct!r}")
            store = Store(self.fixtures, livemode=self.livemode)
            store.account = json.loads(json.dumps(self.platform.account))
            store.account.update(id=acct, type="standard",
                                 created=int(data.get("created", BASE_CREATED + n)))
            store.connected_id = acct
            store.reseed(counts, int(data.get("seed", 1000 + n)))
            with self.platform.lock:
                if acct in self.connected:
                    raise ValueError(f"account {acct} is already connected")
                self.deauthorized.pop(acct, None)
                self.connected[acct] = store
                self.writers[id(store)] = Writes(store)
            with store.lock:
                sizes = {p: len(c.records) for p, c in store.colls.items()}
            return 200, {"id": acct, "counts": sizes}
        if method == "POST" and len(parts) == 3 and parts[2] == "deauthorize":
            with self.platform.lock:
                store = self.connected.pop(parts[1], None)
                if store is None:
                    return 404, {"error": f"no connected account {parts[1]}"}
                self.deauthorized[parts[1]] = store
                app = {"id": "ca_" + b62(len(self.deauthorized), 8), "object": "application",
                       "name": "stripe_sync tests"}
                eid = self.platform.emit("account.application.deauthorized", dumps(app))
                rec = self.platform.colls["events"].records[eid]
                env = json.loads(rec.blob)
                env["account"] = parts[1]
                rec.blob = dumps(env)
            return 200, {"id": parts[1], "state": "deauthorized", "event": eid}
        return 404, {"error": f"unknown control endpoint {method} /_control/{'/'.join(parts)}"}

    def control_webhook(self, data):
        """A signed delivery of an event, as Stripe makes it (see the module's doc)."""
        secrets = data["secret"]
        secrets = [secrets] if isinstance(secrets, str) else secrets
        if not isinstance(secrets, list) or not secrets or \
                not all(isinstance(k, str) and k.startswith("whsec_") for k in secrets):
            raise ValueError("secret must be a whsec_… string or a list of them")
        t = int(data.get("timestamp") or time.time())
        with self.store.lock:
            rec = self.store.colls["events"].records.get(str(data["event"]))
            if rec is None:
                raise ApiError(404, f"no event {data['event']!r}")
            blob = rec.blob
        payload = json.dumps(json.loads(blob), indent=2, ensure_ascii=False)
        signed = f"{t}.{payload}".encode()
        sigs = [hmac.new(k.encode(), signed, hashlib.sha256).hexdigest() for k in secrets]
        v0 = hmac.new(b"whsec_not_an_endpoint_secret", signed, hashlib.sha256).hexdigest()
        return {"payload": payload,
                "signature": ",".join([f"t={t}"] + [f"v1={h}" for h in sigs] + [f"v0={v0}"])}

    def control_event(self, data):
        type_, obj = data["type"], data["object"]
        if not isinstance(type_, str) or not isinstance(obj, dict):
            raise ValueError("type must be a string and object a JSON object")
        created = data.get("created")
        with self.store.lock:
            eid = self.store.emit(type_, dumps(obj), previous=data.get("previous_attributes"),
                                  created=None if created is None else int(created),
                                  api_version=data.get("api_version"))
            return RawJSON(self.store.colls["events"].records[eid].blob)


def list_defaults(kind, wanted):
    """What Stripe leaves out of a list unless the query asks for it, per its API
    reference (`wanted`: filter name -> accepted keys, changed in place)."""
    if kind.obj == "subscription":
        # "By default, returns a list of subscriptions that have not been canceled."
        status = wanted.get("status")
        if status is None:
            wanted["status"] = ("exclude", SUB_HIDDEN)
        elif status == {"all"}:
            del wanted["status"]
        elif status == {"ended"}:
            wanted["status"] = set(SUB_HIDDEN)
    if kind.obj == "price" and "active" not in wanted:
        # "Returns a list of your active prices ... For the list of inactive prices,
        # set active to false."
        wanted["active"] = {"true"}
    # "The response will not include customers with test clocks if this parameter is not
    # set" (customers); "... subscriptions with test clocks if this and the customer
    # parameter is not set" (subscriptions).
    if ("test_clock" in kind.filters and "test_clock" not in wanted and
            not (kind.obj == "subscription" and "customer" in wanted)):
        wanted["test_clock"] = {NO_CLOCK}


class RawJSON(bytes):
    """Already-serialized JSON passed through the control responses unchanged."""


class Server(fakelib.Server):
    def __init__(self, address, app):
        self.to_reset = set()  # sockets to close with RST (SO_LINGER 0, no FIN first)
        super().__init__(address, app)

    def shutdown_request(self, request):
        if request in self.to_reset:
            self.to_reset.discard(request)
            request.close()  # the handler's files are closed by now: this really closes it
            return
        super().shutdown_request(request)


# --------------------------------------------------------------------------- main

def default_fixtures():
    """Stripe's example objects, vendored beside the fake (test/fixtures/stripe)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "fixtures", "stripe", "fixtures3.json")


def parse_counts_arg(text):
    counts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, n = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected TYPE=N, got {part!r}")
        counts[name.strip()] = n.strip()
    try:
        return App.parse_counts(counts)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Stripe API server for tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--fixtures", default=default_fixtures())
    ap.add_argument("--counts", type=parse_counts_arg, default=dict(DEFAULT_COUNTS),
                    help="e.g. customers=1050,charges=100000 (others keep their defaults)")
    ap.add_argument("--api-key", default="sk_test_fake")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate-limit", type=int, default=GLOBAL_RATE, metavar="N",
                    help="requests a second in all, as Stripe's test mode (0: no limit)")
    ap.add_argument("--endpoint-rate-limit", type=int, default=ENDPOINT_RATE, metavar="N",
                    help="requests a second to one endpoint (0: no limit)")
    ap.add_argument("--live-rate-limit", type=int, default=LIVE_RATE, metavar="N",
                    help="requests a second in all with a live key, as Stripe's live mode (0: no limit)")
    ap.add_argument("--exit-with", type=int, metavar="PID",
                    help="stop when this process is gone (the test run that started us)")
    ap.add_argument("--tls-cert", metavar="PEM",
                    help="serve HTTPS with this certificate (and --tls-key)")
    ap.add_argument("--tls-key", metavar="PEM")
    args = ap.parse_args(argv)

    with open(args.fixtures, encoding="utf-8") as f:
        fixtures = json.load(f)
    app = App(fixtures, args.counts, args.seed, args.api_key)
    app.configure({"rate_limit": args.rate_limit, "endpoint_rate_limit": args.endpoint_rate_limit,
                   "live_rate_limit": args.live_rate_limit})
    server = Server((args.host, args.port), app)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return serve_until_signalled(server, args.port_file, args.exit_with)


if __name__ == "__main__":
    sys.exit(main())
