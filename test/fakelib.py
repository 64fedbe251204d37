"""Shared by the fake servers (fake_stripe.py, fake_intempt.py): the threaded
HTTP/1.1 server that hands requests to an app, and serving until SIGTERM or
SIGINT with the bound port published atomically for the caller."""

import os
import signal
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the server's app (app.handle(handler))."""
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Small responses on a keep-alive connection must not wait for delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.app.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app):
        self.app = app
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            traceback.print_exc()


def parent_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve_until_signalled(server, port_file=None, exit_with=None):
    """Serves until SIGTERM or SIGINT, or until process exit_with (a pid) is gone:
    a fake started for a test run must not outlive the run."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    if port_file:
        tmp = f"{port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{server.server_address[1]}\n")
        os.replace(tmp, port_file)
    while not stop.wait(0.5):
        if exit_with and not parent_alive(exit_with):
            break
    server.shutdown()
    server.server_close()
    return 0
