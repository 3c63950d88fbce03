"""The Great Expectations 1.x suites of the raw tables, written as code.

One suite per table:

- ``transactions`` (one hourly partition): the required columns exist; no required column has a
  null (this also catches NaN amounts); ``transaction_id`` is unique; ``amount`` is in
  ``[0, amount_max]`` (zero is an account verification; this also catches +/-inf);
  ``tx_datetime`` is in ``[hour start, hour start + 1 h)``; and, when earlier valid partitions
  of the same hour of day exist, the row count is within bounds derived from them
  (:func:`row_count_bounds`), which catches a duplicated or truncated feed. Ingestion runs the
  suite on the rows that passed the row checks (:mod:`fraudloop.data.rows`): it is the
  partition's verdict and evidence, the row checks decide which rows are kept.
- ``labels`` (one daily partition): the required columns exist; no nulls; ``transaction_id`` is
  unique; ``is_fraud`` is in {0, 1}; ``known_at`` is in ``[day start, day start + 1 day)``; and,
  when the caller passes the set of transaction ids ingested so far, every label refers to one of
  them (``mostly`` configurable).

The suites run through :mod:`fraudloop.data.expectations` (one cached GE context per process).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from fraudloop.core.hours import day_start, hour_start
from fraudloop.data.expectations import (
    UNKNOWN_ID_COLUMN,
    ValidationOutcome,
    run_suite,
    warm_up,
)
from fraudloop.data.policy import IngestPolicy

TRANSACTION_REQUIRED = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount")
LABEL_REQUIRED = ("transaction_id", "is_fraud", "known_at")
DEFAULT_AMOUNT_MAX = IngestPolicy.max_amount


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


def _transaction_rows_suite(name: str, amount_max: float):
    """A new suite with what every transactions suite checks of its rows: the required columns
    exist and have no null, unique transaction ids, amounts in [0, amount_max]."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    warm_up()  # a suite needs an active context
    suite = gx.ExpectationSuite(name=name)
    for column in TRANSACTION_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnToExist(column=column))
    for column in TRANSACTION_REQUIRED:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="amount", min_value=0.0, max_value=float(amount_max)
        )
    )
    return suite


@lru_cache(maxsize=256)
def transactions_suite(params: TransactionSuiteParams):
    """The transactions suite for one hour (cached per parameters)."""
    import great_expectations.expectations as gxe

    start, end = _utc(params.hour_start), _utc(params.hour_end)
    suite = _transaction_rows_suite(f"transactions-{start:%Y-%m-%dT%H}", params.amount_max)
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

    warm_up()  # a suite needs an active context
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
        params = TransactionSuiteParams(
            hour_start=hour_start(partition_key),
            amount_max=float(amount_max),
            row_bounds=row_count_bounds(history_counts or []),
            row_bounds_basis=history_basis(history_counts or []),
        )
    return run_suite("transactions", frame, transactions_suite(params), params.row_bounds_basis)


#: columns of the several-hours view only (`validate_transactions_hours`): each row's own hour
#: and that hour's row count with its bounds, so one suite can check what each hour's own suite
#: checks
HOUR_START, HOUR_END = "partition_hour_start", "partition_hour_end"
HOUR_ROWS, HOUR_ROWS_MIN, HOUR_ROWS_MAX = (
    "partition_rows",
    "partition_rows_min",
    "partition_rows_max",
)
_NO_ROW_LIMIT = 2**62


@lru_cache(maxsize=16)
def transactions_hours_suite(amount_max: float):
    """One suite over the rows of several hours that passes exactly when each hour would pass
    its own :func:`transactions_suite` and no transaction id appears in two of the hours."""
    import great_expectations.expectations as gxe

    suite = _transaction_rows_suite("transactions-hours", amount_max)
    pairs = [  # (a, b, or_equal): a >= b, or a > b
        ("tx_datetime", HOUR_START, True),
        (HOUR_END, "tx_datetime", False),
        (HOUR_ROWS, HOUR_ROWS_MIN, True),
        (HOUR_ROWS_MAX, HOUR_ROWS, True),
    ]
    for a, b, or_equal in pairs:
        suite.add_expectation(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=or_equal)
        )
    return suite


def validate_transactions_hours(
    hours: Sequence[tuple[pd.DataFrame, TransactionSuiteParams]],
) -> ValidationOutcome:
    """Validate the accepted rows of several hours in one Great Expectations call.

    Why: a validation costs about 0.15 s whatever its size (GE resolves a metric graph per
    expectation), so a run that catches up a day validated hour by hour spent most of its time
    there. The suite is each hour's own suite with the hour-specific bounds carried by columns
    of the view. It passes only if every hour would pass its own suite; when it fails, the
    caller validates each hour on its own for the hour-level verdicts and messages (a
    transaction id in two of the hours fails it too, which the hours' own suites do not see).
    Every hour must share one amount cap; an hour with no rows cannot be checked here.
    """
    caps = {params.amount_max for _, params in hours}
    if len(caps) != 1:
        raise ValueError(f"validate_transactions_hours needs one amount cap, got {sorted(caps)}")
    if any(frame.empty for frame, _ in hours):
        raise ValueError("validate_transactions_hours cannot check the row count of an empty hour")
    views = []
    for frame, params in hours:
        low, high = params.row_bounds or (0, _NO_ROW_LIMIT)
        views.append(
            frame.assign(
                **{
                    HOUR_START: _utc(params.hour_start),
                    HOUR_END: _utc(params.hour_end),
                    HOUR_ROWS: len(frame),
                    HOUR_ROWS_MIN: int(low),
                    HOUR_ROWS_MAX: int(high),
                }
            )
        )
    view = pd.concat(views, ignore_index=True)
    return run_suite("transactions_hours", view, transactions_hours_suite(caps.pop()))


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
        params = LabelSuiteParams(
            day_start=day_start(day_key),
            check_known_ids=known_transaction_ids is not None,
            known_ids_mostly=float(known_ids_mostly),
        )
    view = frame
    if params.check_known_ids:
        known = as_id_index(known_transaction_ids)
        if "transaction_id" in frame.columns:
            ids = frame["transaction_id"].astype("string")
            # The id where it is not known, else null; null ids stay null (the not-null check
            # reports them).
            unknown = ids.where(~ids.isin(known).fillna(False).astype(bool))
        else:
            unknown = pd.Series(pd.NA, index=frame.index, dtype="string")
        view = frame.assign(**{UNKNOWN_ID_COLUMN: unknown})
    return run_suite("labels", view, labels_suite(params))


def as_id_index(ids: Iterable[str] | pd.Series | pd.Index | None) -> pd.Index:
    if ids is None:
        return pd.Index([], dtype="string")
    if isinstance(ids, pd.Index):
        return ids.astype("string")
    if isinstance(ids, pd.Series):
        return pd.Index(ids.astype("string"))
    return pd.Index(list(ids), dtype="string")
