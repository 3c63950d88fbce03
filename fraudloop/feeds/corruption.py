"""Broken feed files on demand: for tests, the simulator's ``--corrupt`` option and the demo.

:func:`corrupt_file` takes a good transactions CSV (canonical column names, any timestamp
format the ingestion accepts) and returns ``(extension, bytes)`` of a file with one specific
defect. Output is deterministic: the same input always gives the same bytes.

Two kinds are *not* defects and must be accepted (:data:`VALID_KINDS`): ``extra_column`` and
``naive_timestamps`` (timestamps without a zone mean UTC). ``row_spike`` is only detectable with
a history of row counts for the same hour (:data:`NEEDS_HISTORY`).
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CORRUPTION_KINDS: dict[str, str] = {
    "empty": "a 0-byte file",
    "header_only": "the header line and no data rows",
    "truncated_parquet": "a Parquet file cut off at 60% of its bytes",
    "wrong_delimiter": "semicolon-separated instead of comma-separated",
    "missing_column": "the amount column is missing",
    "extra_column": "an additional 'channel' column (valid: kept in raw)",
    "wrong_types": "amounts that are not numbers and a timestamp that is not a timestamp",
    "non_utf8": "Latin-1 encoded text (a customer id 'café' with byte 0xE9)",
    "null_ids": "two rows with an empty transaction_id",
    "duplicate_ids": "the first transaction_id repeated on the second row",
    "negative_amount": "one negative amount",
    "zero_amount": "one amount of 0.00",
    "nan_amount": "one amount 'NaN'",
    "inf_amount": "one amount 'inf'",
    "outside_hour": "one transaction 5 minutes after the end of the hour",
    "naive_timestamps": "timestamps without a time zone (valid: interpreted as UTC)",
    "row_spike": "10x the rows (repeats with fresh unique ids); caught by the row-count history",
    "gzip_csv": "gzip-compressed bytes under a .csv name",
    "binary_junk": "8 KiB of random bytes",
    "huge_line": "one 50 MB line (a field with no line breaks)",
}
VALID_KINDS = frozenset({"extra_column", "naive_timestamps"})
NEEDS_HISTORY = frozenset({"row_spike"})
HUGE_LINE_BYTES = 50_000_000


def sample_transactions_csv(hour_start: pd.Timestamp, rows: int = 50, seed: int = 0) -> bytes:
    """A small valid transactions CSV for one hour (ISO timestamps with ``Z``)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(hour_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    seconds = np.sort(rng.integers(0, 3600, size=rows))
    stamp = f"{start:%Y%m%d%H}"
    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx-{stamp}-{i:06d}" for i in range(rows)],
            "tx_datetime": [
                (start + pd.Timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ")
                for s in seconds
            ],
            "customer_id": [f"c{int(c)}" for c in rng.integers(0, 5000, size=rows)],
            "terminal_id": [f"t{int(t)}" for t in rng.integers(0, 10000, size=rows)],
            "amount": [f"{a:.2f}" for a in rng.uniform(1, 200, size=rows)],
        }
    )
    return _csv(frame)


def _csv(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep, lineterminator="\n").encode("utf-8")


def _frame(good_csv: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(good_csv), dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if len(frame) < 3:
        raise ValueError("corrupt_file needs a good CSV with at least 3 rows")
    return frame


def _set(frame: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[row, column] = value
    return frame


def corrupt_file(kind: str, good_csv_bytes: bytes, hour_start: pd.Timestamp) -> tuple[str, bytes]:
    """``(extension, bytes)`` of a file with the defect ``kind`` (see :data:`CORRUPTION_KINDS`)."""
    if kind not in CORRUPTION_KINDS:
        raise ValueError(
            f"unknown corruption kind {kind!r}; choose from {sorted(CORRUPTION_KINDS)}"
        )
    start = pd.Timestamp(hour_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    frame = _frame(good_csv_bytes)
    header = _csv(frame.iloc[:0])

    if kind == "empty":
        return ".csv", b""
    if kind == "header_only":
        return ".csv", header
    if kind == "truncated_parquet":
        sink = io.BytesIO()
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue()
        return ".parquet", data[: int(len(data) * 0.6)]
    if kind == "wrong_delimiter":
        return ".csv", _csv(frame, sep=";")
    if kind == "missing_column":
        return ".csv", _csv(frame.drop(columns=["amount"]))
    if kind == "extra_column":
        channels = np.array(["pos", "ecom", "atm"])[np.arange(len(frame)) % 3]
        return ".csv", _csv(frame.assign(channel=channels))
    if kind == "wrong_types":
        bad = _set(frame, 0, "amount", "twelve")
        bad = _set(bad, 1, "amount", "12,50 EUR")
        bad = _set(bad, 2, "tx_datetime", "yesterday")
        return ".csv", _csv(bad)
    if kind == "non_utf8":
        marker = "\u2063MARK\u2063"
        data = _csv(_set(frame, 1, "customer_id", marker))
        return ".csv", data.replace(marker.encode("utf-8"), b"caf\xe9")
    if kind == "null_ids":
        return ".csv", _csv(_set(_set(frame, 0, "transaction_id", ""), 2, "transaction_id", ""))
    if kind == "duplicate_ids":
        return ".csv", _csv(_set(frame, 1, "transaction_id", frame.loc[0, "transaction_id"]))
    if kind == "negative_amount":
        return ".csv", _csv(_set(frame, 0, "amount", "-12.50"))
    if kind == "zero_amount":
        return ".csv", _csv(_set(frame, 0, "amount", "0.00"))
    if kind == "nan_amount":
        return ".csv", _csv(_set(frame, 0, "amount", "NaN"))
    if kind == "inf_amount":
        return ".csv", _csv(_set(frame, 0, "amount", "inf"))
    if kind == "outside_hour":
        late = start + pd.Timedelta(hours=1, minutes=5)
        return ".csv", _csv(_set(frame, 0, "tx_datetime", late.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if kind == "naive_timestamps":
        parsed = pd.to_datetime(frame["tx_datetime"], format="ISO8601", utc=True)
        naive = parsed.dt.tz_localize(None).dt.strftime("%Y-%m-%d %H:%M:%S")
        return ".csv", _csv(frame.assign(tx_datetime=naive))
    if kind == "row_spike":
        copies = [frame]
        for k in range(1, 10):
            copies.append(frame.assign(transaction_id=frame["transaction_id"] + f"-r{k}"))
        return ".csv", _csv(pd.concat(copies, ignore_index=True))
    if kind == "gzip_csv":
        return ".csv", gzip.compress(good_csv_bytes, compresslevel=6, mtime=0)
    if kind == "binary_junk":
        return ".csv", np.random.default_rng(20180401).bytes(8192)
    if kind == "huge_line":
        first = frame.iloc[0]
        prefix = f"{first['transaction_id']},{first['tx_datetime']},{first['customer_id']},"
        return ".csv", header + prefix.encode() + b"T" * HUGE_LINE_BYTES + b",10.00\n"
    raise AssertionError(kind)  # every kind is handled above
