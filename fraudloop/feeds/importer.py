"""Bring your own history: split an existing transactions/labels export into the landing layout.

A team with real data starts from its own history instead of the simulator: the export is cut
into the hourly/daily files a live feed would have delivered, and then goes through exactly the
same ingestion, validation and quarantine as everything else. The importer only places rows; it
does not judge them (that is ingestion's job), except for rows it cannot place at all (no
parseable timestamp), which it quarantines with a reason instead of dropping.
"""

from __future__ import annotations

import io
import json
import posixpath
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from fraudloop.core.hours import hour_key
from fraudloop.core.keyspace import (
    day_landing_prefix,
    hour_landing_prefix,
    partition_from_landing_key,
)
from fraudloop.core.store import ObjectStore, sha256_hex
from fraudloop.feeds import deliveries

IMPORT_STREAM = "import-"  # the importer's files in a partition: the newest export is current


@dataclass
class ImportSummary:
    transaction_rows: int = 0
    transaction_files: int = 0
    label_rows: int = 0
    label_files: int = 0
    unplaced_rows: int = 0
    superseded: int = 0  # earlier imported files a corrected export replaced
    notes: list[str] = field(default_factory=list)


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["TX_ID=transaction_id", ...]`` -> ``{"TX_ID": "transaction_id"}``, with clear errors."""
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--map takes SOURCE=canonical, got {pair!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def read_table(path: str | Path) -> pd.DataFrame:
    """CSV (any common compression, by extension) or Parquet, every column as text for CSV."""
    path = Path(path)
    suffixes = "".join(path.suffixes).lower()
    try:
        if ".parquet" in suffixes:
            return pd.read_parquet(path)
        if ".csv" in suffixes or ".txt" in suffixes:
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, EOFError, zlib.error) as error:
        # a .csv.gz that is not gzip, or cut short: one line naming the file, not a traceback
        # (found by tests/fuzz); a missing file stays FileNotFoundError
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot be read: {type(error).__name__}: {error}") from None
    raise ValueError(f"{path}: expected a .csv(.gz) or .parquet file")


def _parse_utc(values: pd.Series) -> pd.Series:
    """The ingestion rule: offsets are converted to UTC, timestamps without one are UTC."""
    from fraudloop.core.timestamps import parse_iso8601_utc

    return parse_iso8601_utc(values.astype("string").str.strip())


def _write(store: ObjectStore, key: str, frame: pd.DataFrame, fmt: str) -> None:
    buffer = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(buffer, index=False)
    else:
        frame.to_csv(buffer, index=False, lineterminator="\n")
    store.put_bytes(key, buffer.getvalue())


def _quarantine_unplaced(store: ObjectStore, name: str, frame: pd.DataFrame, reason: str) -> None:
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    key = f"quarantine/import/{name}.unplaced.csv"
    store.put_bytes(key, data)
    record = {
        "source": name,
        "rows": len(frame),
        "sha256": sha256_hex(data),
        "detected_at": datetime.now(UTC).isoformat(),
        "summary": reason,
    }
    store.put_bytes(key + ".reason.json", json.dumps(record, indent=2).encode())


def _days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _supersede_stream(
    store: ObjectStore,
    table: str,
    written: dict[str, str],
    days: list[str],
    source: str,
) -> int:
    """Every partition of ``days`` gets ``written[partition]`` as its one importer delivery;
    a partition of those days that the export has no rows for keeps none. Returns how many
    earlier deliveries were superseded (recorded in each partition's ledger, bytes kept)."""
    partitions = set(written)
    for day in days:
        prefix = f"{day_landing_prefix(day)}" if table == "labels" else f"landing/{table}/{day}/"
        for info in store.list(prefix):
            if posixpath.basename(info.key).startswith(IMPORT_STREAM):
                found = partition_from_landing_key(info.key)
                if found and found[0] == table:
                    partitions.add(found[1])
    count = 0
    for partition in sorted(partitions):
        before = deliveries.superseded(store, table, partition)
        after = deliveries.make_current(
            store,
            table,
            partition,
            written.get(partition),
            IMPORT_STREAM,
            reason=f"re-import of {source}",
            by="fraudloop import",
        )
        count += len(set(after) - before)
    return count


def _in_range(days: pd.Series, first: date | None, last: date | None) -> pd.Series:
    keep = pd.Series(True, index=days.index)
    if first is not None:
        keep &= days >= first.isoformat()
    if last is not None:
        keep &= days <= last.isoformat()
    return keep


def import_history(
    store: ObjectStore,
    transactions_path: str | Path,
    labels_path: str | Path | None = None,
    mapping: dict[str, str] | None = None,
    fmt: str = "parquet",
    label_delay: timedelta = timedelta(days=7),
    first_day: date | None = None,
    last_day: date | None = None,
) -> ImportSummary:
    """Write ``landing/transactions/<day>/<hour>/import-<src>.<fmt>`` and daily label files.

    File names derive from the source file's hash, so importing the same export twice
    rewrites the same files (idempotent) and two different exports never collide. A new
    export supersedes the earlier import of every partition it covers (a corrected export
    replaces a broken one, recorded in the partition's ledger, old bytes kept; importing the
    old export again makes it current again). ``first_day``/``last_day`` (inclusive, UTC)
    import only those days and supersede only there. Labels without a ``known_at`` column get
    ``tx_datetime + label_delay`` (said in the summary notes).
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError("format must be csv or parquet")
    if first_day and last_day and first_day > last_day:
        raise ValueError(f"--from {first_day} is after --to {last_day}")
    mapping = mapping or {}
    summary = ImportSummary()
    tx_path = Path(transactions_path)
    transactions = read_table(tx_path).rename(columns=mapping)
    if "tx_datetime" not in transactions.columns:
        raise ValueError(
            f"{tx_path}: no tx_datetime column (columns: "
            f"{', '.join(repr(str(c)) for c in transactions.columns)}); "
            "use --map SOURCE=tx_datetime"
        )
    tag = sha256_hex(tx_path.read_bytes())[:12]
    when = _parse_utc(transactions["tx_datetime"])
    unplaced = transactions[when.isna()]
    if len(unplaced):
        summary.unplaced_rows = len(unplaced)
        _quarantine_unplaced(
            store,
            tx_path.name,
            unplaced,
            f"{len(unplaced)} row(s) have no parseable tx_datetime, so their hour is unknown",
        )
        summary.notes.append(f"{len(unplaced)} transaction rows quarantined (no timestamp)")
    placed_when = when[when.notna()]
    in_range = _in_range(placed_when.dt.strftime("%Y-%m-%d"), first_day, last_day)
    placed, placed_when = transactions[when.notna()][in_range], placed_when[in_range]
    written: dict[str, str] = {}
    for hour, rows in placed.groupby(placed_when.dt.floor("h"), sort=True):
        key = f"{hour_landing_prefix(hour_key(hour))}{IMPORT_STREAM}{tag}.{fmt}"
        _write(store, key, rows, fmt)
        written[hour_key(hour)] = key
        summary.transaction_files += 1
    summary.transaction_rows = len(placed)
    days = _covered_days(placed_when, first_day, last_day)
    summary.superseded += _supersede_stream(store, "transactions", written, days, tx_path.name)

    if labels_path is not None:
        labels = read_table(labels_path).rename(columns=mapping)
        if "known_at" not in labels.columns:
            tx_time = pd.Series(when.values, index=transactions["transaction_id"].astype(str))
            tx_time = tx_time[~tx_time.index.duplicated()]
            known = labels["transaction_id"].astype(str).map(tx_time) + label_delay
            labels = labels.assign(known_at=known.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
            summary.notes.append(f"labels had no known_at: set to tx_datetime + {label_delay}")
        known_at = _parse_utc(labels["known_at"])
        lab_tag = sha256_hex(Path(labels_path).read_bytes())[:12]
        bad = labels[known_at.isna()]
        if len(bad):
            summary.unplaced_rows += len(bad)
            _quarantine_unplaced(
                store,
                Path(labels_path).name,
                bad,
                f"{len(bad)} label row(s) have no known_at (nor a matching transaction)",
            )
        days = known_at[known_at.notna()].dt.strftime("%Y-%m-%d")
        in_range = _in_range(days, first_day, last_day)
        good, days = labels[known_at.notna()][in_range], days[in_range]
        written = {}
        for day, rows in good.groupby(days, sort=True):
            key = f"{day_landing_prefix(day)}{IMPORT_STREAM}{lab_tag}.{fmt}"
            _write(store, key, rows, fmt)
            written[day] = key
            summary.label_files += 1
        summary.label_rows = len(good)
        covered = _covered_days(known_at[known_at.notna()][in_range], first_day, last_day)
        summary.superseded += _supersede_stream(
            store, "labels", written, covered, Path(labels_path).name
        )
    if summary.superseded:
        summary.notes.append(
            f"{summary.superseded} earlier imported file(s) superseded (kept in landing; "
            "see each partition's _deliveries.json)"
        )
    return summary


def _covered_days(times: pd.Series, first: date | None, last: date | None) -> list[str]:
    """The days an import speaks for: the range asked for, else the days its rows span."""
    if times.empty and (first is None or last is None):
        return []
    start = first or times.min().date()
    end = last or times.max().date()
    return _days(start, end)
