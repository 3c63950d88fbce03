"""Normalising parsed feed files to the canonical schema: headers mapped (case-insensitive,
surrounding whitespace ignored), types coerced, values that do not parse reported with examples.
Extra columns are kept, as strings, after the canonical ones.

Values
------
- Missing values in CSV: an empty field and the tokens ``NULL``, ``null``, ``NaN``, ``nan``,
  ``None`` are missing (and then rejected by the not-null expectations). Nothing else is.
- Identifiers are strings with surrounding spaces removed (not line breaks or tabs: a control
  character in an id is rejected by the row checks); integer ids from Parquet are
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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.tables import canonical_order
from fraudloop.core.timestamps import parse_iso8601_utc
from fraudloop.data.expectations import Problem, jsonable

_EPOCH_PATTERN = r"[+-]?\d+(?:\.\d+)?"

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
    # spaces only: a line break or tab inside a quoted id is a defect the row checks must see
    out = out.str.strip(" ")
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
    parsed = _correctly_rounded(text, parsed.astype("float64"))
    bad = (text.notna() & parsed.isna()).fillna(False).astype(bool)
    if bad.any():
        return parsed, [_coercion_problem(column, col, bad, "numbers", source)]
    return parsed, []


def _correctly_rounded(text: pd.Series, parsed: pd.Series) -> pd.Series:
    """The numbers pandas accepted, re-read correctly rounded. pandas decides what is a number
    (the documented syntax), but its fast parser can be one unit in the last place off for
    long mantissas (``8.45499999999999972e+01`` became 84.54999999999998, not 84.55: found
    by the fuzz tests), so the same amount written two ways gave two raw versions. Arrow's
    parser rounds correctly; Python's ``float`` is the fallback for anything Arrow refuses."""
    finite = parsed.notna().to_numpy() & np.isfinite(parsed.to_numpy())
    if not finite.any():
        return parsed
    values = text[finite].astype(object).to_numpy()
    try:
        exact = pc.cast(pa.array(values, type=pa.string()), pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        exact = np.array([float(v) for v in values], dtype="float64")
    out = parsed.to_numpy(copy=True)
    out[finite] = exact
    return pd.Series(out, index=parsed.index)


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
    parsed = parse_iso8601_utc(text.where(~epoch))
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
        unparsed = pd.Series(False, index=col.index)
    else:
        text = col.astype("string").str.strip().str.lower()
        text = text.mask(text == "")
        text = text.replace({"true": "1", "false": "0"})
        numbers = pd.to_numeric(
            text.astype(object).where(text.notna(), None), errors="coerce"
        ).astype("float64")
        unparsed = (text.notna() & numbers.isna()).fillna(False).astype(bool)
    finite = numbers.notna()
    integral = numbers.where(finite, 0)
    bad = unparsed | (finite & ((integral != np.floor(integral)) | (integral.abs() > 127)))
    if bad.any():
        # the values that did parse are kept: a row-level caller rejects only the others
        return numbers.mask(bad).astype("Int8"), [
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
    keep_order: bool = False,
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
    if keep_order:  # rows stay in file order: row i is the file's i-th record
        columns = list(TRANSACTION_COLUMNS if table == "transactions" else LABEL_COLUMNS)
        return result[columns + sorted(c for c in result.columns if c not in columns)]
    return canonical_order(table, result)


def normalise_transactions(
    frame: pd.DataFrame,
    partition_key: str | None = None,
    *,
    source: str | None = None,
    notes: list[str] | None = None,
    lenient: bool = False,
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A frame as read from a feed -> canonical transactions (dtypes of schema.TRANSACTION_COLUMNS,
    sorted by (tx_datetime, transaction_id)), or None and the problems.

    Range checks (amount > 0, inside the hour, unique ids, no nulls) are the validation suite's
    job, not this function's; ``partition_key`` is accepted for symmetry and messages only.
    Notes about accepted oddities (extra columns) are appended to ``notes`` when given.
    ``lenient`` is the row-level mode of ingestion: a value that does not parse becomes null
    (its problem is still returned, and the row checks reject that row alone) and rows keep
    their file order, so row ``i`` is the file's ``i``-th record.
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
        if problems and not lenient:
            return None, problems
        return _finish("transactions", out, frame, extras, notes, source, lenient), problems
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
    lenient: bool = False,
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
        if problems and not lenient:
            return None, problems
        if out["is_fraud"].notna().all():
            out["is_fraud"] = out["is_fraud"].astype("int8")
        return _finish("labels", out, frame, extras, notes, source, lenient), problems
    except Exception as exc:
        return None, [
            Problem("normalise", "unexpected_error", f"{type(exc).__name__}: {exc}", source=source)
        ]
