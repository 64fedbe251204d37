#!/usr/bin/env python3
"""A Stripe webhook endpoint: each POST's body and Stripe-Signature to stripe_sync.ingest_webhook."""
import http.server, os, secrets, subprocess

SOURCE = os.environ.get("STRIPE_SOURCE", "main")   # psql connects as its owner (PGHOST, PGUSER, …)

def literal(s):   # dollar-quoted, with a tag no sender can guess
    tag = "$w%s$" % secrets.token_hex(8)
    return tag + s + tag

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        sql = "SELECT stripe_sync.ingest_webhook(%s, %s, %s);" % (
            literal(SOURCE), literal(body), literal(self.headers.get("Stripe-Signature", "")))
        psql = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, encoding="utf-8")
        self.send_response(200 if psql.returncode == 0 else 400)   # Stripe retries anything but 2xx
        self.end_headers()
        self.wfile.write((psql.stdout or psql.stderr).encode())

http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Receiver).serve_forever()
