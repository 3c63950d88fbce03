"""The Great Expectations suites of the feature table, run per feature run in two GE calls.

Values: every feature present, not null, finite and inside its range (:func:`feature_bounds`),
ids unique, every row inside its hour. Rows: each hour holds exactly as many feature rows as it
has valid transactions.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from fraudloop.core.hours import hour_start
from fraudloop.data.expectations import ValidationOutcome, run_suite, warm_up
from fraudloop.features.compute import FEATURE_NAMES, ID_COLUMNS
from fraudloop.features.state import NO_FRAUD_AGE_HOURS, NO_PREV_TX_SECONDS


def feature_bounds(name: str) -> tuple[float, float]:
    """The range every value of a feature must lie in (finite: NaN and inf always fail)."""
    if name in ("tx_is_weekend", "tx_is_night", "customer_terminal_novelty"):
        return 0.0, 1.0
    if name == "tx_hour":
        return 0.0, 23.0
    if "risk" in name or "share" in name:
        return 0.0, 1.0
    if name == "customer_secs_since_prev_tx":
        return 0.0, NO_PREV_TX_SECONDS
    if "fraud_age" in name:
        return 1.0, NO_FRAUD_AGE_HOURS
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

    warm_up()  # a suite needs an active context
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

    warm_up()  # a suite needs an active context
    suite = gx.ExpectationSuite(name="transaction_features_rows")
    suite.add_expectation(
        gxe.ExpectColumnPairValuesToBeEqual(column_A=HOUR_ROWS, column_B=HOUR_EXPECTED_ROWS)
    )
    return suite


def validate_features(
    frames: dict[str, pd.DataFrame], expected_rows: dict[str, int]
) -> ValidationOutcome:
    """Validate the feature partitions of a run (hour key -> frame) in two GE calls."""
    parts = []
    for key, frame in frames.items():
        seconds = (frame["tx_datetime"] - hour_start(key)).dt.total_seconds()
        parts.append(frame.assign(**{SECONDS_INTO_HOUR: seconds}))
    combined = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    values = run_suite("transaction_features", combined, features_suite())
    per_hour = pd.DataFrame(
        {
            "hour": list(frames),
            HOUR_ROWS: [len(f) for f in frames.values()],
            HOUR_EXPECTED_ROWS: [int(expected_rows.get(k, -1)) for k in frames],
        }
    )
    rows = run_suite("transaction_features_rows", per_hour, feature_rows_suite())
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
