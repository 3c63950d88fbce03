"""An HTTP proxy in front of moto's S3 server that can fail on cue: the endpoint answering
503, dropping connections or stalling (accepting a request and never answering), after a given
number of requests (so an outage can start in the middle of a multi-request operation), for a
given number of requests (a transient fault) or until it is told to come back."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from fraudloop.core.ports import free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class FaultyS3Proxy:
    """``mode``: "up" forwards, "503" answers Service Unavailable, "drop" closes the connection
    without an answer, "stall" holds the request without an answer until the client gives up
    (or the proxy recovers). ``fail_after``: requests still forwarded before the mode applies;
    ``fail_for``: requests failed before it recovers by itself (None: until `recover`)."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.mode = "up"
        self.fail_after = 0
        self.fail_for: int | None = None
        self.forwarded = 0
        self._recovered = threading.Event()
        self.refused = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    mode = proxy.mode
                    failing = mode != "up" and proxy.fail_after <= 0
                    if not failing and mode != "up":
                        proxy.fail_after -= 1
                    if failing:
                        proxy.refused += 1
                        if proxy.fail_for is not None:
                            proxy.fail_for -= 1
                            if proxy.fail_for <= 0:
                                proxy.mode = "up"
                    else:
                        proxy.forwarded += 1
                if failing and mode == "stall":
                    proxy._recovered.wait(timeout=120)  # the client's timeout ends it first
                    self.close_connection = True
                    self.connection.close()
                    return
                if failing and mode == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if failing:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = proxy.upstream.netloc
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail(self, mode: str, after: int = 0, count: int | None = None) -> None:
        with self._lock:
            self.mode, self.fail_after, self.fail_for = mode, after, count
            if mode == "up":
                self._recovered.set()
            else:
                self._recovered.clear()

    def recover(self) -> None:
        self.fail("up")

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._recovered.set()  # release stalled handlers
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
