"""The replay client of `make demo` and the stack test: a shed request (503 + Retry-After) is sent
again, anything else that fails stops the replay with the service's own words."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from pipelines.demo import _post_batch


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the statuses of `script`, in order (then 200)."""

    script: ClassVar[list[int]] = []
    seen: ClassVar[list[int]] = []

    def do_POST(self):
        length = int(self.headers["content-length"])
        rows = json.loads(self.rfile.read(length))["transactions"]
        self.seen.append(len(rows))
        status = self.script.pop(0) if self.script else 200
        body = {503: b"too many scoring requests in progress", 422: b"tx_datetime too old"}
        payload = body.get(status, b'{"answers": []}')
        self.send_response(status)
        if status == 503:
            self.send_header("retry-after", "0")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Scripted.script, Scripted.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/score/batch"
    httpd.shutdown()
    httpd.server_close()


def test_a_shed_batch_is_sent_again_and_counted(server):
    Scripted.script = [503, 503]
    shed = Counter()
    with httpx.Client() as client:
        _post_batch(client, server, [{"transaction_id": "1"}], shed)
    assert Scripted.seen == [1, 1, 1]
    assert shed == Counter({"too many scoring requests in progress": 2})


def test_a_rejected_batch_stops_the_replay_with_the_reason(server):
    Scripted.script = [422]
    with httpx.Client() as client, pytest.raises(httpx.HTTPStatusError, match="too old"):
        _post_batch(client, server, [{"transaction_id": "1"}], Counter())
    assert Scripted.seen == [1]  # not retried


def test_a_service_that_keeps_shedding_is_given_up_on(server):
    Scripted.script = [503] * 5
    with httpx.Client() as client, pytest.raises(httpx.HTTPStatusError, match="503"):
        _post_batch(client, server, [{"transaction_id": "1"}], Counter(), attempts=3)
    assert Scripted.seen == [1, 1, 1]
