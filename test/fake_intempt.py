#!/usr/bin/env python3
"""Fake Intempt tracking API for stripe_sync's tests and benchmarks (stdlib only).

Serves the one endpoint the outbox uses,

    POST {base-path}/{org}/projects/{project}/sources/{source-id}/track
    Authorization: Basic base64(prefix:secret)     (--api-key prefix.secret, split at the first '.')
    Content-Type: application/json
    {"track": [{"name": "...", "payload": [{"eventId": "evt_...", "timestamp": <ms>,
                                            "userId": "...", "data": {...}}, ...]}, ...]}

answering 200 {"status":"ok","accepted":N}.  It is strict, to catch client bugs: 404 for any
other path, 405 for another method, 401 for missing or wrong Basic credentials, 413 for a body
over max_body_bytes, and 400 {"error": "<what and where>"} for a non-JSON Content-Type or body,
an empty "track" or "payload" array, an item without a string "name", or an event without a
non-empty string eventId / userId, an integer timestamp in milliseconds (10^11..10^14, so a
timestamp in seconds is refused) or an object "data".  A request is all or nothing: one bad
event rejects it and nothing of it is recorded.

Checks run in this order: path, method, "down" window, queued fault, refuse_ratio, body size,
auth, Content-Type, body.  /_control/* (no auth, JSON bodies; fake_intempt_selftest.py uses all):

    POST   /_control/faults  {"kind": "429"|"500"|"503", "count": 1, "retry_after": S?}
                             {"kind": "400"|"drop"|"accept_then_500", "count": 1}
                             {"kind": "delay", "ms": M, "count": 1}   queued FIFO, next N requests
                             {"kind": "refuse_ratio", "ratio": 0.3, "seed": 1,
                              "status": 503 | [429, 500, 503] (cycled), "retry_after": S?}
                             {"kind": "down", "seconds": S, "retry_after": S?}   503 meanwhile
    GET    /_control/faults  DELETE /_control/faults (clears all three)
    GET|POST /_control/config  {"max_body_bytes": N (0 = none), "latency_ms": M,
                                "latency_jitter_ms": J, "success_status": 200|201}
                             every track request waits M ms plus a random 0..J ms (seeded)
    GET    /_control/events[?name=&eventId=&data=0]    DELETE /_control/events (and stats, log)
    GET    /_control/stats   GET /_control/requests[?limit=N]   (last 1000; no secrets; a 413's
                             "oversized_events" counts the events its body carried)

Requests are served concurrently, one thread each.  Events are recorded, and listed by
/_control/events, in the order their requests were accepted (arrival order): with requests in
flight at once, a later request that is accepted first has its events listed first.  The stats
count "in_flight" track requests and "max_in_flight", the most at once since the last reset.

    python3 test/fake_intempt.py --port 0 --port-file /tmp/x.port [--host 127.0.0.1]
        [--org ORG] [--project P] [--source-id S] [--api-key prefix.secret]
        [--base-path /v1] [--max-body-bytes 5242880] [--verbose]

Speed and memory: HTTP/1.1 keep-alive, one write per answer with Content-Length, TCP_NODELAY,
the body parsed once.  An event is kept as a small tuple (name, eventId, timestamp, userId,
request, position) and its "data" as the accepted request's raw body, parsed again only by
GET /_control/events: memory is about the accepted bodies' size plus ~400 bytes an event (a
parsed 3 KB Stripe object would cost ~16 KB).
"""

import argparse
import base64
import collections
import json
import random
import sys
import threading
import time
import traceback
from fakelib import Server, serve_until_signalled
from urllib.parse import parse_qsl

DEFAULT_MAX_BODY = 5 * 1024 * 1024  # 5 MiB; 0 = no limit
DISCARD_LIMIT = 64 * 1024 * 1024    # an oversized body up to this is read and dropped (keep-alive)
REQUEST_LOG_SIZE = 1000
QUEUED_KINDS = ("429", "500", "503", "400", "delay", "drop", "accept_then_500")
FAULT_KINDS = QUEUED_KINDS + ("refuse_ratio", "down")
TS_MIN, TS_MAX = 10 ** 11, 10 ** 14  # milliseconds: 1973-03-03 .. 5138-11-16
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
EVENT_FIELDS = ("name", "eventId", "timestamp", "userId", "request", "received")
REQUEST_FIELDS = ("request", "time", "method", "path", "status", "events", "bytes",
                  "auth_header", "authorized", "fault", "oversized_events")
ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value):
    return ENCODER.encode(value).encode("utf-8")


class Reject(Exception):
    """An error answer: status, message, extra headers."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)


def retry_after_header(spec):
    ra = spec.get("retry_after")
    return [] if ra is None else [("Retry-After", str(ra))]


class Faults:
    """Queued one-shot faults (FIFO), a random refusal ratio and a "down" window."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clear()

    def clear(self):
        with self.lock:
            self.queue = []
            self.ratio = None   # {"ratio", "seed", "status": [..], "retry_after"}
            self.rng = None
            self.refusals = 0
            self.down_until = 0.0
            self.down_spec = None

    def add(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("body must be a JSON object")
        kind = str(spec.get("kind"))
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        fault = {"kind": kind}
        if spec.get("retry_after") is not None:
            fault["retry_after"] = spec["retry_after"]
        if kind == "refuse_ratio":
            ratio = float(spec["ratio"])
            if not 0.0 <= ratio <= 1.0:
                raise ValueError("ratio must be between 0 and 1")
            status = spec.get("status", 503)
            statuses = [int(s) for s in (status if isinstance(status, list) else [status])]
            if not statuses or any(s not in (429, 500, 503) for s in statuses):
                raise ValueError("status must be 429, 500, 503 or a list of them (cycled)")
            fault.update(ratio=ratio, seed=spec.get("seed"), status=statuses)
            with self.lock:
                self.ratio, self.rng, self.refusals = fault, random.Random(fault["seed"]), 0
            return fault
        if kind == "down":
            fault["seconds"] = float(spec["seconds"])
            with self.lock:
                self.down_until = time.monotonic() + fault["seconds"]
                self.down_spec = fault
            return fault
        fault["count"] = int(spec.get("count", 1))
        if fault["count"] < 1:
            raise ValueError("count must be >= 1")
        if kind == "delay":
            fault["ms"] = float(spec["ms"])
            if fault["ms"] < 0:
                raise ValueError("ms must be >= 0")
        with self.lock:
            self.queue.append(fault)
        return fault

    def take(self):
        """-> (kind, spec) of the fault for this track request, or (None, None)."""
        if not (self.queue or self.ratio or self.down_until):
            return None, None
        with self.lock:
            if self.down_until:
                if time.monotonic() < self.down_until:
                    return "down", self.down_spec
                self.down_until, self.down_spec = 0.0, None
            if self.queue:
                fault = self.queue[0]
                fault["count"] -= 1
                if fault["count"] == 0:
                    del self.queue[0]
                return fault["kind"], fault
            if self.ratio and self.rng.random() < self.ratio["ratio"]:
                statuses = self.ratio["status"]
                status = statuses[self.refusals % len(statuses)]
                self.refusals += 1
                return "refuse", dict(self.ratio, refuse_status=status)
        return None, None

    def pending(self):
        with self.lock:
            left = max(0.0, self.down_until - time.monotonic()) if self.down_until else 0.0
            return {"queued": [dict(f) for f in self.queue], "refuse_ratio": self.ratio,
                    "down_seconds_left": round(left, 3)}


class Recorder:
    """Received events, request outcomes and the recent-request log (one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.request_no = 0  # never reset: request numbers stay unique
        self.in_flight = 0   # track requests being answered now (never reset)
        self.reset()

    def reset(self):
        with self.lock:
            self.events = []          # EVENT_FIELDS + position of the event in its request
            self.bodies = {}          # request number -> accepted body (for the events' data)
            self.id_counts = {}       # eventId -> times received
            self.duplicates = 0       # eventIds received more than once
            self.by_name = collections.Counter()
            self.by_status = collections.Counter()
            self.requests = 0
            self.accepted_requests = 0
            self.max_in_flight = self.in_flight
            self.log = collections.deque(maxlen=REQUEST_LOG_SIZE)

    def next_request(self):
        """A track request begins (finish ends it) -> its number."""
        with self.lock:
            self.request_no += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.request_no

    def finish(self, entry, events=None, body=None):
        """entry in REQUEST_FIELDS order; events: [(name, eventId, ts, userId)] of body."""
        with self.lock:
            self.in_flight -= 1
            self.requests += 1
            status = entry[4]
            self.by_status["drop" if status is None else str(status)] += 1
            self.log.append(entry)
            if events is None:
                return
            self.accepted_requests += 1
            self.bodies[entry[0]] = body
            counts = self.id_counts
            for k, ev in enumerate(events):
                self.events.append(ev + (entry[0], entry[1], k))
                eid = ev[1]
                n = counts.get(eid, 0)
                counts[eid] = n + 1
                if n == 1:
                    self.duplicates += 1
                self.by_name[ev[0]] += 1

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "accepted_requests": self.accepted_requests,
                    "events": len(self.events), "by_status": dict(self.by_status),
                    "duplicates": self.duplicates, "distinct_event_ids": len(self.id_counts),
                    "by_name": dict(self.by_name), "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight}


def bad(where, what):
    raise Reject(400, f"{where} {what}")


def parse_track(body):
    """Validated events of a track body -> [(name, eventId, timestamp, userId)]."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Reject(400, f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("track"), list):
        bad("body", 'must be a JSON object with a "track" array')
    if not doc["track"]:
        bad("track", "is empty")
    out = []
    for i, item in enumerate(doc["track"]):
        if not isinstance(item, dict):
            bad(f"track[{i}]", "is not an object")
        name, payload = item.get("name"), item.get("payload")
        if not isinstance(name, str) or not name:
            bad(f"track[{i}].name", "must be a non-empty string")
        if not isinstance(payload, list) or not payload:
            bad(f"track[{i}].payload", "must be a non-empty array")
        for j, ev in enumerate(payload):
            if not isinstance(ev, dict):
                bad(f"track[{i}].payload[{j}]", "is not an object")
            eid, ts, uid, data = (ev.get("eventId"), ev.get("timestamp"), ev.get("userId"),
                                  ev.get("data"))
            if not isinstance(eid, str) or not eid:
                bad(f"track[{i}].payload[{j}].eventId", "must be a non-empty string")
            if type(ts) is not int:
                bad(f"track[{i}].payload[{j}].timestamp", "must be an integer (milliseconds)")
            if not TS_MIN <= ts < TS_MAX:
                bad(f"track[{i}].payload[{j}].timestamp",
                    f"{ts} is not in milliseconds since the epoch ({TS_MIN}..{TS_MAX})")
            if not isinstance(uid, str) or not uid:
                bad(f"track[{i}].payload[{j}].userId", "must be a non-empty string")
            if not isinstance(data, dict):
                bad(f"track[{i}].payload[{j}].data", "must be an object")
            out.append((name, eid, ts, uid))
    return out


def count_events(body):
    """The events a track body carries, counted leniently (a body refused unread, for its
    size, is not validated), or None when it is not a track body at all."""
    try:
        doc = json.loads(body)
        return sum(len(item["payload"]) for item in doc["track"])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def send(h, status, body, headers=()):
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if h.close_connection:
        lines.append("Connection: close")
    h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


class App:
    def __init__(self, args):
        base = "/" + args.base_path.strip("/") if args.base_path.strip("/") else ""
        self.track_path = (f"{base}/{args.org}/projects/{args.project}"
                           f"/sources/{args.source_id}/track")
        prefix, dot, secret = args.api_key.partition(".")
        if not dot:
            raise SystemExit("--api-key must have the form prefix.secret")
        self.credentials = f"{prefix}:{secret}".encode("utf-8")
        self.auth_value = "Basic " + base64.b64encode(self.credentials).decode("ascii")
        self.max_body = args.max_body_bytes
        self.latency_ms = 0.0
        self.latency_jitter_ms = 0.0
        self.jitter = random.Random(0)
        self.success_status = 200
        self.verbose = args.verbose
        self.faults = Faults()
        self.rec = Recorder()

    def handle(self, h):
        path, _, query = h.path.partition("?")
        if path == "/_control" or path.startswith("/_control/"):
            return self.control(h, h.command, path, query)
        started = time.time()
        n = self.rec.next_request()
        kind, nevents, events, status, body, size = None, 0, None, None, None, 0
        h.oversized = None
        auth = h.headers.get("Authorization")
        authorized = False
        headers = []
        try:
            body, size = self.read_body(h, self.max_body)
            if path != self.track_path:
                raise Reject(404, f"no such endpoint: {path}")
            if h.command != "POST":
                raise Reject(405, f"{h.command} not allowed, use POST", [("Allow", "POST")])
            kind, fault = self.faults.take()
            pause = self.latency_ms + (fault["ms"] if kind == "delay" else 0.0)
            if self.latency_jitter_ms:
                pause += self.jitter.uniform(0.0, self.latency_jitter_ms)
            if pause:
                time.sleep(pause / 1000.0)
            if kind == "drop":
                h.close_connection = True
                return
            if kind == "down":
                raise Reject(503, "service unavailable (down)", retry_after_header(fault))
            if kind == "refuse":
                status = fault["refuse_status"]
                raise Reject(status, f"{REASONS[status].lower()} (refused)",
                             retry_after_header(fault))
            if kind == "400":
                raise Reject(400, "injected bad request")
            if kind in ("429", "500", "503"):
                raise Reject(int(kind), f"{REASONS[int(kind)].lower()} (injected)",
                             retry_after_header(fault))
            if body is None:
                raise Reject(413, f"body larger than max_body_bytes ({self.max_body})")
            authorized = auth == self.auth_value or self.check_auth(auth)
            if not authorized:
                raise Reject(401, "missing Authorization header" if not auth else
                             "invalid credentials (expected Basic auth with the API key)",
                             [("WWW-Authenticate", 'Basic realm="intempt"')])
            ctype = (h.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise Reject(400, f"Content-Type must be application/json, not {ctype!r}")
            events = parse_track(body)
            nevents = len(events)
            if kind == "accept_then_500":
                raise Reject(500, "internal server error (injected after accepting)")
            status, out = self.success_status, dumps({"status": "ok", "accepted": nevents})
        except Reject as e:
            status, out, headers = e.status, dumps({"error": e.message}), e.headers
            if kind != "accept_then_500":
                events = None
        except Exception as e:  # a bug here: answer anyway, show it on stderr
            traceback.print_exc()
            status, out, events = 500, dumps({"error": repr(e)}), None
        finally:
            # Recorded before the answer goes out: a client holding its answer finds it here.
            self.rec.finish((n, started, h.command, path, status, nevents, size,
                             auth is not None, authorized, kind,
                             count_events(h.oversized) if status == 413 else None), events, body)
            if self.verbose:
                print(f"fake_intempt: #{n} {h.command} {path} -> {status or 'drop'} "
                      f"events={nevents} fault={kind}", file=sys.stderr, flush=True)
        send(h, status, out, headers)

    def check_auth(self, value):
        scheme, _, cred = (value or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            return base64.b64decode(cred.strip(), validate=True) == self.credentials
        except ValueError:
            return False

    @staticmethod
    def read_body(h, limit):
        """-> (body, its size); body None when over limit (then read and dropped if small
        enough to keep the connection, else the connection is closed after the answer)."""
        try:
            if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(h.rfile.readline(1024).split(b";")[0].strip(), 16)
                    if size <= 0:
                        while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    parts.append(h.rfile.read(size))
                    h.rfile.readline(16)
                body = b"".join(parts)
                if limit and len(body) > limit:
                    h.oversized = body
                    return None, len(body)
                return body, len(body)
            length = int(h.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            h.close_connection = True
            raise Reject(400, "bad Content-Length or chunked encoding") from None
        if limit and length > limit:
            left = length if length <= DISCARD_LIMIT else 0
            h.close_connection = not left
            dropped = []
            while left > 0:
                chunk = h.rfile.read(min(left, 1 << 16))
                dropped.append(chunk)
                left = left - len(chunk) if chunk else 0
            h.oversized = b"".join(dropped)
            return None, length
        return (h.rfile.read(length) if length else b""), length

    # ---- /_control

    def control(self, h, method, path, query):
        try:
            body = self.read_body(h, DISCARD_LIMIT)[0] or b""
            data = json.loads(body) if body.strip() else {}
            status, out = self.control_route(method, path.split("/")[2:],
                                             dict(parse_qsl(query)), data)
        except Reject as e:
            status, out = e.status, {"error": e.message}
        except (ValueError, TypeError, KeyError) as e:
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            status, out = 400, {"error": msg}
        except Exception as e:
            traceback.print_exc()
            status, out = 500, {"error": repr(e)}
        send(h, status, dumps(out))

    def control_route(self, method, parts, query, data):
        route = (method, "/".join(parts))
        if route == ("POST", "faults"):
            return 200, {"fault": self.faults.add(data), "faults": self.faults.pending()}
        if route == ("GET", "faults"):
            return 200, {"faults": self.faults.pending()}
        if route == ("DELETE", "faults"):
            self.faults.clear()
            return 200, {"faults": self.faults.pending()}
        if route[1] == "config" and method in ("GET", "POST"):
            if method == "POST":
                self.configure(data)
            return 200, {"max_body_bytes": self.max_body, "latency_ms": self.latency_ms,
                         "latency_jitter_ms": self.latency_jitter_ms,
                         "success_status": self.success_status, "track_path": self.track_path}
        if route == ("GET", "events"):
            with self.rec.lock:
                evs, bodies = list(self.rec.events), dict(self.rec.bodies)
            name, eid = query.get("name"), query.get("eventId")
            with_data = query.get("data", "1") not in ("0", "false", "no")
            out, datas = [], {}
            for e in evs:
                if (name is None or e[0] == name) and (eid is None or e[1] == eid):
                    if not with_data:
                        out.append(dict(zip(EVENT_FIELDS, e)))
                        continue
                    if e[4] not in datas:  # the data of each event of that request, in order
                        datas[e[4]] = [ev["data"] for item in json.loads(bodies[e[4]])["track"]
                                       for ev in item["payload"]]
                    d = dict(zip(EVENT_FIELDS, e))
                    d["data"] = datas[e[4]][e[6]]
                    out.append(d)
            return 200, out
        if route == ("DELETE", "events"):
            self.rec.reset()
            return 200, self.rec.stats()
        if route == ("GET", "stats"):
            return 200, self.rec.stats()
        if route == ("GET", "requests"):
            with self.rec.lock:
                log = list(self.rec.log)
            limit = int(query.get("limit", REQUEST_LOG_SIZE))
            return 200, [dict(zip(REQUEST_FIELDS, e)) for e in log[-limit:]] if limit > 0 else []
        return 404, {"error": f"unknown control endpoint {method} /_control/{route[1]}"}

    CONFIG = {"max_body_bytes": ("max_body", int, lambda v: v >= 0, ">= 0 (0 = no limit)"),
              "latency_ms": ("latency_ms", float, lambda v: v >= 0, ">= 0"),
              "latency_jitter_ms": ("latency_jitter_ms", float, lambda v: v >= 0, ">= 0"),
              "success_status": ("success_status", int, lambda v: v in (200, 201), "200 or 201")}

    def configure(self, data):
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        for key, (attr, conv, ok, want) in self.CONFIG.items():
            if key in data:
                value = conv(data[key])
                if not ok(value):
                    raise ValueError(f"{key} must be {want}")
                setattr(self, attr, value)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Intempt tracking API for tests.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--org", default="fake-org")
    ap.add_argument("--project", default="fake-project")
    ap.add_argument("--source-id", default="fake-source")
    ap.add_argument("--api-key", default="fakeprefix.fakesecret",
                    help="prefix.secret; Basic credentials are prefix:secret (first '.')")
    ap.add_argument("--base-path", default="/v1")
    ap.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                    help=f"413 above this (default {DEFAULT_MAX_BODY}; 0 = no limit)")
    ap.add_argument("--quiet", dest="verbose", action="store_false", default=False,
                    help="no per-request logging (the default)")
    ap.add_argument("--verbose", "-v", dest="verbose", action="store_true",
                    help="one line per API request on stderr")
    args = ap.parse_args(argv)

    server = Server((args.host, args.port), App(args))
    return serve_until_signalled(server, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
