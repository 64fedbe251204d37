#!/usr/bin/env python3
"""Write test/fixtures/stripe/openapi-current.json: what Stripe's API description says
today of the catalogued objects that the vendored 2020 description does not.

The vendored description (openapi-2020-03-02.json) is trimmed from Stripe's OpenAPI
file of 2020; Stripe's current file is too large to vendor.  This overlay, in the same
OpenAPI form, adds for each catalogued object:

- the fields of its example (fixtures3.json) that the 2020 description lacks, typed by
  the newest Stripe OpenAPI file at hand (2022: types, formats, references), else by
  Stripe's current Go SDK (float64: number, int64: integer; a Unix time when its
  documentation says so or when the same name is one elsewhere; decimal strings stay
  strings);
- the parameters of its list endpoint as Stripe's current Node SDK declares them, with
  the enums of their values (the SDK's unions of literals), and whether there is a list
  endpoint at all.

All three are Stripe's own, MIT-licensed like the vendored files.  Usage:

    python3 tools/overlay_openapi.py SPEC3_2022.json STRIPE_GO_DIR STRIPE_NODE_DIR \\
        > test/fixtures/stripe/openapi-current.json
"""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_catalog  # noqa: E402
from trim_openapi import strip  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "stripe")
# fixture resource -> (Go struct, Node resource file, list parameters interface)
SDK = {
    "customer": ("Customer", "Customers", "CustomerListParams"),
    "charge": ("Charge", "Charges", "ChargeListParams"),
    "invoice": ("Invoice", "Invoices", "InvoiceListParams"),
    "payment_intent": ("PaymentIntent", "PaymentIntents", "PaymentIntentListParams"),
    "refund": ("Refund", "Refunds", "RefundListParams"),
    "subscription": ("Subscription", "Subscriptions", "SubscriptionListParams"),
    "event": ("Event", "Events", "EventListParams"),
    "product": ("Product", "Products", "ProductListParams"),
    "price": ("Price", "Prices", "PriceListParams"),
    "plan": ("Plan", "Plans", "PlanListParams"),
    "coupon": ("Coupon", "Coupons", "CouponListParams"),
    "promotion_code": ("PromotionCode", "PromotionCodes", "PromotionCodeListParams"),
    "balance_transaction": ("BalanceTransaction", "BalanceTransactions", "BalanceTransactionListParams"),
    "dispute": ("Dispute", "Disputes", "DisputeListParams"),
    "payout": ("Payout", "Payouts", "PayoutListParams"),
    "transfer": ("Transfer", "Transfers", "TransferListParams"),
    "topup": ("Topup", "Topups", "TopupListParams"),
    "payment_method": ("PaymentMethod", "Customers", "CustomerListPaymentMethodsParams"),
    "tax_id": ("TaxID", "Customers", "CustomerListTaxIdsParams"),
    "customer_balance_transaction": ("CustomerBalanceTransaction", "Customers",
                                     "CustomerListBalanceTransactionsParams"),
    "setup_intent": ("SetupIntent", "SetupIntents", "SetupIntentListParams"),
    "setup_attempt": ("SetupAttempt", "SetupAttempts", "SetupAttemptListParams"),
    "checkout.session": ("CheckoutSession", "Checkout/Sessions", "SessionListParams"),
    "credit_note": ("CreditNote", "CreditNotes", "CreditNoteListParams"),
    "invoiceitem": ("InvoiceItem", "InvoiceItems", "InvoiceItemListParams"),
    "subscription_item": ("SubscriptionItem", "SubscriptionItems", "SubscriptionItemListParams"),
    "subscription_schedule": ("SubscriptionSchedule", "SubscriptionSchedules",
                              "SubscriptionScheduleListParams"),
    "tax_rate": ("TaxRate", "TaxRates", "TaxRateListParams"),
    "application_fee": ("ApplicationFee", "ApplicationFees", "ApplicationFeeListParams"),
    "account": ("Account", "Accounts", "AccountListParams"),
    "radar.early_fraud_warning": ("RadarEarlyFraudWarning", "Radar/EarlyFraudWarnings",
                                  "EarlyFraudWarningListParams"),
    "file": ("File", "Files", "FileListParams"),
    "file_link": ("FileLink", "FileLinks", "FileLinkListParams"),
    "mandate": ("Mandate", "Mandates", None),
    "billing.meter": ("BillingMeter", "Billing/Meters", "MeterListParams"),
}


def go_fields(src, name):
    """json name -> (Go type, its documentation) of a Go struct."""
    m = re.search(r"\ntype " + name + r" struct \{\n(.*?)\n\}", src, re.S)
    out, doc = {}, ""
    for line in (m.group(1) if m else "").split("\n"):
        line = line.strip()
        if line.startswith("//"):
            doc += line[2:] + " "
            continue
        f = re.match(r'(\w+)\s+(\S+)\s+`json:"([^",]+)', line)
        if f:
            out[f.group(3)] = (f.group(2).lstrip("*"), doc)
        doc = ""
    return out


def go_property(gotype, doc, name, times):
    if gotype == "float64" and not name.endswith("_decimal"):
        return {"type": "number"}
    if gotype == "int64":
        unix = (re.search(r"Unix epoch|Unix timestamp|seconds since", doc) or name in times
                or name.endswith("_at"))
        return {"type": "integer", **({"format": "unix-time"} if unix else {})}
    if gotype == "bool":
        return {"type": "boolean"}
    if gotype == "string" or name.endswith("_decimal"):
        return {"type": "string"}
    return None


def node_list_params(node, res_file, iface):
    """The list parameters a Node SDK interface declares: name -> OpenAPI schema."""
    text = open(os.path.join(node, "src", "resources", res_file + ".ts"), encoding="utf-8").read()
    # at the top level, or inside a namespace (Checkout, Billing, Radar): indented
    m = re.search(r"\n( *)export interface " + iface + r" (?:extends \w+ )?\{(.*?)\n\1\}", text, re.S)
    ind = m.group(1)
    ns = re.search(r"\n" + ind + r"export namespace " + iface + r" \{(.*?)\n" + ind + r"\}", text, re.S)
    params = {}
    for p in re.finditer(r"\n" + ind + r"  (\w+)\??: ([^;]+);", m.group(2)):
        name, t = p.group(1), p.group(2).strip()
        if t == "boolean":
            params[name] = {"type": "boolean"}
        elif t == "string":
            params[name] = {"type": "string"}
        elif t.startswith(iface + "."):
            alias = t.split(".", 1)[1]
            u = re.search(r"export type " + alias + r" =(.*?);", ns.group(1) if ns else "", re.S)
            values = re.findall(r"'([^']*)'", u.group(1)) if u else []
            params[name] = {"type": "string", "enum": values} if values else {"type": "object"}
        else:
            params[name] = {"type": "object"}   # ranges, arrays, nested: never pushed
    return params


def main(spec2022, go, node):
    fixtures = json.load(open(os.path.join(DATA, "fixtures3.json")))["resources"]
    old = json.load(open(os.path.join(DATA, "openapi-2020-03-02.json")))["components"]["schemas"]
    new = json.load(open(spec2022))["components"]["schemas"]
    gosrc = "".join(open(f, encoding="utf-8").read()
                    for f in sorted(glob.glob(os.path.join(go, "*.go"))) if not f.endswith("_test.go"))
    times = {n for s in old.values() for n, p in s.get("properties", {}).items()
             if p.get("format") == "unix-time"}
    out = {"info": {"sources": "Stripe's OpenAPI file of 2022-04-12, stripe-go and stripe-node "
                               "(see tools/overlay_openapi.py)"},
           "paths": {}, "components": {"schemas": {}}}
    for table, res, path, _ in gen_catalog.OBJECTS:
        if res not in SDK:
            continue
        gostruct, node_file, iface = SDK[res]
        have = old.get(res, {}).get("properties", {})
        gof = go_fields(gosrc, gostruct)
        props = {}
        for name in fixtures[res]:
            if name in have or name in ("id", "object"):
                continue
            prop = new.get(res, {}).get("properties", {}).get(name)
            if prop is None and name in gof:
                prop = go_property(*gof[name], name, times)
            if prop is not None:
                props[name] = strip(prop)
        if props:
            out["components"]["schemas"][res] = {"properties": props}
        if iface is None:
            continue
        params = node_list_params(node, node_file, iface)
        list_path = "/v1/customers/{customer}/payment_methods" if res == "payment_method" else "/v1/" + path
        out["paths"][list_path] = {"get": {"parameters": [
            {"in": "query", "name": n, "schema": s} for n, s in sorted(params.items())]}}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:4])
