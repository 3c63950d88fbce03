"""Monitoring records: one JSON document per view and partition, what the checks, the sensors,
the CLI and the demo's timeline read (``monitoring/<view>/<partition>.json``).

Three views, each per model version and role (production, canary, shadow, control): ``health``
(hourly), ``drift`` and ``accuracy`` (daily). A record carries its ``problems`` (sentences, empty
when healthy); :func:`publish` writes it and says whether the finding is *new*, so that a
partition recomputed with the same problems does not page anyone twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core import keyspace
from fraudloop.core.store import ObjectNotFound, ObjectStore

PREFIX = keyspace.MONITORING
GROUPS = ["model_version", "role"]


def record_key(view: str, partition: str, suffix: str = "json") -> str:
    return f"{PREFIX}/{view}/{partition}.{suffix}"


def write_record(store: ObjectStore, view: str, partition: str, record: dict[str, Any]) -> str:
    key = record_key(view, partition)
    body = {**record, "view": view, "partition": partition, "computed_at": _now()}
    store.put_bytes(key, json.dumps(body, indent=2, sort_keys=True, default=_json).encode())
    return key


def read_record(store: ObjectStore, view: str, partition: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(record_key(view, partition)))
    except ObjectNotFound:
        return None


def list_records(store: ObjectStore, view: str) -> dict[str, float]:
    """partition -> write time of every record of `view`."""
    base = f"{PREFIX}/{view}/"
    return {
        info.key[len(base) : -len(".json")]: info.modified
        for info in store.list(base)
        if info.key.endswith(".json") and "/" not in info.key[len(base) :]
    }


def publish(store: ObjectStore, view: str, partition: str, record: dict[str, Any]) -> bool:
    """Write the record; True when it has problems it did not have before (a new finding)."""
    previous = read_record(store, view, partition) or {}
    write_record(store, view, partition, record)
    return bool(record.get("problems")) and record["problems"] != previous.get("problems")


def production_row(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the role that answered most traffic as production (one version per day
    normally; after a promotion the day has two, and the newer, busier one speaks for it)."""
    rows = [r for r in records if r["role"] == "production"]
    if not rows:
        return None
    return max(rows, key=lambda r: (r.get("requests", r.get("predictions", 0)), r["model_version"]))


def judged_version(record: dict[str, Any]) -> int | None:
    """The production version a drift or accuracy record judged."""
    if "model_version" in record:
        return record["model_version"]
    return (record.get("production") or {}).get("model_version")


def _now() -> str:
    # microseconds: sensors use it as a cursor, and records are written many per second
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
