"""Reading a landed feed file: sniff the bytes before parsing (size, gzip/Parquet magic, binary
content, UTF-8, line length, delimiter), then parse: CSV with every column as a string, Parquet as
stored. Bad bytes never raise: every failure is a :class:`Problem` naming what is wrong and where.
"""

from __future__ import annotations

import codecs
import csv
import io
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.data.expectations import Problem
from fraudloop.data.policy import IngestPolicy

NA_TOKENS = ["", "NULL", "null", "NaN", "nan", "None"]
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
SUPPORTED_EXTENSIONS = (".csv", ".parquet")


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


def read_landed_file(name: str, data: bytes, limits: IngestPolicy | None = None) -> ReadResult:
    """Parse one landed file; every failure is a Problem (stage "read"), never an exception."""
    limits = limits or IngestPolicy()
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


def _read(name: str, data: bytes, limits: IngestPolicy) -> ReadResult:
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


def csv_records(data: bytes) -> list[tuple[int, str]]:
    """``(first line number, original text)`` of every data record of a CSV file, in the order
    pandas reads them (the header and blank lines skipped), so a rejected row can be shown as
    it was delivered; a record with a quoted line break spans several lines."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    lines: list[str] = []

    def feed():
        for line in io.StringIO(data[bom:].decode("utf-8"), newline=""):
            lines.append(line)
            yield line

    records, consumed = [], 0
    for record in csv.reader(feed()):
        start, consumed = consumed, len(lines)
        if record:
            records.append((start + 1, "".join(lines[start:consumed])))
    return records[1:]
