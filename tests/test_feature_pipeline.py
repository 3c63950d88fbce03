"""The hourly feature pipeline on stored partitions: incremental == rebuild, checkpoints,
blocked hours, and labels joined for the state."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.labels import build_fraud_labels
from fraudloop.features.pipeline import (
    column_summary,
    compute_feature_hours,
    load_checkpoint,
    rebuild_features,
)
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import generate_day
from tests.factories import store_history

pytestmark = pytest.mark.slow  # recomputes days of features from raw partitions

DAYS = 12
START = date(2018, 4, 1)


def _hours(days=DAYS):
    first = pd.Timestamp(START, tz="UTC")
    return [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24 * days)]


@pytest.fixture(scope="module")
def history():
    population = make_population(seed=11, scale=0.1)
    frames = [generate_day(population, START + timedelta(days=d)) for d in range(DAYS)]
    return pd.concat(frames, ignore_index=True)


def _land_raw(store, history, skip_hour=None):
    store_history(store, history, _hours(), quarantined_hours=(skip_hour,) if skip_hour else ())


def _stored_features(store, keys):
    frames = [tables.read_partition(store, "transaction_features", k) for k in keys]
    return pd.concat(frames, ignore_index=True).sort_values("transaction_id").reset_index(drop=True)


def test_incremental_single_hours_and_one_range_equal_the_full_rebuild(local_store, history):
    _land_raw(local_store, history)
    keys = _hours()
    run = compute_feature_hours(local_store, keys, history_start="2018-04-01")
    assert all(r.status == "valid" for r in run.hours)
    assert run.checkpoints_written[-1] == "2018-04-13"
    incremental = _stored_features(local_store, keys)
    rebuilt = (
        rebuild_features(local_store, keys).sort_values("transaction_id").reset_index(drop=True)
    )
    assert len(incremental) == len(history)
    np.testing.assert_allclose(
        incremental[list(FEATURE_NAMES)].to_numpy(),
        rebuilt[list(FEATURE_NAMES)].to_numpy(),
        atol=1e-9,
    )
    # terminal risk really uses the matured labels (otherwise this test could not fail)
    assert incremental["terminal_risk_7d"].max() > 0
    # each hour's UI summary describes the rows written for it
    for result in run.hours[30:33]:
        written = tables.read_partition(local_store, "transaction_features", result.hour)
        expected = written[list(FEATURE_NAMES)].describe().T[["mean", "std", "min", "max"]]
        pd.testing.assert_frame_equal(result.summary, expected, rtol=1e-9)

    # recomputing one late hour alone (from its day's checkpoint) gives the same version
    late = "2018-04-10-13:00"
    before = tables.read_pointer(local_store, "transaction_features", late)["sha256"]
    again = compute_feature_hours(local_store, [late], history_start="2018-04-01")
    assert again.hours[0].sha256 == before


def test_missing_checkpoint_is_rebuilt_from_history(local_store, history):
    _land_raw(local_store, history)
    compute_feature_hours(local_store, _hours(), history_start="2018-04-01")
    target = "2018-04-11-05:00"
    expected = tables.read_pointer(local_store, "transaction_features", target)["sha256"]
    for info in local_store.list("features/state/"):
        local_store.delete(info.key)
    rerun = compute_feature_hours(local_store, [target], history_start="2018-04-01")
    assert rerun.hours[0].sha256 == expected
    _, pointer = load_checkpoint(local_store, "2018-04-11")
    assert pointer["day"] == "2018-04-11"


def test_quarantined_hour_blocks_its_features_but_not_the_chain(local_store, history):
    bad = "2018-04-03-12:00"
    _land_raw(local_store, history, skip_hour=bad)
    run = compute_feature_hours(local_store, _hours(4), history_start="2018-04-01")
    blocked = [r for r in run.hours if r.status == "blocked"]
    assert [r.hour for r in blocked] == [bad]
    assert "quarantined" in blocked[0].reason
    with pytest.raises(tables.PartitionQuarantined):
        tables.read_partition(local_store, "transaction_features", bad)
    assert (
        tables.read_pointer(local_store, "transaction_features", "2018-04-03-13:00")["status"]
        == "valid"
    )


def test_fraud_labels_carry_the_transaction_and_count_unplaced(local_store, history):
    _land_raw(local_store, history, skip_hour="2018-04-02-12:00")
    result = build_fraud_labels(local_store, "2018-04-09", lookback_days=45)
    labels = tables.read_partition(local_store, "fraud_labels", "2018-04-09")
    assert result.unplaced > 0  # the labels of the quarantined hour have no transaction yet
    assert result.rows == len(labels)
    assert labels["terminal_id"].notna().all() and labels["tx_datetime"].notna().all()
    assert (labels["known_at"] - labels["tx_datetime"] == timedelta(days=7)).all()


def test_recomputing_an_old_day_with_late_labels_drops_later_checkpoints(local_store, history):
    _land_raw(local_store, history)
    compute_feature_hours(local_store, _hours(), history_start="2018-04-01")
    assert load_checkpoint(local_store, "2018-04-12") is not None
    # a late correction: one more fraud label known on 2018-04-09
    labels = tables.read_partition(local_store, "labels", "2018-04-09")
    flipped = labels.assign(
        is_fraud=labels["is_fraud"].where(labels.index != 0, 1 - labels["is_fraud"])
    )
    tables.write_partition(local_store, "labels", "2018-04-09", flipped, [])
    build_fraud_labels(local_store, "2018-04-09", lookback_days=45)
    day9 = [k for k in _hours() if k.startswith("2018-04-09")]
    compute_feature_hours(local_store, day9, history_start="2018-04-01")
    assert load_checkpoint(local_store, "2018-04-10") is not None  # rewritten by this run
    assert load_checkpoint(local_store, "2018-04-12") is None  # stale, dropped
    # the next run past it rebuilds from history and agrees with a full rebuild
    compute_feature_hours(local_store, ["2018-04-12-10:00"], history_start="2018-04-01")
    stored = tables.read_partition(local_store, "transaction_features", "2018-04-12-10:00")
    rebuilt = rebuild_features(local_store, _hours())
    rebuilt = rebuilt[rebuilt["transaction_id"].isin(stored["transaction_id"])]
    np.testing.assert_allclose(
        stored.sort_values("transaction_id")[list(FEATURE_NAMES)].to_numpy(),
        rebuilt.sort_values("transaction_id")[list(FEATURE_NAMES)].to_numpy(),
        atol=1e-9,
    )


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_column_summary_skips_missing_values_like_describe(rows):
    frame = pd.DataFrame(
        {"a": np.arange(rows, dtype=float), "b": np.full(rows, np.nan), "c": np.ones(rows)}
    )
    if rows > 1:
        frame.loc[0, "c"] = np.nan
    expected = frame.describe().T[["mean", "std", "min", "max"]].astype(float)
    pd.testing.assert_frame_equal(column_summary(frame), expected, rtol=1e-12)
