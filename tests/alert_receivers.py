"""Real HTTP receivers on loopback that hold alerts to each service's payload contract.

- Slack incoming webhook: a JSON body with a non-empty `text` (blocks optional) or 400
  `invalid_payload`; 200 `ok` otherwise (what hooks.slack.com answers).
- PagerDuty Events API v2 (`POST /v2/enqueue`): `routing_key` (32 characters), `event_action`
  trigger/acknowledge/resolve, `dedup_key` required except on trigger, a trigger's `payload`
  with `summary`, `source` and a `severity` of critical/error/warning/info; 202 with the dedup
  key, 400 `Event object is invalid` with the errors otherwise. Incidents are kept by dedup key,
  as PagerDuty does: a trigger of an open key adds to it, resolve closes it.
- A generic webhook: any JSON.

The PagerDuty receiver speaks HTTPS only (its client refuses anything else), with a
certificate from a throwaway CA (`trustme`); `Receiver.tls` is the client context trusting it.

`fail_next` makes the next N requests answer 503 (or `fail_status`), to exercise retries.
"""

from __future__ import annotations

import json
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme

PD_SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class Receiver:
    kind: str
    url: str = ""
    received: list = field(default_factory=list)
    attempts: int = 0
    fail_next: int = 0
    fail_status: int = 503
    incidents: dict = field(default_factory=dict)  # PagerDuty: dedup key -> open/resolved
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls: ssl.SSLContext | None = None  # what a client must trust to reach an HTTPS receiver


def _slack_errors(body) -> list[str]:
    if not isinstance(body, dict) or not str(body.get("text") or "").strip():
        return ["no text"]
    return []


def _pagerduty_errors(path: str, body) -> list[str]:
    if path != "/v2/enqueue":
        return [f"unknown path {path}"]
    errors = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    if len(str(body.get("routing_key", ""))) != 32:
        errors.append("'routing_key' must be 32 characters")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    if action != "trigger" and not body.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = body.get("payload") or {}
        for name in ("summary", "source"):
            if not payload.get(name):
                errors.append(f"'payload.{name}' is missing or blank")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append("'payload.severity' is invalid")
        if len(str(payload.get("summary", ""))) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
    return errors


def _handler(state: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes, kind: str = "application/json"):
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            with state.lock:
                state.attempts += 1
                if state.fail_next > 0:
                    state.fail_next -= 1
                    return self._answer(state.fail_status, b'{"error": "injected"}')
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._answer(400, b"invalid_payload", "text/plain")
                if state.kind == "slack":
                    if _slack_errors(body):
                        return self._answer(400, b"invalid_payload", "text/plain")
                    state.received.append(body)
                    return self._answer(200, b"ok", "text/plain")
                if state.kind == "pagerduty":
                    errors = _pagerduty_errors(self.path, body)
                    if errors:
                        doc = {"status": "invalid event", "message": "Event object is invalid"}
                        return self._answer(400, json.dumps({**doc, "errors": errors}).encode())
                    key = body.get("dedup_key") or f"generated-{state.attempts}"
                    if body["event_action"] == "trigger":
                        state.incidents[key] = "open"
                    elif body["event_action"] == "resolve" and key in state.incidents:
                        state.incidents[key] = "resolved"
                    state.received.append(body)
                    doc = {"status": "success", "message": "Event processed", "dedup_key": key}
                    return self._answer(202, json.dumps(doc).encode())
                state.received.append(body)
                return self._answer(204, b"")

        def log_message(self, *args):
            pass

    return Handler


@contextmanager
def receiver(kind: str):
    """Yields a running Receiver of `kind` ("slack", "pagerduty" or "webhook")."""
    state = Receiver(kind)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    scheme = "http"
    if kind == "pagerduty":
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        server.socket = server_context.wrap_socket(server.socket, server_side=True)
        state.tls = ssl.create_default_context()
        ca.configure_trust(state.tls)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = {"slack": "/services/T0/B0/x", "webhook": "/alerts"}.get(kind, "")
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
