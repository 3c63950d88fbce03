"""Alert delivery: the file sink keeps every alert; the webhook retries, then falls back."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fraudloop.core.alerts import Alert, FileAlertSink, WebhookAlertSink


@pytest.fixture
def receiver():
    """A real HTTP receiver on loopback that fails the first `fail_first` requests with 503."""
    state = {"fail_first": 0, "received": [], "attempts": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            state["attempts"] += 1
            if state["attempts"] <= state["fail_first"]:
                self.send_response(503)
                self.end_headers()
                return
            state["received"].append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    yield state
    server.shutdown()
    server.server_close()


def test_file_sink_appends_json_lines(tmp_path):
    sink = FileAlertSink(tmp_path / "a" / "alerts.jsonl")
    sink.send(Alert("t1", "s1", details={"partition": "2018-04-01-05:00"}))
    sink.send(Alert("t2", "s2", severity="critical"))
    records = sink.read()
    assert [r["title"] for r in records] == ["t1", "t2"]
    assert records[0]["details"]["partition"] == "2018-04-01-05:00"
    assert records[1]["severity"] == "critical"


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        Alert("t", "s", severity="meh")


def test_webhook_retries_transient_failures(receiver, tmp_path):
    receiver["fail_first"] = 2
    fallback = FileAlertSink(tmp_path / "alerts.jsonl")
    WebhookAlertSink(receiver["url"], fallback, retries=3, backoff_seconds=0.01).send(
        Alert("drift", "feature drift over threshold")
    )
    assert receiver["attempts"] == 3
    assert [r["title"] for r in receiver["received"]] == ["drift"]
    assert fallback.read() == []


def test_webhook_down_falls_back_to_file(receiver, tmp_path):
    receiver["fail_first"] = 100
    fallback = FileAlertSink(tmp_path / "alerts.jsonl")
    WebhookAlertSink(receiver["url"], fallback, retries=2, backoff_seconds=0.01).send(
        Alert("down", "service down", severity="critical")
    )
    assert receiver["attempts"] == 3
    (record,) = fallback.read()
    assert record["title"] == "down"
    assert record["details"]["webhook_error"] == "HTTP 503"
