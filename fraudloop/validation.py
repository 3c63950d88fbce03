"""Great Expectations 1.x suites, written as code, and the code that runs them.

One suite per table:

- ``transactions`` (one hourly partition): the required columns exist; no required column has a
  null (this also catches NaN amounts); ``transaction_id`` is unique; ``amount`` is in
  ``(0, amount_max]`` (this also catches +/-inf); ``tx_datetime`` is in ``[hour start, hour start +
  1 h)``; and, when earlier valid partitions of the same hour of day exist, the row count is within
  bounds derived from them (:func:`row_count_bounds`), which catches a duplicated or truncated feed.
- ``labels`` (one daily partition): the required columns exist; no nulls; ``transaction_id`` is
  unique; ``is_fraud`` is in {0, 1}; ``known_at`` is in ``[day start, day start + 1 day)``; and,
  when the caller passes the set of transaction ids ingested so far, every label refers to one of
  them (``mostly`` configurable).

Great Expectations takes seconds to import, so it is imported inside functions, never at module
import time; the ephemeral context, its pandas data source and the batch definitions are created
once per process and reused, so that validating a partition costs tens of milliseconds.

Every failed expectation becomes a :class:`Problem` a human can read: the GE expectation type as
``check``, the column, how many values failed, up to five distinct examples and one sentence.

Known-id check and GE's cost for large value sets: ``ExpectColumnValuesToBeInSet`` copies its
``value_set`` through pydantic a hundred times per run (about 60 microseconds per element, i.e.
2.6 s for 42,000 ids, minutes for the millions of ids a 100x feed produces). So membership is
computed once with pandas into a derived column ``unknown_transaction_id`` (the id when it is not
known, else null) and GE checks that column with ``ExpectColumnValuesToBeNull(mostly=...)``: the
same semantics (share of labels that refer to known ids >= ``mostly``), the unknown ids as
examples, constant GE cost. The derived column exists only in the frame handed to GE.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

TRANSACTION_REQUIRED = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount")
LABEL_REQUIRED = ("transaction_id", "is_fraud", "known_at")
UNKNOWN_ID_COLUMN = "unknown_transaction_id"
DEFAULT_AMOUNT_MAX = 100_000.0
MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Problems and JSON-safe values (shared by ingest, quarantine and the assets)
# --------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One reason a partition cannot be accepted, in words a human understands.

    ``stage`` is where it was found ("read", "normalise", "expectations"), ``check`` a stable
    machine name (a GE expectation type for stage "expectations"), ``source`` the landing key of
    the file when the problem belongs to one file (None for whole-partition checks).
    """

    stage: str
    check: str
    message: str
    column: str | None = None
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["examples"] = [jsonable(v) for v in self.examples]
        out["unexpected_count"] = jsonable(self.unexpected_count)
        return out

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.message}"


def jsonable(value: Any) -> Any:
    """Convert a value to something ``json.dumps(allow_nan=False)`` accepts.

    Timestamps become ISO 8601 strings, numpy scalars Python numbers, NaN/inf the strings
    "NaN"/"inf"/"-inf", missing values None, bytes a short repr.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if value is pd.NaT:
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, np.timedelta64)):
        return str(value)
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(value, bytes):
        return repr(value[:80])
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


# --------------------------------------------------------------------------------------------
# Parameters and suites
# --------------------------------------------------------------------------------------------


def row_count_bounds(
    history_counts: list[int], ratio: float = 4.0, slack: int = 20
) -> tuple[int, int] | None:
    """Row-count bounds for a partition from the counts of earlier comparable partitions.

    Uses the median of the history (robust to one odd hour): ``lower = max(1, floor(median /
    ratio) - slack)`` and ``upper = ceil(median * ratio) + slack``. ``slack`` keeps quiet night
    hours with a handful of rows from tripping the check. None when there is no history (the
    expectation is then not added).
    """
    counts = [int(c) for c in history_counts if c is not None]
    if not counts:
        return None
    median = float(np.median(counts))
    lower = max(1, math.floor(median / ratio) - slack)
    upper = math.ceil(median * ratio) + slack
    return lower, upper


def history_basis(history_counts: list[int]) -> str | None:
    """How the row-count bounds were derived, in words (for problem messages)."""
    counts = [int(c) for c in history_counts if c is not None]
    if not counts:
        return None
    return f"median {float(np.median(counts)):g} rows over {len(counts)} earlier partition(s)"


@dataclass(frozen=True)
class TransactionSuiteParams:
    hour_start: pd.Timestamp
    amount_max: float = DEFAULT_AMOUNT_MAX
    row_bounds: tuple[int, int] | None = None
    row_bounds_basis: str | None = None  # e.g. "median 420 rows over 7 days"; for messages

    @property
    def hour_end(self) -> pd.Timestamp:
        return self.hour_start + pd.Timedelta(hours=1)


@dataclass(frozen=True)
class LabelSuiteParams:
    day_start: pd.Timestamp
    check_known_ids: bool = False
    known_ids_mostly: float = 1.0

    @property
    def day_end(self) -> pd.Timestamp:
        return self.day_start + pd.Timedelta(days=1)


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@lru_cache(maxsize=256)
def transactions_suite(params: TransactionSuiteParams):
    """The transactions suite for one hour (cached per parameters)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _batch_definitions()  # a suite needs an active context
    start, end = _utc(params.hour_start), _utc(params.hour_end)
    suite = gx.ExpectationSuite(name=f"transactions-{start:%Y-%m-%dT%H}")
    for column in TRANSACTION_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnToExist(column=column))
    for column in TRANSACTION_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="amount", min_value=0.0, max_value=float(params.amount_max), strict_min=True
        )
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="tx_datetime", min_value=start, max_value=end, strict_max=True
        )
    )
    if params.row_bounds is not None:
        lower, upper = params.row_bounds
        suite.add_expectation(
            gxe.ExpectTableRowCountToBeBetween(min_value=int(lower), max_value=int(upper))
        )
    return suite


@lru_cache(maxsize=256)
def labels_suite(params: LabelSuiteParams):
    """The labels suite for one day (cached per parameters)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _batch_definitions()  # a suite needs an active context
    start, end = _utc(params.day_start), _utc(params.day_end)
    suite = gx.ExpectationSuite(name=f"labels-{start:%Y-%m-%d}")
    for column in LABEL_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnToExist(column=column))
    for column in LABEL_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="is_fraud", value_set=[0, 1]))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="known_at", min_value=start, max_value=end, strict_max=True
        )
    )
    if params.check_known_ids:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeNull(
                column=UNKNOWN_ID_COLUMN, mostly=float(params.known_ids_mostly)
            )
        )
    return suite


def feature_bounds(name: str) -> tuple[float, float]:
    """The range every value of a feature must lie in (finite: NaN and inf always fail)."""
    from fraudloop.feature_state import NO_PREV_TX_SECONDS

    if name in ("tx_is_weekend", "tx_is_night", "customer_terminal_novelty"):
        return 0.0, 1.0
    if name == "tx_hour":
        return 0.0, 23.0
    if "risk" in name or "share" in name:
        return 0.0, 1.0
    if name == "customer_secs_since_prev_tx":
        return 0.0, NO_PREV_TX_SECONDS
    if "zscore" in name:
        return -1e6, 1e6
    return 0.0, 1e12  # counts, amounts, averages, ratios


SECONDS_INTO_HOUR = "_seconds_into_partition_hour"
HOUR_ROWS = "rows"
HOUR_EXPECTED_ROWS = "valid_transactions"


@lru_cache(maxsize=1)
def features_suite():
    """The feature-table suite, one for any set of hours (GE's cost is per expectation, not per
    row, so a whole range is validated in one call): complete, finite, in range, unique ids,
    every row inside its partition's hour."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from fraudloop.features import FEATURE_NAMES, ID_COLUMNS

    _batch_definitions()
    suite = gx.ExpectationSuite(name="transaction_features")
    for column in (*ID_COLUMNS, *FEATURE_NAMES):
        suite.add_expectation(gxe.ExpectColumnToExist(column=column))
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column=SECONDS_INTO_HOUR, min_value=0, max_value=3600, strict_max=True
        )
    )
    for name in FEATURE_NAMES:
        low, high = feature_bounds(name)
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high)
        )
    return suite


@lru_cache(maxsize=1)
def feature_rows_suite():
    """One row per hour: the feature rows must equal the valid transactions of that hour."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _batch_definitions()
    suite = gx.ExpectationSuite(name="transaction_features_rows")
    suite.add_expectation(
        gxe.ExpectColumnPairValuesToBeEqual(column_A=HOUR_ROWS, column_B=HOUR_EXPECTED_ROWS)
    )
    return suite


def validate_features(
    frames: dict[str, pd.DataFrame], expected_rows: dict[str, int]
) -> ValidationOutcome:
    """Validate the feature partitions of a run (hour key -> frame) in two GE calls."""
    from fraudloop.schema import hour_start

    parts = []
    for key, frame in frames.items():
        seconds = (frame["tx_datetime"] - hour_start(key)).dt.total_seconds()
        parts.append(frame.assign(**{SECONDS_INTO_HOUR: seconds}))
    combined = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    values = _run("transaction_features", combined, features_suite())
    per_hour = pd.DataFrame(
        {
            "hour": list(frames),
            HOUR_ROWS: [len(f) for f in frames.values()],
            HOUR_EXPECTED_ROWS: [int(expected_rows.get(k, -1)) for k in frames],
        }
    )
    rows = _run("transaction_features_rows", per_hour, feature_rows_suite())
    for problem in rows.problems:
        bad = per_hour[per_hour[HOUR_ROWS] != per_hour[HOUR_EXPECTED_ROWS]]
        problem.message = "feature rows differ from valid transactions in hour(s) " + ", ".join(
            f"{h} ({r} vs {e})" for h, r, e in bad.head(5).itertuples(index=False)
        )
    return ValidationOutcome(
        passed=values.passed and rows.passed,
        problems=values.problems + rows.problems,
        statistics={"values": values.statistics, "rows": rows.statistics},
        expectations=values.expectations + rows.expectations,
        seconds=values.seconds + rows.seconds,
    )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _batch_definitions() -> dict[str, Any]:
    """One ephemeral context per process with a pandas data source and a whole-dataframe batch
    definition per table. Progress bars are off (they would flood Dagster's captured logs)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("fraudloop")
    return {
        table: source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("whole")
        for table in ("transactions", "labels", "transaction_features", "transaction_features_rows")
    }


def warm_up() -> None:
    """Import Great Expectations and build the context now (e.g. when a worker starts)."""
    _batch_definitions()


@dataclass
class ValidationOutcome:
    passed: bool
    problems: list[Problem]
    statistics: dict[str, Any]
    expectations: list[dict[str, Any]]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": [p.to_dict() for p in self.problems],
            "statistics": jsonable(self.statistics),
            "expectations": self.expectations,
            "seconds": self.seconds,
        }


def _fmt(value: Any) -> str:
    if isinstance(value, pd.Timestamp) and value.tzinfo is not None:
        return value.tz_convert("UTC").isoformat().replace("+00:00", "Z")
    value = jsonable(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.endswith("+00:00"):
        return value[: -len("+00:00")] + "Z"
    return str(value)


def _examples(result: dict[str, Any]) -> list[Any]:
    """Up to MAX_EXAMPLES distinct unexpected values, in row order."""
    values = list(result.get("partial_unexpected_list") or [])
    if not values:
        values = [item["value"] for item in result.get("partial_unexpected_counts") or []]
    seen, out = set(), []
    for v in values:
        key = repr(jsonable(v))
        if key not in seen:
            seen.add(key)
            out.append(jsonable(v))
        if len(out) == MAX_EXAMPLES:
            break
    return out


def _sentence(
    kind: str,
    kwargs: dict[str, Any],
    result: dict[str, Any],
    examples: list,
    rows: int,
    basis_note: str | None = None,
) -> str:
    column = kwargs.get("column")
    raw_count = result.get("unexpected_count")
    count = "some" if raw_count is None else f"{int(raw_count):,}"
    eg = f", e.g. {', '.join(_fmt(v) for v in examples)}" if examples else ""
    of = f" of {rows:,} rows" if rows else " rows"
    if kind == "expect_column_to_exist":
        return f"required column '{column}' is missing"
    if kind == "expect_column_values_to_not_be_null":
        return f"column '{column}' is empty/null in {count}{of}"
    if kind == "expect_column_values_to_be_unique":
        return f"column '{column}' has {count} row(s) with a duplicated value{eg}"
    if kind == "expect_column_values_to_be_between":
        lo = "(" if kwargs.get("strict_min") else "["
        hi = ")" if kwargs.get("strict_max") else "]"
        rng = f"{lo}{_fmt(kwargs.get('min_value'))}, {_fmt(kwargs.get('max_value'))}{hi}"
        return f"column '{column}' is outside {rng} in {count}{of}{eg}"
    if kind == "expect_column_values_to_be_in_set":
        allowed = ", ".join(_fmt(v) for v in kwargs.get("value_set") or [])
        return f"column '{column}' is not in {{{allowed}}} in {count}{of}{eg}"
    if kind == "expect_column_values_to_be_null" and column == UNKNOWN_ID_COLUMN:
        mostly = kwargs.get("mostly", 1.0)
        need = "" if mostly >= 1.0 else f" (at most {1 - mostly:.1%} may be unknown)"
        return f"{count}{of} refer to transaction ids that were never ingested{need}{eg}"
    if kind == "expect_table_row_count_to_be_between":
        basis = f" ({basis_note})" if basis_note else ""
        return (
            f"the partition has {_fmt(result.get('observed_value'))} rows; the history of "
            f"earlier valid partitions{basis} allows "
            f"{kwargs.get('min_value')}..{kwargs.get('max_value')}"
        )
    return f"{kind} failed on column '{column}'{eg}"


def _exception_message(info: Any) -> str | None:
    """GE reports errors either flat or keyed by metric id; the first message, if any."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _run(
    table: str, frame: pd.DataFrame, suite, basis_note: str | None = None
) -> ValidationOutcome:
    started = time.perf_counter()
    definition = _batch_definitions()[table]
    with _LOCK:
        batch = definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    rows = len(frame)
    problems: list[Problem] = []
    expectations: list[dict[str, Any]] = []
    missing_columns = {
        item.expectation_config.kwargs.get("column")
        for item in result.results
        if item.expectation_config.type == "expect_column_to_exist" and not item.success
    }
    for item in result.results:
        config = item.expectation_config
        kind = config.type
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        res = dict(item.result or {})
        examples = _examples(res)
        error = _exception_message(item.exception_info)
        expectations.append(
            {
                "type": kind,
                "kwargs": jsonable(kwargs),
                "success": bool(item.success),
                "observed_value": jsonable(res.get("observed_value")),
                "unexpected_count": jsonable(res.get("unexpected_count")),
                "examples": examples,
            }
        )
        if item.success:
            continue
        column = kwargs.get("column")
        if column in missing_columns and kind != "expect_column_to_exist":
            continue  # already reported as a missing column
        if error is not None:
            message = f"{kind} could not be evaluated on column '{column}': {error}"
        else:
            message = _sentence(kind, kwargs, res, examples, rows, basis_note)
        if column == UNKNOWN_ID_COLUMN:
            column = "transaction_id"
        unexpected = res.get("unexpected_count")
        if kind.startswith("expect_table_row_count"):
            unexpected = None
        problems.append(
            Problem(
                stage="expectations",
                check=kind,
                message=message,
                column=column,
                unexpected_count=None if unexpected is None else int(unexpected),
                examples=examples,
            )
        )
    return ValidationOutcome(
        passed=bool(result.success) and not problems,
        problems=problems,
        statistics=jsonable(dict(result.statistics)),
        expectations=expectations,
        seconds=round(time.perf_counter() - started, 4),
    )


def validate_transactions(
    frame: pd.DataFrame,
    partition_key: str | None = None,
    *,
    params: TransactionSuiteParams | None = None,
    history_counts: list[int] | None = None,
    amount_max: float = DEFAULT_AMOUNT_MAX,
) -> ValidationOutcome:
    """Validate one hour of canonical transactions.

    Pass either ``params`` or ``partition_key`` (with optional ``history_counts`` for the row-count
    bounds and ``amount_max``).
    """
    if params is None:
        if partition_key is None:
            raise ValueError("validate_transactions needs partition_key or params")
        from fraudloop.schema import hour_start

        params = TransactionSuiteParams(
            hour_start=hour_start(partition_key),
            amount_max=float(amount_max),
            row_bounds=row_count_bounds(history_counts or []),
            row_bounds_basis=history_basis(history_counts or []),
        )
    return _run("transactions", frame, transactions_suite(params), params.row_bounds_basis)


def validate_labels(
    frame: pd.DataFrame,
    day_key: str | None = None,
    *,
    known_transaction_ids: Iterable[str] | pd.Series | pd.Index | None = None,
    known_ids_mostly: float = 1.0,
    params: LabelSuiteParams | None = None,
) -> ValidationOutcome:
    """Validate one day of canonical labels; ``known_transaction_ids`` adds the reference check."""
    if params is None:
        if day_key is None:
            raise ValueError("validate_labels needs day_key or params")
        from fraudloop.schema import day_start

        params = LabelSuiteParams(
            day_start=day_start(day_key),
            check_known_ids=known_transaction_ids is not None,
            known_ids_mostly=float(known_ids_mostly),
        )
    view = frame
    if params.check_known_ids:
        known = _as_index(known_transaction_ids)
        if "transaction_id" in frame.columns:
            ids = frame["transaction_id"].astype("string")
            # The id where it is not known, else null; null ids stay null (the not-null check
            # reports them).
            unknown = ids.where(~ids.isin(known).fillna(False).astype(bool))
        else:
            unknown = pd.Series(pd.NA, index=frame.index, dtype="string")
        view = frame.assign(**{UNKNOWN_ID_COLUMN: unknown})
    return _run("labels", view, labels_suite(params))


def _as_index(ids: Iterable[str] | pd.Series | pd.Index | None) -> pd.Index:
    if ids is None:
        return pd.Index([], dtype="string")
    if isinstance(ids, pd.Index):
        return ids.astype("string")
    if isinstance(ids, pd.Series):
        return pd.Index(ids.astype("string"))
    return pd.Index(list(ids), dtype="string")
