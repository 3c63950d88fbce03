"""Alerts: what an on-call engineer is told, delivered to a file (default), the object store
and/or a webhook.

An alert is a small JSON document with a stable shape so it can be routed by any receiver
(Slack/PagerDuty bridges, a log shipper reading the file). Delivery to a webhook is retried
with exponential backoff; when every try fails the alert is still written to the fallback sink
(the file, or the object store), so nothing is lost when the receiver is down. In containers
(the S3 profile) a local file would die with the run container: there the object store is the
durable sink, one object per alert under `alerts/<YYYY-MM-DD>/<alert_id>.json`.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Alert:
    title: str
    summary: str
    severity: str = "warning"
    source: str = "fraudloop"
    details: dict[str, Any] = field(default_factory=dict)
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    raised_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


class FileAlertSink:
    """Appends one JSON line per alert; a lock keeps concurrent writers' lines whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(alert.to_json() + "\n")
                handle.flush()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class StoreAlertSink:
    """One object per alert, `alerts/<day raised>/<alert_id>.json`: a single PUT each, so
    concurrent writers (run containers, sensors) never contend and nothing is appended."""

    PREFIX = "alerts/"

    def __init__(self, store):
        self.store = store

    def send(self, alert: Alert) -> None:
        key = f"{self.PREFIX}{alert.raised_at[:10]}/{alert.alert_id}.json"
        self.store.put_bytes(key, alert.to_json().encode("utf-8"))

    def read(self) -> list[dict[str, Any]]:
        alerts = [
            json.loads(self.store.get_bytes(info.key))
            for info in self.store.list(self.PREFIX)
            if info.key.endswith(".json")
        ]
        return sorted(alerts, key=lambda a: (a["raised_at"], a["alert_id"]))


class WebhookAlertSink:
    """POSTs the alert as JSON; retries transient failures, then falls back to a file sink."""

    def __init__(
        self,
        url: str,
        fallback: FileAlertSink | StoreAlertSink,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 5.0,
    ):
        self.url = url
        self.fallback = fallback
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds

    def send(self, alert: Alert) -> None:
        import httpx

        last_error = "no attempt made"
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(
                    self.url,
                    content=alert.to_json(),
                    headers={"content-type": "application/json"},
                    timeout=self.timeout_seconds,
                )
                if response.status_code < 300:
                    return
                last_error = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # the receiver refuses this alert; retrying will not help
            except httpx.HTTPError as error:
                last_error = f"{type(error).__name__}: {error}"
            if attempt < self.retries:
                time.sleep(self.backoff_seconds * 2**attempt)
        undelivered = Alert(
            **{**asdict(alert), "details": {**alert.details, "webhook_error": last_error}}
        )
        self.fallback.send(undelivered)
