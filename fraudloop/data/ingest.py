"""From landed feed files to a validated canonical partition, or a quarantine record.

Steps for one partition (an hour of transactions, a day of labels):

1. every landed file is read (:mod:`fraudloop.data.read`) and normalised
   (:mod:`fraudloop.data.normalise`); a file that cannot be read as a table with the required
   columns is structurally broken and holds back the whole partition;
2. row checks (:mod:`fraudloop.data.rows`) run over all files together: an invalid row is
   rejected on its own, unless its file's rejected share passes the policy's
   ``max_rejected_share`` (then the file is wrong, not a few rows, and the partition is held);
3. the Great Expectations suite of :mod:`fraudloop.data.validation` runs on the accepted rows
   (partition-level checks such as the row-count history, and the evidence in the pointer);
4. a clean partition is written by :func:`fraudloop.core.tables.write_partition`, the rejected
   rows of each file are quarantined beside the file's bytes, and the hour's ids go to the
   cross-hour index (:mod:`fraudloop.data.id_index`). Otherwise every file of the partition
   is copied to quarantine with a reason and the partition pointer says "quarantined", so no
   reader can use it.

A partition is held back as a whole when one of its files is: a partial hour would silently
give wrong velocity and terminal features, a missing one is visibly blocked.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core import keyspace, tables
from fraudloop.core.hours import day_start, hour_start
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.store import ObjectStore, sha256_hex
from fraudloop.core.tables import canonical_order, mark_quarantined, write_partition
from fraudloop.data import held_labels, id_index, plausibility
from fraudloop.data.expectations import Problem, ValidationOutcome, jsonable
from fraudloop.data.normalise import normalise_labels, normalise_transactions
from fraudloop.data.plausibility import amount_profile
from fraudloop.data.policy import IngestPolicy
from fraudloop.data.quarantine import (
    quarantine_files,
    quarantine_rows,
    summarise,
    write_rejected_rows,
)
from fraudloop.data.read import csv_records, read_landed_file
from fraudloop.data.rows import RowVerdict, label_verdict, transaction_verdict
from fraudloop.data.validation import (
    LabelSuiteParams,
    TransactionSuiteParams,
    as_id_index,
    history_basis,
    row_count_bounds,
    validate_labels,
    validate_transactions,
    validate_transactions_hours,
)
from fraudloop.feeds.deliveries import landing_prefix, superseded

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
    # per landed file: key, rows, rows_accepted, rows_rejected, rejected_by_reason, status
    # ("ingested" | "rows_rejected" | "quarantined" | "held_back"), quarantine_key, summary
    files: list[dict[str, Any]] = field(default_factory=list)
    rows_rejected: int = 0
    rows_held: int = 0  # labels waiting for an unreadable transactions hour (not ingested yet)
    held_key: str | None = None  # their record (fraudloop.data.held_labels)
    timings: dict[str, float] = field(default_factory=dict)
    validation: ValidationOutcome | None = None
    data_docs_key: str | None = None  # the Great Expectations Data Docs page of the validation

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
            "files": jsonable(self.files),
            "rows_rejected": self.rows_rejected,
            "rows_held": self.rows_held,
            "held_key": self.held_key,
            "sources": jsonable(self.sources),
            "timings": dict(self.timings),
            "validation": self.validation.to_dict() if self.validation else None,
            "data_docs_key": self.data_docs_key,
        }


def landed_keys(store: ObjectStore, table: str, partition_key: str) -> list[str]:
    """The keys of the current feed files of one partition, sorted.

    Only direct children of the landing folder; hidden (``.x``), marker and ledger (``_x``)
    and ``*.reason.json`` files are skipped, and so are files a corrected delivery superseded
    (:mod:`fraudloop.feeds.deliveries`).
    """
    prefix = landing_prefix(table, partition_key)
    replaced = superseded(store, table, partition_key)
    out = []
    for info in store.list(prefix):
        rest = info.key[len(prefix) :]
        if "/" in rest or rest.startswith((".", "_")) or rest.endswith(".reason.json"):
            continue
        if info.key not in replaced:
            out.append(info.key)
    return out


def landed_files(store: ObjectStore, table: str, partition_key: str) -> list[tuple[str, bytes]]:
    """The current feed files of one partition (:func:`landed_keys`) with their bytes."""
    return [(key, store.get_bytes(key)) for key in landed_keys(store, table, partition_key)]


LISTED_WHEN_WHOLE = 1_000  # rejected rows listed for a file quarantined whole (all: otherwise)


@dataclass
class _Delivery:
    """One landed file on its way through ingestion."""

    key: str
    data: bytes
    source: dict[str, Any]
    format: str | None = None
    frame: pd.DataFrame | None = None  # normalised, rows in file order
    value_problems: list[Problem] = field(default_factory=list)


def _read_all(files, table, partition_key, normalise, limits, timings, notes):
    """Read and normalise every file; structural problems (a file that cannot be read as a
    table of the right columns) are returned, a value that does not parse is left to the row
    checks."""
    deliveries, problems = [], []
    for key, data in files:
        delivery = _Delivery(key, data, {"key": key, "sha256": sha256_hex(data), "size": len(data)})
        t = time.perf_counter()
        read = read_landed_file(key, data, limits)
        timings["read_s"] += time.perf_counter() - t
        delivery.format = delivery.source["format"] = read.format
        problems += read.problems
        if read.frame is not None:
            t = time.perf_counter()
            frame, found = normalise(
                read.frame, partition_key, source=key, notes=notes, lenient=True
            )
            timings["normalise_s"] += time.perf_counter() - t
            if frame is None:
                problems += found
            else:
                delivery.frame, delivery.value_problems = frame, found
                delivery.source["rows"] = len(frame)
        deliveries.append(delivery)
    return deliveries, problems


def _rejected_rows(delivery: _Delivery, positions: np.ndarray, verdict, offset: int) -> list:
    """The rejected rows of one file as the quarantine lists them: row number, line number
    (CSV), reasons, and the row as delivered."""
    records = csv_records(delivery.data) if delivery.format == "csv" else None
    frame = delivery.frame
    rows = []
    for position in positions:
        position = int(position)
        row: dict[str, Any] = {
            "row": position + 1,
            "reasons": verdict.reasons_of(offset + position),
        }
        if records is not None and position < len(records):
            row["line"], row["raw"] = records[position]
        else:
            row["raw"] = json.dumps(jsonable(frame.iloc[position].to_dict()), allow_nan=False)
        rows.append(row)
    return rows


def _judge_rows(
    table: str,
    partition_key: str,
    deliveries: list[_Delivery],
    row_check,
    limits: IngestPolicy,
) -> tuple[pd.DataFrame, pd.Series, list[Problem], list[dict[str, Any]]]:
    """Row checks over every file of the partition at once (ids must be unique across files).

    Returns the accepted rows, the ids of the rejected ones, the file-level problems (a file
    whose rejected share passes ``limits.max_rejected_share``) and, per file, what happened to
    its rows.
    """
    frames = [d.frame for d in deliveries]
    combined = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    verdict = row_check(combined)
    rejected, held = verdict.rejected, verdict.held
    problems, files = [], []
    offset = 0
    for delivery in deliveries:
        n = len(delivery.frame)
        own = np.zeros(len(combined), dtype=bool)
        own[offset : offset + n] = True
        positions = np.flatnonzero(rejected[offset : offset + n])
        counts = verdict.counts(own)
        share = len(positions) / n if n else 0.0
        name = posixpath.basename(delivery.key)
        result = {
            "key": delivery.key,
            "rows": n,
            "rows_rejected": len(positions),
            "rows_accepted": int(n - len(positions)),
            "rejected_by_reason": counts,
            "status": "ingested",
        }
        waiting = np.flatnonzero(held[offset : offset + n])
        if len(waiting):  # not rejected, not ingested: they wait (and do not count as bad)
            result["rows_held"] = len(waiting)
            result["rows_accepted"] -= len(waiting)
            result["held_by_reason"] = verdict.held_counts(own)
            result["held"] = _rejected_rows(delivery, waiting, verdict, offset)
        if len(positions):
            whole = share > limits.max_rejected_share
            # a file quarantined whole keeps its bytes: its first rows are listed as examples
            listed = positions[:LISTED_WHEN_WHOLE] if whole else positions
            result["rejected"] = _rejected_rows(delivery, listed, verdict, offset)
            top = ", ".join(f"{reason}: {count:,}" for reason, count in counts.items())
            if whole:
                problems.append(
                    Problem(
                        "rows",
                        "rejected_share",
                        f"{len(positions):,} of {n:,} rows ({share:.1%}) are invalid, over the "
                        f"limit of {limits.max_rejected_share:.1%} for rejecting rows one by "
                        f"one ({top})",
                        unexpected_count=len(positions),
                        examples=[row.get("raw") for row in result["rejected"][:5]],
                        source=delivery.key,
                    )
                )
                problems += delivery.value_problems
                result["status"] = "quarantined"
            else:
                result["status"] = "rows_rejected"
                result["summary"] = (
                    f"{table} {partition_key}: {len(positions):,} of {n:,} rows of {name} "
                    f"rejected ({top}); {result['rows_accepted']:,} ingested"
                )
        files.append(result)
        offset += n
    accepted = combined[~rejected & ~held].reset_index(drop=True)
    return accepted, combined.loc[rejected, "transaction_id"], problems, files


@dataclass
class _Prepared:
    """A partition read and judged row by row, before its Great Expectations verdict."""

    outcome: IngestOutcome
    files: list[tuple[str, bytes]]
    deliveries: list[_Delivery] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: the accepted rows in canonical form, to validate (None: the partition is already lost)
    canonical: pd.DataFrame | None = None
    rejected_ids: pd.Series | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = 0.0

    @property
    def frames(self) -> list[pd.DataFrame]:
        return [d.frame for d in self.deliveries if d.frame is not None]


def _ingest(
    store: ObjectStore,
    table: str,
    partition_key: str,
    files: Sequence[tuple[str, bytes]],
    normalise,
    row_check,
    validate,
    limits: IngestPolicy,
    file_check=None,
) -> IngestOutcome:
    """``file_check(key, frame)`` judges a whole file's normalised rows (a Problem or None)."""
    prepared = _prepare(table, partition_key, files, normalise, row_check, limits, file_check)
    if prepared.canonical is not None:
        t = time.perf_counter()
        validation = validate(prepared.canonical)
        prepared.timings["validate_s"] = time.perf_counter() - t
        _judge(store, prepared, validation)
    return _finish(store, prepared)


def _prepare(
    table: str, partition_key: str, files, normalise, row_check, limits: IngestPolicy, file_check
) -> _Prepared:
    """Read, normalise and row-check a partition's files: its accepted rows, or the problems
    that lose it whole."""
    timings = {"read_s": 0.0, "normalise_s": 0.0, "rows_s": 0.0, "validate_s": 0.0}
    timings["write_s"] = 0.0
    prepared = _Prepared(
        IngestOutcome(table, partition_key, "missing"),
        sorted(files, key=lambda f: f[0]),
        timings=timings,
        started=time.perf_counter(),
    )
    outcome = prepared.outcome
    if not prepared.files:
        outcome.reason_summary = f"no files landed for {table} {partition_key}"
        return prepared
    notes: list[str] = []
    deliveries, problems = _read_all(
        prepared.files, table, partition_key, normalise, limits, timings, notes
    )
    prepared.deliveries = deliveries
    outcome.sources, outcome.notes = [d.source for d in deliveries], notes
    if not problems:
        t = time.perf_counter()
        accepted, prepared.rejected_ids, problems, outcome.files = _judge_rows(
            table, partition_key, deliveries, row_check, limits
        )
        timings["rows_s"] = time.perf_counter() - t
        outcome.rows_rejected = sum(f["rows_rejected"] for f in outcome.files)
        outcome.rows_held = sum(f.get("rows_held", 0) for f in outcome.files)
        if not problems and accepted.empty and not outcome.rows_held:
            problems.append(Problem("rows", "no_valid_rows", "no row of the partition is valid"))
        if not problems and file_check is not None:
            problems = _check_files(deliveries, outcome.files, file_check)
    prepared.problems = problems
    if not problems:
        t = time.perf_counter()
        prepared.canonical = _concat(table, [accepted])
        timings["normalise_s"] += time.perf_counter() - t
    return prepared


def _judge(store: ObjectStore, prepared: _Prepared, validation: ValidationOutcome) -> None:
    """Record the Great Expectations verdict on the accepted rows, and its Data Docs page."""
    prepared.outcome.validation = validation
    prepared.problems += validation.problems
    prepared.outcome.data_docs_key = _write_data_docs(store, prepared.outcome)


def _finish(store: ObjectStore, prepared: _Prepared) -> IngestOutcome:
    """Write the partition's version, or quarantine it with its problems."""
    outcome, timings = prepared.outcome, prepared.timings
    if not prepared.files:
        outcome.timings = {**timings, "total_s": round(time.perf_counter() - prepared.started, 4)}
        return outcome
    t = time.perf_counter()
    if not prepared.problems and prepared.canonical is not None:
        _accept(store, outcome, prepared.deliveries, prepared.canonical, prepared.rejected_ids)
    else:
        _quarantine_partition(store, outcome, prepared.files, prepared.problems, prepared.frames)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - prepared.started
    outcome.timings = {k: round(v, 4) for k, v in timings.items()}
    return outcome


def _check_files(deliveries: list[_Delivery], files: list[dict], file_check) -> list[Problem]:
    """Whole-file plausibility (a column that no longer looks like itself): a file that fails
    is quarantined, the partition with it."""
    problems = []
    for delivery, result in zip(deliveries, files, strict=True):
        problem = file_check(delivery.key, delivery.frame)
        if problem is not None:
            problems.append(problem)
            result["status"] = "quarantined"
    return problems


def _write_data_docs(store: ObjectStore, outcome: IngestOutcome) -> str | None:
    """Publish the validation's Data Docs page beside the reports, named by the validated inputs
    (so a re-run of the same delivery rewrites the same page)."""
    if outcome.validation is None or outcome.validation.data_docs is None:
        return None
    digest = sha256_hex("\n".join(sorted(s["sha256"] for s in outcome.sources)).encode())
    key = keyspace.data_docs_key(outcome.table, outcome.partition_key, digest[:16])
    store.put_bytes(key, outcome.validation.data_docs.encode())
    return key


def _accept(
    store, outcome: IngestOutcome, deliveries, canonical: pd.DataFrame, rejected_ids: pd.Series
) -> None:
    """Write the accepted rows as the partition's version; quarantine the rejected rows of each
    file beside the file's bytes."""
    table, partition_key = outcome.table, outcome.partition_key
    statistics = outcome.validation.statistics if outcome.validation else None
    if table == "transactions" and statistics is not None:
        # what the next days' files of this hour are compared with (fraudloop.data.plausibility)
        statistics = {**statistics, "amount_profile": amount_profile(canonical["amount"])}
    version = write_partition(
        store, table, partition_key, canonical, outcome.sources, validation=statistics
    )
    outcome.status = "valid"
    outcome.rows, outcome.sha256, outcome.key = version.rows, version.sha256, version.key
    outcome.created, outcome.bytes = version.created, version.bytes
    outcome.min_timestamp = version.pointer.get("min_timestamp")
    outcome.max_timestamp = version.pointer.get("max_timestamp")
    if table == "transactions":
        id_index.replace_hour(store, partition_key, canonical, rejected_ids)
    by_key = {d.key: d for d in deliveries}
    for result in outcome.files:
        if result["status"] != "rows_rejected":
            continue
        delivery = by_key[result["key"]]
        result["quarantine_key"] = quarantine_rows(
            store,
            table,
            partition_key,
            delivery.key,
            delivery.data,
            result.pop("rejected"),
            rows_total=result["rows"],
            rejected_by_reason=result["rejected_by_reason"],
            summary=result["summary"],
            value_problems=delivery.value_problems,
        )
        outcome.quarantine_keys.append(result["quarantine_key"])


def _quarantine_partition(store, outcome: IngestOutcome, files, problems, frames) -> None:
    """The whole partition is held back: every file to quarantine with the reasons, the
    pointer says quarantined, the hour's ids leave the index."""
    table, partition_key = outcome.table, outcome.partition_key
    outcome.status = "quarantined"
    outcome.problems = problems
    outcome.reason_summary = summarise(table, partition_key, problems)
    outcome.quarantine_keys = quarantine_files(
        store, table, partition_key, files, problems, reason_summary=outcome.reason_summary
    )
    by_source = dict(zip([k for k, _ in files], outcome.quarantine_keys, strict=True))
    if not outcome.files:  # stopped before the row checks: a file could not be read as a table
        broken = {p.source for p in problems}
        outcome.files = [
            {"key": key, "status": "quarantined" if key in broken else "held_back"}
            for key, _ in files
        ]
    outcome.rows_held = 0  # the whole file waits for a re-delivery, held rows with it
    for result in outcome.files:
        result.pop("held", None)
        result.pop("rows_held", None)
        result["quarantine_key"] = by_source[result["key"]]
        if result.get("rejected"):
            write_rejected_rows(store, result["quarantine_key"], result.pop("rejected"))
        if result["status"] != "quarantined":
            result["status"] = "held_back"
    if table == "transactions":
        id_index.replace_hour(store, partition_key, None)
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
        lines = [f"{title}: {outcome.rows:,} rows, sha256 `{outcome.sha256}`"]
        for file in outcome.files:
            if file.get("status") == "rows_rejected":
                lines.append(f"- {file['summary']} (quarantine: `{file['quarantine_key']}`)")
            for reason, count in file.get("held_by_reason", {}).items():
                name = posixpath.basename(file["key"])
                lines.append(f"- {count:,} row(s) of {name} {reason} (`{outcome.held_key}`)")
        return "\n".join(lines)
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


def _history(store: ObjectStore, partition_key: str, limits: IngestPolicy) -> list[dict]:
    """The same hour's valid pointers on earlier days: its row-count bounds and amount profiles
    (one read each, shared)."""
    return tables.history_pointers(
        store, "transactions", partition_key, limits.row_count_history_days
    )


def _transaction_params(
    partition_key: str, limits: IngestPolicy, history_counts: list[int]
) -> TransactionSuiteParams:
    return TransactionSuiteParams(
        hour_start=hour_start(partition_key),
        amount_max=float(limits.max_amount),
        row_bounds=row_count_bounds(
            history_counts, ratio=limits.row_count_ratio, slack=limits.row_count_slack
        ),
        row_bounds_basis=history_basis(history_counts),
    )


def _prepare_transactions(
    partition_key: str,
    files,
    params: TransactionSuiteParams,
    limits: IngestPolicy,
    elsewhere,
    history: list[dict],
) -> _Prepared:
    """`elsewhere(ids)`: the ids another hour already holds, mapped to that hour; `history`:
    :func:`_history`."""

    def row_check(frame: pd.DataFrame) -> RowVerdict:
        return transaction_verdict(
            frame,
            hour_start=params.hour_start,
            amount_max=params.amount_max,
            id_pattern=limits.id_pattern,
            ingested_elsewhere=elsewhere(frame["transaction_id"]),
        )

    profiles = plausibility.history_profiles(history)

    def file_check(key: str, frame: pd.DataFrame) -> Problem | None:
        return plausibility.amounts_look_like_ids(
            frame["amount"], profiles, limits.amount_median_ratio, source=key
        )

    return _prepare(
        "transactions", partition_key, files, normalise_transactions, row_check, limits, file_check
    )


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
    history = _history(store, partition_key, limits)
    if history_counts is None:
        history_counts = tables.row_counts(history)
    params = _transaction_params(partition_key, limits, history_counts)
    prepared = _prepare_transactions(
        partition_key,
        files,
        params,
        limits,
        lambda ids: id_index.ingested_elsewhere(store, partition_key, ids),
        history,
    )
    if prepared.canonical is not None:
        t = time.perf_counter()
        validation = validate_transactions(prepared.canonical, params=params)
        prepared.timings["validate_s"] = time.perf_counter() - t
        _judge(store, prepared, validation)
    return _finish(store, prepared)


def ingest_transactions_hours(
    store: ObjectStore,
    hours: Sequence[tuple[str, Sequence[tuple[str, bytes]]]],
    limits: IngestPolicy | None = None,
) -> list[IngestOutcome]:
    """Ingest several hours of one day (in order) with one Great Expectations validation.

    The verdicts are exactly those of :func:`ingest_transactions_hour` hour after hour: each
    hour is read and row-checked as if the hours before it were already written (their
    accepted ids count as ingested, the ids their earlier versions held do not), and the rows
    the row checks accept are validated together (:func:`validate_transactions_hours`). In the
    usual case, where that validation passes, every hour passes its own suite and they are all
    written; when it fails, the hours are ingested one by one instead, each with its own
    verdict and messages. Why only within a day: an hour's row-count bounds and amount profile
    come from the same hour on earlier days, which must be written first.
    """
    limits = limits or IngestPolicy()
    days = {hour_start(key).date() for key, _ in hours}
    if len(days) > 1:
        raise ValueError(f"ingest_transactions_hours takes the hours of one day, got {len(days)}")
    index = id_index.load(store)
    accepted: dict[str, pd.Series] = {}  # hour -> the ids it accepts, for the hours after it
    prepared_hours: list[tuple[_Prepared, TransactionSuiteParams]] = []
    ordered = sorted(hours, key=lambda item: item[0])
    for key, files in ordered:
        history = _history(store, key, limits)
        params = _transaction_params(key, limits, tables.row_counts(history))
        prepared = _prepare_transactions(
            key, files, params, limits, _elsewhere_before(store, key, index, accepted), history
        )
        prepared_hours.append((prepared, params))
        if prepared.canonical is not None:
            accepted[key] = prepared.canonical["transaction_id"].astype("string")
        elif prepared.files:  # lost whole: writing its quarantine takes its ids off the index
            accepted[key] = pd.Series(dtype="string")
        # (an hour with nothing landed leaves the index as it is)
    checked = [(p.canonical, params) for p, params in prepared_hours if p.canonical is not None]
    if checked:
        t = time.perf_counter()
        validation = validate_transactions_hours(checked)
        seconds = (time.perf_counter() - t) / len(checked)
        if not validation.passed:
            return [
                ingest_transactions_hour(store, k, files, limits=limits) for k, files in ordered
            ]
        docs = _write_hours_data_docs(store, validation, [p for p, _ in prepared_hours])
        for prepared, _ in prepared_hours:
            if prepared.canonical is not None:
                prepared.timings["validate_s"] = seconds  # its share of the one validation
                prepared.outcome.validation = validation
                prepared.outcome.data_docs_key = docs
    return [_finish(store, prepared) for prepared, _ in prepared_hours]


def _elsewhere_before(store: ObjectStore, key: str, index: pd.DataFrame, accepted: dict):
    """`elsewhere(ids)` for an hour of a batch: the index as it was before the batch, except
    that the batch's earlier hours hold the ids they accept now (what the index would say had
    they been written first)."""
    before = dict(accepted)

    def elsewhere(ids: pd.Series) -> pd.Series:
        found = id_index.ingested_elsewhere(store, key, ids, index=index)
        found = found[~found.isin(before.keys())]
        out = dict(found.items())
        ids = ids.astype("string").dropna()
        for hour, held in before.items():
            for tx_id in ids[ids.isin(held)]:
                if str(tx_id) not in out or hour < out[str(tx_id)]:
                    out[str(tx_id)] = hour
        return pd.Series(out, dtype="string")

    return elsewhere


def _write_hours_data_docs(
    store: ObjectStore, validation: ValidationOutcome, prepared: list[_Prepared]
) -> str | None:
    """The Data Docs page of one validation of several hours, named by their range and inputs."""
    if validation.data_docs is None:
        return None
    sources = sorted(s["sha256"] for p in prepared for s in p.outcome.sources)
    digest = sha256_hex("\n".join(sources).encode())
    keys = [p.outcome.partition_key for p in prepared]
    key = keyspace.data_docs_key("transactions", f"{keys[0]}..{keys[-1]}", digest[:16])
    store.put_bytes(key, validation.data_docs.encode())
    return key


def ingest_labels_day(
    store: ObjectStore,
    day_key: str,
    files: Sequence[tuple[str, bytes]],
    known_transaction_ids: Iterable[str] | pd.Series | pd.Index | None = None,
    limits: IngestPolicy | None = None,
    *,
    mostly: float | None = None,
    unreadable_hours: Sequence[str] = (),
) -> IngestOutcome:
    """Ingest one day of labels; with ``known_transaction_ids`` every label must refer to one
    (at least a share ``mostly`` of them; default ``limits.known_ids_mostly``, i.e. 1.0).
    See :func:`fraudloop.core.tables.known_transaction_ids` for the set.

    ``unreadable_hours`` (:func:`fraudloop.core.tables.unreadable_hours`) are quarantined hours
    whose ids could not be read: a label of an unknown transaction that may be theirs is held
    (recorded by :mod:`fraudloop.data.held_labels`, re-ingested once such an hour is), the rest
    of the day is ingested."""
    limits = limits or IngestPolicy()
    params = LabelSuiteParams(
        day_start=day_start(day_key),
        check_known_ids=known_transaction_ids is not None,
        known_ids_mostly=float(limits.known_ids_mostly if mostly is None else mostly),
    )
    known, hold_limit = None, None
    if known_transaction_ids is not None and unreadable_hours:
        known = as_id_index(known_transaction_ids)
        hold_limit = held_labels.hold_limit(store, unreadable_hours, limits)

    def row_check(frame: pd.DataFrame) -> RowVerdict:
        return label_verdict(
            frame,
            day_start=params.day_start,
            id_pattern=limits.id_pattern,
            transaction_times=id_index.transaction_times(store, frame["transaction_id"]),
            rejected_transactions=id_index.rejected_transactions(store, frame["transaction_id"]),
            known_ids=known,
            unreadable_hours=unreadable_hours if known is not None else (),
            hold_limit=hold_limit,
        )

    outcome = _ingest(
        store,
        "labels",
        day_key,
        files,
        normalise_labels,
        row_check,
        lambda frame: validate_labels(
            frame, known_transaction_ids=known_transaction_ids, params=params
        ),
        limits,
    )
    if outcome.status != "missing":
        outcome.held_key = held_labels.update(store, outcome, unreadable_hours)
    return outcome
