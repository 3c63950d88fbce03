"""Labels held back while the transactions hour they may belong to cannot be read.

When an hour's transaction file is quarantined whole because it is not a table (binary junk,
truncated Parquet, non-UTF-8 bytes), its ids are unknown. The labels of its transactions then
look like labels of transactions never delivered, and used to fail the label day's known-ids
check: a day of good labels quarantined for the transactions feed's fault. Rejecting just those
rows would still blame the label feed and lose them until someone re-ingested the day by hand.
So they are *held*: the rest of the label day is ingested, each held row is listed with a
reason naming the hour(s) it waits for, and once one of those hours is ingested (a corrected
re-delivery, or a delivery whose ids can at least be read) the label day is ingested again from
its landed files (``new_data_sensor`` asks for that run), which lets the held labels in, or
judges them as unknown if the hour does not hold them after all.

Layout: ``held/labels/<day>.json``, one object per label day that holds rows (listing the
prefix is how the sensor finds them; a day with nothing held has none)::

    {"day": "2018-04-08", "rows_held": 30, "waiting_for": ["2018-04-01-06:00"],
     "held_at": "...", "files": [{"key": <landing key>, "rows_held": 30,
     "held_by_reason": {...}, "rows": [{"row": 3, "line": 4, "reasons": [...], "raw": "..."}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fraudloop.core import tables
from fraudloop.core.store import ObjectStore, sha256_hex
from fraudloop.data.policy import IngestPolicy
from fraudloop.data.validation import row_count_bounds

PREFIX = "held/labels/"


def held_key(day: str) -> str:
    return f"{PREFIX}{day}.json"


def hold_limit(store: ObjectStore, hours: Sequence[str], limits: IngestPolicy) -> int | None:
    """How many labels a day can hold for ``hours``: the upper row-count bound of each hour
    (from the same hour on earlier days), summed; None (no limit) when an hour has no history.
    More would not be those hours' labels."""
    total = 0
    for hour in hours:
        counts = tables.history_counts(store, "transactions", hour, limits.row_count_history_days)
        bounds = row_count_bounds(counts, limits.row_count_ratio, limits.row_count_slack)
        if bounds is None:
            return None
        total += bounds[1]
    return total


def update(store: ObjectStore, outcome, waiting_for: Sequence[str]) -> str | None:
    """After a label day's ingestion (an ``IngestOutcome``): record its held rows (popped from
    ``outcome.files``), or forget an earlier record when nothing is held any more (the day was
    ingested whole, or quarantined: then it waits for a label re-delivery, not for an hour).
    Returns the record's key, or None."""
    key = held_key(outcome.partition_key)
    files = []
    for file in outcome.files:
        rows = file.pop("held", None)
        if rows:
            files.append(
                {
                    "key": file["key"],
                    "rows_held": len(rows),
                    "held_by_reason": file.get("held_by_reason", {}),
                    "rows": rows,
                }
            )
    if outcome.status != "valid" or not files:
        if store.exists(key):
            store.delete(key)
        return None
    record = {
        "day": outcome.partition_key,
        "rows_held": sum(f["rows_held"] for f in files),
        "waiting_for": sorted(waiting_for),
        "held_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "files": files,
    }
    store.put_bytes(key, json.dumps(record, indent=1, allow_nan=False).encode())
    return key


def waiting(store: ObjectStore) -> list[dict[str, Any]]:
    """Every label day's record of held rows, oldest day first."""
    keys = sorted(i.key for i in store.list(PREFIX) if i.key.endswith(".json"))
    return [json.loads(store.get_bytes(k)) for k in keys]


def _ids_known(pointer: dict | None) -> bool:
    """The hour's ids can be read now: ingested, or quarantined with its delivered ids kept."""
    if not pointer:
        return False
    return pointer.get("status") == "valid" or bool(pointer.get("delivered_ids_key"))


def released(
    store: ObjectStore, ingesting: Callable[[], Sequence[tuple[str, str]]] = tuple
) -> list[tuple[str, str]]:
    """Label days to ingest again: one of the hours they wait for can be read now. Each as
    ``(day, version)``, the version naming those hours' current pointers (a run key: the same
    state asks for one run only).

    A day waiting for an hour inside one of the ranges `ingesting()` returns (hour keys,
    inclusive: the ingestion runs in flight; asked only when some day holds labels) waits on:
    its hours are still changing, and every change would ask for another run. In the Docker
    stack's test a retried 10-day ingestion released ten label days twice each as its hours
    landed: 20 runs, 4 minutes of the run queue."""
    out = []
    for record in waiting(store):
        if any(lo <= h <= hi for h in record["waiting_for"] for lo, hi in ingesting()):
            continue
        pointers = {h: tables.read_pointer(store, "transactions", h) for h in record["waiting_for"]}
        ready = sorted(h for h, p in pointers.items() if _ids_known(p))
        if ready:
            state = "|".join(
                f"{h}={pointers[h].get('sha256') or pointers[h].get('quarantined_at')}"
                for h in ready
            )
            out.append((record["day"], sha256_hex(state.encode())[:16]))
    return out
