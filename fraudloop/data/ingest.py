"""From landed feed files to a validated canonical partition, or a quarantine record.

Steps for one partition (an hour of transactions, a day of labels):

1. every landed file is read (:mod:`fraudloop.data.read`) and normalised
   (:mod:`fraudloop.data.normalise`);
2. the Great Expectations suite of :mod:`fraudloop.data.validation` runs on the concatenation;
3. a clean partition is written by :func:`fraudloop.core.tables.write_partition`; otherwise every
   file of the partition is copied to quarantine with a reason and the partition pointer says
   "quarantined", so no reader can use it.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core import tables
from fraudloop.core.hours import day_start, hour_start
from fraudloop.core.keyspace import day_landing_prefix, hour_landing_prefix
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.store import ObjectStore, sha256_hex
from fraudloop.core.tables import canonical_order, mark_quarantined, write_partition
from fraudloop.data.expectations import Problem, ValidationOutcome, jsonable
from fraudloop.data.normalise import normalise_labels, normalise_transactions
from fraudloop.data.policy import IngestPolicy
from fraudloop.data.quarantine import quarantine_files, summarise
from fraudloop.data.read import read_landed_file
from fraudloop.data.validation import (
    LabelSuiteParams,
    TransactionSuiteParams,
    history_basis,
    row_count_bounds,
    validate_labels,
    validate_transactions,
)

# --------------------------------------------------------------------------------------------
# One partition, end to end
# --------------------------------------------------------------------------------------------


@dataclass
class IngestOutcome:
    table: str
    partition_key: str
    status: str  # "valid" | "quarantined" | "missing" (nothing landed; nothing written)
    rows: int = 0
    sha256: str | None = None
    key: str | None = None
    created: bool = False  # a new raw version (False for a no-op re-ingest)
    bytes: int = 0  # size of the raw Parquet object
    min_timestamp: str | None = None  # ISO 8601, from the raw pointer
    max_timestamp: str | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reason_summary: str | None = None
    quarantine_keys: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    validation: ValidationOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.status == "valid"

    @property
    def reason(self) -> str | None:
        """The one-line summary (None when valid)."""
        return self.reason_summary

    @property
    def seconds(self) -> float:
        return float(self.timings.get("total_s", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "partition": self.partition_key,
            "status": self.status,
            "rows": self.rows,
            "sha256": self.sha256,
            "key": self.key,
            "created": self.created,
            "bytes": self.bytes,
            "min_timestamp": self.min_timestamp,
            "max_timestamp": self.max_timestamp,
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
            "reason_summary": self.reason_summary,
            "quarantine_keys": list(self.quarantine_keys),
            "sources": jsonable(self.sources),
            "timings": dict(self.timings),
            "validation": self.validation.to_dict() if self.validation else None,
        }


def landed_files(store: ObjectStore, table: str, partition_key: str) -> list[tuple[str, bytes]]:
    """The feed files of one partition, sorted by key.

    Only direct children of the landing folder; hidden (``.x``), marker (``_SUCCESS``) and
    ``*.reason.json`` files are skipped.
    """
    if table == "transactions":
        prefix = hour_landing_prefix(partition_key)
    elif table == "labels":
        prefix = day_landing_prefix(partition_key)
    else:
        raise ValueError(f"unknown table {table!r}")
    out = []
    for info in store.list(prefix):
        rest = info.key[len(prefix) :]
        if "/" in rest or rest.startswith((".", "_")) or rest.endswith(".reason.json"):
            continue
        out.append((info.key, store.get_bytes(info.key)))
    return out


def _ingest(
    store: ObjectStore,
    table: str,
    partition_key: str,
    files: Sequence[tuple[str, bytes]],
    normalise,
    validate,
    limits: IngestPolicy,
) -> IngestOutcome:
    started = time.perf_counter()
    timings = {"read_s": 0.0, "normalise_s": 0.0, "validate_s": 0.0, "write_s": 0.0}
    files = sorted(files, key=lambda f: f[0])
    outcome = IngestOutcome(table, partition_key, "missing")
    if not files:
        outcome.reason_summary = f"no files landed for {table} {partition_key}"
        outcome.timings = {**timings, "total_s": round(time.perf_counter() - started, 4)}
        return outcome
    frames, problems, notes, sources = [], [], [], []
    for key, data in files:
        source = {"key": key, "sha256": sha256_hex(data), "size": len(data)}
        t = time.perf_counter()
        read = read_landed_file(key, data, limits)
        timings["read_s"] += time.perf_counter() - t
        source["format"] = read.format
        problems += read.problems
        if read.frame is not None:
            t = time.perf_counter()
            frame, found = normalise(read.frame, partition_key, source=key, notes=notes)
            timings["normalise_s"] += time.perf_counter() - t
            problems += found
            if frame is not None:
                source["rows"] = len(frame)
                frames.append(frame)
        sources.append(source)
    outcome.sources, outcome.notes = sources, notes

    canonical = None
    if not problems:
        t = time.perf_counter()
        canonical = frames[0] if len(frames) == 1 else _concat(table, frames)
        timings["normalise_s"] += time.perf_counter() - t
        t = time.perf_counter()
        outcome.validation = validate(canonical)
        timings["validate_s"] = time.perf_counter() - t
        problems += outcome.validation.problems

    t = time.perf_counter()
    if not problems and canonical is not None:
        version = write_partition(
            store,
            table,
            partition_key,
            canonical,
            sources,
            validation=outcome.validation.statistics if outcome.validation else None,
        )
        outcome.status = "valid"
        outcome.rows, outcome.sha256, outcome.key = version.rows, version.sha256, version.key
        outcome.created, outcome.bytes = version.created, version.bytes
        outcome.min_timestamp = version.pointer.get("min_timestamp")
        outcome.max_timestamp = version.pointer.get("max_timestamp")
    else:
        outcome.status = "quarantined"
        outcome.problems = problems
        outcome.reason_summary = summarise(table, partition_key, problems)
        outcome.quarantine_keys = quarantine_files(
            store, table, partition_key, files, problems, reason_summary=outcome.reason_summary
        )
        ids_key = _keep_delivered_ids(store, table, partition_key, frames)
        mark_quarantined(
            store,
            table,
            partition_key,
            outcome.reason_summary,
            outcome.quarantine_keys,
            delivered_ids_key=ids_key,
        )
        outcome.rows = sum(len(f) for f in frames)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    outcome.timings = {k: round(v, 4) for k, v in timings.items()}
    return outcome


def _keep_delivered_ids(
    store: ObjectStore, table: str, partition_key: str, frames: list[pd.DataFrame]
) -> str | None:
    """Remember which transaction ids a quarantined hour delivered (when they could be read).

    Labels refer to transactions by id; a label for a transaction that was delivered in an hour
    that is now quarantined is not a bad label, so the label check counts these ids as known
    instead of rejecting a whole day of labels for one broken hour of transactions.
    """
    if table != "transactions":
        return None
    ids = [f["transaction_id"].dropna() for f in frames if "transaction_id" in f.columns]
    if not ids or not sum(len(i) for i in ids):
        return None
    table_ = pa.table({"transaction_id": pd.concat(ids).astype(str).sort_values().to_numpy()})
    buffer = pa.BufferOutputStream()
    pq.write_table(table_, buffer, compression="zstd")
    key = f"raw/{table}/{partition_key}/_quarantined_ids.parquet"
    store.put_bytes(key, buffer.getvalue().to_pybytes())
    return key


def reason_markdown(outcome: IngestOutcome) -> str:
    """Why a partition was not ingested, as Markdown for the Dagster UI and alerts."""
    title = f"**{outcome.table} `{outcome.partition_key}`: {outcome.status}**"
    if outcome.status == "valid":
        return f"{title}: {outcome.rows:,} rows, sha256 `{outcome.sha256}`"
    lines = [title, "", outcome.reason_summary or ""]
    if outcome.problems:
        lines += ["", "Problems:"]
        for p in outcome.problems:
            where = ", ".join(
                part
                for part in (
                    f"column `{p.column}`" if p.column else "",
                    f"file `{posixpath.basename(p.source)}`" if p.source else "",
                )
                if part
            )
            lines.append(f"- `{p.check}`{f' ({where})' if where else ''}: {p.message}")
    if outcome.quarantine_keys:
        lines += ["", "Quarantined (bytes unchanged, each with a `.reason.json`):"]
        lines += [f"- `{k}`" for k in outcome.quarantine_keys]
    return "\n".join(lines)


def _concat(table: str, frames: list[pd.DataFrame]) -> pd.DataFrame:
    columns = TRANSACTION_COLUMNS if table == "transactions" else LABEL_COLUMNS
    combined = pd.concat(frames, ignore_index=True)
    for col in combined.columns:
        if col not in columns and str(combined[col].dtype) != "string":
            combined[col] = combined[col].astype("string")
    if table == "labels" and combined["is_fraud"].notna().all():
        combined["is_fraud"] = combined["is_fraud"].astype("int8")
    return canonical_order(table, combined)


def ingest_transactions_hour(
    store: ObjectStore,
    partition_key: str,
    files: Sequence[tuple[str, bytes]],
    history_counts: list[int] | None = None,
    limits: IngestPolicy | None = None,
) -> IngestOutcome:
    """Ingest one hour of transactions: a new raw version, or quarantine with a reason.

    ``history_counts`` are row counts of comparable earlier partitions for the row-count bounds;
    None reads them from the raw pointers (:func:`fraudloop.core.tables.history_counts`), []
    disables the check. Only storage errors raise; bad input never does.
    """
    limits = limits or IngestPolicy()
    if history_counts is None:
        history_counts = tables.history_counts(
            store, "transactions", partition_key, limits.row_count_history_days
        )
    params = TransactionSuiteParams(
        hour_start=hour_start(partition_key),
        amount_max=float(limits.max_amount),
        row_bounds=row_count_bounds(
            history_counts, ratio=limits.row_count_ratio, slack=limits.row_count_slack
        ),
        row_bounds_basis=history_basis(history_counts),
    )
    return _ingest(
        store,
        "transactions",
        partition_key,
        files,
        normalise_transactions,
        lambda frame: validate_transactions(frame, params=params),
        limits,
    )


def ingest_labels_day(
    store: ObjectStore,
    day_key: str,
    files: Sequence[tuple[str, bytes]],
    known_transaction_ids: Iterable[str] | pd.Series | pd.Index | None = None,
    limits: IngestPolicy | None = None,
    *,
    mostly: float | None = None,
) -> IngestOutcome:
    """Ingest one day of labels; with ``known_transaction_ids`` every label must refer to one
    (at least a share ``mostly`` of them; default ``limits.known_ids_mostly``, i.e. 1.0).
    See :func:`fraudloop.core.tables.known_transaction_ids` for the set."""
    limits = limits or IngestPolicy()
    params = LabelSuiteParams(
        day_start=day_start(day_key),
        check_known_ids=known_transaction_ids is not None,
        known_ids_mostly=float(limits.known_ids_mostly if mostly is None else mostly),
    )
    return _ingest(
        store,
        "labels",
        day_key,
        files,
        normalise_labels,
        lambda frame: validate_labels(
            frame, known_transaction_ids=known_transaction_ids, params=params
        ),
        limits,
    )
