"""The Great Expectations suites: each expectation fails where it should, and reads well."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import day_start, hour_start
from fraudloop.data.expectations import Problem, jsonable
from fraudloop.data.validation import (
    LabelSuiteParams,
    TransactionSuiteParams,
    labels_suite,
    row_count_bounds,
    transactions_suite,
    validate_labels,
    validate_transactions,
)

KEY = "2018-04-01-05:00"
START = hour_start(KEY)
DAY = "2018-04-08"


def tx_frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.array([f"t{i:03d}" for i in range(n)], dtype="string"),
            "tx_datetime": START + pd.to_timedelta(np.arange(n) * 60, unit="s"),
            "customer_id": pd.array([f"c{i % 7}" for i in range(n)], dtype="string"),
            "terminal_id": pd.array([f"x{i % 5}" for i in range(n)], dtype="string"),
            "amount": np.linspace(1.0, 200.0, n),
        }
    )


def labels_frame(ids: list[str]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "transaction_id": pd.array(ids, dtype="string"),
            "is_fraud": np.array([i % 2 for i in range(n)], dtype="int8"),
            "known_at": day_start(DAY) + pd.to_timedelta(np.arange(n) * 600, unit="s"),
        }
    )


def failed(outcome) -> dict[tuple[str, str | None], Problem]:
    return {(p.check, p.column): p for p in outcome.problems}


def test_row_count_bounds():
    assert row_count_bounds([]) is None
    assert row_count_bounds([100, 100, 100]) == (5, 420)
    assert row_count_bounds([100, 110, 5000], ratio=2, slack=0) == (55, 220)  # median, robust
    assert row_count_bounds([0, 0]) == (1, 20)


def test_good_transactions_pass():
    outcome = validate_transactions(tx_frame(), KEY, history_counts=[40, 38, 45])
    assert outcome.passed, outcome.problems
    assert outcome.statistics["evaluated_expectations"] == 14
    types = [e["type"] for e in outcome.expectations]
    assert types.count("expect_column_to_exist") == 5
    assert "expect_table_row_count_to_be_between" in types
    json.dumps(outcome.to_dict(), allow_nan=False)


def test_row_count_expectation_only_with_history():
    outcome = validate_transactions(tx_frame(), KEY, history_counts=[])
    assert "expect_table_row_count_to_be_between" not in [e["type"] for e in outcome.expectations]
    spiked = validate_transactions(tx_frame(400), KEY, history_counts=[40] * 7)
    # 400 rows also run past the hour; the row count is one of the failures
    problem = failed(spiked)[("expect_table_row_count_to_be_between", None)]
    assert problem.examples == [] and problem.unexpected_count is None
    assert "has 400 rows" in problem.message and "allows 1..180" in problem.message


def test_each_transaction_expectation_reports_examples():
    frame = tx_frame()
    frame.loc[0, "transaction_id"] = pd.NA
    frame.loc[2, "transaction_id"] = "t001"
    frame.loc[3, "amount"] = -5.0
    frame.loc[4, "amount"] = np.inf
    frame.loc[5, "amount"] = np.nan
    frame.loc[6, "amount"] = 250_000.0
    frame.loc[7, "tx_datetime"] = START + pd.Timedelta(hours=1)  # end is exclusive
    frame.loc[8, "customer_id"] = pd.NA
    outcome = validate_transactions(frame, KEY)
    assert not outcome.passed
    problems = failed(outcome)
    assert set(problems) == {
        ("expect_column_values_to_not_be_null", "transaction_id"),
        ("expect_column_values_to_not_be_null", "customer_id"),
        ("expect_column_values_to_not_be_null", "amount"),
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_be_between", "tx_datetime"),
    }
    amount = problems[("expect_column_values_to_be_between", "amount")]
    assert amount.unexpected_count == 3
    assert amount.examples == [-5.0, "inf", 250000.0]
    assert amount.message == (
        "column 'amount' is outside [0, 100000] in 3 of 40 rows, e.g. -5, inf, 250000"
    )
    assert amount.stage == "expectations"
    late = problems[("expect_column_values_to_be_between", "tx_datetime")]
    assert late.examples == ["2018-04-01T06:00:00+00:00"]
    unique = problems[("expect_column_values_to_be_unique", "transaction_id")]
    assert unique.examples == ["t001"] and unique.unexpected_count == 2
    # everything is JSON-clean (no Timestamp, no NaN/inf floats)
    json.dumps([p.to_dict() for p in outcome.problems], allow_nan=False)
    json.dumps(outcome.to_dict(), allow_nan=False)


def test_zero_amount_is_valid():
    """Account verifications are $0.00: a genuine amount, not a defect."""
    frame = tx_frame()
    frame.loc[1, "amount"] = 0.0
    assert validate_transactions(frame, KEY).passed


def test_amount_cap_is_configurable():
    outcome = validate_transactions(tx_frame(), KEY, amount_max=100.0)
    assert [p.check for p in outcome.problems] == ["expect_column_values_to_be_between"]


def test_missing_column_in_validation_is_a_problem_not_an_exception():
    outcome = validate_transactions(tx_frame().drop(columns=["terminal_id"]), KEY)
    checks = failed(outcome)
    assert list(checks) == [("expect_column_to_exist", "terminal_id")]  # no knock-on noise
    assert checks[("expect_column_to_exist", "terminal_id")].message == (
        "required column 'terminal_id' is missing"
    )


def test_suites_are_cached_per_parameters():
    params = TransactionSuiteParams(hour_start=START, row_bounds=(1, 10))
    assert transactions_suite(params) is transactions_suite(
        TransactionSuiteParams(hour_start=START, row_bounds=(1, 10))
    )
    assert labels_suite(LabelSuiteParams(day_start(DAY))) is labels_suite(
        LabelSuiteParams(day_start(DAY))
    )


# --- labels ----------------------------------------------------------------------------------


def test_good_labels_pass():
    ids = [f"t{i}" for i in range(30)]
    outcome = validate_labels(labels_frame(ids), DAY, known_transaction_ids=set(ids) | {"other"})
    assert outcome.passed, outcome.problems
    assert "expect_column_values_to_be_null" in [e["type"] for e in outcome.expectations]


def test_unknown_transaction_ids_fail():
    ids = [f"t{i}" for i in range(30)]
    frame = labels_frame(ids)
    frame.loc[[3, 4], "transaction_id"] = ["ghost-1", "ghost-2"]
    outcome = validate_labels(frame, DAY, known_transaction_ids=pd.Series(ids))
    assert [p.check for p in outcome.problems] == ["expect_column_values_to_be_null"]
    problem = outcome.problems[0]
    assert problem.column == "transaction_id"
    assert problem.unexpected_count == 2
    assert problem.examples == ["ghost-1", "ghost-2"]
    assert problem.message == (
        "2 of 30 rows refer to transaction ids that were never ingested, e.g. ghost-1, ghost-2"
    )
    # tolerated with mostly
    lenient = validate_labels(frame, DAY, known_transaction_ids=ids, known_ids_mostly=0.9)
    assert lenient.passed
    # no known-id set: no reference check
    assert validate_labels(frame, DAY).passed


def test_is_fraud_outside_zero_one_fails():
    frame = labels_frame([f"t{i}" for i in range(10)])
    frame.loc[2, "is_fraud"] = 2
    outcome = validate_labels(frame, DAY)
    assert [(p.check, p.column) for p in outcome.problems] == [
        ("expect_column_values_to_be_in_set", "is_fraud")
    ]
    assert outcome.problems[0].examples == [2]
    assert "is not in {0, 1} in 1 of 10 rows, e.g. 2" in outcome.problems[0].message


def test_labels_other_expectations():
    frame = labels_frame([f"t{i}" for i in range(10)])
    frame.loc[1, "transaction_id"] = "t0"
    frame.loc[2, "known_at"] = day_start(DAY) + pd.Timedelta(days=1)
    frame["is_fraud"] = frame["is_fraud"].astype("Int8")
    frame.loc[3, "is_fraud"] = pd.NA
    outcome = validate_labels(frame, DAY, known_transaction_ids=[f"t{i}" for i in range(10)])
    assert set(failed(outcome)) == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", "known_at"),
        ("expect_column_values_to_not_be_null", "is_fraud"),
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64("nan"), "NaN"),
        (float("-inf"), "-inf"),
        (np.int64(3), 3),
        (pd.Timestamp("2018-04-01 05:00", tz="UTC"), "2018-04-01T05:00:00+00:00"),
        (pd.NaT, None),
        (pd.NA, None),
        ({"a": [np.bool_(True), {1, 2}]}, {"a": [True, [1, 2]]}),
    ],
)
def test_jsonable(value, expected):
    assert jsonable(value) == expected
