"""The drift report (fraudloop.monitoring.drift) against real Evidently: verdicts on known data,
the HTML, the input errors.

Each Evidently run is a module-scoped fixture, so the import (seconds) and each report are paid
once for the tests that read them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraudloop.monitoring.drift import _sample, drift_report, parse_drift_snapshot

FEATURES = ["amount", "normal", "count", "ratio", "flag", "constant", "with_nan"]
REFERENCE_ROWS = 5_000  # > 1,000: Evidently picks distances (Wasserstein, Jensen-Shannon)
CURRENT_ROWS = 3_000


def table(rows: int, seed: int, *, shift_std: float = 0.0) -> pd.DataFrame:
    """Features of mixed shapes plus a score; `shift_std` moves `normal` and `score` by that many
    of their standard deviations."""
    rng = np.random.default_rng(seed)
    with_nan = rng.normal(10.0, 2.0, rows)
    with_nan[rng.random(rows) < 0.1] = np.nan
    score = rng.beta(2.0, 20.0, rows)
    score_std = np.sqrt(2.0 * 20.0 / (22.0**2 * 23.0))
    return pd.DataFrame(
        {
            "amount": rng.lognormal(4.0, 0.8, rows),
            "normal": rng.normal(0.0, 1.0, rows) + shift_std,
            "count": rng.poisson(12.0, rows),  # int on purpose: declared numerical all the same
            "ratio": rng.gamma(4.0, 0.25, rows),
            "flag": (rng.random(rows) < 0.3).astype(float),
            "constant": np.full(rows, 7.0),
            "with_nan": with_nan,
            "score": score + shift_std * score_std,
            "not_requested_col": rng.random(rows),  # not asked for: not compared
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return table(REFERENCE_ROWS, seed=1)


@pytest.fixture(scope="module")
def same(reference):
    return drift_report(reference, table(CURRENT_ROWS, seed=2), FEATURES)


@pytest.fixture(scope="module")
def shifted(reference):
    return drift_report(reference, table(CURRENT_ROWS, seed=3, shift_std=3.0), FEATURES)


def test_same_distribution_no_drift(same):
    result, _ = same
    assert result.drifted_features == []
    assert result.drifted_share == 0.0
    assert result.dataset_drift is False
    assert result.prediction_drifted is False
    assert set(result.feature_scores) == set(FEATURES)
    assert (result.rows_reference, result.rows_current) == (REFERENCE_ROWS, CURRENT_ROWS)
    assert result.seconds > 0


def test_methods_are_distances_with_a_large_reference(same):
    result, _ = same
    methods = result.feature_methods
    # > 5 distinct values: normed Wasserstein; a 0/1 flag or a constant: Jensen-Shannon
    assert methods["amount"] == methods["with_nan"] == "Wasserstein distance (normed)"
    assert methods["flag"] == methods["constant"] == "Jensen-Shannon distance"
    assert result.prediction_method == "Wasserstein distance (normed)"
    assert result.feature_scores["constant"] == 0.0  # identical constants: zero distance
    assert all(0.0 <= s < 0.1 for s in result.feature_scores.values())


def test_shifted_columns_flagged(shifted):
    result, _ = shifted
    assert result.drifted_features == ["normal"]
    assert result.feature_scores["normal"] > 2.0  # ~3 std of the reference, normed by its std
    assert result.prediction_drifted is True
    assert result.prediction_drift_score > 1.0
    # Evidently's share counts every column it tested: 7 features + the score
    assert result.drifted_share == pytest.approx(2 / 8)
    assert result.dataset_drift is False  # 25 % < the default drift_share of 50 %


def test_dataset_drift_follows_drift_share(reference):
    current = table(CURRENT_ROWS, seed=3, shift_std=3.0)
    result, _ = drift_report(reference, current, ["normal", "flag"], drift_share=0.5)
    assert result.drifted_share == pytest.approx(2 / 3)  # normal + score of 3 columns
    assert result.dataset_drift is True


def test_html_report(shifted):
    _, html = shifted
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert len(html) > 200_000  # Evidently inlines its JavaScript: the file opens offline
    # our <title> names the library; the embedded report data names the columns and methods
    assert "evidently" in html.lower()
    assert '"normal"' in html and "Wasserstein distance (normed)" in html
    assert "not_requested_col" not in html


def test_small_reference_gives_p_values(reference):
    """At <= 1,000 reference rows (here by sampling) Evidently switches to tests: p-values."""
    current = table(CURRENT_ROWS, seed=3, shift_std=3.0)
    result, _ = drift_report(reference, current, ["normal", "flag"], max_reference_rows=1_000)
    assert result.rows_reference == 1_000
    assert result.feature_methods == {"normal": "K-S p_value", "flag": "Z-test p_value"}
    assert result.feature_scores["normal"] < 0.05 and result.drifted["normal"]
    assert result.feature_scores["flag"] > 0.05 and not result.drifted["flag"]


def test_a_large_day_is_compared_on_a_bounded_sample(reference):
    """A day of 100x traffic must not make the report grow with it: the current side is sampled
    to its bound too, the record says how many rows the day held, and a shift is still seen."""
    current = table(12_000, seed=3, shift_std=3.0)
    result, _ = drift_report(
        reference, current, ["normal", "flag"], max_reference_rows=2_000, max_current_rows=1_500
    )
    assert (result.rows_reference, result.rows_current) == (2_000, 1_500)
    assert result.rows_current_total == 12_000
    assert result.drifted == {"normal": True, "flag": False}
    again, _ = drift_report(
        reference, current, ["normal", "flag"], max_reference_rows=2_000, max_current_rows=1_500
    )
    assert again.feature_scores == result.feature_scores  # the sample is the seed's alone


def test_no_prediction_column(reference):
    result, _ = drift_report(reference, table(500, seed=4), ["amount"], prediction=None)
    assert result.prediction_drift_score is None and result.prediction_drifted is None
    assert list(result.feature_scores) == ["amount"]


def test_to_dict_is_strict_json(shifted):
    result, _ = shifted
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["drifted"]["normal"] is True
    assert data["prediction_drifted"] is True


def test_sample_is_deterministic_and_ordered():
    frame = pd.DataFrame({"x": np.arange(1_000)})
    first, again = _sample(frame, 100, seed=5), _sample(frame, 100, seed=5)
    assert first.equals(again) and len(first) == 100
    assert first["x"].is_monotonic_increasing
    assert not first.equals(_sample(frame, 100, seed=6))
    assert _sample(frame, 5_000, seed=5) is frame


@pytest.mark.parametrize("side", ["reference", "current"])
def test_missing_column_named(reference, side):
    frames = {"reference": reference, "current": table(100, seed=5)}
    frames[side] = frames[side].drop(columns=["ratio"])
    with pytest.raises(ValueError, match=rf"missing from the {side} frame: ratio"):
        drift_report(frames["reference"], frames["current"], FEATURES)


def test_missing_prediction_column_named(reference):
    with pytest.raises(ValueError, match=r"missing from the (reference|current) frame: proba"):
        drift_report(reference, table(100, seed=5), ["amount"], prediction="proba")


def test_empty_current(reference):
    with pytest.raises(ValueError, match="no current rows"):
        drift_report(reference, reference.iloc[:0], FEATURES)


def test_all_nan_column_named(reference):
    current = table(100, seed=5).assign(with_nan=np.nan)
    with pytest.raises(ValueError, match="'with_nan' has no finite value in the current frame"):
        drift_report(reference, current, FEATURES)


def test_parse_refuses_a_missing_verdict():
    snapshot = {
        "metrics": [
            {
                "id": "m1",
                "config": {"type": "evidently:metric_v2:ValueDrift", "column": "x", "method": "m"},
                "value": 0.3,
            }
        ],
        "tests": [],
    }
    with pytest.raises(RuntimeError, match="no usable test verdict for column 'x'"):
        parse_drift_snapshot(snapshot)
