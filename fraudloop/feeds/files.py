"""The simulated feed as files: hourly transaction files and daily label files in the landing
layout, CSV or Parquet, optionally corrupted; the entry point of `fraudloop simulate`.

Three properties matter most:

- *Reproducible*: the same seed gives byte-identical files, and simulating days 1-10 then 11-20
  gives the same files as simulating 1-20 at once (compromises that started before the first
  requested day are replayed from their own streams).
- *Scalable*: everything is vectorised with numpy/pyarrow (no loop per customer or transaction).
- *Honest about time*: labels land ``label_delay`` after their transaction, grouped by the day
  they became known, and the fraud scenario stays in memory only (a feed would not know it).
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from fraudloop.core.hours import HOUR_KEY_FORMAT, hour_key, hour_start
from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.core.store import ObjectStore
from fraudloop.feeds.corruption import corrupt_file
from fraudloop.feeds.drift import Drift, parse_drifts
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import (
    DAY_S,
    SCENARIOS,
    DayTransactions,
    generate_transactions,
    time_of_day_strings,
)

FORMATS = ("csv", "parquet")
TRANSACTION_FILE = "part-0000"
LABEL_FILE = "labels"
TRANSACTION_HEADER = b"transaction_id,tx_datetime,customer_id,terminal_id,amount\n"
LABEL_HEADER = b"transaction_id,is_fraud,known_at\n"
PARQUET_COMPRESSION = "zstd"


def _csv_lines(columns: Sequence[pa.Array]) -> pa.Array:
    """One `a,b,c\\n` string per row; the rows of a slice are then contiguous bytes in the
    array's data buffer, so a file is a single slice instead of a per-row join."""
    lines = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise(lines, "", "\n")


def _slice_bytes(lines: pa.Array, start: int, stop: int) -> bytes:
    offset_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    _, offsets_buffer, data = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[lines.offset :]
    return data[int(offsets[start]) : int(offsets[stop])].to_pybytes() if stop > start else b""


def _parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic Parquet: no pandas index or metadata, fixed compression and layout."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION, write_statistics=True)
    return sink.getvalue().to_pybytes()


def _utc_timestamps(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


class _HourFiles:
    """Formats one day's hourly files; CSV lines are built once for the whole day and sliced."""

    def __init__(self, txs: DayTransactions):
        self.txs = txs
        self.bounds = np.searchsorted(txs.seconds, np.arange(25) * 3600)
        self.ids = txs.transaction_ids()
        self.customer_ids = txs.population.customer_id_array().take(pa.array(txs.customer))
        self.terminal_ids = txs.population.terminal_id_array().take(pa.array(txs.terminal))
        self._lines: pa.Array | None = None

    def rows(self, hour: int) -> tuple[int, int]:
        return int(self.bounds[hour]), int(self.bounds[hour + 1])

    def csv(self, hour: int) -> bytes:
        if self._lines is None:
            columns = [self.ids, self.txs.datetime_strings(), self.customer_ids]
            columns += [self.terminal_ids, self.txs.amount_strings()]
            self._lines = _csv_lines(columns)
        return TRANSACTION_HEADER + _slice_bytes(self._lines, *self.rows(hour))

    def parquet(self, hour: int) -> bytes:
        start, stop = self.rows(hour)
        table = pa.table(
            {
                "transaction_id": self.ids.slice(start, stop - start),
                "tx_datetime": _utc_timestamps(self.txs.timestamps()[start:stop]),
                "customer_id": self.customer_ids.slice(start, stop - start),
                "terminal_id": self.terminal_ids.slice(start, stop - start),
                "amount": pa.array(self.txs.cents[start:stop] / 100),
            }
        )
        return _parquet_bytes(table)


@dataclass
class _LabelChunk:
    ids: pa.Array
    is_fraud: np.ndarray
    second_of_day: np.ndarray  # of known_at, in the label day


def _label_chunks(
    txs: DayTransactions, ids: pa.Array, delay_s: int
) -> Iterable[tuple[int, _LabelChunk]]:
    """Split a day's labels by the UTC day (ordinal) of known_at = tx_datetime + delay."""
    known = txs.seconds.astype(np.int64) + delay_s
    shift = known // DAY_S  # non-decreasing: transactions are sorted by time
    is_fraud = txs.is_fraud
    for value in np.unique(shift):
        start, stop = np.searchsorted(shift, [value, value + 1])
        chunk = _LabelChunk(
            ids.slice(start, stop - start),
            is_fraud[start:stop],
            (known[start:stop] - value * DAY_S).astype(np.int32),
        )
        yield txs.day.toordinal() + int(value), chunk


def _label_file(day: date, chunks: Sequence[_LabelChunk], fmt: str) -> bytes:
    ids = pa.concat_arrays([c.ids for c in chunks])
    is_fraud = np.concatenate([c.is_fraud for c in chunks])
    seconds = np.concatenate([c.second_of_day for c in chunks])
    if fmt == "parquet":
        known = np.datetime64(day, "s") + seconds.astype("timedelta64[s]")
        table = pa.table(
            {
                "transaction_id": ids,
                "is_fraud": pa.array(is_fraud),
                "known_at": _utc_timestamps(known),
            }
        )
        return _parquet_bytes(table)
    hms = time_of_day_strings().take(pa.array(seconds))
    known_at = pc.binary_join_element_wise(f"{day.isoformat()}T", hms, "Z", "")
    lines = _csv_lines([ids, pc.cast(pa.array(is_fraud), pa.string()), known_at])
    return LABEL_HEADER + _slice_bytes(lines, 0, len(lines))


def transaction_key(hour: str, fmt: str = "csv", name: str = TRANSACTION_FILE) -> str:
    """`landing/transactions/<YYYY-MM-DD>/<HH>/part-0000.<fmt>` for an hourly partition key."""
    return f"{hour_landing_prefix(hour)}{name}.{fmt}"


def label_key(day: date, fmt: str = "csv") -> str:
    """`landing/labels/<YYYY-MM-DD>/labels.<fmt>`."""
    return f"landing/labels/{day.isoformat()}/{LABEL_FILE}.{fmt}"


# --- corrupted files ---------------------------------------------------------------------------


def parse_corrupt(spec: str | tuple[str, str]) -> tuple[str, str]:
    """`KIND@YYYY-MM-DDTHH` (or a `(kind, hour)` pair) -> `(kind, "YYYY-MM-DD-HH:00")`.

    The hour may also be given as a partition key (`2018-04-01-05:00`). The kind is checked by
    `fraudloop.feeds.corruption` when the file is produced.
    """
    if isinstance(spec, tuple):
        kind, hour = spec
    else:
        kind, sep, hour = spec.partition("@")
        if not sep:
            raise ValueError(f"invalid corruption {spec!r}: expected KIND@YYYY-MM-DDTHH")
    kind, hour = kind.strip(), hour.strip()
    for fmt in ("%Y-%m-%dT%H", HOUR_KEY_FORMAT, "%Y-%m-%dT%H:%M"):
        try:
            parsed = datetime.strptime(hour, fmt)
        except ValueError:
            continue
        if kind and parsed.minute == 0:
            return kind, parsed.strftime(HOUR_KEY_FORMAT)
    raise ValueError(f"invalid corruption {spec!r}: expected KIND@YYYY-MM-DDTHH")


def _corrupted_file(kind: str, hour: str, good_csv: bytes) -> tuple[str, bytes]:
    """The broken variant of an hour's file; the name keeps `part-0000` plus the kind's suffix."""

    suffix, data = corrupt_file(kind, good_csv, hour_start(hour))
    return f"{hour_landing_prefix(hour)}{TRANSACTION_FILE}{suffix}", data


# --- the simulation ----------------------------------------------------------------------------


@dataclass
class SimulationSummary:
    """What a `simulate` call landed; `frame` holds every simulated transaction with its
    scenario when asked for (`keep_frame=True`), for tests and benchmarks."""

    start: date
    days: int
    transactions: int = 0
    frauds: int = 0
    transaction_files: int = 0
    label_files: int = 0
    scenario_counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SCENARIOS, 0))
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def fraud_rate(self) -> float:
        return self.frauds / self.transactions if self.transactions else 0.0

    @property
    def transactions_per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0

    @property
    def files_written(self) -> int:
        return self.transaction_files + self.label_files

    def as_dict(self) -> dict:
        """Plain values, e.g. for Dagster metadata or a JSON report."""
        return {
            "start": self.start.isoformat(),
            "days": self.days,
            "transactions": self.transactions,
            "frauds": self.frauds,
            "fraud_rate": self.fraud_rate,
            "transaction_files": self.transaction_files,
            "label_files": self.label_files,
            "scenario_counts": {SCENARIOS[k]: v for k, v in self.scenario_counts.items()},
            "seconds": round(self.seconds, 3),
            "transactions_per_second": round(self.transactions_per_second, 1),
        }


def _delay_seconds(label_delay: timedelta) -> int:
    seconds = label_delay.total_seconds()
    if seconds < 0 or seconds != int(seconds):
        raise ValueError(
            f"label_delay must be a non-negative whole number of seconds: {label_delay}"
        )
    return int(seconds)


def _corruptions(corrupt: Iterable, first: date, last: date) -> dict[str, str]:
    by_hour = {}
    for item in corrupt:
        kind, hour = parse_corrupt(item)
        if not first <= hour_start(hour).date() <= last:
            raise ValueError(
                f"corruption hour {hour} is outside the simulated days {first}..{last}"
            )
        by_hour[hour] = kind
    return by_hour


class _Run:
    """State of one `simulate` call: writes a day's files and the label days as they complete."""

    def __init__(self, store, fmt, delay_s, label_days, corrupt, keep_frame, summary):
        self.store: ObjectStore = store
        self.fmt = fmt
        self.delay_s = delay_s
        self.first_label, self.last_label = label_days
        self.corrupt = corrupt
        self.keep_frame = keep_frame
        self.summary: SimulationSummary = summary
        self.pending: dict[int, list[_LabelChunk]] = defaultdict(list)
        self.frames: list[pd.DataFrame] = []

    def put(self, key: str, data: bytes) -> None:
        self.store.put_bytes(key, data)
        self.summary.keys.append(key)
        if key.startswith("landing/transactions/"):
            self.summary.transaction_files += 1
        else:
            self.summary.label_files += 1

    def land_transactions(self, txs: DayTransactions) -> pa.Array:
        """Write the day's hourly files (hours without transactions get none); return the ids."""
        files = _HourFiles(txs)
        for hour in range(24):
            key = hour_key(datetime(txs.day.year, txs.day.month, txs.day.day, hour))
            start, stop = files.rows(hour)
            if key in self.corrupt:
                self.put(*_corrupted_file(self.corrupt[key], key, files.csv(hour)))
            elif stop > start:
                data = files.parquet(hour) if self.fmt == "parquet" else files.csv(hour)
                self.put(transaction_key(key, self.fmt), data)
        self.count(txs)
        return files.ids

    def count(self, txs: DayTransactions) -> None:
        s = self.summary
        s.transactions += len(txs)
        s.frauds += int((txs.scenario > 0).sum())
        for scenario, n in zip(*np.unique(txs.scenario, return_counts=True), strict=True):
            s.scenario_counts[int(scenario)] += int(n)
        if self.keep_frame:
            self.frames.append(txs.to_frame())

    def collect_labels(self, txs: DayTransactions, ids: pa.Array) -> None:
        for label_day, chunk in _label_chunks(txs, ids, self.delay_s):
            if self.first_label <= label_day <= self.last_label:
                self.pending[label_day].append(chunk)

    def flush_labels(self, complete_until: int) -> None:
        """Write the label days up to `complete_until` (ordinal): no later tx can reach them."""
        for label_day in sorted(d for d in self.pending if d <= complete_until):
            day = date.fromordinal(label_day)
            self.put(
                label_key(day, self.fmt), _label_file(day, self.pending.pop(label_day), self.fmt)
            )


def simulate(
    store: ObjectStore,
    start: date,
    days: int,
    *,
    seed: int = 42,
    scale: float = 1.0,
    customers: int | None = None,
    terminals: int | None = None,
    fmt: str = "csv",
    label_delay: timedelta = timedelta(days=7),
    drift: Iterable[str | Drift] | str = (),
    corrupt: Iterable[tuple[str, str] | str] = (),
    labels_until: date | None = None,
    feed_start: date | None = None,
    keep_frame: bool = False,
    progress: bool = True,
) -> SimulationSummary:
    """Land `days` days of hourly transaction files from `start`, and their label files.

    Label files are written for the known_at days from `start` to `labels_until` (default: the
    last simulated day, i.e. what is known by the end of the simulation). They hold the labels
    of transactions from `feed_start` (default `start`) to the last simulated day: pass the
    feed's first day as `feed_start` when continuing an earlier simulation, and the label days
    it left open are completed by regenerating (not re-landing) its last days, so split runs
    give the same files as one run. `corrupt` replaces the file of the given hours by a broken
    variant from `fraudloop.feeds.corruption`. Nothing is loaded from the store; existing keys are
    overwritten with identical bytes for the same arguments.
    """
    began = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if days < 0:
        raise ValueError(f"days must be >= 0, not {days}")
    drifts = parse_drifts(drift)
    delay_s = _delay_seconds(label_delay)
    last = start + timedelta(days=days - 1)
    corruptions = _corruptions(corrupt, start, last)
    labels_until = labels_until or last
    feed_start = min(feed_start or start, start)
    lookback = max(feed_start, start - timedelta(days=math.ceil(delay_s / DAY_S)))
    population = make_population(seed, scale, customers, terminals)

    summary = SimulationSummary(start=start, days=days)
    if days == 0:
        return summary
    run = _Run(
        store,
        fmt,
        delay_s,
        (start.toordinal(), labels_until.toordinal()),
        corruptions,
        keep_frame,
        summary,
    )
    calendar = [lookback + timedelta(days=i) for i in range((last - lookback).days + 1)]
    bar = tqdm(calendar, desc="simulate", unit="day", file=sys.stderr, disable=not progress)
    for day in bar:
        txs = generate_transactions(population, day, drifts)
        if day >= start:
            ids = run.land_transactions(txs)
            bar.set_postfix(tx=summary.transactions, refresh=False)
        else:
            ids = txs.transaction_ids()
        run.collect_labels(txs, ids)
        run.flush_labels(day.toordinal() + delay_s // DAY_S)
    run.flush_labels(labels_until.toordinal())
    bar.close()
    if keep_frame and run.frames:
        summary.frame = pd.concat(run.frames, ignore_index=True)
    summary.seconds = time.perf_counter() - began
    return summary
