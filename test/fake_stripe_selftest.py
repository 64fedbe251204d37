#!/usr/bin/env python3
"""Self-test of test/fake_stripe.py: starts it on a free port and checks its API.

    python3 test/fake_stripe_selftest.py [-v]
"""

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_stripe.py")
KEY = "sk_test_fake"


def start_server(*args):
    """-> (process, port, port file)."""
    fd, port_file = tempfile.mkstemp(prefix="fake_stripe_", suffix=".port")
    os.close(fd)
    os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--port-file", port_file,
                             *args])
    deadline = time.time() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("fake_stripe.py did not start")
        time.sleep(0.05)
    with open(port_file) as f:
        return proc, int(f.read()), port_file


class Client:
    def __init__(self, port):
        self.port = port

    def raw(self, method, path, body=None, headers=None, timeout=60):
        """A fresh connection per call, so that faults can break it.
        -> (status, headers dict, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def api(self, method, path, params=None, headers=None, key=KEY):
        hdrs = {"Authorization": "Bearer " + key} if key else {}
        hdrs.update(headers or {})
        body = None
        if params is not None:
            body = urllib.parse.urlencode(params)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        status, resp_headers, data = self.raw(method, path, body, hdrs)
        return status, resp_headers, json.loads(data) if data else None

    def get(self, path, **kw):
        return self.api("GET", path, **kw)

    def ctl(self, method, path, data=None):
        body = json.dumps(data) if data is not None else None
        # a reseed takes seconds, many more on a loaded machine: wait as long as it takes
        status, _, out = self.raw(method, "/_control/" + path, body, timeout=300)
        out = json.loads(out)
        if status != 200:
            raise AssertionError(f"control {method} {path}: {status} {out}")
        return out


class ServedTest(unittest.TestCase):
    """Tests against a fake of their own, started with server_args."""
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.proc, port, cls.port_file = start_server(*cls.server_args)
        cls.c = Client(port)

    @classmethod
    def tearDownClass(cls):
        cls.proc.send_signal(signal.SIGTERM)
        cls.proc.wait(10)
        os.unlink(cls.port_file)


class FakeStripeTest(ServedTest):
    def setUp(self):
        c = self.c
        c.ctl("DELETE", "faults")
        c.ctl("POST", "config", {"latency_ms": 0, "rate_limit": 0, "endpoint_rate_limit": 0,
                                 "live_rate_limit": 0,
                                 "api_keys": [KEY], "restricted_keys": {},
                                 "event_api_version": "2026-10-28.endive"})
        c.ctl("POST", "reseed", {"seed": 1})

    # ---- helpers

    def all_of(self, type_):
        """Every live object of a type, newest first (from the control API)."""
        return self.c.ctl("GET", "objects/" + type_)["data"]

    def list_ids(self, path):
        status, _, body = self.c.get(path)
        self.assertEqual(status, 200, body)
        return [o["id"] for o in body["data"]], body["has_more"]

    def events_since(self, evt_id=None):
        """Events newer than evt_id, oldest first."""
        q = "/v1/events?limit=100" + (f"&ending_before={evt_id}" if evt_id else "")
        _, _, body = self.c.get(q)
        return list(reversed(body["data"]))

    def newest_event_id(self):
        _, _, body = self.c.get("/v1/events?limit=1")
        return body["data"][0]["id"]

    def assert_error(self, resp, status, code=None, param=None, type_="invalid_request_error"):
        got_status, headers, body = resp
        self.assertEqual(got_status, status, body)
        err = body["error"]
        self.assertEqual(err["type"], type_)
        self.assertEqual(err.get("code"), code)
        self.assertEqual(err.get("param"), param)
        if code:
            self.assertEqual(err["doc_url"], "https://stripe.com/docs/error-codes/" + code)
        self.assertTrue(headers["Request-Id"].startswith("req_"))
        self.assertIn(headers["Request-Id"], err["request_log_url"])
        return err

    # ---- lists

    def test_list_defaults_and_limit_bounds(self):
        status, headers, body = self.c.get("/v1/customers")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(headers["Stripe-Version"], "2026-10-28.endive")
        self.assertEqual((body["object"], body["url"], body["has_more"]), ("list", "/v1/customers", True))
        self.assertEqual(len(body["data"]), 10)
        c0 = body["data"][0]
        self.assertEqual((c0["object"], c0["livemode"]), ("customer", False))
        self.assertRegex(c0["id"], r"^cus_[0-9A-Za-z]{14}$")
        ids, more = self.list_ids("/v1/customers?limit=100")
        self.assertEqual((len(ids), more), (30, False))
        self.assertEqual(len(set(ids)), 30)
        ids, more = self.list_ids("/v1/customers?limit=1")
        self.assertEqual((len(ids), more), (1, True))
        for bad, msg in (("0", "greater than or equal to 1"), ("101", "less than or equal to 100"),
                         ("abc", "Invalid integer: abc")):
            err = self.assert_error(self.c.get("/v1/customers?limit=" + bad), 400,
                                    "parameter_invalid_integer", "limit")
            self.assertIn(msg, err["message"])
        err = self.assert_error(self.c.get("/v1/customers?colour=red"), 400, "parameter_unknown", "colour")
        self.assertEqual(err["message"], "Received unknown parameter: colour")
        self.assert_error(self.c.get("/v1/charges?email=x"), 400, "parameter_unknown", "email")
        self.assert_error(self.c.get("/v1/customers?created[foo]=1"), 400, "parameter_unknown",
                          "created[foo]")
        self.assertEqual(self.c.get("/v1/customers?expand[]=data.default_source")[0], 200)
        status, _, body = self.c.get("/v1/customers/" + c0["id"] + "?expand[0]=default_source")
        self.assertEqual((status, body["id"]), (200, c0["id"]))
        with_env = self.c.get("/v1/customers?limit=100")[2]["data"]
        emails = [o["email"] for o in with_env]
        self.assertEqual(sum(e is None for e in emails), 4)  # customers 6, 13, 20, 27

    def test_ordering_and_pagination_across_ties(self):
        everything = self.all_of("customers")
        expect = [o["id"] for o in sorted(everything, key=lambda o: (o["created"], o["id"]), reverse=True)]
        self.assertEqual([o["id"] for o in everything], expect)
        created = [o["created"] for o in everything]
        self.assertEqual(created[0], 1700000000 + 14 * 3600)
        self.assertEqual(created[0], created[1])  # pairs share a timestamp
        # Forward with an odd page size, so pages split tied pairs.
        got, after, pages = [], None, 0
        while True:
            ids, more = self.list_ids("/v1/customers?limit=3" + (f"&starting_after={after}" if after else ""))
            got += ids
            pages += 1
            if not more:
                break
            after = ids[-1]
        self.assertEqual(got, expect)
        self.assertEqual(pages, 10)
        # Backward from the oldest: each page is the 3 items just before, newest first.
        back, before = [], expect[-1]
        while True:
            ids, more = self.list_ids(f"/v1/customers?limit=3&ending_before={before}")
            back = ids + back
            if not more:
                break
            before = ids[0]
        self.assertEqual(back, expect[:-1])
        ids, more = self.list_ids(f"/v1/customers?limit=2&ending_before={expect[5]}")
        self.assertEqual((ids, more), (expect[3:5], True))
        ids, more = self.list_ids(f"/v1/customers?limit=2&starting_after={expect[0]}")
        self.assertEqual((ids, more), (expect[1:3], True))
        self.assertEqual(self.list_ids(f"/v1/customers?ending_before={expect[0]}"), ([], False))
        self.assertEqual(self.list_ids(f"/v1/customers?starting_after={expect[-1]}"), ([], False))
        err = self.assert_error(self.c.get("/v1/customers?starting_after=cus_nope"), 400,
                                "resource_missing", "starting_after")
        self.assertEqual(err["message"], "No such customer: 'cus_nope'")

    def test_created_filters(self):
        everything = self.all_of("charges")
        lo, hi = 1700000000 + 5 * 3600, 1700000000 + 9 * 3600

        def expect(pred):
            return [o["id"] for o in everything if pred(o["created"])]

        for q, pred in ((f"created[gte]={lo}&created[lt]={hi}", lambda t: lo <= t < hi),
                        (f"created[gt]={lo}&created[lte]={hi}", lambda t: lo < t <= hi),
                        (f"created={lo}", lambda t: t == lo),
                        (f"created[lt]={lo}", lambda t: t < lo),
                        (f"created[gte]={hi}&created[lte]={lo}", lambda t: False)):
            ids, more = self.list_ids("/v1/charges?limit=100&" + q)
            self.assertEqual(ids, expect(pred), q)
            self.assertFalse(more)
        self.assertEqual(len(self.list_ids(f"/v1/charges?created={lo}")[0]), 2)
        # Filters combine with cursors.
        ids, more = self.list_ids(f"/v1/charges?limit=3&created[gte]={lo}")
        self.assertTrue(more)
        rest, _ = self.list_ids(f"/v1/charges?limit=100&created[gte]={lo}&starting_after={ids[-1]}")
        self.assertEqual(ids + rest, expect(lambda t: t >= lo))
        self.assert_error(self.c.get("/v1/charges?created[gt]=soon"), 400,
                          "parameter_invalid_integer", "created[gt]")

    def test_equality_filters(self):
        charges = self.all_of("charges")
        cust = charges[0]["customer"] or charges[1]["customer"]
        ids, _ = self.list_ids(f"/v1/charges?limit=100&customer={cust}")
        self.assertEqual(ids, [o["id"] for o in charges if o["customer"] == cust])
        self.assertTrue(ids)
        guests = [o for o in charges if o["customer"] is None]
        self.assertEqual(len(guests), 6)
        self.assertTrue(all(o["billing_details"]["email"].startswith("guest") for o in guests))
        pi = next(o["payment_intent"] for o in charges if o["payment_intent"])
        self.assertEqual(self.list_ids(f"/v1/charges?payment_intent={pi}")[0],
                         [o["id"] for o in charges if o["payment_intent"] == pi])
        group = next(o["transfer_group"] for o in charges if o["transfer_group"])
        self.assertEqual(len(self.list_ids(f"/v1/charges?transfer_group={group}")[0]), 1)
        self.assertEqual(len(self.list_ids("/v1/customers?email=user3@example.com")[0]), 1)

        invoices = self.all_of("invoices")
        inv_cust = invoices[0]["customer"]
        ids, _ = self.list_ids(f"/v1/invoices?limit=100&customer={inv_cust}&status=paid")
        self.assertEqual(ids, [o["id"] for o in invoices if o["customer"] == inv_cust and o["status"] == "paid"])
        ids, _ = self.list_ids("/v1/invoices?limit=100&collection_method=send_invoice")
        self.assertEqual(ids, [o["id"] for o in invoices if o["collection_method"] == "send_invoice"])
        sub = next(o["subscription"] for o in invoices if o["subscription"])
        self.assertEqual(self.list_ids(f"/v1/invoices?limit=100&subscription={sub}")[0],
                         [o["id"] for o in invoices if o["subscription"] == sub])
        self.assert_error(self.c.get("/v1/invoices?status=lost"), 400, "parameter_invalid_string", "status")

        prices = self.all_of("prices")
        self.assertEqual(self.list_ids("/v1/prices?limit=100&active=false")[0],
                         [o["id"] for o in prices if o["active"] is False])
        self.assertEqual(self.list_ids("/v1/prices?limit=100&type=one_time&currency=usd")[0],
                         [o["id"] for o in prices if o["type"] == "one_time" and o["currency"] == "usd"])
        self.assertEqual(self.list_ids("/v1/prices?lookup_keys[]=lookup_0&lookup_keys[]=lookup_4")[0],
                         [o["id"] for o in prices if o["lookup_key"] in ("lookup_0", "lookup_4")])
        self.assert_error(self.c.get("/v1/prices?active=yes"), 400, "parameter_invalid_boolean", "active")
        products = self.all_of("products")
        want = [products[1]["id"], products[3]["id"]]
        self.assertEqual(self.list_ids(f"/v1/products?ids[0]={want[1]}&ids[1]={want[0]}")[0], want)
        self.assertEqual(self.list_ids("/v1/products?shippable=true")[0],
                         [o["id"] for o in products if o["shippable"]])
        refunds = self.all_of("refunds")
        self.assertEqual(self.list_ids(f"/v1/refunds?charge={refunds[0]['charge']}")[0],
                         [o["id"] for o in refunds if o["charge"] == refunds[0]["charge"]])
        self.assert_error(self.c.get("/v1/customers?email="), 400, "parameter_invalid_empty", "email")

    def test_subscriptions_hide_canceled_unless_status_given(self):
        subs = self.all_of("subscriptions")
        self.assertEqual(len(subs), 24)
        hidden = {"canceled", "incomplete_expired"}
        ids, _ = self.list_ids("/v1/subscriptions?limit=100")
        self.assertEqual(ids, [o["id"] for o in subs if o["status"] not in hidden])
        self.assertEqual(len(ids), 18)
        self.assertEqual(self.list_ids("/v1/subscriptions?limit=100&status=canceled")[0],
                         [o["id"] for o in subs if o["status"] == "canceled"])
        self.assertEqual(self.list_ids("/v1/subscriptions?limit=100&status=all")[0], [o["id"] for o in subs])
        price = subs[0]["items"]["data"][0]["price"]["id"]
        self.assertEqual(self.list_ids(f"/v1/subscriptions?limit=100&status=all&price={price}")[0],
                         [o["id"] for o in subs if o["items"]["data"][0]["price"]["id"] == price])
        # A hidden subscription is no cursor for the list that hides it (stripe-node#2368),
        # but is one for the list of every status.
        canceled = next(i for i, o in enumerate(subs) if o["status"] == "canceled")
        err = self.assert_error(self.c.get(f"/v1/subscriptions?limit=100&starting_after={subs[canceled]['id']}"),
                                400, "resource_missing", "starting_after")
        self.assertEqual(err["message"], f"No such subscription: '{subs[canceled]['id']}'")
        ids, _ = self.list_ids(f"/v1/subscriptions?limit=100&status=all&starting_after={subs[canceled]['id']}")
        self.assertEqual(ids, [o["id"] for o in subs[canceled + 1:]])

    def test_prices_hide_inactive_unless_active_given(self):
        # Stripe's reference: "Returns a list of your active prices ... For the list of
        # inactive prices, set active to false."
        prices = self.all_of("prices")
        inactive = [o["id"] for o in prices if not o["active"]]
        self.assertTrue(inactive)
        self.assertEqual(self.list_ids("/v1/prices?limit=100")[0],
                         [o["id"] for o in prices if o["active"]])
        self.assertEqual(self.list_ids("/v1/prices?limit=100&active=false")[0], inactive)
        # a hidden price is no cursor of the list that hides it (as a canceled
        # subscription above), but it is retrieved by id
        self.assert_error(self.c.get(f"/v1/prices?limit=100&starting_after={inactive[0]}"),
                          400, "resource_missing", "starting_after")
        self.assertEqual(self.c.get("/v1/prices/" + inactive[0])[0], 200)

    def test_test_clocks_hide_their_customers_and_subscriptions(self):
        clock = self.c.ctl("POST", "objects/test_clocks", {"name": "c1", "frozen_time": 1700000000})
        self.assertTrue(clock["id"].startswith("clock_"))
        self.assertEqual(self.list_ids("/v1/test_helpers/test_clocks")[0], [clock["id"]])
        self.assertEqual(self.c.get("/v1/test_helpers/test_clocks/" + clock["id"])[2]["name"], "c1")
        cust = self.c.ctl("POST", "objects/customers", {"email": "clocked@example.com",
                                                         "test_clock": clock["id"]})
        price = next(o["id"] for o in self.all_of("prices") if o["active"] and o["recurring"])
        status, _, sub = self.c.api("POST", "/v1/subscriptions", {"customer": cust["id"],
                                                                   "items[0][price]": price})
        self.assertEqual((status, sub["test_clock"]), (200, clock["id"]))
        # left out of the lists unless asked for: customers by test_clock; subscriptions
        # by test_clock or customer
        self.assertNotIn(cust["id"], self.list_ids("/v1/customers?limit=100")[0])
        self.assertNotIn(sub["id"], self.list_ids("/v1/subscriptions?limit=100&status=all")[0])
        self.assertEqual(self.list_ids(f"/v1/customers?test_clock={clock['id']}")[0], [cust["id"]])
        self.assertEqual(self.list_ids(f"/v1/subscriptions?test_clock={clock['id']}")[0], [sub["id"]])
        self.assertEqual(self.list_ids(f"/v1/subscriptions?customer={cust['id']}")[0], [sub["id"]])
        self.assertEqual(self.c.get("/v1/customers/" + cust["id"])[0], 200)
        self.assertEqual(len(self.list_ids("/v1/customers?limit=100")[0]), 30)

    def test_tax_rates_fractional_percentage(self):
        rate = self.c.ctl("POST", "objects/tax_rates", {"percentage": 8.875, "active": False,
                                                         "display_name": "Sales tax"})
        self.assertEqual(self.c.get("/v1/tax_rates/" + rate["id"])[2]["percentage"], 8.875)
        self.assertEqual(self.list_ids("/v1/tax_rates?active=false")[0], [rate["id"]])
        self.assertEqual(self.list_ids("/v1/tax_rates?active=true")[0], [])

    def test_enum_filters_are_checked(self):
        # Stripe refuses a value outside the enum of a list filter, naming the parameter
        for path, param in (("/v1/subscriptions?status=activ", "status"),
                            ("/v1/subscriptions?collection_method=email", "collection_method"),
                            ("/v1/invoices?status=lost", "status"),
                            ("/v1/prices?type=monthly", "type")):
            err = self.assert_error(self.c.get(path), 400, "parameter_invalid_string", param)
            self.assertIn(f"Invalid {param}: must be one of", err["message"])
        self.assertEqual(self.c.get("/v1/subscriptions?status=paused")[0], 200)

    def test_events(self):
        _, _, body = self.c.get("/v1/events?limit=100")
        events = body["data"]
        self.assertEqual(len(events), 40)
        e = events[0]
        self.assertEqual((e["object"], e["api_version"], e["pending_webhooks"]), ("event", "2026-10-28.endive", 0))
        self.assertEqual(e["request"], {"id": None, "idempotency_key": None})
        self.assertEqual(e["created"], e["data"]["object"]["created"])
        types = {x["type"] for x in events}
        self.assertTrue(types <= {"charge.succeeded", "charge.failed", "charge.pending", "payment_intent.created",
                                  "invoice.created", "customer.subscription.created", "refund.created",
                                  "customer.created", "product.created", "price.created"}, types)
        ids, _ = self.list_ids("/v1/events?limit=100&types[]=charge.failed&types[]=payment_intent.created")
        self.assertEqual(ids, [x["id"] for x in events if x["type"] in ("charge.failed", "payment_intent.created")])
        self.assertEqual(self.list_ids("/v1/events?limit=100&type=charge.*")[0],
                         [x["id"] for x in events if x["type"].startswith("charge.")])
        self.assertEqual(len(self.list_ids("/v1/events?limit=100&delivery_success=true")[0]), 40)
        self.assertEqual(self.list_ids("/v1/events?delivery_success=false")[0], [])
        status, _, one = self.c.get("/v1/events/" + e["id"])
        self.assertEqual((status, one), (200, e))

    def test_retrieve_404_and_account(self):
        cus = self.all_of("customers")[3]
        status, _, body = self.c.get("/v1/customers/" + cus["id"])
        self.assertEqual((status, body), (200, cus))
        err = self.assert_error(self.c.get("/v1/charges/ch_missing"), 404, "resource_missing", "id")
        self.assertEqual(err["message"], "No such charge: 'ch_missing'")
        self.assert_error(self.c.get("/v1/customers/" + cus["id"] + "?x=1"), 400, "parameter_unknown", "x")
        err = self.assert_error(self.c.get("/v1/widgets"), 404)
        self.assertTrue(err["message"].startswith("Unrecognized request URL (GET: /v1/widgets)."))
        self.assert_error(self.c.api("DELETE", "/v1/charges/x"), 404)
        status, _, acct = self.c.get("/v1/account")
        self.assertEqual((acct["id"], acct["object"]), ("acct_fake000000000", "account"))
        self.assertEqual(acct["business_profile"]["name"], "Fake Stripe Account")
        self.assertEqual(acct["settings"]["dashboard"]["display_name"], "Fake Stripe Account")
        _, _, acct = self.c.get("/v1/account", headers={"Stripe-Account": "acct_other"})
        self.assertEqual(acct["id"], "acct_other")
        _, headers, _ = self.c.get("/v1/account", headers={"Stripe-Version": "2020-03-02"})
        self.assertEqual(headers["Stripe-Version"], "2020-03-02")

    def test_auth(self):
        err = self.assert_error(self.c.get("/v1/customers", key=None), 401)
        self.assertTrue(err["message"].startswith("You did not provide an API key."))
        err = self.assert_error(self.c.get("/v1/customers", key="sk_test_wrongwrong9876"), 401)
        self.assertEqual(err["message"], "Invalid API Key provided: sk_test_****9876")
        basic = base64.b64encode(b"sk_test_fake:").decode()
        status, _, _ = self.c.get("/v1/customers", key=None, headers={"Authorization": "Basic " + basic})
        self.assertEqual(status, 200)
        self.c.ctl("POST", "config", {"api_keys": ["sk_test_a", "sk_test_b"]})
        self.assertEqual(self.c.get("/v1/customers", key="sk_test_b")[0], 200)
        self.assertEqual(self.c.get("/v1/customers")[0], 401)

    # ---- faults

    def fault(self, **spec):
        self.c.ctl("POST", "faults", spec)

    def test_fault_error_statuses(self):
        self.fault(kind="429", retry_after=2, should_retry=True)
        status, headers, body = self.c.get("/v1/customers")
        self.assertEqual((status, body["error"]["code"], headers["Retry-After"], headers["Stripe-Should-Retry"]),
                         (429, "rate_limit", "2", "true"))
        self.fault(kind="500", count=2, should_retry=False)
        for _ in range(2):
            status, headers, body = self.c.get("/v1/customers")
            self.assertEqual((status, body["error"]["type"], headers["Stripe-Should-Retry"]),
                             (500, "api_error", "false"))
        self.fault(kind="503")
        self.fault(kind="status", status=502)
        self.assertEqual(self.c.get("/v1/customers")[0], 503)
        self.assertEqual(self.c.get("/v1/customers")[0], 502)
        self.fault(kind="401")
        err = self.assert_error(self.c.get("/v1/customers"), 401)
        self.assertEqual(err["message"], "Invalid API Key provided: sk_test_****fake")
        self.assertEqual(self.c.get("/v1/customers")[0], 200)
        # Path filter and FIFO order; pending faults are listed.
        self.fault(kind="500", path="/v1/charges")
        self.fault(kind="503")
        self.assertEqual([f["kind"] for f in self.c.ctl("GET", "faults")["faults"]], ["500", "503"])
        self.assertEqual(self.c.get("/v1/customers")[0], 503)
        self.assertEqual(self.c.get("/v1/customers")[0], 200)
        self.assertEqual(self.c.get("/v1/charges/x")[0], 500)
        self.assertEqual(self.c.ctl("GET", "faults")["faults"], [])
        self.fault(kind="500", count=5)
        self.c.ctl("DELETE", "faults")
        self.assertEqual(self.c.get("/v1/customers")[0], 200)
        # "contains": text anywhere in the path and query
        self.fault(kind="500", path="/v1/customers", contains="limit=2")
        self.assertEqual(self.c.get("/v1/customers?limit=1")[0], 200)
        self.assertEqual(self.c.get("/v1/charges?limit=2")[0], 200)
        self.assertEqual(self.c.get("/v1/customers?email=a&limit=2")[0], 500)
        self.assertEqual(self.c.ctl("GET", "faults")["faults"], [])

    def test_fault_error_types_follow_the_status(self):
        # Stripe's error object (API reference, "Errors"): type is one of api_error,
        # card_error, idempotency_error, invalid_request_error; Stripe's own failures
        # (5xx) are api_error, a request refused for what it asked (4xx) is not
        for status, type_ in ((400, "invalid_request_error"), (402, "card_error"),
                              (403, "invalid_request_error"), (404, "invalid_request_error"),
                              (409, "invalid_request_error"), (500, "api_error"),
                              (502, "api_error")):
            self.fault(kind="status", status=status)
            err = self.assert_error(self.c.get("/v1/customers"), status, type_=type_)
            self.assertTrue(err["message"])
        # message, code and param of an injected error are the test's to choose
        self.fault(kind="status", status=400, message="No such thing: sk_test_abcdefgh1234",
                   code="resource_missing", param="x")
        err = self.assert_error(self.c.get("/v1/customers"), 400, "resource_missing", "x")
        self.assertEqual(err["message"], "No such thing: sk_test_abcdefgh1234")
        self.fault(kind="429", message="slow down, sk_live_zzzz9999")
        err = self.assert_error(self.c.get("/v1/customers"), 429, "rate_limit")
        self.assertEqual(err["message"], "slow down, sk_live_zzzz9999")

    def test_fault_redirect(self):
        # a redirect answered before anything else (auth included), with a Location
        # that would succeed if followed
        self.c.ctl("DELETE", "requests")
        self.fault(kind="redirect", status=301, location="/v1/customers?limit=1")
        status, headers, body = self.c.raw("GET", "/v1/customers?limit=2")
        self.assertEqual((status, headers["Location"], body), (301, "/v1/customers?limit=1", b""))
        self.fault(kind="redirect", location="http://127.0.0.1:9/elsewhere")
        self.assertEqual(self.c.get("/v1/customers")[0], 302)
        self.assertEqual(self.c.get("/v1/customers?limit=1")[0], 200)
        log = self.c.ctl("GET", "requests")["requests"]
        self.assertEqual([(r["fault"], r["status"]) for r in log],
                         [("redirect", 301), ("redirect", 302), (None, 200)])
        with self.assertRaises(AssertionError):
            self.fault(kind="redirect", status=200, location="/")

    def test_in_flight_peak(self):
        self.c.ctl("DELETE", "requests")
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight_peak"], 0)
        self.c.get("/v1/customers?limit=1")
        self.c.get("/v1/customers?limit=1")
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight_peak"], 1)
        # three held at once: each waits until all three have arrived, so the peak is 3
        self.c.ctl("POST", "config", {"latency_ms": 300})
        import threading
        arrived = threading.Barrier(3)
        def one():
            arrived.wait(10)
            self.c.get("/v1/customers?limit=1")
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while self.c.ctl("GET", "stats")["in_flight_peak"] < 3 and time.time() < deadline:
            time.sleep(0.02)
        for t in threads:
            t.join(60)
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight_peak"], 3)
        self.c.ctl("DELETE", "requests")
        self.assertEqual(self.c.ctl("GET", "stats")["in_flight_peak"], 0)

    def test_fault_hold(self):
        """A held request waits, before it is carried out, until released: its answer
        shows what changed meanwhile; other paths pass; DELETE faults releases too."""
        import threading
        self.c.ctl("DELETE", "requests")
        self.fault(kind="hold", path="/v1/customers", count=1)
        answers = []
        held = threading.Thread(target=lambda: answers.append(self.c.get("/v1/customers?limit=100")))
        held.start()
        deadline = time.time() + 60
        while not self.c.ctl("GET", "held")["held"] and time.time() < deadline:
            time.sleep(0.02)
        waiting = self.c.ctl("GET", "held")["held"]
        self.assertEqual([(w["method"], w["path"]) for w in waiting], [("GET", "/v1/customers?limit=100")])
        self.assertAlmostEqual(waiting[0]["since"], time.time(), delta=60)
        self.assertEqual(self.c.get("/v1/charges?limit=1")[0], 200)  # another path passes
        new = self.c.ctl("POST", "objects/customers", {"email": "while-held@example.com"})
        self.assertTrue(held.is_alive())
        self.assertEqual(self.c.ctl("POST", "release"), {"released": 1})
        held.join(60)
        status, _, body = answers[0]
        self.assertEqual(status, 200)
        self.assertIn(new["id"], [o["id"] for o in body["data"]])  # carried out after the release
        self.assertEqual(self.c.ctl("GET", "held"), {"held": []})
        self.assertEqual(self.c.get("/v1/customers?limit=1")[0], 200)  # count 1: the next passes
        log = self.c.ctl("GET", "requests")["requests"]
        self.assertEqual([(r["path"].split("?")[0], r["fault"]) for r in log],
                         [("/v1/charges", None), ("/v1/customers", "hold"), ("/v1/customers", None)])
        # DELETE /_control/faults lets held requests go too; a timeout ends a hold by itself
        self.fault(kind="hold", timeout=0.3)
        t = time.time()
        self.assertEqual(self.c.get("/v1/customers?limit=1")[0], 200)
        self.assertGreaterEqual(time.time() - t, 0.3)
        other = threading.Thread(target=lambda: answers.append(self.c.get("/v1/customers?limit=1")))
        self.fault(kind="hold")
        other.start()
        while not self.c.ctl("GET", "held")["held"] and time.time() < deadline:
            time.sleep(0.02)
        t = time.time()
        self.c.ctl("DELETE", "faults")
        other.join(60)
        self.assertEqual(answers[-1][0], 200)
        self.assertLess(time.time() - t, 60)  # released, not timed out (300 s)
        with self.assertRaises(AssertionError):
            self.fault(kind="hold", timeout=0)

    def test_metadata_is_flat_strings(self):
        # Stripe's metadata (docs "Metadata"): key-value pairs whose values are strings;
        # a nested value is refused with a 400 naming the parameter, and nothing is made
        before = len(self.all_of("customers"))
        err = self.assert_error(self.c.api("POST", "/v1/customers", {
            "email": "n@example.com", "metadata[plan]": "gold", "metadata[tier][level]": "2"}),
            400, "parameter_invalid_string", "metadata[tier]")
        self.assertIn("metadata[tier]", err["message"])
        self.assertEqual(len(self.all_of("customers")), before)
        cus = self.all_of("customers")[0]["id"]
        self.assert_error(self.c.api("POST", "/v1/customers/" + cus, {"metadata[a][0]": "x"}),
                          400, "parameter_invalid_string", "metadata[a]")
        self.assert_error(self.c.api("POST", "/v1/customers/" + cus, {"metadata[" + "k" * 41 + "]": "x"}),
                          400, "parameter_invalid_string", "metadata[" + "k" * 41 + "]")
        self.assert_error(self.c.api("POST", "/v1/customers/" + cus, {"metadata[k]": "v" * 501}),
                          400, "parameter_invalid_string", "metadata[k]")
        status, _, upd = self.c.api("POST", "/v1/customers/" + cus, {"metadata[k]": "v" * 500})
        self.assertEqual((status, len(upd["metadata"]["k"])), (200, 500))

    def test_fault_broken_responses(self):
        path, hdrs = "/v1/charges?limit=5", {"Authorization": "Bearer " + KEY}
        self.fault(kind="drop")
        with self.assertRaises(http.client.RemoteDisconnected):
            self.c.raw("GET", path, headers=hdrs)
        self.fault(kind="reset")
        with self.assertRaises(ConnectionResetError):
            self.c.raw("GET", path, headers=hdrs)
        self.fault(kind="truncate")
        with self.assertRaises(http.client.IncompleteRead):
            self.c.raw("GET", path, headers=hdrs)
        self.fault(kind="malformed")
        status, headers, body = self.c.raw("GET", path, headers=hdrs)
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["Content-Length"]), len(body))
        with self.assertRaises(ValueError):
            json.loads(body)
        self.fault(kind="empty")
        self.assertEqual(self.c.raw("GET", path, headers=hdrs)[::2], (200, b""))
        self.fault(kind="delay", delay=0.4)
        t = time.time()
        status, _, body = self.c.get(path)
        self.assertGreaterEqual(time.time() - t, 0.4)
        self.assertEqual((status, len(body["data"])), (200, 5))
        # A keep-alive connection survives normal requests after all that.
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=60)
        for _ in range(3):
            conn.request("GET", path, headers=hdrs)
            self.assertEqual(conn.getresponse().read()[:17], b'{"object":"list",')
        conn.close()
        log = self.c.ctl("GET", "requests")["requests"]
        self.assertEqual([(r["fault"], r["status"]) for r in log[-9:]],
                         [("drop", None), ("reset", None), ("truncate", 200), ("malformed", 200),
                          ("empty", 200), ("delay", 200), (None, 200), (None, 200), (None, 200)])

    def test_fault_body(self):
        # any status and body, text or raw bytes, served before auth; its headers win
        self.fault(kind="body", status=400, body='{"error": {"message": null}}',
                   headers={"Request-Id": "req_mine"}, path="/v1/customers")
        self.assertEqual(self.c.ctl("GET", "faults")["faults"][0]["status"], 400)
        status, headers, body = self.c.raw("GET", "/v1/customers?limit=1")
        self.assertEqual((status, headers["Request-Id"], body),
                         (400, "req_mine", b'{"error": {"message": null}}'))
        self.fault(kind="body", body_b64=base64.b64encode(b'{"id": "\xff"}').decode())
        status, _, body = self.c.raw("GET", "/v1/account")
        self.assertEqual((status, body), (200, b'{"id": "\xff"}'))
        self.assertEqual(self.c.get("/v1/account")[0], 200)
        log = self.c.ctl("GET", "requests")["requests"]
        self.assertEqual([(r["fault"], r["status"]) for r in log[-3:]],
                         [("body", 400), ("body", 200), (None, 200)])
        self.assertEqual(self.c.raw("POST", "/_control/faults",
                                    json.dumps({"kind": "body", "status": 99}))[0], 400)

    def test_latency(self):
        self.c.ctl("POST", "config", {"latency_ms": 250})
        t = time.time()
        self.assertEqual(self.c.get("/v1/customers?limit=1")[0], 200)
        self.assertGreaterEqual(time.time() - t, 0.25)

    def test_request_log(self):
        self.c.ctl("DELETE", "requests")
        self.c.get("/v1/customers?limit=2&created[gte]=1", headers={
            "Stripe-Version": "2026-10-28.endive", "Stripe-Account": "acct_x"})
        self.c.get("/v1/customers", key="sk_test_zzzzzzzz")
        self.c.api("POST", "/v1/customers", {"email": "a@b.c"}, headers={"Idempotency-Key": "k1"})
        self.c.ctl("GET", "config")
        raw = self.c.raw("GET", "/_control/requests")[2]
        self.assertNotIn(b"sk_test", raw)
        log = json.loads(raw)["requests"]
        self.assertEqual(len(log), 3)
        first = log[0]
        self.assertEqual(sorted(first), ["authorized", "fault", "idempotency_key", "method", "path", "status",
                                         "stripe_account", "stripe_version", "time"])
        self.assertEqual((first["method"], first["path"], first["status"], first["stripe_version"],
                          first["stripe_account"], first["idempotency_key"], first["authorized"], first["fault"]),
                         ("GET", "/v1/customers?limit=2&created[gte]=1", 200, "2026-10-28.endive", "acct_x",
                          None, True, None))
        self.assertAlmostEqual(first["time"], time.time(), delta=5)
        self.assertEqual((log[1]["status"], log[1]["authorized"], log[1]["stripe_version"]), (401, False, None))
        self.assertEqual((log[2]["method"], log[2]["idempotency_key"]), ("POST", "k1"))
        self.assertEqual(self.c.ctl("GET", "stats"), {"requests": 3, "rate_limited": 0, "in_flight_peak": 1})
        self.c.ctl("DELETE", "requests")
        self.assertEqual(self.c.ctl("GET", "requests")["requests"], [])

    def test_rate_limit(self):
        self.c.ctl("POST", "config", {"rate_limit": 5})
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=30)
        hdrs = {"Authorization": "Bearer " + KEY}
        # 5 in any second: of 8 requests sent within 0.9 s, 5 pass and 3 are refused.  A
        # loaded machine may stretch the 8 over more than the window; then try again.
        for attempt in range(10):
            time.sleep(1.05)  # every earlier request has left the window
            self.c.ctl("DELETE", "requests")
            statuses, retry_after, reasons = [], set(), set()
            t0 = time.monotonic()
            for _ in range(8):
                conn.request("GET", "/v1/customers?limit=1", headers=hdrs)
                resp = conn.getresponse()
                body = json.loads(resp.read())
                statuses.append(resp.status)
                if resp.status == 429:
                    retry_after.add(resp.getheader("Retry-After"))
                    reasons.add(resp.getheader("Stripe-Rate-Limited-Reason"))
                    self.assertEqual(body["error"]["code"], "rate_limit")
            if time.monotonic() - t0 < 0.9:
                break
        else:
            self.skipTest("this machine never sent 8 requests within 0.9 s")
        self.assertEqual(statuses, [200] * 5 + [429] * 3)
        self.assertEqual(retry_after, {"1"})
        self.assertEqual(reasons, {"global-rate"})
        time.sleep(1.05)
        conn.request("GET", "/v1/customers?limit=1", headers=hdrs)
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()
        self.assertEqual(self.c.ctl("GET", "stats"), {"requests": 9, "rate_limited": 3, "in_flight_peak": 1})

    def test_live_rate_limit(self):
        # a live key goes by Stripe's live-mode limit, counted apart from test mode's
        self.c.ctl("POST", "config", {"rate_limit": 3, "live_rate_limit": 6,
                                      "api_keys": [KEY, "sk_live_selftest"]})
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=30)
        for attempt in range(10):
            time.sleep(1.05)
            t0 = time.monotonic()
            statuses = {}
            for key in ("sk_live_selftest", KEY):
                statuses[key] = []
                for _ in range(7):
                    conn.request("GET", "/v1/customers?limit=1", headers={"Authorization": "Bearer " + key})
                    resp = conn.getresponse()
                    resp.read()
                    statuses[key].append(resp.status)
            if time.monotonic() - t0 < 0.9:
                break
        else:
            self.skipTest("this machine never sent 14 requests within 0.9 s")
        conn.close()
        self.assertEqual(statuses["sk_live_selftest"], [200] * 6 + [429])
        self.assertEqual(statuses[KEY], [200] * 3 + [429] * 4)

    def test_endpoint_rate_limit(self):
        # Stripe's default for one endpoint is 25 a second; here 3: the fourth retrieve
        # of customers in a second (any ids) is refused, a list of them still goes
        self.c.ctl("POST", "config", {"endpoint_rate_limit": 3})
        cust = self.all_of("customers")
        for attempt in range(10):
            time.sleep(1.05)
            t0 = time.monotonic()
            got = [self.c.get("/v1/customers/" + cust[i]["id"]) for i in range(4)]
            listed = self.c.get("/v1/customers?limit=1")[0]
            if time.monotonic() - t0 < 0.9:
                break
        else:
            self.skipTest("this machine never sent 5 requests within 0.9 s")
        self.assertEqual([g[0] for g in got] + [listed], [200, 200, 200, 429, 200])
        self.assertEqual(got[3][1]["Stripe-Rate-Limited-Reason"], "endpoint-rate")
        self.assertEqual(got[3][2]["error"]["code"], "rate_limit")

    # ---- writes

    def test_customer_create_update_delete_events(self):
        mark = self.newest_event_id()
        status, headers, cus = self.c.api("POST", "/v1/customers", {
            "email": "new@example.com", "name": "New", "metadata[plan]": "gold", "metadata[tier]": "1",
            "expand[]": "default_source"})
        self.assertEqual(status, 200, cus)
        self.assertRegex(cus["id"], r"^cus_[0-9A-Za-z]{14}$")
        self.assertEqual((cus["email"], cus["metadata"]), ("new@example.com", {"plan": "gold", "tier": "1"}))
        self.assertEqual(self.c.get("/v1/customers?limit=1")[2]["data"][0]["id"], cus["id"])
        status, headers, upd = self.c.api("POST", "/v1/customers/" + cus["id"], {
            "metadata[plan]": "", "metadata[x]": "y", "description": "vip"}, headers={"Idempotency-Key": "u1"})
        self.assertEqual(status, 200, upd)
        self.assertEqual((upd["metadata"], upd["description"]), ({"tier": "1", "x": "y"}, "vip"))
        status, _, gone = self.c.api("DELETE", "/v1/customers/" + cus["id"])
        self.assertEqual((status, gone), (200, {"id": cus["id"], "object": "customer", "deleted": True}))
        self.assertEqual(self.c.get("/v1/customers/" + cus["id"])[2], gone)
        self.assertNotIn(cus["id"], self.list_ids("/v1/customers?limit=100")[0])
        events = self.events_since(mark)
        self.assertEqual([e["type"] for e in events], ["customer.created", "customer.updated", "customer.deleted"])
        self.assertEqual(events[1]["data"]["previous_attributes"],
                         {"description": None, "metadata": {"plan": "gold", "x": None}})
        self.assertEqual(events[1]["data"]["object"], upd)
        self.assertEqual(events[1]["request"]["idempotency_key"], "u1")
        self.assertEqual([e["id"] for e in events], sorted(e["id"] for e in events))
        self.assertEqual([e["created"] for e in events], sorted(e["created"] for e in events))
        self.assert_error(self.c.api("POST", "/v1/customers", {"colour": "red"}), 400, "parameter_unknown", "colour")
        self.assert_error(self.c.api("POST", "/v1/customers/cus_nope", {"name": "x"}), 404, "resource_missing", "id")

    def test_products_prices_coupons(self):
        mark = self.newest_event_id()
        _, _, prod = self.c.api("POST", "/v1/products", {"name": "Widget", "shippable": "true"})
        self.assertEqual((prod["name"], prod["active"], prod["shippable"]), ("Widget", True, True))
        self.assert_error(self.c.api("POST", "/v1/products", {}), 400, "parameter_missing", "name")
        status, _, price = self.c.api("POST", "/v1/prices", {
            "product": prod["id"], "currency": "usd", "unit_amount": "1250", "recurring[interval]": "year"})
        self.assertEqual(status, 200, price)
        self.assertEqual((price["unit_amount"], price["unit_amount_decimal"], price["type"],
                          price["recurring"]["interval"]), (1250, "1250", "recurring", "year"))
        self.assert_error(self.c.api("POST", "/v1/prices", {"product": "prod_x", "currency": "usd",
                                                            "unit_amount": "1"}), 400, "resource_missing", "product")
        self.assert_error(self.c.api("POST", "/v1/prices/" + price["id"], {"unit_amount": "5"}), 400,
                          "parameter_unknown", "unit_amount")
        _, _, price2 = self.c.api("POST", "/v1/prices/" + price["id"], {"active": "false"})
        self.assertIs(price2["active"], False)
        self.assertEqual(self.c.api("DELETE", "/v1/prices/" + price["id"])[0], 400)
        self.assertEqual(self.c.api("DELETE", "/v1/products/" + prod["id"])[0], 400)  # it has a price
        _, _, coupon = self.c.api("POST", "/v1/coupons", {"id": "SAVE10", "percent_off": "10.5",
                                                          "duration": "repeating", "duration_in_months": "3"})
        self.assertEqual((coupon["id"], coupon["percent_off"], coupon["duration_in_months"]), ("SAVE10", 10.5, 3))
        self.assertEqual(self.c.get("/v1/coupons/SAVE10")[2], coupon)
        self.assertEqual(self.c.api("DELETE", "/v1/coupons/SAVE10")[2]["deleted"], True)
        self.assertEqual([e["type"] for e in self.events_since(mark)],
                         ["product.created", "price.created", "price.updated", "coupon.created", "coupon.deleted"])

    def test_subscription_create_update_cancel(self):
        mark = self.newest_event_id()
        cus = self.all_of("customers")[0]["id"]
        price = next(p for p in self.all_of("prices") if p["type"] == "recurring")
        status, _, sub = self.c.api("POST", "/v1/subscriptions", {
            "customer": cus, "items[0][price]": price["id"], "items[0][quantity]": "2"})
        self.assertEqual(status, 200, sub)
        item = sub["items"]["data"][0]
        self.assertEqual((sub["status"], item["price"]["id"], item["quantity"]), ("active", price["id"], 2))
        _, _, sub = self.c.api("POST", "/v1/subscriptions/" + sub["id"], {
            "cancel_at_period_end": "true", "items[0][id]": item["id"], "items[0][quantity]": "3"})
        self.assertEqual((sub["cancel_at_period_end"], sub["items"]["data"][0]["quantity"]), (True, 3))
        _, _, sub = self.c.api("DELETE", "/v1/subscriptions/" + sub["id"])
        self.assertEqual(sub["status"], "canceled")
        self.assertNotIn(sub["id"], self.list_ids("/v1/subscriptions?limit=100")[0])
        self.assertIn(sub["id"], self.list_ids("/v1/subscriptions?limit=100&status=all")[0])
        self.assertEqual(self.c.api("DELETE", "/v1/subscriptions/" + sub["id"])[0], 400)
        events = self.events_since(mark)
        self.assertEqual([e["type"] for e in events], ["customer.subscription.created",
                                                       "customer.subscription.updated",
                                                       "customer.subscription.deleted"])
        self.assertEqual(events[2]["data"]["previous_attributes"]["status"], "active")

    def test_refund(self):
        mark = self.newest_event_id()
        charge = next(c for c in self.all_of("charges") if c["status"] == "succeeded" and c["amount_refunded"] == 0)
        status, _, refund = self.c.api("POST", "/v1/refunds", {"charge": charge["id"], "amount": "50"})
        self.assertEqual(status, 200, refund)
        self.assertEqual((refund["charge"], refund["amount"], refund["payment_intent"], refund["status"]),
                         (charge["id"], 50, charge["payment_intent"], "succeeded"))
        ch = self.c.get("/v1/charges/" + charge["id"])[2]
        self.assertEqual((ch["amount_refunded"], ch["refunded"]), (50, False))
        events = self.events_since(mark)
        self.assertEqual([e["type"] for e in events], ["charge.refunded", "refund.created"])
        self.assertEqual(events[0]["data"]["previous_attributes"], {"amount_refunded": 0})
        self.assertEqual(self.list_ids(f"/v1/refunds?charge={charge['id']}")[0], [refund["id"]])
        err = self.assert_error(self.c.api("POST", "/v1/refunds", {"charge": charge["id"], "amount": "999999"}), 400,
                                param="amount")
        self.assertIn("greater than unrefunded amount", err["message"])

    def test_idempotency(self):
        params = {"email": "idem@example.com"}
        first = self.c.api("POST", "/v1/customers", params, headers={"Idempotency-Key": "key-1"})
        again = self.c.api("POST", "/v1/customers", params, headers={"Idempotency-Key": "key-1"})
        self.assertEqual((first[0], first[2]), (again[0], again[2]))
        self.assertNotIn("Idempotent-Replayed", first[1])
        self.assertEqual(again[1]["Idempotent-Replayed"], "true")
        self.assertEqual(len(self.list_ids("/v1/customers?email=idem@example.com")[0]), 1)
        err = self.assert_error(self.c.api("POST", "/v1/customers", {"email": "other@example.com"},
                                           headers={"Idempotency-Key": "key-1"}), 400, type_="idempotency_error")
        self.assertIn("key-1", err["message"])
        # A failure answered by a fault did not run: the retry with the same key runs once.
        self.fault(kind="500")
        self.assertEqual(self.c.api("POST", "/v1/products", {"name": "P"}, headers={"Idempotency-Key": "k2"})[0], 500)
        self.assertEqual(self.c.api("POST", "/v1/products", {"name": "P"}, headers={"Idempotency-Key": "k2"})[0], 200)
        # A truncated response did run: the retry replays it.
        self.fault(kind="truncate")
        with self.assertRaises(http.client.IncompleteRead):
            self.c.api("POST", "/v1/products", {"name": "Q"}, headers={"Idempotency-Key": "k3"})
        status, headers, _ = self.c.api("POST", "/v1/products", {"name": "Q"}, headers={"Idempotency-Key": "k3"})
        self.assertEqual((status, headers.get("Idempotent-Replayed")), (200, "true"))
        names = [p["name"] for p in self.all_of("products")]
        self.assertEqual((names.count("P"), names.count("Q")), (1, 1))

    def test_cursor_deleted_or_filtered_out(self):
        """A cursor naming a deleted object, or one the list's filters no longer take, is
        Stripe's 400 resource_missing on the cursor's parameter."""
        ids, _ = self.list_ids("/v1/customers?limit=3")
        self.c.api("DELETE", "/v1/customers/" + ids[2])
        for param in ("starting_after", "ending_before"):
            err = self.assert_error(self.c.get(f"/v1/customers?limit=3&{param}={ids[2]}"), 400,
                                    "resource_missing", param)
            self.assertEqual(err["message"], f"No such customer: '{ids[2]}'")
        self.assertEqual(self.list_ids(f"/v1/customers?limit=1&starting_after={ids[1]}")[0][0],
                         self.all_of("customers")[2]["id"])
        invoices = self.all_of("invoices")
        paid = [o["id"] for o in invoices if o["status"] == "paid"]
        other = next(o["id"] for o in invoices if o["status"] == "open")
        self.assertEqual(self.list_ids(f"/v1/invoices?status=paid&starting_after={paid[0]}")[0], paid[1:])
        self.assert_error(self.c.get(f"/v1/invoices?status=paid&starting_after={other}"), 400,
                          "resource_missing", "starting_after")
        # a created range is no filter of that kind: a cursor outside it still works
        self.assertEqual(self.c.get(f"/v1/invoices?created[gt]=1&starting_after={other}")[0], 200)

    def test_restricted_keys(self):
        rk = "rk_test_51RestrictedKeyForTests0123456789"
        self.c.ctl("POST", "config", {"restricted_keys": {rk: ["customer_read", "rak_invoice_write",
                                                               "event_read"]}})
        self.assertEqual(self.c.get("/v1/customers", key=rk)[0], 200)
        self.assertEqual(self.c.get("/v1/invoices?limit=1", key=rk)[0], 200)  # write includes read
        self.assertEqual(self.c.get("/v1/events?limit=1", key=rk)[0], 200)
        self.assertEqual(self.c.get("/v1/customers", key=KEY)[0], 200)  # the secret key still works
        for method, path, perm in (("GET", "/v1/charges", "charge_read"),
                                   ("GET", "/v1/charges/ch_x", "charge_read"),
                                   ("POST", "/v1/customers", "customer_write"),
                                   ("GET", "/v1/account", "accounts_kyc_id_numbers_read"),
                                   ("GET", "/v1/customers/cus_x/payment_methods", "payment_method_read"),
                                   ("GET", "/v1/balance", "balance_read")):
            err = self.assert_error(self.c.api(method, path, {} if method == "POST" else None, key=rk), 403)
            self.assertEqual(err["message"],
                             "The provided key 'rk_test_" + "*" * (len(rk) - 14) + rk[-6:] + "' does not have "
                             "the required permissions for this endpoint on account 'acct_fake000000000'. "
                             f"Having the 'rak_{perm}' permission would allow this request to continue.", path)
        err = self.assert_error(self.c.get("/v1/charges", key=rk, headers={"Stripe-Account": "acct_other"}), 403)
        self.assertIn("on account 'acct_other'", err["message"])
        self.assert_error(self.c.get("/v1/widgets", key=rk), 404)
        self.assert_error(self.c.get("/v1/customers", key="rk_test_unknownkey1234"), 401)
        self.assertEqual(self.c.ctl("GET", "config")["restricted_keys"],
                         {rk: ["customer_read", "event_read", "invoice_write"]})
        self.assertEqual(self.c.raw("POST", "/_control/config", json.dumps(
            {"restricted_keys": {"sk_test_x": []}}))[0], 400)

    def test_event_api_versions(self):
        """Events carry the account's default API version and their object is rendered
        in it: before 2025-03-31.basil an invoice's subscription is top-level and it has
        no parent.  A retrieve is rendered in the request's Stripe-Version."""
        mark = self.newest_event_id()
        self.c.ctl("POST", "config", {"event_api_version": "2024-06-20"})
        inv = self.c.ctl("POST", "objects/invoices", {"status": "open"})
        cus = self.c.ctl("POST", "objects/customers", {"name": "Old"})
        self.c.ctl("POST", "config", {"event_api_version": "2026-10-28.endive"})
        self.c.ctl("POST", "objects/invoices/" + inv["id"], {"status": "paid"})
        sub = inv["parent"]["subscription_details"]["subscription"]
        events = self.events_since(mark)
        self.assertEqual([(e["type"], e["api_version"]) for e in events],
                         [("invoice.created", "2024-06-20"), ("customer.created", "2024-06-20"),
                          ("invoice.updated", "2026-10-28.endive"), ("invoice.paid", "2026-10-28.endive")])
        old = events[0]["data"]["object"]
        self.assertNotIn("parent", old)
        self.assertEqual((old["id"], old["subscription"], old["subscription_details"]),
                         (inv["id"], sub, {"metadata": None}))
        self.assertEqual(events[1]["data"]["object"], cus)  # no change to customers listed
        self.assertEqual(events[2]["data"]["object"]["parent"], inv["parent"])
        status, _, now = self.c.get("/v1/invoices/" + inv["id"])
        self.assertEqual((status, now["parent"], now["status"]), (200, inv["parent"], "paid"))
        _, headers, then = self.c.get("/v1/invoices/" + inv["id"], headers={"Stripe-Version": "2024-06-20"})
        self.assertEqual((headers["Stripe-Version"], "parent" in then, then["subscription"]),
                         ("2024-06-20", False, sub))
        raw = self.c.ctl("POST", "events", {"type": "invoice.updated", "object": now, "api_version": "2023-10-16"})
        self.assertEqual((raw["api_version"], "parent" in raw["data"]["object"]), ("2023-10-16", False))
        self.assertEqual(self.c.raw("POST", "/_control/config", json.dumps({"event_api_version": "soon"}))[0], 400)

    def test_invoice_upcoming(self):
        """invoice.upcoming carries a preview invoice, which has no id and is in no list."""
        mark = self.newest_event_id()
        sub = next(o for o in self.all_of("subscriptions") if o["status"] == "active")
        ev = self.c.ctl("POST", "upcoming_invoice", {"subscription": sub["id"]})
        self.assertEqual(ev["type"], "invoice.upcoming")
        inv = ev["data"]["object"]
        self.assertNotIn("id", inv)
        self.assertEqual((inv["object"], inv["billing_reason"], inv["customer"], inv["subscription"]),
                         ("invoice", "upcoming", sub["customer"], sub["id"]))
        self.assertEqual([e["id"] for e in self.events_since(mark)], [ev["id"]])
        self.assertEqual(len(self.all_of("invoices")), 30)

    def test_nested_lists_inline_their_first_page(self):
        """As on Stripe, an invoice inlines 10 of its lines (has_more, the rest at its url,
        GET /v1/invoices/{invoice}/lines) and a subscription 10 of its items
        (/v1/subscription_items?subscription=…); a line taken out sends invoice.updated."""
        c = self.c
        inv = c.ctl("POST", "nested", {"object": "invoices", "count": 25})
        lines = inv["lines"]
        self.assertEqual((len(lines["data"]), lines["has_more"], lines["total_count"]),
                         (10, True, 25))
        self.assertEqual(lines["url"], f"/v1/invoices/{inv['id']}/lines")
        _, _, got = c.get(f"/v1/invoices/{inv['id']}")
        self.assertEqual(got["lines"], lines)
        seen = list(lines["data"])
        while True:
            _, _, page = c.get(f"{lines['url']}?limit=7&starting_after={seen[-1]['id']}")
            seen += page["data"]
            if not page["has_more"]:
                break
        self.assertEqual(len(seen), 25)
        self.assertEqual(len({l["id"] for l in seen}), 25)
        _, _, first = c.get(f"{lines['url']}?limit=100")
        self.assertEqual([l["id"] for l in first["data"]], [l["id"] for l in seen])
        self.assert_error(c.get(f"{lines['url']}?starting_after=il_nope"), 400,
                          "resource_missing", "starting_after")
        self.assert_error(c.get("/v1/invoices/in_nope/lines"), 404, "resource_missing", "invoice")
        mark = self.newest_event_id()
        c.ctl("POST", "nested_remove", {"object": "invoices", "id": inv["id"]})
        ev = self.events_since(mark)
        self.assertEqual([e["type"] for e in ev], ["invoice.updated"])
        self.assertEqual(ev[0]["data"]["object"]["lines"]["total_count"], 24)
        self.assertEqual(len(ev[0]["data"]["object"]["lines"]["data"]), 10)
        _, _, first = c.get(f"{lines['url']}?limit=100")
        self.assertEqual(len(first["data"]), 24)
        self.assertNotIn(seen[-1]["id"], [l["id"] for l in first["data"]])

        small = c.ctl("POST", "nested", {"object": "invoices", "count": 3})
        self.assertEqual((len(small["lines"]["data"]), small["lines"]["has_more"]), (3, False))

        sub = c.ctl("POST", "nested", {"object": "subscriptions", "count": 15})
        items = sub["items"]
        self.assertEqual((len(items["data"]), items["has_more"]), (10, True))
        self.assertEqual(items["url"], f"/v1/subscription_items?subscription={sub['id']}")
        _, _, rest = c.get(f"{items['url']}&limit=100&starting_after={items['data'][-1]['id']}")
        self.assertEqual((len(rest["data"]), rest["has_more"]), (5, False))
        self.assertEqual(len({i["id"] for i in items["data"] + rest["data"]}), 15)

    def test_credit_notes_inline_ten_lines(self):
        """A credit note, like an invoice, inlines 10 of its lines (has_more, the rest at
        GET /v1/credit_notes/{credit_note}/lines); it is listed and retrieved, its creation
        and a line taken out send credit_note.created and credit_note.updated."""
        c = self.c
        mark = self.newest_event_id()
        cn = c.ctl("POST", "nested", {"object": "credit_notes", "count": 12})
        self.assertTrue(cn["id"].startswith("cn_"))
        lines = cn["lines"]
        self.assertEqual((len(lines["data"]), lines["has_more"], lines["total_count"]),
                         (10, True, 12))
        self.assertEqual(lines["url"], f"/v1/credit_notes/{cn['id']}/lines")
        self.assertEqual({l["object"] for l in lines["data"]}, {"credit_note_line_item"})
        _, _, rest = c.get(f"{lines['url']}?limit=100&starting_after={lines['data'][-1]['id']}")
        self.assertEqual((len(rest["data"]), rest["has_more"]), (2, False))
        self.assertEqual(len({l["id"] for l in lines["data"] + rest["data"]}), 12)
        _, _, listed = c.get("/v1/credit_notes?limit=100")
        self.assertIn(cn["id"], [n["id"] for n in listed["data"]])
        _, _, got = c.get(f"/v1/credit_notes/{cn['id']}")
        self.assertEqual(got["lines"], lines)
        self.assert_error(c.get("/v1/credit_notes/cn_nope/lines"), 404, "resource_missing",
                          "credit_note")
        c.ctl("POST", "nested_remove", {"object": "credit_notes", "id": cn["id"]})
        self.assertEqual([e["type"] for e in self.events_since(mark)],
                         ["credit_note.created", "credit_note.updated"])
        _, _, first = c.get(f"{lines['url']}?limit=100")
        self.assertEqual(len(first["data"]), 11)

    def test_idempotency_replays_errors(self):
        # A write that ran and failed: its failure is saved and replayed, 500s included
        self.fault(kind="500", after=True)
        first = self.c.api("POST", "/v1/products", {"name": "R"}, headers={"Idempotency-Key": "k4"})
        again = self.c.api("POST", "/v1/products", {"name": "R"}, headers={"Idempotency-Key": "k4"})
        self.assertEqual((first[0], again[0]), (500, 500))
        self.assertEqual(first[2], again[2])
        self.assertEqual(again[1]["Idempotent-Replayed"], "true")
        self.assertEqual([p["name"] for p in self.all_of("products")].count("R"), 1)
        # an error of the endpoint itself (no such customer) is replayed too
        params = {"customer": "cus_nobody", "items[0][price]": "price_x"}
        first = self.c.api("POST", "/v1/subscriptions", params, headers={"Idempotency-Key": "k5"})
        self.c.ctl("POST", "objects/customers", {"id": "cus_nobody"})
        again = self.c.api("POST", "/v1/subscriptions", params, headers={"Idempotency-Key": "k5"})
        self.assertEqual((first[0], again[0], again[2]), (400, 400, first[2]))
        self.assertEqual(again[1]["Idempotent-Replayed"], "true")
        # parameters that fail validation saved nothing: the same key may run later
        bad = self.c.api("POST", "/v1/products", {"name": "S", "colour": "red"},
                         headers={"Idempotency-Key": "k6"})
        self.assert_error(bad, 400, "parameter_unknown", "colour")
        self.assertEqual(self.c.api("POST", "/v1/products", {"name": "S", "colour": "red"},
                                    headers={"Idempotency-Key": "k6"})[0], 400)
        self.assertNotIn("Idempotent-Replayed", self.c.api(
            "POST", "/v1/products", {"name": "S", "colour": "red"}, headers={"Idempotency-Key": "k6"})[1])
        # a different request under a used key: idempotency_error
        self.assert_error(self.c.api("POST", "/v1/products", {"name": "T"}, headers={"Idempotency-Key": "k4"}),
                          400, type_="idempotency_error")

    # ---- control objects and events

    def test_control_objects_and_events(self):
        mark = self.newest_event_id()
        inv = self.c.ctl("POST", "objects/invoices", {"customer": "cus_x", "status": "open", "total": 5,
                                                      "created": 1800000000, "metadata": {"a": "1"}})
        self.assertTrue(inv["id"].startswith("in_"))
        self.assertEqual((inv["created"], inv["metadata"], inv["object"]), (1800000000, {"a": "1"}, "invoice"))
        upd = self.c.ctl("POST", "objects/invoices/" + inv["id"], {"status": "paid", "metadata": {"b": "2"}})
        self.assertEqual(upd["metadata"], {"a": "1", "b": "2"})
        self.c.ctl("DELETE", "objects/invoices/" + inv["id"])
        sub = self.all_of("subscriptions")[0]
        canceled = self.c.ctl("DELETE", "objects/subscriptions/" + sub["id"])
        self.assertEqual(canceled["status"], "canceled")
        pi = self.c.ctl("POST", "objects/payment_intents", {"status": "succeeded"})
        ch = self.c.ctl("POST", "objects/charges", {"status": "failed"})
        raw = self.c.ctl("POST", "events", {"type": "customer.updated", "object": {"id": "cus_old", "object": "customer"},
                                            "created": 1600000000})
        self.assertEqual((raw["created"], raw["data"]["object"]["id"]), (1600000000, "cus_old"))
        events = self.events_since(mark)
        self.assertEqual([(e["type"], e["data"]["object"]["id"]) for e in events],
                         [("invoice.created", inv["id"]), ("invoice.updated", inv["id"]), ("invoice.paid", inv["id"]),
                          ("invoice.deleted", inv["id"]), ("customer.subscription.deleted", sub["id"]),
                          ("payment_intent.created", pi["id"]), ("payment_intent.succeeded", pi["id"]),
                          ("charge.failed", ch["id"])])
        self.assertEqual(events[1]["data"]["previous_attributes"], {"status": "open", "metadata": {"a": "1"}})
        all_events = self.c.get("/v1/events?limit=100")[2]["data"]
        self.assertEqual(all_events[-1]["id"], raw["id"])  # the oldest, being created in 2020
        self.assertIn(sub["id"], [o["id"] for o in self.all_of("subscriptions")])
        self.assertEqual(self.c.raw("GET", "/_control/objects/widgets")[0], 404)
        self.assertEqual(self.c.raw("POST", "/_control/faults", json.dumps({"kind": "boom"}))[0], 400)

    def test_changes_without_events(self):
        """As on Stripe: a balance transaction turns available, a checkout session
        changes while open, an invoice item changes or joins an invoice, a file link
        expires, each with no event; a checkout session's end and an invoice item's
        creation and deletion have theirs.  Their lists take Stripe's filters."""
        mark = self.newest_event_id()
        txn = self.c.ctl("POST", "objects/balance_transactions", {"status": "pending", "amount": 100})
        self.assertTrue(txn["id"].startswith("txn_"))
        self.c.ctl("POST", "objects/balance_transactions/" + txn["id"], {"status": "available"})
        cs = self.c.ctl("POST", "objects/checkout_sessions", {"status": "open", "customer_email": None})
        self.assertTrue(cs["id"].startswith("cs_test_"))
        self.c.ctl("POST", "objects/checkout_sessions/" + cs["id"], {"customer_email": "a@example.com"})
        done = self.c.ctl("POST", "objects/checkout_sessions", {"status": "open"})
        self.c.ctl("POST", "objects/checkout_sessions/" + done["id"], {"status": "complete"})
        ii = self.c.ctl("POST", "objects/invoiceitems", {"invoice": None, "amount": 5})
        self.c.ctl("POST", "objects/invoiceitems/" + ii["id"], {"amount": 7})
        link = self.c.ctl("POST", "objects/file_links", {"expired": False})
        self.c.ctl("POST", "objects/file_links/" + link["id"], {"expired": True})
        self.assertEqual([(e["type"], e["data"]["object"]["id"]) for e in self.events_since(mark)],
                         [("checkout.session.completed", done["id"]), ("invoiceitem.created", ii["id"])])
        self.assertEqual(self.c.get("/v1/balance_transactions/" + txn["id"])[2]["status"], "available")
        open_ = self.c.get("/v1/checkout/sessions?status=open&limit=100")[2]["data"]
        self.assertEqual([(o["id"], o["customer_email"]) for o in open_], [(cs["id"], "a@example.com")])
        self.assertEqual(self.c.get("/v1/checkout/sessions/" + done["id"])[2]["status"], "complete")
        self.assertEqual(self.c.get("/v1/checkout/sessions?status=gone")[0], 400)
        self.assertEqual([o["id"] for o in self.c.get("/v1/invoiceitems?pending=true")[2]["data"]], [ii["id"]])
        self.assertEqual([o["id"] for o in self.c.get("/v1/file_links?expired=true")[2]["data"]], [link["id"]])
        self.c.ctl("POST", "objects/invoiceitems/" + ii["id"], {"invoice": "in_x"})
        self.assertEqual(self.c.get("/v1/invoiceitems?pending=true")[2]["data"], [])
        self.assertEqual(self.c.api("DELETE", "/v1/invoiceitems/" + ii["id"])[0], 200)
        self.assertEqual([e["type"] for e in self.events_since(mark)][-1], "invoiceitem.deleted")

    def test_control_webhook(self):
        """A delivery signed as Stripe signs one: HMAC-SHA256 of "t.payload" per secret."""
        import hashlib
        import hmac
        ev = self.c.ctl("POST", "events", {"type": "customer.updated",
                                           "object": {"id": "cus_wh", "object": "customer", "name": "Zoë"}})
        out = self.c.ctl("POST", "webhook", {"event": ev["id"], "secret": ["whsec_old", "whsec_new"],
                                             "timestamp": 1700000000})
        payload, header = out["payload"], out["signature"]
        self.assertEqual(json.loads(payload), ev)
        self.assertIn("\n  \"id\": ", payload)          # pretty-printed, as Stripe sends it
        self.assertIn("Zoë", payload)                    # UTF-8, not escaped
        parts = [p.split("=", 1) for p in header.split(",")]
        self.assertEqual([k for k, _ in parts], ["t", "v1", "v1", "v0"])
        self.assertEqual(parts[0][1], "1700000000")
        for (_, got), secret in zip(parts[1:3], ("whsec_old", "whsec_new")):
            want = hmac.new(secret.encode(), ("1700000000." + payload).encode(), hashlib.sha256).hexdigest()
            self.assertEqual(got, want)
        self.assertNotIn(parts[3][1], (parts[1][1], parts[2][1]))
        now = self.c.ctl("POST", "webhook", {"event": ev["id"], "secret": "whsec_x"})["signature"]
        self.assertLess(abs(int(now.split(",")[0][2:]) - time.time()), 60)
        self.assertEqual(self.c.raw("POST", "/_control/webhook",
                                    json.dumps({"event": "evt_nope", "secret": "whsec_x"}))[0], 404)
        self.assertEqual(self.c.raw("POST", "/_control/webhook",
                                    json.dumps({"event": ev["id"], "secret": "sk_x"}))[0], 400)

    def test_control_churn(self):
        mark = self.newest_event_id()
        out = self.c.ctl("POST", "churn", {"object": "customers", "events": 5})
        self.assertEqual(out["events"], 5)
        events = self.events_since(mark)
        self.assertEqual([e["type"] for e in events], ["customer.updated"] * 5)
        self.assertEqual([e["data"]["object"]["metadata"]["churn"] for e in events], ["0", "1", "2", "3", "4"])
        ids = sorted(o["id"] for o in self.all_of("customers"))
        self.assertEqual([e["data"]["object"]["id"] for e in events], [ids[i % len(ids)] for i in range(5)])
        self.assertEqual(self.c.raw("POST", "/_control/churn", json.dumps({"object": "events", "events": 1}))[0], 400)

    def test_reseed_counts_only(self):
        out = self.c.ctl("POST", "reseed", {"counts": {"customers": 3, "events": 2}, "only": True, "seed": 7})
        self.assertEqual(out["counts"]["customers"], 3)
        self.assertEqual(out["counts"]["charges"], 0)
        self.assertEqual(out["counts"]["events"], 2)
        ids7 = [o["id"] for o in self.all_of("customers")]
        self.c.ctl("POST", "reseed", {"counts": {"customers": 3}, "only": True, "seed": 7})
        self.assertEqual([o["id"] for o in self.all_of("customers")], ids7)
        self.c.ctl("POST", "reseed", {"counts": {"customers": 3}, "only": True, "seed": 8})
        self.assertNotEqual([o["id"] for o in self.all_of("customers")], ids7)

    def test_zz_reseed_100k_charges_and_page_through(self):
        t = time.time()
        out = self.c.ctl("POST", "reseed", {"counts": {"charges": 100000, "customers": 1050}})
        gen = time.time() - t
        self.assertEqual(out["counts"]["charges"], 100000)
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=30)
        hdrs = {"Authorization": "Bearer " + KEY}
        after, seen, nbytes, parsing = None, set(), 0, 0.0
        t = time.time()
        for _ in range(100):
            conn.request("GET", "/v1/charges?limit=100" + (f"&starting_after={after}" if after else ""), headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            nbytes += len(data)
            self.assertEqual(resp.status, 200)
            p = time.time()
            page = json.loads(data)["data"]
            parsing += time.time() - p
            after = page[-1]["id"]
            seen.update(o["id"] for o in page)
        elapsed = time.time() - t
        conn.close()
        self.assertEqual(len(seen), 10000)
        serving = elapsed - parsing
        print(f"\n  reseed 100k charges: {gen:.1f} s; 100 pages of 100 charges over one keep-alive "
              f"connection: {100 / serving:.0f} pages/s ({nbytes / serving / 1e6:.0f} MB/s) "
              f"without this client's json.loads, {100 / elapsed:.0f} pages/s with it",
              file=sys.stderr)
        customer = self.all_of("customers")[0]["id"]
        _, _, body = self.c.get(f"/v1/charges?customer={customer}&limit=100")
        self.assertGreater(len(body["data"]), 50)
        self.assertEqual({o["customer"] for o in body["data"]}, {customer})


class SeededTest(ServedTest):
    """A fake of its own, which each test reseeds (setUp), with FakeStripeTest's helpers."""
    all_of = FakeStripeTest.all_of
    list_ids = FakeStripeTest.list_ids
    events_since = FakeStripeTest.events_since
    newest_event_id = FakeStripeTest.newest_event_id
    assert_error = FakeStripeTest.assert_error


class CustomerListsTest(SeededTest):
    """A customer's tax ids and balance transactions, payment methods attached and
    detached, billing meters: as Stripe lists them and the events it sends."""

    def setUp(self):
        FakeStripeTest.setUp(self)
        self.c.ctl("POST", "reseed", {"seed": 1, "counts": {
            "customers": 5, "tax_ids": 9, "customer_balance_transactions": 9,
            "payment_methods": 6}})

    def test_tax_ids_paged_per_customer(self):
        c = self.c
        tax = self.all_of("tax_ids")
        cus = tax[0]["customer"]
        mine = sorted(t["id"] for t in tax if t["customer"] == cus)
        self.assertGreaterEqual(len(mine), 1)
        ids, more, after = [], True, None
        while more:
            q = f"/v1/customers/{cus}/tax_ids?limit=1" + (f"&starting_after={after}" if after else "")
            status, _, body = c.get(q)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["url"], f"/v1/customers/{cus}/tax_ids")
            ids += [o["id"] for o in body["data"]]
            self.assertTrue(all(o["object"] == "tax_id" for o in body["data"]))
            more, after = body["has_more"], ids[-1] if ids else None
        self.assertEqual(sorted(ids), mine)
        # Stripe has no list of every customer's tax ids; a retrieve works without the customer
        self.assertEqual(c.get("/v1/tax_ids")[0], 404)
        self.assertEqual(c.get("/v1/tax_ids/" + mine[0])[2]["id"], mine[0])
        self.assert_error(c.get("/v1/customers/cus_nope/tax_ids"), 404, "resource_missing", "customer")
        self.assert_error(c.get(f"/v1/customers/{cus}/tax_ids?created[gte]=1"), 400,
                          "parameter_unknown", "created[gte]")

    def test_tax_id_events(self):
        c = self.c
        cus = self.all_of("customers")[0]["id"]
        last = self.newest_event_id()
        t = c.ctl("POST", "objects/tax_ids", {"customer": cus, "value": "DE999"})
        c.ctl("DELETE", "objects/tax_ids/" + t["id"], {})
        evs = self.events_since(last)
        self.assertEqual([e["type"] for e in evs], ["customer.tax_id.created", "customer.tax_id.deleted"])
        self.assertEqual(evs[0]["data"]["object"]["id"], t["id"])
        ids, _ = self.list_ids(f"/v1/customers/{cus}/tax_ids?limit=100")
        self.assertNotIn(t["id"], ids)

    def test_balance_transactions_change_the_balance(self):
        c = self.c
        cbt = self.all_of("customer_balance_transactions")
        cus = cbt[0]["customer"]
        ids, _ = self.list_ids(f"/v1/customers/{cus}/balance_transactions?limit=100")
        self.assertEqual(sorted(ids), sorted(o["id"] for o in cbt if o["customer"] == cus))
        self.assertEqual(c.get("/v1/customer_balance_transactions")[0], 404)
        last = self.newest_event_id()
        before = c.get("/v1/customers/" + cus)[2]["balance"] or 0
        t = c.ctl("POST", "objects/customer_balance_transactions", {"customer": cus, "amount": -250})
        self.assertEqual(t["ending_balance"], before - 250)
        # no event of its own: its customer's balance changed
        evs = self.events_since(last)
        self.assertEqual([e["type"] for e in evs], ["customer.updated"])
        self.assertEqual(evs[0]["data"]["previous_attributes"], {"balance": before})
        self.assertEqual(evs[0]["data"]["object"]["balance"], before - 250)
        ids2, _ = self.list_ids(f"/v1/customers/{cus}/balance_transactions?limit=100")
        self.assertEqual(ids2[0], t["id"])

    def test_payment_method_attach_detach(self):
        c = self.c
        custs = [o["id"] for o in self.all_of("customers")]
        pm = self.all_of("payment_methods")[0]
        other = next(x for x in custs if x != pm["customer"])
        last = self.newest_event_id()
        c.ctl("POST", "detach", {"payment_method": pm["id"]})
        ids, _ = self.list_ids(f"/v1/customers/{pm['customer']}/payment_methods?limit=100")
        self.assertNotIn(pm["id"], ids)
        c.ctl("POST", "attach", {"payment_method": pm["id"], "customer": other})
        ids, _ = self.list_ids(f"/v1/customers/{other}/payment_methods?limit=100")
        self.assertIn(pm["id"], ids)
        evs = self.events_since(last)
        self.assertEqual([e["type"] for e in evs], ["payment_method.detached", "payment_method.attached"])
        self.assertIsNone(evs[0]["data"]["object"]["customer"])
        self.assertEqual(evs[1]["data"]["object"]["customer"], other)

    def test_billing_meters(self):
        c = self.c
        last = self.newest_event_id()
        m = c.ctl("POST", "objects/billing_meters", {"display_name": "API calls", "status": "active"})
        c.ctl("POST", "objects/billing_meters/" + m["id"], {"status": "inactive"})
        c.ctl("POST", "objects/billing_meters/" + m["id"], {"status": "active"})
        c.ctl("POST", "objects/billing_meters/" + m["id"], {"display_name": "Calls"})
        self.assertEqual([e["type"] for e in self.events_since(last)],
                         ["billing.meter.created", "billing.meter.deactivated",
                          "billing.meter.reactivated", "billing.meter.updated"])
        ids, _ = self.list_ids("/v1/billing/meters?status=active")
        self.assertEqual(ids, [m["id"]])
        self.assertEqual(c.get("/v1/billing/meters/" + m["id"])[2]["display_name"], "Calls")
        self.assert_error(c.get("/v1/billing/meters?created[gte]=1"), 400,
                          "parameter_unknown", "created[gte]")


class MoneyMovementsTest(SeededTest):
    """Promotion codes, disputes, payouts and transfers: their lists (paged, newest
    first, Stripe's filters), retrieve, and the events Stripe sends as they change."""

    def setUp(self):
        FakeStripeTest.setUp(self)
        self.c.ctl("POST", "reseed", {"seed": 1, "counts": {
            "coupons": 3, "promotion_codes": 9, "disputes": 8, "payouts": 11, "transfers": 7}})

    def paged(self, path, limit=2):
        """Every id of a list read a page of `limit` at a time, and its pages' urls."""
        c, ids, after, more = self.c, [], None, True
        sep = "&" if "?" in path else "?"
        while more:
            status, _, body = c.get(f"{path}{sep}limit={limit}" + (f"&starting_after={after}" if after else ""))
            self.assertEqual(status, 200, body)
            self.assertEqual(body["url"], path.split("?")[0])
            ids += [o["id"] for o in body["data"]]
            more, after = body["has_more"], ids[-1] if ids else None
        return ids

    def test_lists_paged_newest_first(self):
        for path, obj in (("promotion_codes", "promotion_code"), ("disputes", "dispute"),
                          ("payouts", "payout"), ("transfers", "transfer")):
            every = self.all_of(path)
            self.assertGreater(len(every), 5, path)
            self.assertEqual(self.paged("/v1/" + path), [o["id"] for o in every], path)
            created = [o["created"] for o in every]
            self.assertEqual(created, sorted(created, reverse=True), path)
            self.assertTrue(all(o["object"] == obj for o in every), path)
            one = every[len(every) // 2]
            self.assertEqual(self.c.get(f"/v1/{path}/{one['id']}")[2], one)
            self.assert_error(self.c.get(f"/v1/{path}/{one['id']}x"), 404, "resource_missing", "id")
            # created[] as Stripe takes it
            mid = one["created"]
            ids, _ = self.list_ids(f"/v1/{path}?limit=100&created[gte]={mid}")
            self.assertEqual(ids, [o["id"] for o in every if o["created"] >= mid])
            ids, _ = self.list_ids(f"/v1/{path}?limit=100&created[lt]={mid}")
            self.assertEqual(ids, [o["id"] for o in every if o["created"] < mid])
            self.assertEqual(self.c.get(f"/v1/{path}?bogus=1")[0], 400)

    def filtered(self, path, query, keep):
        ids, _ = self.list_ids(f"/v1/{path}?limit=100&{query}")
        want = [o["id"] for o in self.all_of(path) if keep(o)]
        self.assertTrue(want, query)
        self.assertEqual(ids, want, query)

    def test_filters(self):
        pc = self.all_of("promotion_codes")
        self.filtered("promotion_codes", "active=false", lambda o: not o["active"])
        self.filtered("promotion_codes", "code=" + pc[0]["code"].lower(),
                      lambda o: o["code"] == pc[0]["code"])    # case-insensitive
        coupon = pc[0]["promotion"]["coupon"]
        self.filtered("promotion_codes", "coupon=" + coupon,
                      lambda o: o["promotion"]["coupon"] == coupon)
        cus = next(o["customer"] for o in pc if o["customer"])
        self.filtered("promotion_codes", "customer=" + cus, lambda o: o["customer"] == cus)
        dp = self.all_of("disputes")
        self.filtered("disputes", "charge=" + dp[0]["charge"], lambda o: o["charge"] == dp[0]["charge"])
        pi = next(o["payment_intent"] for o in dp if o["payment_intent"])
        self.filtered("disputes", "payment_intent=" + pi, lambda o: o["payment_intent"] == pi)
        po = self.all_of("payouts")
        self.filtered("payouts", "status=paid", lambda o: o["status"] == "paid")
        self.filtered("payouts", "destination=ba_fake_two", lambda o: o["destination"] == "ba_fake_two")
        arrive = po[3]["arrival_date"]
        self.filtered("payouts", f"arrival_date[gt]={arrive}", lambda o: o["arrival_date"] > arrive)
        self.filtered("payouts", f"arrival_date={arrive}", lambda o: o["arrival_date"] == arrive)
        self.filtered("payouts", f"arrival_date[gte]={arrive - 3600}&arrival_date[lte]={arrive}",
                      lambda o: arrive - 3600 <= o["arrival_date"] <= arrive)
        self.assert_error(self.c.get("/v1/payouts?status=in_transit"), 400,
                          "parameter_invalid_string", "status")
        self.assert_error(self.c.get("/v1/payouts?arrival_date[after]=1"), 400,
                          "parameter_unknown", "arrival_date[after]")
        tr = self.all_of("transfers")
        self.filtered("transfers", "destination=acct_fake1", lambda o: o["destination"] == "acct_fake1")
        self.filtered("transfers", "transfer_group=group_2", lambda o: o["transfer_group"] == "group_2")
        self.assertEqual(self.c.get("/v1/transfers?status=paid")[0], 400)
        self.assertEqual(self.paged(f"/v1/transfers/{tr[0]['id']}/reversals"), [])

    def change(self, path, oid, fields):
        last = self.newest_event_id()
        obj = self.c.ctl("POST", f"objects/{path}/{oid}", fields)
        return obj, [(e["type"], e["data"]["object"]["id"]) for e in self.events_since(last)]

    def test_events(self):
        c = self.c
        last = self.newest_event_id()
        made = {p: c.ctl("POST", "objects/" + p, f) for p, f in (
            ("promotion_codes", {"code": "NEW10", "active": True, "promotion": {"type": "coupon", "coupon": None}}),
            ("disputes", {"status": "needs_response", "balance_transactions": [{"id": "txn_x"}]}),
            ("payouts", {"status": "pending"}), ("transfers", {"amount": 700}))}
        self.assertEqual([(e["type"], e["data"]["object"]["id"]) for e in self.events_since(last)], [
            ("promotion_code.created", made["promotion_codes"]["id"]),
            ("charge.dispute.created", made["disputes"]["id"]),
            ("charge.dispute.funds_withdrawn", made["disputes"]["id"]),
            ("payout.created", made["payouts"]["id"]), ("transfer.created", made["transfers"]["id"])])
        self.assertEqual(c.get("/v1/promotion_codes?code=new10")[2]["data"][0]["id"],
                         made["promotion_codes"]["id"])
        pid = made["promotion_codes"]["id"]
        self.assertEqual(self.change("promotion_codes", pid, {"active": False})[1],
                         [("promotion_code.updated", pid)])
        did = made["disputes"]["id"]
        self.assertEqual(self.change("disputes", did, {"evidence": {"uncategorized_text": "x"}})[1],
                         [("charge.dispute.updated", did)])
        self.assertEqual(self.change("disputes", did, {"status": "won"})[1],
                         [("charge.dispute.closed", did), ("charge.dispute.funds_reinstated", did)])
        other = self.all_of("disputes")[-1]["id"]
        self.assertEqual(self.change("disputes", other, {"status": "lost"})[1],
                         [("charge.dispute.closed", other)])
        oid = made["payouts"]["id"]
        self.assertEqual(self.change("payouts", oid, {"status": "in_transit"})[1],
                         [("payout.updated", oid)])
        self.assertEqual(self.change("payouts", oid, {"status": "paid"})[1],
                         [("payout.updated", oid), ("payout.paid", oid)])
        for status in ("failed", "canceled"):
            p = self.c.ctl("POST", "objects/payouts", {"status": "pending"})["id"]
            self.assertEqual(self.change("payouts", p, {"status": status})[1],
                             [("payout.updated", p), ("payout." + status, p)])
        tid = made["transfers"]["id"]
        self.assertEqual(self.change("transfers", tid, {"metadata": {"a": "b"}})[1],
                         [("transfer.updated", tid)])
        rev = {"id": "trr_one", "object": "transfer_reversal", "amount": 700, "created": 1,
               "transfer": tid}
        tr, evs = self.change("transfers", tid, {"amount_reversed": 700, "reversed": True,
                                                 "reversals": {"data": [rev]}})
        self.assertEqual(evs, [("transfer.reversed", tid)])
        self.assertEqual(tr["reversals"]["total_count"], 1)
        self.assertEqual(c.get(f"/v1/transfers/{tid}/reversals")[2]["data"], [rev])
        self.assertEqual(tr["reversals"]["url"], f"/v1/transfers/{tid}/reversals")
        # reversed in 12 parts: the first 10 inline, newest first, the rest at the url
        parts = [dict(rev, id=f"trr_p{i:02d}", created=100 + i) for i in range(12)]
        big = c.ctl("POST", "objects/transfers", {"reversals": {"data": parts}})
        self.assertEqual([r["id"] for r in big["reversals"]["data"]],
                         [f"trr_p{i:02d}" for i in range(11, 1, -1)])
        self.assertTrue(big["reversals"]["has_more"])
        self.assertEqual(self.paged(big["reversals"]["url"], limit=5),
                         [f"trr_p{i:02d}" for i in range(11, -1, -1)])
        self.assertTrue(c.get("/v1/transfers/" + tid)[2]["reversed"])
        self.assertEqual(c.get(f"/v1/payouts?status=paid&limit=100")[2]["data"][0]["id"], oid)


class ConnectTest(ServedTest):
    """Connected accounts: a server of their own, since connecting one makes the fake
    refuse the Stripe-Account headers the other tests send freely."""
    server_args = ("--counts", "customers=3,charges=2,events=0", "--rate-limit", "0",
                   "--endpoint-rate-limit", "0")

    def as_account(self, acct, path):
        status, _, body = self.c.get(path, headers={"Stripe-Account": acct})
        return status, body

    def test_connected_accounts(self):
        c = self.c
        # no account connected: any header reads the platform (a server's "account" option)
        self.assertEqual(self.as_account("acct_nobody", "/v1/customers")[0], 200)
        a = c.ctl("POST", "accounts", {"id": "acct_1Alpha", "counts": {"customers": 4, "charges": 1, "events": 5},
                                       "only": True})
        self.assertEqual((a["id"], a["counts"]["customers"]), ("acct_1Alpha", 4))
        b = c.ctl("POST", "accounts", {"counts": {"customers": 2}, "only": True})["id"]
        self.assertTrue(b.startswith("acct_"))
        # each account its own objects; ids apart from the platform's
        status, body = self.as_account("acct_1Alpha", "/v1/customers?limit=100")
        alpha = [o["id"] for o in body["data"]]
        self.assertEqual((status, len(alpha)), (200, 4))
        _, _, plat = c.get("/v1/customers?limit=100")
        self.assertEqual(len(plat["data"]), 3)
        self.assertFalse(set(alpha) & {o["id"] for o in plat["data"]})
        self.assertEqual(len(self.as_account(b, "/v1/customers")[1]["data"]), 2)
        self.assertEqual(self.as_account(b, "/v1/account")[1]["id"], b)
        # its events name it
        _, events = self.as_account("acct_1Alpha", "/v1/events?limit=100")
        self.assertEqual(len(events["data"]), 5)
        self.assertTrue(all(e["account"] == "acct_1Alpha" for e in events["data"]))
        # control requests take the header too
        status, _, out = c.raw("POST", "/_control/objects/customers", json.dumps({"email": "x@example.com"}),
                               {"Stripe-Account": b})
        self.assertEqual(status, 200, out)
        self.assertEqual(len(self.as_account(b, "/v1/customers")[1]["data"]), 3)
        # GET /v1/accounts: newest first, paged
        _, _, page = c.get("/v1/accounts?limit=1")
        self.assertEqual(([x["id"] for x in page["data"]], page["has_more"]), ([b], True))
        _, _, page = c.get("/v1/accounts?limit=1&starting_after=" + b)
        self.assertEqual(([x["id"] for x in page["data"]], page["has_more"]), (["acct_1Alpha"], False))
        # a fault can take one account's requests alone
        c.ctl("POST", "faults", {"kind": "500", "path": "/v1/customers", "account": b, "count": 1})
        self.assertEqual(self.as_account("acct_1Alpha", "/v1/customers")[0], 200)
        self.assertEqual(self.as_account(b, "/v1/customers")[0], 500)
        self.assertEqual(self.as_account(b, "/v1/customers")[0], 200)
        # an account never connected, or deauthorized: Stripe's 403
        status, body = self.as_account("acct_nobody", "/v1/customers")
        self.assertEqual((status, body["error"]["code"]), (403, "account_invalid"))
        out = c.ctl("POST", f"accounts/{b}/deauthorize")
        self.assertEqual(out["state"], "deauthorized")
        status, body = self.as_account(b, "/v1/customers")
        self.assertEqual(status, 403)
        self.assertIn(f"does not have access to account '{b}'", body["error"]["message"])
        _, _, page = c.get("/v1/accounts")
        self.assertEqual([x["id"] for x in page["data"]], ["acct_1Alpha"])
        # the platform hears of it
        _, _, ev = c.get("/v1/events?limit=1")
        self.assertEqual((ev["data"][0]["type"], ev["data"][0]["account"]),
                         ("account.application.deauthorized", b))


class LifecycleTest(unittest.TestCase):
    def test_rate_limits_on_by_default(self):
        # Stripe's test-mode limits unless told otherwise: 25 a second in all and per endpoint
        proc, port, port_file = start_server("--counts", "customers=1")
        try:
            c = Client(port)
            config = c.ctl("GET", "config")
            self.assertEqual((config["rate_limit"], config["endpoint_rate_limit"],
                              config["live_rate_limit"]), (25, 25, 100))
            statuses = [c.get("/v1/customers?limit=1")[0] for _ in range(40)]
            self.assertIn(429, statuses)
        finally:
            proc.kill()
            proc.wait(10)
            os.unlink(port_file)
        proc, port, port_file = start_server("--rate-limit", "0", "--endpoint-rate-limit", "0",
                                             "--live-rate-limit", "0")
        try:
            self.assertEqual({k: v for k, v in Client(port).ctl("GET", "config").items()
                              if "rate" in k},
                             {"rate_limit": 0, "endpoint_rate_limit": 0, "live_rate_limit": 0})
        finally:
            proc.kill()
            proc.wait(10)
            os.unlink(port_file)

    def test_live_key_live_objects(self):
        """A live key's account holds live mode objects (a test key's, test mode ones):
        seeded, made, nested and their events."""
        live = "sk_live_selftest"
        proc, port, port_file = start_server("--api-key", live, "--counts",
                                             "customers=2,products=1,prices=1,invoices=2,"
                                             "subscriptions=1,events=5")
        try:
            c = Client(port)
            for path in ("customers", "invoices", "subscriptions", "events"):
                _, _, body = c.api("GET", f"/v1/{path}", {"limit": 100}, key=live)
                self.assertEqual({o["livemode"] for o in body["data"]}, {True}, path)
            _, _, inv = c.api("GET", "/v1/invoices", {"limit": 1}, key=live)
            self.assertEqual({l["livemode"] for l in inv["data"][0]["lines"]["data"]}, {True})
            made = c.ctl("POST", "nested", {"object": "invoices", "count": 2})
            self.assertEqual((made["livemode"], {l["livemode"] for l in made["lines"]["data"]}),
                             (True, {True}))
            _, _, ev = c.api("GET", "/v1/events", {"limit": 1}, key=live)
            self.assertEqual((ev["data"][0]["type"], ev["data"][0]["livemode"]),
                             ("invoice.created", True))
        finally:
            proc.kill()
            proc.wait(10)
            os.unlink(port_file)

    def test_port_file_and_clean_exit(self):
        proc, port, port_file = start_server("--counts", "customers=2,charges=0", "--seed", "3")
        try:
            with open(port_file) as f:
                self.assertEqual(f.read(), f"{port}\n")
            status, _, body = Client(port).get("/v1/charges")
            self.assertEqual((status, body["data"]), (200, []))
            self.assertEqual(len(Client(port).get("/v1/customers")[2]["data"]), 2)
            # An idle keep-alive connection must not hold up shutdown.
            idle = socket.create_connection(("127.0.0.1", port))
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(10), 0)
            idle.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            os.unlink(port_file)
        bad = subprocess.run([sys.executable, SERVER, "--counts", "widgets=3"], capture_output=True)
        self.assertEqual(bad.returncode, 2)


if __name__ == "__main__":
    unittest.main()
