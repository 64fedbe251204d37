#!/usr/bin/env python3
"""Self-test of test/fake_intempt.py: starts it on a free port and checks its API.

    python3 test/fake_intempt_selftest.py

Prints one line per check; exits 1 if any failed.  The servers it starts are stopped at the end.
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
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_intempt.py")
ORG, PROJECT, SOURCE, KEY = "acme-org", "proj_1", "src-42", "pk.live.s3cr3t"  # creds pk:live.s3cr3t
PATH = f"/v1/{ORG}/projects/{PROJECT}/sources/{SOURCE}/track"
AUTH = "Basic " + base64.b64encode(b"pk:live.s3cr3t").decode()
TS = 1700000000123
PROCS = []


def start_server(*args, stderr=None):
    """-> (process, port)."""
    fd, port_file = tempfile.mkstemp(prefix="fake_intempt_", suffix=".port")
    os.close(fd)
    os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--port-file", port_file, *args],
                            stderr=stderr)
    PROCS.append(proc)
    deadline = time.time() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("fake_intempt.py did not start")
        time.sleep(0.05)
    with open(port_file) as f:
        port = int(f.read())
    os.unlink(port_file)
    return proc, port


PROC, PORT = None, None


def request(method, path, body=None, headers=None, timeout=60):
    """urllib, a fresh connection per call -> (status, headers, parsed JSON or raw bytes)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw


def ev(eid, user="cus_1", ts=TS, data=None, **over):
    e = {"eventId": eid, "timestamp": ts, "userId": user, "data": data if data is not None else {"x": 1}}
    e.update(over)
    return e


def track(groups, auth=AUTH, ctype="application/json", path=PATH):
    """groups: {name: [event, ...]}, or the body as bytes."""
    body = {"track": [{"name": n, "payload": p} for n, p in groups.items()]} \
        if isinstance(groups, dict) else groups
    headers = {"Content-Type": ctype} if ctype else {}
    if auth:
        headers["Authorization"] = auth
    return request("POST", path, body, headers)


def ctl(method, what, data=None):
    status, _, out = request(method, "/_control/" + what, data)
    assert status == 200, (method, what, status, out)
    return out


def fault(**spec):
    return ctl("POST", "faults", spec)


def eq(got, want, what=""):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


# ---------------------------------------------------------------- checks

def check_good_request():
    status, _, body = track({"charge.succeeded": [ev("evt_1"), ev("evt_2", user="cus_2")],
                             "invoice.paid": [ev("evt_3", data={"amount": 5, "nested": {"a": [1]}})]})
    eq((status, body), (200, {"status": "ok", "accepted": 3}), "answer")
    evs = ctl("GET", "events")
    eq([(e["name"], e["eventId"], e["userId"], e["timestamp"]) for e in evs],
       [("charge.succeeded", "evt_1", "cus_1", TS), ("charge.succeeded", "evt_2", "cus_2", TS),
        ("invoice.paid", "evt_3", "cus_1", TS)], "events")
    eq(evs[2]["data"], {"amount": 5, "nested": {"a": [1]}}, "data")
    eq(len({e["request"] for e in evs}), 1, "one request number")
    assert abs(evs[0]["received"] - time.time()) < 5
    eq([e["eventId"] for e in ctl("GET", "events?name=invoice.paid")], ["evt_3"], "?name=")
    eq(len(ctl("GET", "events?eventId=evt_2")), 1, "?eventId=")
    eq(sorted(ctl("GET", "events?data=0&name=invoice.paid")[0]),
       ["eventId", "name", "received", "request", "timestamp", "userId"], "?data=0")
    eq(request("GET", "/_control/nope")[0], 404, "unknown control endpoint")
    eq(request("POST", "/_control/config", {"latency_ms": -1})[0], 400, "bad config")
    ctl("POST", "config", {"success_status": 201})
    eq(track({"a": [ev("evt_4")]})[0], 201, "success_status 201")
    ctl("POST", "config", {"success_status": 200})
    eq(track({"a": [ev("evt_5")]}, ctype="application/json; charset=utf-8")[0], 200, "charset")


def check_auth():
    for auth, why in ((None, "missing"), ("Basic " + base64.b64encode(b"pk:wrong").decode(), "wrong"),
                      ("Basic " + base64.b64encode(b"pk.live:s3cr3t").decode(), "split at last '.'"),
                      ("Bearer pk.live.s3cr3t", "bearer"), ("Basic !!!", "not base64")):
        status, hdrs, body = track({"a": [ev("evt_x")]}, auth=auth)
        eq(status, 401, why)
        assert "error" in body and "s3cr3t" not in json.dumps(body), body
        eq(hdrs["WWW-Authenticate"], 'Basic realm="intempt"', "challenge")
    eq(track({"a": [ev("evt_y")]}, auth="basic  " + AUTH[6:])[0], 200, "scheme case-insensitive")
    eq(ctl("GET", "events?eventId=evt_x"), [], "nothing recorded")


def check_paths_and_methods():
    for path in (f"/v1/other/projects/{PROJECT}/sources/{SOURCE}/track", PATH + "/x", PATH[3:],
                 f"/v2/{ORG}/projects/{PROJECT}/sources/{SOURCE}/track", "/", PATH.replace("track", "tracks")):
        status, _, body = track({"a": [ev("evt_p")]}, path=path)
        eq(status, 404, path)
        assert "error" in body
    for method in ("GET", "PUT", "DELETE"):
        status, hdrs, body = request(method, PATH, headers={"Authorization": AUTH})
        eq((status, hdrs["Allow"]), (405, "POST"), method)
    eq(track({"a": [ev("evt_q")]}, path=PATH + "?x=1")[0], 200, "query string ignored")


def check_bad_bodies():
    good = ev("evt_b")
    cases = [
        (b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"), (b"", "not valid JSON"),
        ([], '"track" array'), ({}, '"track" array'), ({"track": {}}, '"track" array'),
        ({"track": []}, "track is empty"), ({"track": [5]}, "track[0] is not an object"),
        ({"track": [{"payload": [good]}]}, "track[0].name"),
        ({"track": [{"name": "", "payload": [good]}]}, "track[0].name"),
        ({"track": [{"name": "a"}]}, "track[0].payload"),
        ({"track": [{"name": "a", "payload": {}}]}, "track[0].payload"),
        ({"track": [{"name": "a", "payload": []}]}, "track[0].payload"),
        ({"track": [{"name": "a", "payload": [good, "x"]}]}, "track[0].payload[1] is not an object"),
    ]
    for field, bads in (("eventId", [None, "", 5]), ("timestamp", [None, "1", 1.5, True, 1700000000]),
                        ("userId", [None, "", 7]), ("data", [None, [], "x"])):
        for value in bads:
            e = dict(good)
            if value is None:
                del e[field]
            else:
                e[field] = value
            body = {"track": [{"name": "ok", "payload": [good]}, {"name": "a", "payload": [good, e]}]}
            cases.append((body, f"track[1].payload[1].{field}"))
    for body, want in cases:
        status, _, out = track(body if isinstance(body, bytes) else json.dumps(body).encode())
        eq(status, 400, f"{body!r:.60}")
        assert want in out["error"], (want, out)
    status, _, out = track({"a": [good]}, ctype="text/plain")
    assert status == 400 and "Content-Type" in out["error"], out
    status, _, out = track({"a": [good]}, ctype=None)
    assert status == 400 and "Content-Type" in out["error"], out
    eq(ctl("GET", "events?eventId=evt_b"), [], "nothing recorded")
    return f"{len(cases) + 2} malformed bodies"


def check_status_faults():
    out = fault(kind="429", count=2, retry_after=7)
    eq(out["fault"], {"kind": "429", "count": 2, "retry_after": 7}, "fault echo")
    for i in range(2):
        status, hdrs, body = track({"a": [ev(f"evt_r{i}")]})
        eq((status, hdrs["Retry-After"]), (429, "7"), "429")
        assert "error" in body
    eq(track({"a": [ev("evt_r2")]})[0], 200, "after 429s")
    fault(kind="500")
    fault(kind="503", retry_after=3)
    fault(kind="400")
    eq(ctl("GET", "faults")["faults"]["queued"][0]["kind"], "500", "pending listed")
    status, hdrs, _ = track({"a": [ev("evt_f1")]})
    eq((status, hdrs.get("Retry-After")), (500, None), "500")
    status, hdrs, _ = track({"a": [ev("evt_f2")]})
    eq((status, hdrs.get("Retry-After")), (503, "3"), "503")
    eq(track({"a": [ev("evt_f3")]})[::2], (400, {"error": "injected bad request"}), "400")
    eq(track({"a": [ev("evt_f4")]})[0], 200, "queue drained")
    eq([e["eventId"] for e in ctl("GET", "events") if e["eventId"].startswith("evt_f")], ["evt_f4"],
       "failed requests not recorded")
    fault(kind="500", count=3)
    eq(ctl("DELETE", "faults")["faults"]["queued"], [], "cleared")
    eq(track({"a": [ev("evt_f5")]})[0], 200, "after clear")
    status, _, out = request("POST", "/_control/faults", {"kind": "nope"})
    assert status == 400 and "kind must be" in out["error"], out


def check_delay_drop_accept_then_500():
    fault(kind="delay", ms=300)
    t = time.time()
    eq(track({"a": [ev("evt_d1")]})[0], 200, "delay")
    assert time.time() - t >= 0.3, "delay too short"
    fault(kind="drop")
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        conn.request("POST", PATH, json.dumps({"track": [{"name": "a", "payload": [ev("evt_d2")]}]}),
                     {"Authorization": AUTH, "Content-Type": "application/json"})
        try:
            conn.getresponse()
            raise AssertionError("drop answered")
        except (http.client.RemoteDisconnected, ConnectionResetError):
            pass
    finally:
        conn.close()
    fault(kind="accept_then_500")
    status, _, body = track({"a": [ev("evt_d3")]})
    eq(status, 500, "accept_then_500")
    eq([e["eventId"] for e in ctl("GET", "events") if e["eventId"].startswith("evt_d")],
       ["evt_d1", "evt_d3"], "dropped not recorded, accept_then_500 recorded")
    log = ctl("GET", "requests?limit=3")
    eq([(r["fault"], r["status"], r["events"]) for r in log],
       [("delay", 200, 1), ("drop", None, 0), ("accept_then_500", 500, 1)], "request log")
    ctl("POST", "config", {"latency_ms": 200})
    t = time.time()
    eq(track({"a": [ev("evt_d4")]})[0], 200, "latency")
    assert time.time() - t >= 0.2, "latency too short"
    ctl("POST", "config", {"latency_ms": 0})


def check_concurrency_and_arrival_order():
    ctl("DELETE", "events")
    ctl("POST", "config", {"latency_ms": 300})
    results = {}

    def send(i):
        results[i] = track({"c": [ev(f"evt_cc{i}")]})[0]

    t = time.time()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.time() - t
    ctl("POST", "config", {"latency_ms": 0})
    eq(sorted(results.values()), [200] * 4, "four at once")
    st = ctl("GET", "stats")
    eq((st["in_flight"], st["max_in_flight"] >= 2), (0, True), f"in flight (max {st['max_in_flight']})")
    assert took < 1.0, f"served one at a time ({took:.2f} s)"
    # events are listed in the order their requests were accepted, not sent
    fault(kind="delay", ms=400, count=1)
    slow = threading.Thread(target=send, args=(10,))
    slow.start()
    time.sleep(0.1)
    send(11)
    slow.join()
    eq([e["eventId"] for e in ctl("GET", "events?name=c")][-2:], ["evt_cc11", "evt_cc10"],
       "arrival order")
    eq(ctl("DELETE", "events")["max_in_flight"], 0, "reset")
    ctl("POST", "config", {"latency_jitter_ms": 200})
    eq(ctl("GET", "config")["latency_jitter_ms"], 200, "jitter set")
    times = []
    for i in range(5):
        t = time.time()
        track({"c": [ev(f"evt_cj{i}")]})
        times.append(time.time() - t)
    ctl("POST", "config", {"latency_jitter_ms": 0})
    assert max(times) < 1.0 and max(times) - min(times) > 0.01, times
    eq(request("POST", "/_control/config", {"latency_jitter_ms": -1})[0], 400, "bad jitter")
    return f"max {st['max_in_flight']} in flight, {took:.2f} s for 4 x 300 ms"


def check_refuse_ratio():
    fault(kind="refuse_ratio", ratio=0.3, seed=1)
    statuses = [track({"a": [ev(f"evt_rr{i}")]})[0] for i in range(300)]
    refused = statuses.count(503) / len(statuses)
    assert 0.22 <= refused <= 0.38 and set(statuses) == {200, 503}, (refused, set(statuses))
    eq(len(ctl("GET", "events?name=a")) >= 300 - statuses.count(503), True, "accepted recorded")
    fault(kind="refuse_ratio", ratio=1, status=[429, 500, 503], retry_after=2)
    got = [track({"a": [ev("evt_rx")]}) for _ in range(4)]
    eq([g[0] for g in got], [429, 500, 503, 429], "status cycle")
    eq(got[0][1]["Retry-After"], "2", "retry_after")
    # Seeded: the same seed gives the same sequence.
    seqs = []
    for _ in range(2):
        fault(kind="refuse_ratio", ratio=0.5, seed=42)
        seqs.append([track({"a": [ev("evt_rs")]})[0] for _ in range(20)])
    eq(seqs[0], seqs[1], "seeded sequence")
    ctl("DELETE", "faults")
    eq([track({"a": [ev("evt_rz")]})[0] for _ in range(10)], [200] * 10, "cleared")
    return f"refused {refused:.3f} of 300 at ratio 0.3"


def check_down_window():
    fault(kind="down", seconds=3.0)
    t = time.time()
    statuses = []
    # requests sent while the fake says it is down are refused (asked before and after
    # each request, so that a slow machine cannot make this depend on its speed)
    while time.time() - t < 1.0:
        if ctl("GET", "faults")["faults"]["down_seconds_left"] <= 0:
            break
        status = track({"a": [ev("evt_dw")]})[0]
        if ctl("GET", "faults")["faults"]["down_seconds_left"] > 0:
            statuses.append(status)
    assert statuses and set(statuses) == {503}, statuses
    while ctl("GET", "faults")["faults"]["down_seconds_left"] > 0:
        time.sleep(0.05)
    time.sleep(0.01)  # the figure is rounded to the millisecond
    eq(track({"a": [ev("evt_dw2")]})[0], 200, "after the window")
    fault(kind="down", seconds=30)
    eq(track({"a": [ev("evt_dw3")]})[0], 503, "down again")
    ctl("DELETE", "faults")
    eq(track({"a": [ev("evt_dw4")]})[0], 200, "DELETE ends the window")


def check_max_body():
    eq(ctl("GET", "config")["max_body_bytes"], 5 * 1024 * 1024, "default")
    ctl("POST", "config", {"max_body_bytes": 2000})
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        hdrs = {"Authorization": AUTH, "Content-Type": "application/json"}
        big = json.dumps({"track": [{"name": "a", "payload": [ev(f"evt_big{i}") for i in range(40)]}]})
        assert len(big) > 2000
        conn.request("POST", PATH, big, hdrs)
        resp = conn.getresponse()
        eq(resp.status, 413, "too large")
        assert "max_body_bytes" in json.loads(resp.read())["error"]
        small = json.dumps({"track": [{"name": "a", "payload": [ev("evt_small")]}]})
        conn.request("POST", PATH, small, hdrs)  # the same connection still works
        resp = conn.getresponse()
        eq((resp.status, json.loads(resp.read())["accepted"]), (200, 1), "after 413")
    finally:
        conn.close()
        ctl("POST", "config", {"max_body_bytes": 5 * 1024 * 1024})
    eq(ctl("GET", "events?eventId=evt_big0"), [], "413 not recorded")
    eq(track({"a": [ev("evt_big")]}, auth=None)[0], 401, "small body, no auth")
    ctl("POST", "config", {"max_body_bytes": 10})
    eq(track({"a": [ev("evt_big")]}, auth=None)[0], 413, "size checked before auth")
    ctl("POST", "config", {"max_body_bytes": 0})
    eq(track({"a": [ev(f"evt_nl{i}", data={"pad": "x" * 1000}) for i in range(6000)]})[0],
       200, "0 = no limit (6 MB body)")
    ctl("POST", "config", {"max_body_bytes": 5 * 1024 * 1024})


def check_oversized_events():
    """A 413's log entry counts the events its body carried (the client's batch size); other
    answers have None there."""
    ctl("POST", "config", {"max_body_bytes": 1500})
    try:
        eq(track({"a": [ev(f"evt_ov{i}") for i in range(30)], "b": [ev("evt_ovb")]})[0], 413, "too large")
        eq(track({"a": [ev("evt_ov_fits")]})[0], 200, "fits")
        eq(track(b"x" * 2000)[0], 413, "not JSON")
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        try:  # chunked, too large
            body = json.dumps({"track": [{"name": "a", "payload": [ev(f"evt_ovc{i}") for i in range(25)]}]})
            conn.request("POST", PATH, iter([body.encode()]),
                         {"Authorization": AUTH, "Content-Type": "application/json"}, encode_chunked=True)
            resp = conn.getresponse()
            resp.read()
            eq(resp.status, 413, "chunked too large")
        finally:
            conn.close()
    finally:
        ctl("POST", "config", {"max_body_bytes": 5 * 1024 * 1024})
    log = ctl("GET", "requests?limit=4")
    eq([(r["status"], r["events"], r["oversized_events"]) for r in log],
       [(413, 0, 31), (200, 1, None), (413, 0, None), (413, 0, 25)], "log")


def check_stats_and_duplicates():
    eq(ctl("DELETE", "events")["events"], 0, "reset")
    eq(ctl("GET", "events"), [], "reset events")
    track({"a": [ev("evt_s1"), ev("evt_s2")], "b": [ev("evt_s3")]})
    track({"a": [ev("evt_s1"), ev("evt_s4"), ev("evt_s4")]})  # resent + in-request duplicate
    track({"a": [ev("evt_s1")]})
    track({"a": [ev("evt_s9")]}, auth=None)
    fault(kind="429")
    track({"a": [ev("evt_s10")]})
    track({"a": [ev("evt_s2", data=[])]})
    request("POST", "/nowhere", b"{}")
    st = ctl("GET", "stats")
    eq({k: st[k] for k in ("requests", "accepted_requests", "events", "duplicates",
                           "distinct_event_ids", "by_name")},
       {"requests": 7, "accepted_requests": 3, "events": 7, "duplicates": 2,
        "distinct_event_ids": 4, "by_name": {"a": 6, "b": 1}}, "stats")
    eq(st["by_status"], {"200": 3, "401": 1, "429": 1, "400": 1, "404": 1}, "by_status")


def check_request_log_hides_secrets():
    track({"a": [ev("evt_l1")]})
    track({"a": [ev("evt_l2")]}, auth=None)
    log = ctl("GET", "requests?limit=2")
    eq([(r["status"], r["events"], r["auth_header"], r["authorized"]) for r in log],
       [(200, 1, True, True), (401, 0, False, False)], "log")
    assert log[0]["bytes"] > 50 and log[0]["path"] == PATH and log[0]["method"] == "POST", log[0]
    _, _, raw = request("GET", "/_control/requests")
    text = json.dumps(raw)
    assert "s3cr3t" not in text and AUTH[6:] not in text, "secret leaked"


def check_keep_alive():
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        ports = []
        for i in range(2):
            body = json.dumps({"track": [{"name": "ka", "payload": [ev(f"evt_ka{i}")]}]})
            conn.request("POST", PATH, body, {"Authorization": AUTH, "Content-Type": "application/json"})
            resp = conn.getresponse()
            eq((resp.status, resp.getheader("Content-Length") is not None), (200, True), "answer")
            resp.read()
            ports.append(conn.sock.getsockname()[1])
        eq(ports[0], ports[1], "same connection")
        # a 404 and an injected 503 keep the connection too
        fault(kind="503")
        for path, want in ((PATH + "x", 404), (PATH, 503), (PATH, 200)):
            conn.request("POST", path, body, {"Authorization": AUTH, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            eq(resp.status, want, path)
        eq(conn.sock.getsockname()[1], ports[0], "still the same connection")
    finally:
        conn.close()


def check_chunked_body():
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    try:
        body = json.dumps({"track": [{"name": "ch", "payload": [ev("evt_ch")]}]}).encode()
        conn.request("POST", PATH, iter([body[:10], body[10:]]),
                     {"Authorization": AUTH, "Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        eq((resp.status, json.loads(resp.read())), (200, {"status": "ok", "accepted": 1}), "chunked")
    finally:
        conn.close()


def check_bad_framing():
    for length in ("-5", "abc"):
        with socket.create_connection(("127.0.0.1", PORT), timeout=60) as s:
            s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{}}"
                      .encode())
            answer = b""
            while chunk := s.recv(4096):  # the server answers, then closes
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Length" in answer, answer
        assert b"Connection: close" in answer, answer


def check_base_path_and_clean_exit():
    global PORT
    main_port = PORT
    proc, PORT = start_server("--base-path", "/", "--api-key", "a.b", "--org", "o",
                              "--project", "p", "--source-id", "s", "--verbose",
                              stderr=subprocess.PIPE)
    try:
        auth = "Basic " + base64.b64encode(b"a:b").decode()
        eq(track({"a": [ev("evt_bp")]}, auth=auth, path="/o/projects/p/sources/s/track")[0], 200, "/")
        eq(track({"a": [ev("evt_bp")]}, auth=auth, path="/v1/o/projects/p/sources/s/track")[0], 404,
           "/v1 not served")
        idle = socket.create_connection(("127.0.0.1", PORT))  # must not hold up shutdown
        proc.send_signal(signal.SIGTERM)
        eq(proc.wait(10), 0, "exit status")
        idle.close()
        log = proc.stderr.read().decode()
        assert "-> 200 events=1" in log and "-> 404" in log, log
    finally:
        PORT = main_port
    bad = subprocess.run([sys.executable, SERVER, "--api-key", "nodot"], capture_output=True)
    assert bad.returncode != 0, "--api-key without '.' accepted"


CHECKS = [check_good_request, check_auth, check_paths_and_methods, check_bad_bodies,
          check_status_faults, check_delay_drop_accept_then_500,
          check_concurrency_and_arrival_order, check_refuse_ratio,
          check_down_window, check_max_body, check_oversized_events, check_stats_and_duplicates,
          check_request_log_hides_secrets, check_keep_alive, check_chunked_body, check_bad_framing,
          check_base_path_and_clean_exit]


def main():
    global PROC, PORT
    failed = 0
    try:
        PROC, PORT = start_server("--org", ORG, "--project", PROJECT, "--source-id", SOURCE,
                                  "--api-key", KEY)
        for check in CHECKS:
            name = check.__name__[len("check_"):]
            try:
                ctl("DELETE", "faults")
                note = check()
                print(f"ok   {name}" + (f" ({note})" if note else ""), flush=True)
            except Exception as e:
                failed += 1
                print(f"FAIL {name}: {e!r}", flush=True)
                traceback.print_exc()
    finally:
        for proc in PROCS:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(f"{len(CHECKS) - failed}/{len(CHECKS)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
