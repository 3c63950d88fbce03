"""Which landed files are new or changed since the last look, and how to group them into runs.

The state kept between looks is small and does not grow with history: a watermark (the newest
write time seen) and the files written within `lag_seconds` of it. A file counts as new when it
was written after the watermark minus the lag and its (key, etag) pair was not seen then; an
overwritten file gets a new write time and a new etag, so a corrected re-delivery is seen too,
and so is a late file for an old hour. The lag covers writers whose objects become visible a
little after their timestamp (S3 multipart uploads, clock skew between writers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from fraudloop.core.hours import day_start, hour_start
from fraudloop.core.keyspace import partition_from_landing_key
from fraudloop.core.store import ObjectInfo

DEFAULT_LAG_SECONDS = 600.0


@dataclass
class WatchCursor:
    watermark: float = 0.0
    recent: dict[str, str] = field(default_factory=dict)
    # files seen but deliberately not handled yet (e.g. labels waiting for their transactions);
    # they are reported again on every look until they are handled, however old they get
    pending: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"watermark": self.watermark, "recent": self.recent, "pending": self.pending},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            float(data.get("watermark", 0.0)),
            dict(data.get("recent", {})),
            list(data.get("pending", [])),
        )


@dataclass(frozen=True)
class LandedFile:
    key: str
    table: str  # "transactions" | "labels"
    partition_key: str
    etag: str


def detect_changes(
    listing: Iterable[ObjectInfo], cursor: WatchCursor, lag_seconds: float = DEFAULT_LAG_SECONDS
) -> tuple[list[LandedFile], WatchCursor]:
    """New or changed feed files in `listing` (and still-pending ones), and the cursor to store
    after handling them; add what is deferred again with `defer`."""
    infos = [info for info in listing if partition_from_landing_key(info.key)]
    horizon = cursor.watermark - lag_seconds
    pending = set(cursor.pending)
    changed = [
        info
        for info in infos
        if info.key in pending
        or (info.modified > horizon and cursor.recent.get(info.key) != info.etag)
    ]
    watermark = max([cursor.watermark, *(info.modified for info in infos)])
    recent = {info.key: info.etag for info in infos if info.modified > watermark - lag_seconds}
    files = []
    for info in sorted(changed, key=lambda i: i.key):
        table, partition_key = partition_from_landing_key(info.key)
        files.append(LandedFile(info.key, table, partition_key, info.etag))
    return files, WatchCursor(watermark, recent)


def defer(cursor: WatchCursor, files: Iterable[LandedFile]) -> WatchCursor:
    """The cursor with `files` kept pending: they are reported again on the next look."""
    return WatchCursor(
        cursor.watermark, cursor.recent, sorted({*cursor.pending, *(f.key for f in files)})
    )


@dataclass(frozen=True)
class PartitionRun:
    """One run to request: a contiguous range of partitions of one table and the file versions
    (``key@sha256``) that caused it; `run_key` makes each set of file versions run once."""

    table: str
    start: str
    end: str
    file_versions: tuple[str, ...]

    @property
    def run_key(self) -> str:
        if len(self.file_versions) == 1:
            return self.file_versions[0]
        digest = hashlib.sha256("\n".join(self.file_versions).encode()).hexdigest()[:32]
        return f"{self.table}:{self.start}..{self.end}:{digest}"


def group_into_runs(versions: Iterable[tuple[LandedFile, str]]) -> list[PartitionRun]:
    """Group (file, sha256) pairs into runs of contiguous partitions per table.

    A whole history landing at once becomes one range run (the assets' single-run backfill
    policy handles the range), while the steady state (one file an hour) gives one run per
    partition, so each partition keeps its own exact data version.
    """
    by_table: dict[str, dict[str, list[str]]] = {}
    for landed, sha in versions:
        by_table.setdefault(landed.table, {}).setdefault(landed.partition_key, []).append(
            f"{landed.key}@{sha}"
        )
    return [
        _run(table, group, partitions)
        for table, partitions in sorted(by_table.items())
        for group in contiguous(table, partitions)
    ]


def contiguous(table: str, keys: Iterable[str]) -> list[list[str]]:
    """Partition keys of `table` (hours of transactions, days of labels), sorted, in runs of
    consecutive partitions."""
    step = timedelta(hours=1) if table == "transactions" else timedelta(days=1)
    start_of = hour_start if table == "transactions" else day_start
    groups: list[list[str]] = []
    for key in sorted(keys):
        if groups and start_of(key) - start_of(groups[-1][-1]) == step:
            groups[-1].append(key)
        else:
            groups.append([key])
    return groups


def _run(table: str, group: list[str], partitions: dict[str, list[str]]) -> PartitionRun:
    versions = tuple(sorted(v for key in group for v in partitions[key]))
    return PartitionRun(table, group[0], group[-1], versions)


def labels_waiting(
    versions: Iterable[tuple[LandedFile, str]], hours_being_ingested: Iterable[str]
) -> list[LandedFile]:
    """Label files that must wait: labels are checked against the transactions they refer to,
    so a label file of day D waits while transactions of hours up to the end of D are being
    ingested (landed in this look, or in a run still in flight). Only those: with feeds landing
    continuously some ingestion is always running, and waiting for all of it would starve the
    labels."""
    versions = list(versions)
    busy = [f.partition_key for f, _ in versions if f.table == "transactions"]
    busy += [k for k in hours_being_ingested if k]
    first_busy = min(busy, default=None)
    if first_busy is None:
        return []
    return [
        f for f, _ in versions if f.table == "labels" and first_busy <= f"{f.partition_key}-23:00"
    ]
