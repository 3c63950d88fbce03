"""From landed feed files to a validated canonical table, or a quarantine record.

Steps for one partition (an hour of transactions, a day of labels):

1. :func:`read_landed_file` sniffs each file before parsing it (size, gzip/Parquet magic bytes,
   binary content, UTF-8, line length, delimiter) and parses it: CSV with every column as a
   string, Parquet as stored. It never raises on bad bytes: every failure is a :class:`Problem`.
2. :func:`normalise_transactions` / :func:`normalise_labels` map the headers (case-insensitive,
   surrounding whitespace ignored) to the canonical columns, coerce types and report values that
   do not parse, with examples. Extra columns are kept, as strings, after the canonical ones.
3. The Great Expectations suite of :mod:`fraudloop.validation` runs on the concatenation.
4. A clean partition is written by :func:`fraudloop.raw.write_raw_partition`; otherwise every file
   of the partition is copied to quarantine with a reason and the partition pointer says
   "quarantined", so no reader can use it.

Values
------
- Missing values in CSV: an empty field and the tokens ``NULL``, ``null``, ``NaN``, ``nan``,
  ``None`` are missing (and then rejected by the not-null expectations). Nothing else is.
- Identifiers are strings with surrounding whitespace removed; integer ids from Parquet are
  written as decimal strings (``123``, never ``123.0``).
- ``amount`` is a decimal number (``12.5``, ``1e3``); ``inf`` parses but fails the range check.
- ``is_fraud`` accepts 0, 1, true, false (any case); other integers parse and then fail the
  {0, 1} expectation; anything else is a type problem.

Timestamp rule
--------------
``tx_datetime`` and ``known_at`` are ISO 8601 timestamps. A timestamp with an offset or ``Z``
is converted to UTC; a timestamp without a time zone is interpreted as UTC (the feeds'
documented convention), so ``2018-04-01 05:10:00`` and ``2018-04-01T07:10:00+02:00`` are the
same instant. Epoch numbers (``1522559400``) are NOT accepted, neither as text nor as Parquet
integers: their unit (s, ms, us) cannot be known, and a wrong guess silently moves data by
decades. Parquet timestamp columns are used as stored (naive means UTC).
"""

from __future__ import annotations

import codecs
import csv
import io
import posixpath
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.quarantine import quarantine_files, summarise
from fraudloop.raw import canonical_order, mark_quarantined, raw_history_counts, write_raw_partition
from fraudloop.schema import (
    LABEL_COLUMNS,
    TRANSACTION_COLUMNS,
    day_landing_prefix,
    day_start,
    hour_landing_prefix,
    hour_start,
)
from fraudloop.storage import ObjectStore, sha256_hex
from fraudloop.validation import (
    DEFAULT_AMOUNT_MAX,
    LabelSuiteParams,
    Problem,
    TransactionSuiteParams,
    ValidationOutcome,
    history_basis,
    jsonable,
    row_count_bounds,
    validate_labels,
    validate_transactions,
)

__all__ = [
    "IngestOutcome",
    "Limits",
    "Problem",
    "ReadResult",
    "ingest_labels_day",
    "ingest_transactions_hour",
    "landed_files",
    "normalise_labels",
    "normalise_transactions",
    "read_landed_file",
    "reason_markdown",
]

NA_TOKENS = ["", "NULL", "null", "NaN", "nan", "None"]
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
SUPPORTED_EXTENSIONS = (".csv", ".parquet")
_EPOCH_PATTERN = r"[+-]?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Limits:
    """Guards and thresholds of ingestion (all overridable from the pipeline settings)."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    max_amount: float = DEFAULT_AMOUNT_MAX
    row_count_ratio: float = 4.0
    row_count_slack: int = 20
    history_days: int = 14
    known_ids_mostly: float = 1.0


@dataclass
class ReadResult:
    frame: pd.DataFrame | None
    problems: list[Problem] = field(default_factory=list)
    format: str | None = None  # "csv" | "parquet" | None when not recognised


def _extension(name: str) -> str:
    base = posixpath.basename(name)
    return "." + base.rsplit(".", 1)[1].lower() if "." in base else ""


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # unreachable


def _longest_line(data: bytes) -> tuple[int, int]:
    """(length in bytes, 1-based line number) of the longest line, vectorised."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 0x0A)
    bounds = np.concatenate(([-1], ends, [len(data)]))
    lengths = np.diff(bounds) - 1
    idx = int(np.argmax(lengths))
    return int(lengths[idx]), idx + 1


def _binary_share(sample: bytes) -> float:
    if not sample:
        return 0.0
    arr = np.frombuffer(sample, dtype=np.uint8)
    control = (arr < 0x20) & (arr != 0x09) & (arr != 0x0A) & (arr != 0x0D)
    return float(control.mean())


def read_landed_file(name: str, data: bytes, limits: Limits | None = None) -> ReadResult:
    """Parse one landed file; every failure is a Problem (stage "read"), never an exception."""
    limits = limits or Limits()
    try:
        return _read(name, data, limits)
    except Exception as exc:  # bad bytes must never crash an ingestion run
        return ReadResult(
            None,
            [
                Problem(
                    "read",
                    "unreadable",
                    f"could not read the file: {type(exc).__name__}: {exc}",
                    source=name,
                )
            ],
        )


def _read(name: str, data: bytes, limits: Limits) -> ReadResult:
    def fail(check: str, message: str, **extra: Any) -> ReadResult:
        return ReadResult(None, [Problem("read", check, message, source=name, **extra)], fmt)

    ext = _extension(name)
    fmt = ext[1:] if ext in SUPPORTED_EXTENSIONS else None
    size = len(data)
    if fmt is None:
        return fail(
            "unsupported_file_type",
            f"unsupported file type {ext or '(no extension)'!r}; expected .csv or .parquet",
        )
    if size == 0:
        return fail("empty_file", "file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        return fail(
            "file_too_large",
            f"file is {_human_bytes(size)}, larger than the limit of "
            f"{_human_bytes(limits.max_file_bytes)}",
        )
    if fmt == "parquet":
        return _read_parquet(name, data)

    if data[:2] == GZIP_MAGIC:
        return fail(
            "gzip_named_csv",
            "file is gzip-compressed but named .csv (starts with the gzip magic bytes 1f 8b); "
            "deliver plain CSV",
        )
    if data[:4] == PARQUET_MAGIC:
        return fail("parquet_named_csv", "file is Parquet (starts with PAR1) but named .csv")
    sample = data[:4096]
    nul = data.find(b"\x00", 0, 1 << 20)
    share = _binary_share(sample)
    if nul >= 0 or share > 0.05:
        detail = f"first NUL byte at offset {nul}" if nul >= 0 else ""
        detail = ", ".join(
            d for d in (f"{share:.0%} control bytes in the first 4 KiB", detail) if d
        )
        return fail("binary_content", f"file looks like binary data, not CSV text ({detail})")
    longest, line_no = _longest_line(data)
    if longest > limits.max_line_bytes:
        return fail(
            "line_too_long",
            f"line {line_no} is {_human_bytes(longest)} long, over the limit of "
            f"{_human_bytes(limits.max_line_bytes)} (missing line breaks or junk?)",
        )
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data.count(b"\n", 0, offset) + 1
        bad = data[offset : offset + 1].hex()
        return fail(
            "not_utf8",
            f"file is not valid UTF-8: byte 0x{bad} at byte offset {offset} (line {line}) "
            f"cannot be decoded; deliver UTF-8 text",
            examples=[f"offset {offset}: 0x{bad}"],
        )
    header = text.split("\n", 1)[0].rstrip("\r")
    if not header.strip():
        return fail("missing_header", "the first line (the header) is empty")
    if "," not in header:
        for delimiter, label in ((";", "`;`"), ("\t", "tab"), ("|", "`|`")):
            if delimiter in header:
                return fail(
                    "wrong_delimiter",
                    f"header looks {label}-delimited; expected ',' (header: {header[:120]!r})",
                )
    names = next(csv.reader([header]))
    seen: dict[str, int] = {}
    for n in names:
        key = n.strip().lower()
        seen[key] = seen.get(key, 0) + 1
    duplicates = sorted(k for k, v in seen.items() if v > 1)
    if duplicates:
        return fail(
            "duplicate_columns",
            f"the header repeats column name(s) {', '.join(duplicates)}",
            examples=duplicates,
        )
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_values=NA_TOKENS,
            on_bad_lines="error",
        )
    except pd.errors.EmptyDataError:
        return fail("missing_header", "file has no header line")
    except pd.errors.ParserError as exc:
        return fail("malformed_csv", f"malformed CSV: {str(exc).strip()}")
    if frame.empty:
        return fail(
            "header_only",
            f"file has a header but no data rows (header: {header[:120]!r})",
        )
    return ReadResult(frame, [], fmt)


def _read_parquet(name: str, data: bytes) -> ReadResult:

    def fail(message: str) -> ReadResult:
        return ReadResult(
            None,
            [
                Problem(
                    "read",
                    "corrupt_parquet",
                    f"truncated or corrupt Parquet: {message}",
                    source=name,
                )
            ],
            "parquet",
        )

    if len(data) < 12:
        return fail(f"only {len(data)} bytes, too short to be Parquet")
    if data[:4] != PARQUET_MAGIC:
        hint = " (it is gzip-compressed)" if data[:2] == GZIP_MAGIC else ""
        return fail(f"the file does not start with the PAR1 magic bytes{hint}")
    if data[-4:] != PARQUET_MAGIC:
        return fail(
            f"the file does not end with the PAR1 magic bytes (cut off after {len(data):,} bytes?)"
        )
    try:
        frame = pq.read_table(pa.BufferReader(data)).to_pandas()
    except Exception as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    if frame.empty:
        return ReadResult(
            None,
            [Problem("read", "header_only", "Parquet file has columns but no rows", source=name)],
            "parquet",
        )
    return ReadResult(frame, [], "parquet")


# --------------------------------------------------------------------------------------------
# Normalising
# --------------------------------------------------------------------------------------------


def _distinct_examples(values: pd.Series, limit: int = 5) -> list[Any]:
    out: list[Any] = []
    for v in values:
        v = jsonable(v)
        if v not in out:
            out.append(v)
        if len(out) == limit:
            break
    return out


def _map_columns(
    frame: pd.DataFrame, required: Sequence[str], source: str | None
) -> tuple[dict[str, Any] | None, list[Any], list[Problem]]:
    """Find the required columns (case-insensitive, stripped): (mapping, extras, problems)."""
    by_name: dict[str, list[Any]] = {}
    for col in frame.columns:
        by_name.setdefault(str(col).strip().lower(), []).append(col)
    problems = []
    duplicates = sorted(k for k, v in by_name.items() if len(v) > 1)
    if duplicates:
        problems.append(
            Problem(
                "normalise",
                "duplicate_columns",
                f"column name(s) {', '.join(duplicates)} appear more than once "
                "(names are compared case-insensitively)",
                examples=duplicates,
                source=source,
            )
        )
    missing = [c for c in required if c not in by_name]
    if missing:
        present = ", ".join(str(c) for c in frame.columns) or "(none)"
        hint = " (is the header row missing?)" if len(missing) == len(required) else ""
        problems.append(
            Problem(
                "normalise",
                "required_columns",
                f"missing required column(s): {', '.join(missing)}; "
                f"the file has columns: {present}{hint}",
                examples=missing,
                source=source,
            )
        )
    if problems:
        return None, [], problems
    mapping = {c: by_name[c][0] for c in required}
    extras = [col for col in frame.columns if col not in set(mapping.values())]
    return mapping, extras, []


def _to_string(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        out = col.astype("string")
    elif pd.api.types.is_integer_dtype(col):
        out = col.astype("Int64").astype("string")
    elif pd.api.types.is_float_dtype(col):
        finite = col.dropna()
        if len(finite) and np.all(np.isfinite(finite)) and np.all(finite == np.floor(finite)):
            out = col.astype("Int64").astype("string")
        else:
            out = col.astype("string")
    else:
        out = col.astype("string")
    out = out.str.strip()
    return out.mask(out == "")


def _coercion_problem(
    column: str, raw: pd.Series, bad: pd.Series, what: str, source: str | None, extra: str = ""
) -> Problem:
    count = int(bad.sum())
    examples = _distinct_examples(raw[bad])
    return Problem(
        "normalise",
        f"{column}_type",
        f"column '{column}' has {count:,} value(s) that are not {what}{extra}, e.g. "
        + ", ".join(repr(e) for e in examples),
        column=column,
        unexpected_count=count,
        examples=examples,
        source=source,
    )


def _to_float(col: pd.Series, column: str, source: str | None) -> tuple[pd.Series, list[Problem]]:
    if pd.api.types.is_bool_dtype(col):
        bad = col.notna()
        return pd.Series(np.nan, index=col.index), [
            _coercion_problem(column, col, bad, "numbers (booleans)", source)
        ]
    if pd.api.types.is_numeric_dtype(col):
        return col.astype("float64"), []
    text = col.astype("string").str.strip()
    text = text.mask(text == "")
    parsed = pd.to_numeric(text.astype(object).where(text.notna(), None), errors="coerce")
    parsed = parsed.astype("float64")
    bad = (text.notna() & parsed.isna()).fillna(False).astype(bool)
    if bad.any():
        return parsed, [_coercion_problem(column, col, bad, "numbers", source)]
    return parsed, []


def _to_utc(col: pd.Series, column: str, source: str | None) -> tuple[pd.Series, list[Problem]]:
    target = "datetime64[ns, UTC]"
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col):
        try:
            out = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
            return out.astype(target), []
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            bad = col.notna()
            return pd.Series(pd.NaT, index=col.index, dtype=target), [
                _coercion_problem(column, col, bad, "representable timestamps", source, f" ({exc})")
            ]
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        bad = col.notna()
        return pd.Series(pd.NaT, index=col.index, dtype=target), [
            _coercion_problem(
                column,
                col,
                bad,
                "ISO 8601 timestamps",
                source,
                " (the column holds numbers; epoch numbers are not accepted)",
            )
        ]
    text = col.astype("string").str.strip()
    text = text.mask(text == "")
    epoch = text.str.fullmatch(_EPOCH_PATTERN).fillna(False).astype(bool)
    candidates = text.astype(object).where(text.notna() & ~epoch, None)
    parsed = pd.to_datetime(candidates, format="ISO8601", utc=True, errors="coerce")
    parsed = pd.Series(parsed, index=col.index).astype(target)
    bad = (text.notna() & parsed.isna()).fillna(False).astype(bool)
    if bad.any():
        extra = " (epoch numbers are not accepted)" if epoch.any() else ""
        return parsed, [_coercion_problem(column, col, bad, "ISO 8601 timestamps", source, extra)]
    return parsed, []


def _to_flag(col: pd.Series, column: str, source: str | None) -> tuple[pd.Series, list[Problem]]:
    """0/1/true/false -> Int8; other integers kept (the {0,1} expectation reports them)."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype("Int8"), []
    if pd.api.types.is_numeric_dtype(col):
        numbers = col.astype("float64")
    else:
        text = col.astype("string").str.strip().str.lower()
        text = text.mask(text == "")
        text = text.replace({"true": "1", "false": "0"})
        numbers = pd.to_numeric(
            text.astype(object).where(text.notna(), None), errors="coerce"
        ).astype("float64")
        unparsed = (text.notna() & numbers.isna()).fillna(False).astype(bool)
        if unparsed.any():
            return pd.Series(pd.NA, index=col.index, dtype="Int8"), [
                _coercion_problem(column, col, unparsed, "0, 1, true or false", source)
            ]
    finite = numbers.notna()
    integral = numbers.where(finite, 0)
    bad = finite & ((integral != np.floor(integral)) | (integral.abs() > 127))
    if bad.any():
        return pd.Series(pd.NA, index=col.index, dtype="Int8"), [
            _coercion_problem(column, col, bad, "0, 1, true or false", source)
        ]
    return numbers.astype("Int8"), []


def _finish(
    table: str,
    out: dict[str, pd.Series],
    frame: pd.DataFrame,
    extras: list[Any],
    notes: list[str] | None,
    source: str | None,
) -> pd.DataFrame:
    result = pd.DataFrame(out, index=frame.index)
    if extras:
        for col in extras:
            name = str(col).strip()
            result[name] = _to_string(frame[col])
        if notes is not None:
            where = f"{source}: " if source else ""
            notes.append(
                f"{where}kept {len(extras)} extra column(s) after the canonical ones: "
                + ", ".join(str(c).strip() for c in extras)
            )
    return canonical_order(table, result)


def normalise_transactions(
    frame: pd.DataFrame,
    partition_key: str | None = None,
    *,
    source: str | None = None,
    notes: list[str] | None = None,
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A frame as read from a feed -> canonical transactions (dtypes of schema.TRANSACTION_COLUMNS,
    sorted by (tx_datetime, transaction_id)), or None and the problems.

    Range checks (amount > 0, inside the hour, unique ids, no nulls) are the validation suite's
    job, not this function's; ``partition_key`` is accepted for symmetry and messages only.
    Notes about accepted oddities (extra columns) are appended to ``notes`` when given.
    """
    try:
        mapping, extras, problems = _map_columns(frame, list(TRANSACTION_COLUMNS), source)
        if mapping is None:
            return None, problems
        out: dict[str, pd.Series] = {}
        for column in ("transaction_id",):
            out[column] = _to_string(frame[mapping[column]])
        out["tx_datetime"], found = _to_utc(frame[mapping["tx_datetime"]], "tx_datetime", source)
        problems += found
        for column in ("customer_id", "terminal_id"):
            out[column] = _to_string(frame[mapping[column]])
        out["amount"], found = _to_float(frame[mapping["amount"]], "amount", source)
        problems += found
        if problems:
            return None, problems
        return _finish("transactions", out, frame, extras, notes, source), []
    except Exception as exc:  # a bug or a pathological frame must not crash ingestion
        return None, [
            Problem("normalise", "unexpected_error", f"{type(exc).__name__}: {exc}", source=source)
        ]


def normalise_labels(
    frame: pd.DataFrame,
    day_key: str | None = None,
    *,
    source: str | None = None,
    notes: list[str] | None = None,
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A labels frame -> canonical labels (transaction_id, is_fraud, known_at UTC), sorted by
    (known_at, transaction_id). ``is_fraud`` is int8, or nullable Int8 when some are missing
    (which the not-null expectation then rejects)."""
    try:
        mapping, extras, problems = _map_columns(frame, list(LABEL_COLUMNS), source)
        if mapping is None:
            return None, problems
        out: dict[str, pd.Series] = {"transaction_id": _to_string(frame[mapping["transaction_id"]])}
        out["is_fraud"], found = _to_flag(frame[mapping["is_fraud"]], "is_fraud", source)
        problems += found
        out["known_at"], found = _to_utc(frame[mapping["known_at"]], "known_at", source)
        problems += found
        if problems:
            return None, problems
        if out["is_fraud"].notna().all():
            out["is_fraud"] = out["is_fraud"].astype("int8")
        return _finish("labels", out, frame, extras, notes, source), []
    except Exception as exc:
        return None, [
            Problem("normalise", "unexpected_error", f"{type(exc).__name__}: {exc}", source=source)
        ]


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
    limits: Limits,
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
        version = write_raw_partition(
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
    limits: Limits | None = None,
) -> IngestOutcome:
    """Ingest one hour of transactions: a new raw version, or quarantine with a reason.

    ``history_counts`` are row counts of comparable earlier partitions for the row-count bounds;
    None reads them from the raw pointers (:func:`fraudloop.raw.raw_history_counts`), [] disables
    the check. Only storage errors raise; bad input never does.
    """
    limits = limits or Limits()
    if history_counts is None:
        history_counts = raw_history_counts(
            store, "transactions", partition_key, limits.history_days
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
    limits: Limits | None = None,
    *,
    mostly: float | None = None,
) -> IngestOutcome:
    """Ingest one day of labels; with ``known_transaction_ids`` every label must refer to one
    (at least a share ``mostly`` of them; default ``limits.known_ids_mostly``, i.e. 1.0).
    See :func:`fraudloop.raw.known_transaction_ids` for the set."""
    limits = limits or Limits()
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
