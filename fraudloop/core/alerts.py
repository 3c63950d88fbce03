"""Alerts as incidents: one page per incident, a resolve when the condition clears, every event
kept in the object store.

Every alert names its incident with a dedup key (the source plus the partition, version or job
it is about: ``ingest/transactions/2018-04-02-13:00``, ``monitoring/accuracy``,
``run/training_job``). The first trigger of a key opens the incident and notifies the channels;
later triggers of an open incident only count (a range run re-reporting the same bad hour, a
sensor tick seeing the same finding again) so an engineer is told once. A resolve of an open
incident closes it and tells the channels; a resolve of nothing is silent. Receivers that
deduplicate themselves (PagerDuty) get the same key, so a retry never opens a second incident.

Two rules keep a wavering condition from paging again and again. A resolve about partitions
can ask for several healthy partitions newer than the last failing one (hysteresis: a model
whose daily accuracy wavers around its floor is one incident, not one per dip). And an open
incident that gets worse (a repeat at a higher severity) notifies once more, at the new
severity: an incident can open as a warning the loop handles by itself and page only when it
outlives that.

The incident ledger is `alerts/incidents/<dedup key>.json`, updated with compare-and-swap so
concurrent run containers and sensors agree on who opened an incident. Each event (trigger,
resolve) is also one object `alerts/events/<day>/<alert id>.json`, with the outcome of every
delivery attempt: the store is the durable sink in every profile, so an alert whose receivers
all failed is still on record, and `fraudloop alerts` lists them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from fraudloop.core.store import ObjectNotFound, ObjectStore, PreconditionFailed

SEVERITIES = ("info", "warning", "critical")
ACTIONS = ("trigger", "resolve")
EVENTS_PREFIX = "alerts/events/"
INCIDENTS_PREFIX = "alerts/incidents/"
MAX_PARTITIONS = 50  # failing/healthy partitions an incident remembers (the newest)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Alert:
    """One event of an incident: what an engineer is told, in a shape any receiver can route."""

    title: str
    summary: str
    dedup_key: str
    severity: str = "warning"
    action: str = "trigger"
    source: str = "fraudloop"
    details: dict[str, Any] = field(default_factory=dict)
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    raised_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")
        if not self.dedup_key or self.dedup_key != self.dedup_key.strip("/"):
            raise ValueError(f"dedup_key must be a non-empty path, not {self.dedup_key!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


class ChannelError(Exception):
    """A channel could not deliver; `final` when retrying cannot help (the receiver refused
    the payload: a 4xx other than 429)."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final


class Channel(Protocol):
    """Where people are (Slack, PagerDuty, a webhook); see `fraudloop.core.alert_channels`."""

    name: str
    min_severity: str

    def deliver(self, alert: Alert) -> None:
        """Deliver or raise ChannelError (after the channel's own retries)."""


def _incident_key(dedup_key: str) -> str:
    return f"{INCIDENTS_PREFIX}{dedup_key}.json"


@dataclass(frozen=True)
class Outcome:
    """What `Alerter.trigger`/`resolve` did: `notified` is False when the incident was already
    open (trigger) or not open (resolve)."""

    alert: Alert
    notified: bool
    incident: dict[str, Any] | None


class Alerter:
    """Opens, counts and resolves incidents in the store and notifies the channels."""

    def __init__(self, store: ObjectStore, channels: list[Channel] | tuple = ()):
        self.store = store
        self.channels = list(channels)

    # -- the ledger ------------------------------------------------------------------------
    def incident(self, dedup_key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(_incident_key(dedup_key)))
        except ObjectNotFound:
            return None

    def open_incidents(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Open incidents whose dedup key starts with `prefix`, by dedup key."""
        found = {}
        for info in self.store.list(INCIDENTS_PREFIX + prefix):
            doc = json.loads(self.store.get_bytes(info.key))
            if doc.get("status") == "open":
                found[doc["dedup_key"]] = doc
        return found

    def _update(self, dedup_key: str, change) -> tuple[dict | None, dict | None]:
        """Apply `change(old) -> new | None` to the incident with compare-and-swap; returns
        (old, new); new is None when `change` declined (nothing written)."""
        key = _incident_key(dedup_key)
        while True:
            try:
                data, etag = self.store.get_with_etag(key)
                old = json.loads(data)
            except ObjectNotFound:
                old, etag = None, None
            new = change(old)
            if new is None:
                return old, None
            payload = json.dumps(new, sort_keys=True).encode()
            try:
                if etag is None:
                    self.store.put_bytes(key, payload, if_none_match=True)
                else:
                    self.store.put_bytes(key, payload, if_match=etag)
                return old, new
            except PreconditionFailed:
                continue  # another writer moved it: decide again on what it wrote

    # -- events ----------------------------------------------------------------------------
    def trigger(self, alert: Alert) -> Outcome:
        """Open the incident and notify, or count a repeat of an open one silently."""
        if alert.action != "trigger":
            raise ValueError("trigger() takes a trigger alert")

        partition = alert.details.get("partition")

        def change(old):
            if old is not None and old["status"] == "open":
                new = {**old, "count": old["count"] + 1, "last_seen": alert.raised_at}
                if severity_rank(alert.severity) > severity_rank(old["severity"]):
                    new.update(severity=alert.severity, escalated_at=alert.raised_at)
                if partition is not None:
                    failing = set(old.get("failing", [])) | {str(partition)}
                    newest = max(failing)
                    new["failing"] = sorted(failing)[-MAX_PARTITIONS:]
                    new["healthy"] = [h for h in old.get("healthy", []) if h > newest]
                return new
            return {
                "dedup_key": alert.dedup_key,
                "status": "open",
                "title": alert.title,
                "severity": alert.severity,
                "opened_at": alert.raised_at,
                "last_seen": alert.raised_at,
                "count": 1,
                "opened_by": alert.alert_id,
                "details": alert.details,
                "history": (old or {}).get("history", 0) + (old is not None),
                "failing": [] if partition is None else [str(partition)],
                "healthy": [],
            }

        old, new = self._update(alert.dedup_key, change)
        if old is not None and old["status"] == "open":
            if new["severity"] == old["severity"]:
                return Outcome(alert, notified=False, incident=new)
            alert = replace(
                alert,
                title=f"escalated to {alert.severity}: {alert.title}",
                details={**alert.details, "escalated_from": old["severity"]},
            )
        self._record_and_notify(alert)
        return Outcome(alert, notified=True, incident=new)

    def resolve(
        self,
        dedup_key: str,
        summary: str,
        *,
        after: str | None = None,
        healthy_needed: int = 1,
        **details,
    ) -> Outcome | None:
        """Close an open incident and tell the channels; None when nothing was closed.

        `after`: the healthy partition this resolve is about. It counts only if it is not older
        than the newest failing partition of the incident (a backfill of an old healthy day
        must not close today's incident), and the incident closes once `healthy_needed`
        distinct such partitions were seen; until then they are only recorded."""
        resolved_at = datetime.now(UTC).isoformat()

        def change(old):
            if old is None or old["status"] != "open":
                return None
            closed = {"status": "resolved", "resolved_at": resolved_at, "resolution": summary}
            if after is None:
                return {**old, **closed}
            opened_for = (old.get("details") or {}).get("partition")
            failing = old.get("failing") or ([str(opened_for)] if opened_for is not None else [])
            if failing and str(after) < max(failing):
                return None
            healthy = sorted(set(old.get("healthy", [])) | {str(after)})[-MAX_PARTITIONS:]
            if len(healthy) < healthy_needed:
                return None if healthy == old.get("healthy") else {**old, "healthy": healthy}
            return {**old, "healthy": healthy, **closed}

        old, new = self._update(dedup_key, change)
        if new is None or new["status"] != "resolved":
            return None
        alert = Alert(
            title=f"resolved: {old['title']}",
            summary=summary,
            dedup_key=dedup_key,
            severity=old["severity"],
            action="resolve",
            details={**details, "opened_at": old["opened_at"], "repeats": old["count"] - 1},
            raised_at=resolved_at,
        )
        self._record_and_notify(alert)
        return Outcome(alert, notified=True, incident=new)

    def _record_and_notify(self, alert: Alert) -> None:
        deliveries = {}
        for channel in self.channels:
            if severity_rank(alert.severity) < severity_rank(channel.min_severity):
                continue
            try:
                channel.deliver(alert)
                deliveries[channel.name] = "delivered"
            except ChannelError as error:
                deliveries[channel.name] = f"failed: {error}"
        record = {**alert.to_dict(), "deliveries": deliveries}
        key = f"{EVENTS_PREFIX}{alert.raised_at[:10]}/{alert.alert_id}.json"
        self.store.put_bytes(key, json.dumps(record, sort_keys=True, default=str).encode())


def read_events(store: ObjectStore) -> list[dict[str, Any]]:
    """Every alert event on record, oldest first (what the demo and `fraudloop alerts` show)."""
    events = [
        json.loads(store.get_bytes(info.key))
        for info in store.list(EVENTS_PREFIX)
        if info.key.endswith(".json")
    ]
    return sorted(events, key=lambda a: (a["raised_at"], a["alert_id"]))


def tally(store: ObjectStore, page_severity: str = "critical") -> dict[str, Any]:
    """How loud the record is, per incident: what the demo prints and the on-call figures
    measure (one notification per incident opening and one per escalation, repeats counted
    not sent, pages only for `page_severity` and above)."""
    incidents = [
        json.loads(store.get_bytes(info.key))
        for info in store.list(INCIDENTS_PREFIX)
        if info.key.endswith(".json")
    ]
    events = read_events(store)
    triggers = [e for e in events if e["action"] == "trigger"]
    escalations = sum(1 for e in triggers if "escalated_from" in e["details"])
    # repeats of closed openings are on their resolve events, of open ones on the ledger
    repeats = sum(int(e["details"].get("repeats", 0)) for e in events if e["action"] == "resolve")
    repeats += sum(int(doc["count"]) - 1 for doc in incidents if doc.get("status") == "open")
    by_key: dict[str, int] = {}
    for event in triggers:
        by_key[event["dedup_key"]] = by_key.get(event["dedup_key"], 0) + 1
    by_severity = {s: sum(1 for e in triggers if e["severity"] == s) for s in SEVERITIES}
    return {
        "incidents": len(incidents),
        "openings": sum(1 + int(doc.get("history", 0)) for doc in incidents),
        "notifications": len(triggers),  # openings + escalations
        "escalations": escalations,
        "most_notifications_per_key": max(by_key.values(), default=0),
        "repeats_suppressed": repeats,
        "by_severity": by_severity,
        "pages": [
            e["dedup_key"]
            for e in triggers
            if severity_rank(e["severity"]) >= severity_rank(page_severity)
        ],
        "open": sorted(doc["dedup_key"] for doc in incidents if doc.get("status") == "open"),
    }
