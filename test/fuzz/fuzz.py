#!/usr/bin/env python3
"""Fuzzer for stripe_sync (Python 3 standard library only).

Serves hostile answers from a small HTTP server of its own, built from Stripe's
example objects (test/fixtures/stripe/fixtures3.json) by mutation: every JSON
type in every position, huge, negative and fractional numbers, deep nesting,
invalid UTF-8, escapes, escaped quotes in keys, duplicate keys, truncation,
lying Content-Length, garbage gzip, pages that repeat their cursor.  Through
one psql session it sends the statements that read them: FDW scans, retrieves
and writes of the imported foreign tables (typed columns and attrs), balance,
test_connection, and the SQL functions that take input (intempt_data,
major_units, currency_exponent, catalog_columns, ingest_webhook: hostile
events signed with the source's webhook secret, so that they are parsed and
applied, and hostile signatures).

Errors are fine.  A run fails on: a lost connection (a crash), a statement
that runs into statement_timeout (a loop or a stall), the API key or the
webhook secret in a message or in the server log, a row whose attrs or typed columns differ from what
jsonb_in and the column's type make of the answer, "terminated by signal" in
the server log, or a server that no longer accepts connections.

    python3 test/fuzz/fuzz.py --seconds 60 [--seed N] --host H --port P \\
        [--dbname postgres] [--log server.log] [--save DIR]

The seed is printed first; the same seed replays the same statements and
answers.  Needs a database with the extension installed; creates the server
"fuzz", the schema "fz", and the disabled source "fz_wh" with its schema
(dropped first if they exist).
"""

import argparse
import base64
import collections
import copy
import gzip
import hashlib
import hmac
import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "stripe", "fixtures3.json")
# the key of the fuzz server's user mapping: the hostile server echoes it back
# in every place it can, and it must reach no message and no log line
API_KEY = "sk_test_fuzzKey4711abcdef"
# the webhook secret of the same user mapping: it must reach no message and no log line either
WEBHOOK_SECRET = "whsec_fuzzWebhook0815secret"
STATEMENT_TIMEOUT_S = 30
ORACLE_CHECKS = 6         # attrs, id, created, balance, email, metadata


# --------------------------------------------------------------------------- hostile JSON

class Raw:
    """JSON text spliced in as it is: invalid bytes, escapes, numbers Python cannot spell."""
    __slots__ = ("b",)

    def __init__(self, b):
        self.b = b if isinstance(b, bytes) else b.encode()


class Pairs(list):
    """An object as a list of [key, value] pairs: keys may repeat, or be Raw."""


def dump(v):
    out = []
    _dump(v, out)
    return b"".join(out)


def _dump(v, out):
    if isinstance(v, Raw):
        out.append(v.b)
    elif v is None:
        out.append(b"null")
    elif v is True:
        out.append(b"true")
    elif v is False:
        out.append(b"false")
    elif isinstance(v, (int, float)):
        out.append(repr(v).encode())
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    elif isinstance(v, (dict, Pairs)):
        out.append(b"{")
        for i, (k, val) in enumerate(v.items() if isinstance(v, dict) else v):
            if i:
                out.append(b",")
            _dump(k, out)
            out.append(b":")
            _dump(val, out)
        out.append(b"}")
    elif isinstance(v, list):
        out.append(b"[")
        for i, val in enumerate(v):
            if i:
                out.append(b",")
            _dump(val, out)
        out.append(b"]")
    else:
        raise TypeError(type(v))


HOSTILE_NUMBERS = [
    b"0", b"-0", b"1", b"-1", b"1.5", b"-0.5", b"1e3", b"1E-7", b"-1e999", b"1e999",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"922337203685477579",
    b"9224318015999", b"9224318016000", b"-210866803200", b"-210866803201",
    b"1700000000", b"0.000000000000000000001", b"123456789012345678901234567890",
]
HOSTILE_STRINGS = [
    b'""', b'"x"', b'"\\u0000"', b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"',
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', b'"\xff\xfe"', b'"caf\xc3"', b'"\xed\xa0\x80"',
    b'"\xc0\xaf"', b'"\xf4\x90\x80\x80"', b'"\xe2\x82"', b'".."', b'"."', b'"/"',
    b'"../../v1/account?x=1#"', b'"%2e%2e"', b'"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"',
    b'"customer"', b'"charge"', b'"list"', b'"2024-01-01"', b'"now"', b'"infinity"', b'"NaN"',
    b'"sk_live_abcdefABCDEF123456"', b'"rk_test_zz"', b'"pk_live_x*y"',
]


class Mutator:
    def __init__(self, rng, fixtures, echo_key=True):
        self.rng = rng
        self.fixtures = fixtures
        # the server echoes the key; what we send ourselves does not hold it (a
        # statement that fails is logged with its text)
        self.echo_key = echo_key

    def key_text(self):
        return '"%s"' % API_KEY

    def scalar(self):
        r = self.rng.random()
        if r < 0.12:
            return self.rng.choice([None, True, False])
        if r < 0.45:
            return Raw(self.rng.choice(HOSTILE_NUMBERS))
        if r < 0.52:
            return Raw(b"-" * self.rng.randint(0, 1) + b"9" * self.rng.randint(1, 400))
        if r < 0.85:
            return Raw(self.rng.choice(HOSTILE_STRINGS))
        if r < 0.92 or not self.echo_key:
            return "x" * self.rng.choice([0, 1, 255, 256, 1000, 70000])
        return Raw(self.key_text().encode())

    def value(self, depth=0):
        r = self.rng.random()
        if depth > 3 or r < 0.6:
            return self.scalar()
        if r < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if r < 0.95:
            return {self.rng.choice(["id", "object", "data", "amount", "created", "x"]):
                    self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}
        n = self.rng.choice([10, 100, 1000, 6000, 20000])
        opener, closer = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return Raw(opener * n + b"1" + closer * n)

    def example(self, otype):
        obj = self.fixtures.get(otype)
        if obj is None or self.rng.random() < 0.05:
            obj = self.fixtures[self.rng.choice(sorted(self.fixtures))]
        return copy.deepcopy(obj)

    def pick_parent(self, tree):
        """A random container inside tree and a key (or index) in it."""
        node = tree
        for _ in range(self.rng.randint(0, 4)):
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) \
                if isinstance(node, list) and not isinstance(node, Pairs) else []
            kids = [(k, v) for k, v in items if isinstance(v, (dict, list)) and v]
            if not kids:
                break
            node = self.rng.choice(kids)[1]
        if isinstance(node, dict) and node:
            return node, self.rng.choice(list(node))
        if isinstance(node, list) and not isinstance(node, Pairs) and node:
            return node, self.rng.randrange(len(node))
        return None, None

    def mutate(self, obj, n):
        """n random mutations of a (copied) object, in place."""
        for _ in range(n):
            parent, key = self.pick_parent(obj)
            if parent is None:
                continue
            r = self.rng.random()
            if r < 0.7:
                parent[key] = self.value()      # any type where another was
            elif r < 0.8 and isinstance(parent, dict):
                del parent[key]
            elif r < 0.9 and isinstance(parent, dict):
                # a key with an escaped quote, or an escape, that ends like a real one
                parent[Raw(self.rng.choice([b'"x\\"%s"', b'"\\"%s"', b'"\\u0069%s"', b'"%s\\u0000"'])
                           % str(key).encode())] = self.value()
            else:
                parent[key] = Raw(dump(parent[key])[:self.rng.randint(0, 20)] or b"[")
        return obj

    def with_duplicates(self, obj):
        """The same object with a few of its keys repeated (a different value last)."""
        pairs = Pairs([k, v] for k, v in obj.items())
        for _ in range(self.rng.randint(1, 3)):
            k = self.rng.choice(list(obj) or ["id"])
            pairs.insert(self.rng.randint(0, len(pairs)), [k, self.value()])
        return pairs

    def obj(self, otype, oid, mutations):
        obj = self.example(otype)
        if isinstance(obj, dict):
            obj["id"] = oid
            obj["object"] = otype if self.rng.random() < 0.9 else self.scalar()
        self.mutate(obj, mutations)
        if isinstance(obj, dict) and self.rng.random() < 0.15:
            return self.with_duplicates(obj)
        return obj

    def page(self, otype, prefix, cursor):
        """A list page; its ids are new, except when it repeats the cursor."""
        r = self.rng.random()
        if r < 0.05:
            n = self.rng.randint(1001, 1100)
            return Raw(b'{"object":"list","has_more":false,"data":[' + b",".join([b"{}"] * n) + b"]}")
        n = self.rng.choice([0, 0, 1, 2, 3, 5, 10, 100])
        base = self.rng.randrange(10 ** 9)
        data = [self.obj(otype, "%s%d" % (prefix, base + i),
                         self.rng.choice([0, 0, 1, 2, 5])) for i in range(n)]
        if cursor is not None and data and self.rng.random() < 0.2 and isinstance(data[-1], dict):
            data[-1]["id"] = cursor          # the page asked for again, forever
        page = {"object": "list", "url": "/v1/x", "data": data,
                "has_more": self.rng.random() < 0.5}
        if self.rng.random() < 0.2:
            self.mutate(page, 1)             # data or has_more of another type, and so on
        return page

    def error(self, status):
        err = {"type": "invalid_request_error", "message": "No such thing", "code": "resource_missing",
               "param": "id", "doc_url": "https://stripe.com/docs/error-codes"}
        for k in list(err):
            if self.rng.random() < 0.4:
                err[k] = self.value()
        body = {"error": err}
        if self.rng.random() < 0.15:
            body = self.value()
        return body

    def finish(self, body):
        """The bytes of a body, now and then broken further."""
        b = dump(body)
        r = self.rng.random()
        if r < 0.05 and b:
            return b[:self.rng.randrange(len(b))]
        if r < 0.08 and b:
            i = self.rng.randrange(len(b))
            return b[:i] + bytes([self.rng.randrange(256)]) + b[i + 1:]
        if r < 0.1:
            return b + b" trailing"
        return b


# --------------------------------------------------------------------------- the hostile server

def object_type(path):
    """Stripe's "object" of a list path: checkout/sessions holds checkout.session."""
    return path.replace("/", ".").rstrip("s")


class HostileApp:
    def __init__(self, seed, fixtures):
        self.seed = seed
        self.fixtures = fixtures
        self.lock = threading.Lock()
        self.count = 0
        self.statement = 0          # the answers of a statement depend on it, and on
        self.in_statement = 0       # the request's place in it: a replay stays in step
        self.served = collections.deque(maxlen=40)   # (request, status, body head) for a report
        self.forced = None                           # (path prefix, status, body): the oracle's answer

    def force(self, prefix, body, status=200, faithful=False):
        """Answers requests for prefix with body; faithful: as it is, not cut,
        dropped or compressed on the way."""
        with self.lock:
            self.forced = (prefix, status, body, faithful) if prefix else None

    def next_statement(self, n):
        with self.lock:
            self.statement = n
            self.in_statement = 0

    def answer(self, h):
        length = h.headers.get("Content-Length")
        if length and length.isdigit():
            h.rfile.read(int(length))
        with self.lock:
            self.count += 1
            n = self.in_statement
            self.in_statement += 1
            forced = self.forced
            rng = random.Random("%s:%d:%d" % (self.seed, self.statement, n))
        m = Mutator(rng, self.fixtures)
        path, _, query = h.path.partition("?")
        faithful = False
        if forced and h.path.startswith(forced[0]):
            status, body, faithful = forced[1:]
        else:
            status, body = self.make(m, rng, h.command, path, query)
        self.served.append(("%s %s" % (h.command, h.path), status, body[:300]))
        self.send(h, rng, status, body, faithful)

    def make(self, m, rng, method, path, query):
        parts = path.split("/")[2:] if path.startswith("/v1/") else [""]
        r = rng.random()
        if r < 0.2:
            status = rng.choice([400, 401, 402, 403, 404, 404, 409, 429, 500, 503])
            return status, m.finish(m.error(status))
        if parts == ["account"]:
            acct = m.obj("account", rng.choice(["acct_1Fuzz", "acct_", "acct_x y", ".."]), rng.randint(0, 6))
            return 200, m.finish(acct)
        if "limit=" in query:
            # a list: /v1/<path>?limit=…, or a customer's /v1/customers/<id>/payment_methods
            cursor = None
            for kv in query.split("&"):
                if kv.startswith("starting_after="):
                    cursor = kv[len("starting_after="):]
            listed = parts[-1] if len(parts) == 3 and parts[-1] == "payment_methods" else "/".join(parts)
            otype = object_type(listed)
            return 200, m.finish(m.page(otype, otype.split(".")[-1][:3] + "_", cursor))
        # one object: a retrieve, a write's answer, the balance
        otype = object_type(parts[0] if len(parts) == 1 else "/".join(parts[:-1]))
        oid = parts[-1] if len(parts) > 1 else "x_1"
        return 200, m.finish(m.obj(otype, oid, rng.choice([0, 1, 2, 6])))

    @staticmethod
    def send(h, rng, status, body, faithful=False):
        headers = [b"Content-Type: application/json"]
        r = 1.0 if faithful else rng.random()
        if r < 0.03:
            h.close_connection = True          # no answer at all
            return
        if r < 0.06:
            headers.append(b"Content-Encoding: gzip")
            if rng.random() < 0.5:
                body = gzip.compress(body)[:rng.randint(0, 40)]
        length = len(body)
        if r >= 0.06 and r < 0.09:
            length += rng.choice([-5, 1, 1000, 10 ** 12])   # a lying Content-Length
            h.close_connection = True
        headers.append(b"Content-Length: %d" % max(length, 0))
        rid = rng.choice([b"req_fuzz", b"req_" + API_KEY.encode(), b"req_\xff\xfe", b"", b"x" * 300])
        headers.append(b"Request-Id: " + rid)
        if rng.random() < 0.3:
            headers.append(b"Retry-After: " + rng.choice([b"0", b"-1", b"nan", b"abc", b"0.01", b"1e-9", b""]))
        if rng.random() < 0.3:
            headers.append(b"Stripe-Should-Retry: " + rng.choice([b"true", b"false", b"maybe"]))
        head = b"HTTP/1.1 %d Fuzz\r\n" % status + b"\r\n".join(headers) + b"\r\n\r\n"
        try:
            h.wfile.write(head + body)
            h.wfile.flush()
        except OSError:
            h.close_connection = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.app.answer(self)

    do_POST = do_DELETE = do_GET

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass                    # a client that hangs up on a broken answer is expected


def start_server(app):
    server = Server(("127.0.0.1", 0), Handler)
    server.app = app
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------- psql

class Psql:
    """One psql session; each statement ends with a marker on both outputs."""

    def __init__(self, args):
        cmd = [args.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=default",
               "-h", args.host, "-p", str(args.port), "-d", args.dbname]
        if args.user:
            cmd += ["-U", args.user]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out, self.err = queue.Queue(), queue.Queue()
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self.pump, args=(stream, q), daemon=True).start()
        self.n = 0

    @staticmethod
    def pump(stream, q):
        for line in iter(stream.readline, b""):
            q.put(line.decode("utf-8", "replace").rstrip("\n"))
        q.put(None)

    def run(self, sql, timeout):
        """-> (out lines, err lines), or None when psql is gone or silent."""
        self.n += 1
        mark = "__fuzz_done_%d" % self.n
        try:
            self.proc.stdin.write(sql.encode() + b"\n\\echo %s\n\\warn %s\n" % (mark.encode(), mark.encode()))
            self.proc.stdin.flush()
        except OSError:
            return None
        res = []
        deadline = time.time() + timeout
        for q in (self.out, self.err):
            lines = []
            while True:
                try:
                    line = q.get(timeout=max(deadline - time.time(), 0.1))
                except queue.Empty:
                    return None
                if line is None:
                    return None
                if line == mark:
                    break
                lines.append(line)
            res.append(lines)
        return res

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def lit(s):
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------- statements

class Workload:
    def __init__(self, rng, fixtures, tables):
        self.rng = rng
        self.m = Mutator(rng, fixtures, echo_key=False)
        self.tables = tables      # name -> [(column, type)]

    def statement(self):
        """-> (sql, oracle) where oracle, if any, checks the statement's output."""
        rng = self.rng
        r = rng.random()
        t = rng.choice(sorted(self.tables))
        cols = self.tables[t]
        if r < 0.25:
            return "SELECT * FROM fz.%s LIMIT %d;" % (t, rng.choice([1, 5, 150, 1000])), None
        if r < 0.35:
            return "SELECT count(*) FROM fz.%s;" % t, None
        if r < 0.45:
            some = rng.sample(cols, min(len(cols), rng.randint(1, 4)))
            return "SELECT %s FROM fz.%s;" % (", ".join('"%s"' % c for c, _ in some), t), None
        if r < 0.55:
            ids = ", ".join(lit(rng.choice(["x", "cus_1", "..", ".", "", "a/b", "%2e", "ü"]))
                            for _ in range(rng.randint(1, 3)))
            return "SELECT * FROM fz.%s WHERE id IN (%s);" % (t, ids), None
        if r < 0.6:
            return ("SELECT * FROM fz.payment_methods WHERE customer = %s;"
                    % lit(rng.choice(["cus_1", "..", ".", "", "x/y"])), None)
        if r < 0.63:
            return "SELECT * FROM fz.balance;", None
        if r < 0.68:
            return "SELECT * FROM stripe_sync.test_connection('fuzz');", None
        if r < 0.76:
            return self.write(), None
        if r < 0.82:
            return self.function(), None
        if r < 0.86:
            return self.options(), None
        if r < 0.9:
            return self.webhook(), None
        if r < 0.95:
            return self.json_oracle()
        return self.oracle()

    def write(self):
        rng = self.rng
        t = rng.choice(["customers", "products", "prices", "coupons", "subscriptions", "refunds"])
        meta = dump(self.m.value()).decode("utf-8", "replace").replace("\x00", "")
        return rng.choice([
            "INSERT INTO fz.%s (metadata) VALUES (%s::jsonb) RETURNING *;" % (t, lit(meta)),
            "UPDATE fz.%s SET metadata = %s::jsonb WHERE id = 'x_1' RETURNING *;" % (t, lit(meta)),
            "DELETE FROM fz.%s WHERE id = %s RETURNING *;" % (t, lit(rng.choice(["x_1", "..", "."]))),
        ])

    def function(self):
        rng = self.rng
        obj = self.m.obj(rng.choice(["subscription", "charge", "invoice", "customer"]), "x", rng.randint(0, 8))
        text = dump(obj).decode("utf-8", "replace").replace("\x00", "")
        num = rng.choice(["0", "-5", "1e300", "'NaN'", "'Infinity'", "-0.001", "99999999999999999999"])
        cur = lit(rng.choice(["usd", "jpy", "kwd", "", "ü", "JPY", "x" * 100]))
        return rng.choice([
            "SELECT stripe_sync.intempt_data(%s::jsonb, 'evt_1', 'customer.subscription.updated', 'cus_1');" % lit(text),
            "SELECT stripe_sync.intempt_data(%s::jsonb, NULL, NULL, NULL);" % lit(text),
            "SELECT stripe_sync.major_units(%s::numeric, %s);" % (num, cur),
            "SELECT stripe_sync.currency_exponent(%s);" % cur,
            "SELECT * FROM stripe_sync.catalog_columns(%s);" % lit(rng.choice(
                ["customers", "charges", "", "..", "x" * 1000, "balance", "checkout/sessions"])),
        ])

    def webhook(self):
        """A hostile event for source fz_wh (customers and charges), mostly signed as Stripe
        signs, so that it is parsed and applied (an object in another API version is read
        again, from the hostile server); or a hostile Stripe-Signature."""
        rng = self.rng
        otype = rng.choice(["customer", "charge", "invoice", "product"])
        obj = self.m.obj(otype, rng.choice(["cus_wh1", "ch_wh1", "x", ""]), rng.randint(0, 8))
        event = {"id": "evt_fz%d" % rng.randrange(10 ** 6), "object": "event",
                 "type": otype + rng.choice([".updated", ".deleted", ".created", ""]),
                 "created": rng.choice([int(time.time()), int(time.time()), 0, -1, 2 ** 63, "1", None]),
                 "api_version": rng.choice([None, "2026-10-28.endive", "2026-10-28.endive", "2024-06-20", 5]),
                 "livemode": rng.choice([False, False, True, "no"]),
                 "data": {"object": obj}}
        if rng.random() < 0.3:
            self.m.mutate(event, rng.randint(1, 4))
        text = dump(event).decode("utf-8", "replace").replace("\x00", "")
        t = int(time.time()) + rng.choice([0, 0, 0, 0, -400, 400])
        good = "t=%d,v1=%s" % (t, hmac.new(WEBHOOK_SECRET.encode(), ("%d.%s" % (t, text)).encode(),
                                            hashlib.sha256).hexdigest())
        sig = rng.choice([good] * 8 + [
            "", "t=,v1=", "v1=" + "0" * 64, "t=%d,v1=zz" % t, "t=9" * 2000, good + ",v1=" + "1" * 64,
            "t=%d,%s" % (t, ",".join(["v1=ab"] * 50)), "t=%d,v1=%s" % (t, "ü" * 64), good.replace(",", ",,  ")])
        return "SELECT stripe_sync.ingest_webhook('fz_wh', %s, %s);" % (lit(text), lit(sig))

    def options(self):
        """The validators, and then a scan of what they let through."""
        rng = self.rng
        value = lit(rng.choice(["customers", "checkout/sessions", "Customers", "../account", "a//b", "/x",
                                "x/", "a/b/c", "cüstomers", "customers?limit=1", "customers#", "",
                                "2026-10-28.endive", "2026-13-01", "acct_1", "acct_1/..", "https://x",
                                "http://127.0.0.1:1/..", "sk_test_x", "a" * 300, "whsec_", "whsec_a b",
                                "whsec_" + "Z" * 300]))
        where = rng.choice(["object", "field", "api_version", "account", "api_url", "api_key", "intempt",
                            "webhook_secret"])
        if where == "intempt":
            return ("CREATE SERVER fuzz_intempt FOREIGN DATA WRAPPER intempt OPTIONS (%s %s); "
                    "DROP SERVER IF EXISTS fuzz_intempt;"
                    % (rng.choice(["org", "project", "source_id", "api_url"]), value))
        if where in ("object", "field"):
            opt = "OPTIONS (%s %s)" % (where, value)
            return ("CREATE FOREIGN TABLE fz.opt (id text %s, attrs jsonb) SERVER fuzz %s; "
                    "SELECT * FROM fz.opt LIMIT 3; DROP FOREIGN TABLE IF EXISTS fz.opt;"
                    % (opt if where == "field" else "", opt if where == "object" else ""))
        if where in ("api_key", "webhook_secret"):
            return ("CREATE USER MAPPING FOR CURRENT_USER SERVER fuzz_opts OPTIONS (%s %s); "
                    "DROP USER MAPPING IF EXISTS FOR CURRENT_USER SERVER fuzz_opts;" % (where, value))
        return ("ALTER SERVER fuzz_opts OPTIONS (ADD %s %s); ALTER SERVER fuzz_opts OPTIONS (DROP %s);"
                % (where, value, where))

    def oracle(self):
        """A retrieve of one customer whose answer we choose: if a row comes back,
        attrs and the typed columns must be what jsonb_in and the column types
        make of the answer."""
        rng = self.rng
        obj = self.m.obj("customer", "cus_oracle", rng.choice([0, 1, 2, 4]))
        body = dump(obj)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            return None, ("/v1/customers/cus_oracle", body, None)
        j = "%s::jsonb" % lit(text)
        sql = ("SELECT attrs = {j}, id IS NOT DISTINCT FROM {j}->>'id',"
               " CASE WHEN jsonb_typeof({j}->'created') IS NULL OR {j}->'created' = 'null' THEN created IS NULL"
               "      WHEN ({j}->>'created') ~ '^-?[0-9]+$' THEN created = 'epoch'::timestamptz + ({j}->>'created')::float8 * interval '1 second'"
               "      ELSE false END,"
               " CASE WHEN jsonb_typeof({j}->'balance') IS NULL OR {j}->'balance' = 'null' THEN balance IS NULL"
               "      WHEN ({j}->>'balance') ~ '^-?[0-9]+$' THEN balance = ({j}->>'balance')::numeric"
               "      ELSE false END,"
               " CASE WHEN jsonb_typeof({j}->'email') = 'string' THEN email = {j}->>'email'"
               "      WHEN jsonb_typeof({j}->'email') IS NULL OR {j}->'email' = 'null' THEN email IS NULL"
               "      ELSE true END,"
               " CASE WHEN jsonb_typeof({j}->'metadata') IS NULL OR {j}->'metadata' = 'null' THEN metadata IS NULL"
               "      ELSE metadata = {j}->'metadata' END,"
               # the columns themselves too: a check the planner folds away must
               # not spare the scan their conversion
               " created, balance, email, metadata"
               " FROM fz.customers WHERE id = 'cus_oracle';").format(j=j)
        return sql, ("/v1/customers/cus_oracle", body, "oracle")

    def json_oracle(self):
        """A list page, its bytes broken here and there: the scan must refuse it
        as malformed exactly when PostgreSQL's json type refuses its text."""
        rng = self.rng
        page = {"object": "list", "url": "/v1/customers", "has_more": False,
                "data": [self.m.obj("customer", "cus_j%d" % i, rng.choice([0, 1, 3]))
                         for i in range(rng.choice([0, 1, 2, 5]))]}
        body = dump(page)
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            body = break_json(rng, body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        arg = "NULL" if text is None or "\x00" in text else lit(text)
        return ("SELECT fz.json_verdict(%s);" % arg), ("/v1/customers?", body, "json")


# bytes that make or break JSON
JSON_BYTES = b'{}[],:"\\ \t\n\r0123456789-+.eEtrufalsnu_x\x00\x01\x1f\x7f\xc3\xa9'
JSON_PIECES = [b"\\u12", b"\\x", b"\\ud800", b"\\u0000", b"\\", b'\\"', b"01", b"1.", b"-", b"1e",
               b"tru", b"nulll", b",]", b",}", b"[", b"{", b'"a":', b"::", b" ", b"\xf0\x9f\x98\x80"]


# tokens, valid or nearly so, to put where a value is
JSON_TOKENS = [b"0", b"-0", b"01", b"-01", b"00", b"1.", b".5", b"1.5", b"1e5", b"1E+2", b"1e-", b"1e",
               b"-", b"+1", b"1x", b"1_", b"0x1", b"1.5.5", b"1\xc3\xa9", b"true", b"tru", b"truex",
               b"True", b"null", b"nul", b"false", b"NaN", b'""', b'"\\u00e9"', b'"\\u12"', b'"\\uZZZZ"',
               b'"\\ud800"', b'"\\x"', b'"\\/"', b'"\t"', b'"\x7f"', b"[]", b"{}", b"[1,]", b"[,]",
               b'{"a":1,}', b'{"a"}', b"[[]]", b"{1:2}", b"'x'"]


def break_json(rng, b):
    """One change to JSON text: a byte or a piece in, out or instead, a token
    where a value was, a cut, a repeat."""
    i = rng.randrange(len(b) + 1)
    r = rng.random()
    if r < 0.3:
        # the value after a ':' (up to the next ',', '}' or ']') becomes a token
        colons = [m.end() for m in re.finditer(rb":", b)]
        if colons:
            i = rng.choice(colons)
            m = re.compile(rb"[^,}\]]*").match(b, i)
            return b[:i] + rng.choice(JSON_TOKENS) + b[m.end():]
    r = rng.random()
    if r < 0.25:
        return b[:i] + bytes([rng.choice(JSON_BYTES)]) + b[i:]
    if r < 0.45:
        return b[:i] + b[i + 1:]
    if r < 0.65:
        return b[:i] + bytes([rng.choice(JSON_BYTES)]) + b[i + 1:]
    if r < 0.85:
        return b[:i] + rng.choice(JSON_PIECES) + b[i:]
    if r < 0.92:
        return b[:i]
    j = min(len(b), i + rng.randint(1, 30))
    return b[:j] + b[i:j] + b[j:]


# --------------------------------------------------------------------------- the run

SETUP = """
SET client_min_messages = warning;
SELECT stripe_sync.drop_source(name) FROM stripe_sync.sources WHERE name = 'fz_wh';
DROP SCHEMA IF EXISTS fz, fz_wh CASCADE;
DROP SERVER IF EXISTS fuzz CASCADE;
CREATE SERVER fuzz FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '{url}');
-- PostgreSQL's own echo of this statement (log_statement = all) is the one
-- place a key may be logged; it is the statement as typed
SET log_statement = 'none';
CREATE USER MAPPING FOR CURRENT_USER SERVER fuzz OPTIONS (api_key '{key}', webhook_secret '{whsec}');
RESET log_statement;
-- a source for ingest_webhook that no worker syncs
BEGIN;
SELECT stripe_sync.create_source('fz_wh', server => 'fuzz', objects => ARRAY['customers', 'charges'],
                                 target_schema => 'fz_wh');
SELECT stripe_sync.alter_source('fz_wh', enabled => false);
COMMIT;
CREATE SCHEMA fz;
IMPORT FOREIGN SCHEMA stripe FROM SERVER fuzz INTO fz;
-- the json oracle: PostgreSQL's verdict on a body's text (NULL: it cannot be
-- text; deep: its recursion gave up), then the scan's answer to it
CREATE FUNCTION fz.json_verdict(body text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  pg text := 'skip';
  scan text := 'accepted';
  detail text;
BEGIN
  IF body IS NOT NULL THEN
    BEGIN
      PERFORM body::json;
      pg := 'valid';
    EXCEPTION WHEN invalid_text_representation THEN
      pg := 'invalid';
    WHEN statement_too_complex OR program_limit_exceeded THEN
      pg := 'deep';
    END;
  END IF;
  BEGIN
    PERFORM count(*) FROM fz.customers;
  EXCEPTION WHEN query_canceled THEN
    RAISE;
  WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    scan := concat_ws(' ', SQLERRM, detail);
  END;
  RETURN pg || '|' || scan;
END $$;
CREATE FOREIGN TABLE fz.generic (id text, created timestamptz, amount bigint, name text, attrs jsonb)
  SERVER fuzz OPTIONS (object 'radar/value_lists');
DROP SERVER IF EXISTS fuzz_opts CASCADE;
CREATE SERVER fuzz_opts FOREIGN DATA WRAPPER stripe_sync;
RESET client_min_messages;
SET stripe_sync.max_retries = 1;
SET stripe_sync.retry_base_delay = 1;
SET stripe_sync.http_timeout = '2s';
SET statement_timeout = '{timeout}s';
"""
CATALOGUE = """
SELECT c.relname || '|' || a.attname || '|' || format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'fz'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum;
"""


class Failure(Exception):
    pass


# every statement's memory goes with it: a backend that ends the run larger
# than this kept what it should not have
MAX_BACKEND_KB = 512 * 1024


def backend_peak_kb(pid):
    """The backend's peak RSS (VmHWM), when this process may read it."""
    try:
        with open("/proc/%d/status" % int(pid)) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def json_disagrees(out):
    """The json oracle's answer, when the scan and PostgreSQL's json type
    disagree on whether a body is JSON (the scan must also never crash on it)."""
    if not out:
        return "no answer"
    pg, _, scan = out[0].partition("|")
    refused = "malformed JSON" in scan or "empty response body" in scan
    # read and taken (another failure may be the transport's: no verdict)
    taken = scan == "accepted" or "Stripe's answer is not" in scan
    if (pg == "valid" and refused) or (pg == "invalid" and taken):
        return "PostgreSQL's json type says %s, the scan: %s" % (pg, scan[:300])
    return None


def check(res, oracle):
    if res is None:
        raise Failure("psql lost its connection or fell silent (a crash, or a hang)")
    out, err = res
    text = "\n".join(err)
    for sign in ("server closed the connection", "terminated abnormally", "connection to server was lost"):
        if sign in text:
            raise Failure("the backend died: " + text[:500])
    if "canceling statement due to statement timeout" in text:
        raise Failure("the statement ran %d s: a loop or a stall" % STATEMENT_TIMEOUT_S)
    if API_KEY in text:
        raise Failure("the API key is in a message: " + text[:500])
    if WEBHOOK_SECRET in text:
        raise Failure("the webhook secret is in a message: " + text[:500])
    if oracle == "json" and json_disagrees(out):
        raise Failure("the scan and the json type disagree: " + json_disagrees(out))
    if oracle == "oracle" and out and any(v != "t" for v in out[0].split("|")[:ORACLE_CHECKS]):
        raise Failure("a row differs from what its answer says (attrs, id, created, balance, email, "
                      "metadata; then the row's created, balance, email, metadata): " + out[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fuzz stripe_sync with hostile answers and inputs.")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-statements", type=int, default=0, help="stop after this many (0: no limit)")
    ap.add_argument("--host", default=os.environ.get("PGHOST", "localhost"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("--user", default=None)
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--fixtures", default=FIXTURES)
    ap.add_argument("--log", help="the server log, checked at the end")
    ap.add_argument("--save", help="a directory for the failing case")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 31)
    print("fuzz seed %d (replay: --seed %d)" % (seed, seed), flush=True)

    with open(args.fixtures, encoding="utf-8") as f:
        fixtures = json.load(f)["resources"]
    log_start = os.path.getsize(args.log) if args.log and os.path.exists(args.log) else 0
    app = HostileApp(seed, fixtures)
    server = start_server(app)
    url = "http://127.0.0.1:%d" % server.server_address[1]
    psql = Psql(args)
    setup = psql.run(SETUP.format(url=url, key=API_KEY, whsec=WEBHOOK_SECRET, timeout=STATEMENT_TIMEOUT_S), 120)
    if setup is None or any("ERROR" in line for line in setup[1]):
        print("setup failed: %s" % (setup and setup[1]))
        return 2
    res = psql.run(CATALOGUE, 60)
    tables = collections.defaultdict(list)
    for line in res[0] if res else []:
        rel, col, typ = line.split("|")
        tables[rel].append((col, typ))
    rng = random.Random(seed)
    work = Workload(rng, fixtures, dict(tables))
    deadline = time.time() + args.seconds
    done = errors = 0
    verdicts = collections.Counter()      # the json oracle's bodies, by the json type's verdict
    sql = None
    try:
        while time.time() < deadline and (not args.max_statements or done < args.max_statements):
            sql, oracle = work.statement()
            app.next_statement(done)
            if isinstance(oracle, tuple):
                prefix, body, oracle = oracle
                app.force(prefix, body, faithful=oracle == "json")
                if sql is None:
                    sql = "SELECT attrs FROM fz.customers WHERE id = 'cus_oracle';"
            res = psql.run(sql, STATEMENT_TIMEOUT_S + 30)
            app.force(None, None)
            check(res, oracle)
            if oracle == "json" and res[0]:
                verdicts[res[0][0].partition("|")[0]] += 1
            done += 1
            errors += bool(res[1])
        final = psql.run("SELECT pg_backend_pid();", 30)
        if final is None or len(final[0]) != 1:
            raise Failure("the session no longer answers")
        peak = backend_peak_kb(final[0][0])
        if peak is not None:
            print("backend peak RSS %d MB" % (peak // 1024))
            if peak > MAX_BACKEND_KB:
                raise Failure("the backend's memory grew to %d MB" % (peak // 1024))
        psql.close()
        probe = Psql(args)
        if probe.run("SELECT 1;", 30) != [["1"], []]:
            raise Failure("the server no longer accepts connections")
        probe.close()
        if args.log:
            with open(args.log, "rb") as f:
                f.seek(log_start)
                logged = f.read()
            if b"terminated by signal" in logged:
                raise Failure("the server log says a process was terminated by a signal")
            if API_KEY.encode() in logged:
                raise Failure("the API key is in the server log")
            if WEBHOOK_SECRET.encode() in logged:
                raise Failure("the webhook secret is in the server log")
    except Failure as e:
        print("FAILED after %d statements (seed %d): %s" % (done, seed, e))
        if args.log and os.path.exists(args.log):
            with open(args.log, "rb") as f:
                f.seek(log_start)
                for line in f.read().splitlines():
                    if b"terminated by signal" in line or b"Failed process was running" in line:
                        print("server log: %s" % line.decode("utf-8", "replace")[:500])
        print("statement: %s" % (sql if sql is None or len(sql) < 2000 else sql[:2000] + "…"))
        print("last answers served:")
        for req, status, head in list(app.served)[-8:]:
            print("  %s -> %s %r" % (req, status, head))
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            with open(os.path.join(args.save, "failure.txt"), "w") as f:
                f.write("seed %d\nstatement %d\n%s\n%s\n" % (seed, done + 1, e, sql))
                for req, status, head in app.served:
                    f.write("%s -> %s %s\n" % (req, status, base64.b64encode(head).decode()))
        return 1
    finally:
        server.shutdown()
    print("json oracle: %d valid, %d invalid bodies, %d not text, %d too deep: the scan agreed with "
          "the json type" % (verdicts["valid"], verdicts["invalid"], verdicts["skip"], verdicts["deep"]))
    print("fuzz: %d statements, %d with an error, %d answers served, seed %d: nothing crashed, "
          "looped, leaked or differed" % (done, errors, app.count, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
