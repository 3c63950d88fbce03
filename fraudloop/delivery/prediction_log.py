"""The prediction log: every decision the service takes, as hourly Parquet files.

``predictions/<hour>/<instance>-<seq>.parquet``, where ``<hour>`` is the partition key
(``2018-04-01-05:00``) of the transaction's own time, so monitoring joins a partition of
predictions with the labels and features of the same hour. ``<instance>`` is unique per process
start, so two replicas, or a restarted one, never write the same key; every file is written in one
atomic put, so a reader sees whole files or none.

With a spool (the service's default, :mod:`fraudloop.serving.spool`) every row is fsync'd locally
before its answer, and a killed process's rows are drained by the next start; without one, rows
wait in memory (lost on a crash). A background thread flushes every ``flush_seconds`` (or
``flush_rows``), :meth:`PredictionLog.close` flushes what is left. A flush batch keeps its keys
until it is fully written, so a failed flush is retried by overwriting, never duplicating (memory
mode keeps at most ``max_buffer_rows`` of failed batches; beyond that the oldest are dropped and
counted). :func:`read_predictions` deduplicates on :data:`DECISION_KEY` all the same.

Card and terminal ids are logged as :class:`Pseudonyms` (a keyed hash); retention deletes hours
older than ``retention_hours`` before the newest one logged.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core.hours import HOUR_KEY_FORMAT, HOUR_NS
from fraudloop.core.store import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "predictions"
#: roles: production / canary answer requests; shadow and control score the same requests off the
#: response path (control = production's score of a canary-routed request, for paired analysis)
ROLES = ("production", "canary", "shadow", "control")
#: ok: the role's model answered; fallback: the canary failed and production answered
STATUSES = ("ok", "fallback")

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("transaction_id", pa.string()),
        ("customer_id", pa.string()),
        ("terminal_id", pa.string()),
        ("tx_datetime", pa.timestamp("ns", tz="UTC")),
        ("amount", pa.float64()),
        ("served_at", pa.timestamp("ns", tz="UTC")),
        ("model_version", pa.int64()),
        ("role", pa.string()),
        ("score", pa.float64()),
        ("decision", pa.string()),
        ("threshold", pa.float64()),
        ("latency_ms", pa.float64()),
        ("cpu_ms", pa.float64()),
        ("feature_hash", pa.string()),
        ("status", pa.string()),
        ("instance", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
#: decisions spooled as a line each up to this many (single requests); more as one block record
ROW_LINES_UP_TO = 2
#: what identifies one decision in the log (readers deduplicate on it)
DECISION_KEY = ["transaction_id", "model_version", "role"]


class Row(NamedTuple):
    """One decision; field order is the file's column order."""

    request_id: str
    transaction_id: str
    customer_id: str
    terminal_id: str
    tx_ns: int
    amount: float
    served_ns: int
    model_version: int
    role: str
    score: float
    decision: str
    threshold: float
    latency_ms: float
    cpu_ms: float  # CPU time of the scoring thread, per row (the cost of inference)
    feature_hash: str
    status: str


_STRINGS = frozenset(
    (
        "request_id",
        "transaction_id",
        "customer_id",
        "terminal_id",
        "role",
        "decision",
        "feature_hash",
        "status",
    )
)
_INTS = frozenset(("tx_ns", "served_ns", "model_version"))
_ARROW = {
    "tx_ns": pa.timestamp("ns", tz="UTC"),
    "served_ns": pa.timestamp("ns", tz="UTC"),
    "model_version": pa.int64(),
    **{name: pa.float64() for name in ("amount", "score", "threshold", "latency_ms", "cpu_ms")},
    **{name: pa.string() for name in _STRINGS},
}
_FILE_NAME = {"tx_ns": "tx_datetime", "served_ns": "served_at"}


class Block(NamedTuple):
    """Decisions as columns, :class:`Row`'s fields: each a list (one value per row) or a single
    value that every row shares (the request id, the answering version...). A batch request is
    logged as one block: one spool record, no object per row."""

    n: int
    request_id: Any
    transaction_id: Any
    customer_id: Any
    terminal_id: Any
    tx_ns: Any
    amount: Any
    served_ns: Any
    model_version: Any
    role: Any
    score: Any
    decision: Any
    threshold: Any
    latency_ms: Any
    cpu_ms: Any
    feature_hash: Any
    status: Any

    @classmethod
    def of_rows(cls, rows: list[Row]) -> Block:
        columns = [list(c) for c in zip(*rows, strict=True)] or [[] for _ in Row._fields]
        return cls(len(rows), *columns)

    def column(self, name: str) -> list:
        value = getattr(self, name)
        return value if isinstance(value, list) else [value] * self.n

    def rows(self) -> list[Row]:
        return [Row(*values) for values in zip(*map(self.column, Row._fields), strict=True)]

    def take(self, idx: list[int]) -> Block:
        """The rows at ``idx``."""
        picked = {
            name: [value[i] for i in idx] if isinstance(value, list) else value
            for name, value in zip(Row._fields, self[1:], strict=True)
        }
        return Block(len(idx), **picked)

    def table(self, instance: str) -> pa.Table:
        arrays = {}
        for name in Row._fields:
            values = self.column(name)
            if name in _INTS:
                data = pa.array(np.asarray(values, dtype="int64"), pa.int64())
                data = data.cast(_ARROW[name]) if name in _FILE_NAME else data
            else:
                data = pa.array(values, _ARROW[name])
            arrays[_FILE_NAME.get(name, name)] = data
        arrays["instance"] = pa.array([instance] * self.n, pa.string())
        return pa.table(arrays, schema=SCHEMA)

    # ---- one spool record
    def encode(self) -> bytes:
        """One JSON line (the spool's record): numbers as little-endian bytes in base64
        (exact), strings joined by a space when none holds one, shared values once."""
        out: dict[str, Any] = {}
        for name in Row._fields:
            value = getattr(self, name)
            if not isinstance(value, list):
                out[name] = {"v": value}
            elif name in _INTS:
                out[name] = {"i8": _b64(np.asarray(value, dtype="<i8"))}
            elif name in _STRINGS:
                joined = " ".join(value)
                ok = self.n > 0 and joined.count(" ") == self.n - 1
                out[name] = {"s": joined} if ok else {"l": value}
            else:
                out[name] = {"f8": _b64(np.asarray(value, dtype="<f8"))}
        return json.dumps({"block": self.n, "c": out}, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, record: dict) -> Block:
        columns = []
        for name in Row._fields:
            (kind, value), *_ = record["c"][name].items()
            if kind == "i8":
                value = np.frombuffer(base64.b64decode(value), "<i8").tolist()
            elif kind == "f8":
                value = np.frombuffer(base64.b64decode(value), "<f8").tolist()
            elif kind == "s":
                value = value.split(" ")
            columns.append(value)
        return cls(record["block"], *columns)


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(values.tobytes()).decode()


def _table(blocks: list[Block], instance: str) -> pa.Table:
    if len(blocks) == 1:
        return blocks[0].table(instance)
    columns = [[v for b in blocks for v in b.column(name)] for name in Row._fields]
    return Block(sum(b.n for b in blocks), *columns).table(instance)


class PredictionLog:
    """The prediction log of one service process: rows come from the request path, go to the
    spool (if any) and are flushed to the store in batches with deterministic keys.

    Each flush batch gets its key stem once (``<instance>-<seq>``, or the spool segment's name)
    and keeps it until every hourly file of it is written: a flush that fails on its second file
    is retried with the same keys, overwriting the first file instead of writing its rows twice.
    """

    def __init__(
        self,
        store: ObjectStore,
        instance: str,
        *,
        flush_rows: int = 20_000,
        flush_seconds: float = 5.0,
        max_buffer_rows: int = 2_000_000,
        spool=None,
        retention_hours: int = 0,
    ):
        self.store = store
        self.instance = instance
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer_rows = max_buffer_rows
        #: a :class:`fraudloop.serving.spool.Spool`: rows are durable there before the store
        self.spool = spool
        self.retention_hours = retention_hours
        self._buffer: list[Block] = []
        self._failed: list[tuple[str, list[Block]]] = []  # (key stem, blocks), retried as they are
        self._flush_lock = threading.Lock()  # one flush at a time; appends never wait for it
        self._seq = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._newest_hour = ""
        self._pending_rows = 0  # in _buffer
        self._count_lock = threading.Lock()  # _buffer and its row count, together
        self.rows_written = 0
        self.files_written = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self.hours_deleted = 0

    # ---- request path
    def append(self, row: Row) -> None:
        self.extend([row])

    def extend(self, rows: Iterable[Row] | Block):
        """Log ``rows`` (or a block of them); with a spool, returns the future of their fsync
        (None otherwise)."""
        block = rows if isinstance(rows, Block) else Block.of_rows(list(rows))
        if self.spool is not None:
            if block.n <= ROW_LINES_UP_TO:  # a single request: one plain line is cheaper
                return self.spool.append(block.rows())
            return self.spool.append_record(block.encode(), block.n)
        with self._count_lock:
            self._buffer.append(block)
            self._pending_rows += block.n
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()
        return None

    @property
    def buffered(self) -> int:
        """Rows not yet in the store (in memory, or spooled and not drained)."""
        if self.spool is not None:
            return max(self.spool.rows_appended - self.rows_written, 0)
        return self._pending_rows + sum(_rows(blocks) for _, blocks in self._failed)

    # ---- background
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush()  # first at once: drains what a killed process left in the spool
            except Exception as error:
                log.error("prediction log flush failed; rows kept for the next attempt: %s", error)
            self._wake.wait(self.flush_seconds)
            self._wake.clear()

    def close(self) -> int:
        """Stop the flusher and write everything buffered (graceful shutdown); rows written."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.spool is None:
            return self.flush()
        self.spool.close()
        try:
            return self.flush()
        except Exception as error:  # the store is down: the spool keeps them for the next start
            log.error("prediction log not flushed at shutdown, kept in the spool: %s", error)
            return 0
        finally:
            self.spool.release()

    def flush(self) -> int:
        """Write every pending batch, one file per transaction hour; returns rows written."""
        with self._flush_lock:
            if self.spool is not None:
                return self._drain_spool()
            with self._count_lock:
                blocks, self._buffer, self._pending_rows = self._buffer, [], 0
            if blocks:
                self._seq += 1
                self._failed.append((f"{self.instance}-{self._seq:08d}", blocks))
            written = 0
            while self._failed:
                stem, blocks = self._failed[0]
                try:
                    written += self._write(blocks, stem, self.instance)
                except Exception:
                    self.write_errors += 1
                    self._bound_failed()
                    raise
                self._failed.pop(0)
            return written

    def _bound_failed(self) -> None:
        while sum(_rows(b) for _, b in self._failed) > self.max_buffer_rows and self._failed:
            self.rows_dropped += _rows(self._failed.pop(0)[1])

    def _drain_spool(self) -> int:
        written = 0
        for segment in self.spool.rotate():
            stem = segment.name.rsplit(".", 1)[0]  # <instance>-<seq>
            blocks = _blocks(self.spool.read(segment))
            if blocks:
                try:
                    written += self._write(blocks, stem, stem.rsplit("-", 1)[0])
                except Exception:
                    self.write_errors += 1
                    raise
            self.spool.remove(segment)
        return written

    def _write(self, blocks: list[Block], stem: str, instance: str) -> int:
        table = _table(blocks, instance)
        rows = table.num_rows
        # hour numbers, formatted once per hour (formatting every row's time cost ~4 us a row)
        times = table.column("tx_datetime").cast(pa.int64()).to_numpy()
        codes, numbers = pd.factorize(times // HOUR_NS)
        uniques = [
            pd.Timestamp(int(h) * HOUR_NS, tz="UTC").strftime(HOUR_KEY_FORMAT) for h in numbers
        ]
        for code, hour in enumerate(uniques):
            part = table.filter(pa.array(codes == code))
            sink = io.BytesIO()
            pq.write_table(part, sink, compression="zstd")
            self.store.put_bytes(f"{PREFIX}/{hour}/{stem}.parquet", sink.getvalue())
            self.files_written += 1
        self.rows_written += rows
        self._retain(max(uniques))
        return rows

    def _retain(self, newest: str) -> None:
        """Delete hours older than ``retention_hours`` before the newest logged hour (counted
        in transaction time, so a replayed history keeps what it replays)."""
        if self.retention_hours <= 0 or newest <= self._newest_hour:
            return
        self._newest_hour = newest
        cutoff = (
            pd.Timestamp(datetime.strptime(newest, HOUR_KEY_FORMAT), tz="UTC")
            - pd.Timedelta(hours=self.retention_hours)
        ).strftime(HOUR_KEY_FORMAT)
        for info in self.store.list(f"{PREFIX}/"):
            hour = info.key.split("/")[1]
            if hour < cutoff:  # hour keys sort as time
                self.store.delete(info.key)
                self.hours_deleted += 1


def _rows(blocks: list[Block]) -> int:
    return sum(b.n for b in blocks)


def _blocks(records: list) -> list[Block]:
    """A spool segment's records (a row as a list, a block as a dict) as blocks, in order."""
    out: list[Block] = []
    rows: list[Row] = []
    for record in records:
        if isinstance(record, dict):
            if rows:
                out.append(Block.of_rows(rows))
                rows = []
            out.append(Block.decode(record))
        else:
            rows.append(Row(*record))
    if rows:
        out.append(Block.of_rows(rows))
    return [b for b in out if b.n]


class Pseudonyms:
    """Card and terminal ids as a keyed hash (HMAC-SHA256, 16 hex digits): the same id always
    maps to the same pseudonym, so per-card metrics still work, but the log does not name cards
    to whoever reads it without the key.

    The HMAC's keyed inner and outer SHA-256 states are computed once (RFC 2104) and copied per
    id, where ``hmac.new`` (and ``hmac.digest``) key the digest again for every id: a batch of
    new cards pays it twice a row, and its answers + log rows went from 6.5 to 3.3 us a row
    (`bench/serve.py --only-batch`, its stage profile). A test holds it to ``hmac.new``."""

    def __init__(self, key: bytes):
        self.key = key
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __call__(self, value: str) -> str:
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return "p" + outer.hexdigest()[:16]


def read_predictions(
    store: ObjectStore,
    hours: Iterable[str] | None = None,
    *,
    modified_since: float | None = None,
    dedupe: bool = True,
) -> pd.DataFrame:
    """Prediction log rows of ``hours`` (partition keys; all if None), optionally only files
    written at or after ``modified_since`` (epoch seconds; the rollout analysis reads what was
    served since a step began). Each decision once (:data:`DECISION_KEY`) unless ``dedupe`` is
    False (every stored row: a load test that replays transaction ids counts its answers)."""
    infos = []
    if hours is None:
        infos = store.list(f"{PREFIX}/")
    else:
        for hour in hours:
            infos += store.list(f"{PREFIX}/{hour}/")
    frames = []
    for info in infos:
        if not info.key.endswith(".parquet"):
            continue
        if modified_since is not None and info.modified and info.modified < modified_since:
            continue
        frames.append(pq.read_table(io.BytesIO(store.get_bytes(info.key))))
    if not frames:
        return SCHEMA.empty_table().to_pandas()
    log_rows = pa.concat_tables(frames).to_pandas()
    if not dedupe:
        return log_rows
    # a decision is one (transaction, model version, role): a row written twice (a retried
    # flush under an older key scheme, a spool drained twice) counts once
    return log_rows.drop_duplicates(DECISION_KEY, ignore_index=True)


def now_ns() -> int:
    return time.time_ns()
