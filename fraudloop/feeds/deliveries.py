"""Which landed files of a partition are current: a corrected delivery supersedes the earlier one.

Landed files are never modified or deleted, so a corrected re-delivery under a new name (the
importer names its files after the export's hash) lands beside the broken one; ingesting both
would hold every id twice. The ledger of a partition records which files are superseded:

    landing/transactions/<day>/<HH>/_deliveries.json    (labels: landing/labels/<day>/...)

    {"table": ..., "partition": ..., "entries": [
        {"at": ..., "current": <key>, "superseded": [<key>, ...], "reason": ..., "by": ...},
        ...]}

The last entry is the state; earlier entries are the history (recorded and reversible:
making an older file current again appends an entry that supersedes the newer one, and the old
bytes were never moved). Ingestion leaves superseded files out (:func:`current_files`). The
ledger lives in the landing folder so the new-data sensor sees a change of it and re-ingests
the partition; its ``_`` prefix keeps it out of the feed files.
"""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from typing import Any

from fraudloop.core import cas
from fraudloop.core.keyspace import day_landing_prefix, hour_landing_prefix
from fraudloop.core.store import ObjectNotFound, ObjectStore

LEDGER_NAME = "_deliveries.json"


def landing_prefix(table: str, partition_key: str) -> str:
    if table == "transactions":
        return hour_landing_prefix(partition_key)
    if table == "labels":
        return day_landing_prefix(partition_key)
    raise ValueError(f"unknown table {table!r}")


def ledger_key(table: str, partition_key: str) -> str:
    return landing_prefix(table, partition_key) + LEDGER_NAME


def read_ledger(store: ObjectStore, table: str, partition_key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(ledger_key(table, partition_key)))
    except ObjectNotFound:
        return None


def superseded(store: ObjectStore, table: str, partition_key: str) -> set[str]:
    """Landing keys of the partition that a later delivery replaced."""
    ledger = read_ledger(store, table, partition_key)
    if not ledger or not ledger.get("entries"):
        return set()
    return set(ledger["entries"][-1].get("superseded", []))


def make_current(
    store: ObjectStore,
    table: str,
    partition_key: str,
    current: str | None,
    stream: str,
    *,
    reason: str,
    by: str,
) -> list[str]:
    """Make ``current`` the one delivery of ``stream`` (file names starting with it) in the
    partition: every other file of the stream is superseded, ``current`` itself is not (so
    making an older file current again reverts a supersession). ``current=None`` supersedes the
    whole stream (a corrected export with no rows for this partition). Appends a ledger entry
    only when the state changes (compare-and-swap); returns the superseded keys."""
    prefix = landing_prefix(table, partition_key)
    stream_files = {
        info.key
        for info in store.list(prefix)
        if "/" not in info.key[len(prefix) :] and posixpath.basename(info.key).startswith(stream)
    }
    state: list[str] = []

    def build(data: bytes | None) -> bytes | None:
        ledger = (
            json.loads(data)
            if data
            else {"table": table, "partition": partition_key, "entries": []}
        )
        before = set(ledger["entries"][-1]["superseded"]) if ledger["entries"] else set()
        after = (before | stream_files) - {current}
        state[:] = sorted(after)
        if after == before:
            return None
        ledger["entries"].append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "current": current,
                "superseded": sorted(after),
                "newly_superseded": sorted(after - before),
                "restored": sorted(before - after),
                "reason": reason,
                "by": by,
            }
        )
        return json.dumps(ledger, indent=2).encode()

    cas.update(store, ledger_key(table, partition_key), build)
    return state
