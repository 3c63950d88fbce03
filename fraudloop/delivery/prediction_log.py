"""The prediction log: every decision the service takes, as hourly Parquet files.

``predictions/<hour>/<instance>-<seq>.parquet``, where ``<hour>`` is the partition key
(``2018-04-01-05:00``) of the transaction's own time, so monitoring joins a partition of
predictions with the labels and features of the same hour. ``<instance>`` is unique per process
start, so two replicas, or a restarted one, never write the same key; every file is written in one
atomic put, so a reader sees whole files or none.

Appending is a tuple append under the GIL (microseconds, on the request path); a background
thread flushes every ``flush_seconds`` or ``flush_rows``, and :meth:`PredictionLog.close` flushes
what is left, which is what makes a graceful shutdown lose nothing. A failed write keeps its rows
for the next flush (bounded by ``max_buffer_rows``; beyond it the oldest are dropped and counted).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core.hours import HOUR_KEY_FORMAT
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


def _table(rows: list[Row], instance: str) -> pa.Table:
    arrays = dict(zip(Row._fields, zip(*rows, strict=True), strict=True))
    return pa.table(
        {
            "request_id": pa.array(arrays["request_id"], pa.string()),
            "transaction_id": pa.array(arrays["transaction_id"], pa.string()),
            "customer_id": pa.array(arrays["customer_id"], pa.string()),
            "terminal_id": pa.array(arrays["terminal_id"], pa.string()),
            "tx_datetime": pa.array(np.array(arrays["tx_ns"], dtype="int64"), pa.int64()).cast(
                pa.timestamp("ns", tz="UTC")
            ),
            "amount": pa.array(arrays["amount"], pa.float64()),
            "served_at": pa.array(np.array(arrays["served_ns"], dtype="int64"), pa.int64()).cast(
                pa.timestamp("ns", tz="UTC")
            ),
            "model_version": pa.array(arrays["model_version"], pa.int64()),
            "role": pa.array(arrays["role"], pa.string()),
            "score": pa.array(arrays["score"], pa.float64()),
            "decision": pa.array(arrays["decision"], pa.string()),
            "threshold": pa.array(arrays["threshold"], pa.float64()),
            "latency_ms": pa.array(arrays["latency_ms"], pa.float64()),
            "cpu_ms": pa.array(arrays["cpu_ms"], pa.float64()),
            "feature_hash": pa.array(arrays["feature_hash"], pa.string()),
            "status": pa.array(arrays["status"], pa.string()),
            "instance": pa.array([instance] * len(rows), pa.string()),
        },
        schema=SCHEMA,
    )


class PredictionLog:
    """Buffered, atomically flushed prediction log of one service process."""

    def __init__(
        self,
        store: ObjectStore,
        instance: str,
        *,
        flush_rows: int = 20_000,
        flush_seconds: float = 5.0,
        max_buffer_rows: int = 2_000_000,
    ):
        self.store = store
        self.instance = instance
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer_rows = max_buffer_rows
        self._buffer: list[Row] = []
        self._flush_lock = threading.Lock()  # one flush at a time; appends never wait for it
        self._seq = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.files_written = 0
        self.rows_dropped = 0
        self.write_errors = 0

    # ---- request path
    def append(self, row: Row) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.flush_rows:
            self._wake.set()

    def extend(self, rows: Iterable[Row]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ---- background
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("prediction log flush failed; rows kept for the next attempt")

    def close(self) -> int:
        """Stop the flusher and write everything buffered (graceful shutdown); rows written."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        return self.flush()

    def flush(self) -> int:
        """Write the buffered rows, one file per transaction hour; returns rows written."""
        with self._flush_lock:
            # Swapping the list is atomic under the GIL: appends after it go to the new buffer.
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                written = self._write(rows)
            except Exception:
                self.write_errors += 1
                keep = rows[-self.max_buffer_rows :]
                self.rows_dropped += len(rows) - len(keep)
                self._buffer[:0] = keep  # before anything appended meanwhile: order kept
                raise
            self.rows_written += written
            return written

    def _write(self, rows: list[Row]) -> int:
        table = _table(rows, self.instance)
        hours = (
            pd.to_datetime(np.array([r.tx_ns for r in rows], dtype="int64"), utc=True)
            .floor("h")
            .strftime(HOUR_KEY_FORMAT)
        )
        codes, uniques = pd.factorize(hours)
        for code, hour in enumerate(uniques):
            part = table.filter(pa.array(codes == code))
            sink = io.BytesIO()
            pq.write_table(part, sink, compression="zstd")
            self._seq += 1
            key = f"{PREFIX}/{hour}/{self.instance}-{self._seq:08d}.parquet"
            self.store.put_bytes(key, sink.getvalue())
            self.files_written += 1
        return len(rows)


def read_predictions(
    store: ObjectStore,
    hours: Iterable[str] | None = None,
    *,
    modified_since: float | None = None,
) -> pd.DataFrame:
    """Prediction log rows of ``hours`` (partition keys; all if None), optionally only files
    written at or after ``modified_since`` (epoch seconds; the rollout analysis reads what was
    served since a step began)."""
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
    return pa.concat_tables(frames).to_pandas()


def now_ns() -> int:
    return time.time_ns()
