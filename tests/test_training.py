"""Training datasets: windows, labels as of the cutoff, content-addressed manifests, lineage and
bit-for-bit reproduction from the registry."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest

from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.core.store import IntegrityError, LocalObjectStore
from fraudloop.features.compute import FEATURE_NAMES, feature_code_hash
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.model.booster import TrainConfig
from fraudloop.model.datasets import DatasetSpec, build_dataset, load_dataset, manifest_id
from fraudloop.model.registry import ModelRegistry
from fraudloop.model.training import fit, lineage_json, lineage_record, reproduce
from tests.factories import hour_keys, simulated_history, store_history

pytestmark = pytest.mark.slow  # builds datasets and trains from a stored history

START = date(2018, 4, 1)
TX_DAYS = 10  # transactions 04-01 .. 04-10; their labels (known 7 days later) up to 04-17
CUTOFF = pd.Timestamp("2018-04-17 12:30", tz="UTC")
SPEC = DatasetSpec(cutoff=CUTOFF, window_days=6, holdout_days=3, label_delay_days=7)
END = pd.Timestamp("2018-04-10 12:00", tz="UTC")
HOLDOUT_START = pd.Timestamp("2018-04-07 12:00", tz="UTC")
TRAIN_START = pd.Timestamp("2018-04-01 12:00", tz="UTC")
BLOCKED_HOUR = "2018-04-05-03:00"
MISSING_HOUR = "2018-04-10-04:00"
CONFIG = TrainConfig(
    n_estimators=40,
    min_child_samples=20,
    early_stopping_rounds=10,
    validation_share=0.3,
    num_threads=2,
)


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulated_history(START, TX_DAYS, seed=11, scale=0.1)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, history):
    """Raw partitions, fraud labels and features, written once; tests get a copy."""
    store = LocalObjectStore(tmp_path_factory.mktemp("training") / "store")
    # every 97th transaction never gets a label
    labelled = history[history.index % 97 != 0]
    store_history(store, history, hour_keys(START, TX_DAYS), labelled=labelled, all_label_days=True)
    feature_hours = [k for k in hour_keys(START, TX_DAYS) if k != MISSING_HOUR]
    compute_feature_hours(store, feature_hours, history_start="2018-04-01")
    tables.mark_quarantined(store, "transaction_features", BLOCKED_HOUR, "test: blocked")
    return store


@pytest.fixture
def store(base_store, tmp_path):
    shutil.copytree(base_store.root, tmp_path / "copy")
    return LocalObjectStore(tmp_path / "copy")


@pytest.fixture(scope="module")
def dataset(base_store):
    return build_dataset(base_store, SPEC)


def _add_label(store, day: str, transaction_id: str, is_fraud: int, known_at: pd.Timestamp):
    try:
        labels = tables.read_partition(store, "labels", day)
    except tables.PartitionMissing:
        labels = None
    extra = pd.DataFrame(
        {
            "transaction_id": pd.Series([transaction_id], dtype="string"),
            "is_fraud": pd.Series([is_fraud], dtype="int8"),
            "known_at": pd.Series([known_at], dtype="datetime64[ns, UTC]"),
        }
    )
    tables.write_partition(store, "labels", day, pd.concat([labels, extra]), [])


def test_spec_windows():
    assert (SPEC.end, SPEC.holdout_start, SPEC.train_start) == (END, HOLDOUT_START, TRAIN_START)
    assert len(SPEC.train_hours) == 6 * 24 and len(SPEC.holdout_hours) == 3 * 24
    assert SPEC.label_days[0] == "2018-04-01" and SPEC.label_days[-1] == "2018-04-17"
    naive = DatasetSpec(cutoff=pd.Timestamp("2018-04-17 12:30"), window_days=6, holdout_days=3)
    assert naive.end == END


def test_windows_labels_and_manifest(dataset, history):
    train, holdout, manifest = dataset.train, dataset.holdout, dataset.manifest
    assert list(train.columns) == [
        "transaction_id",
        "tx_datetime",
        "customer_id",
        "terminal_id",
        *FEATURE_NAMES,
        "is_fraud",
    ]
    assert train["tx_datetime"].min() >= TRAIN_START
    assert train["tx_datetime"].max() < HOLDOUT_START
    assert holdout["tx_datetime"].min() >= HOLDOUT_START
    assert holdout["tx_datetime"].max() < END
    assert train["is_fraud"].sum() > 0 and holdout["is_fraud"].sum() > 0
    # skipped partitions are listed, and their rows are absent
    assert manifest["skipped_hours"] == {BLOCKED_HOUR: "quarantined", MISSING_HOUR: "missing"}
    hours = pd.concat([train, holdout])["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    assert not hours.isin([BLOCKED_HOUR, MISSING_HOUR]).any()
    assert len(manifest["features"]["train"]) == 6 * 24 - 1
    assert len(manifest["features"]["holdout"]) == 3 * 24 - 1
    assert sorted(manifest["labels"]) == SPEC.label_days[7:]  # labels exist from 04-08
    assert manifest["skipped_label_days"] == dict.fromkeys(SPEC.label_days[:7], "missing")
    # labels are the simulator's truth; unlabelled transactions dropped and counted
    truth = history.set_index(history["transaction_id"].astype(str))["is_fraud"]
    expected = truth.loc[train["transaction_id"].astype(str)].to_numpy()
    assert (train["is_fraud"].to_numpy() == expected).all()
    in_window = history[
        (history["tx_datetime"] >= TRAIN_START)
        & (history["tx_datetime"] < END)
        & ~history["tx_datetime"]
        .dt.floor("h")
        .dt.strftime(HOUR_KEY_FORMAT)
        .isin([BLOCKED_HOUR, MISSING_HOUR])
    ]
    expected_unlabelled = int((in_window.index % 97 == 0).sum())
    assert dataset.unlabelled_rows == expected_unlabelled > 0
    assert len(train) + len(holdout) == len(in_window) - expected_unlabelled
    assert manifest["id"] == manifest_id(manifest)


def test_labels_known_after_the_cutoff_are_not_used(store, dataset):
    tid = str(dataset.train["transaction_id"].iloc[0])
    was = int(dataset.train["is_fraud"].iloc[0])
    # a correction known later on the cutoff day, and one on the next day
    _add_label(store, "2018-04-17", tid, 1 - was, CUTOFF + timedelta(hours=6))
    _add_label(store, "2018-04-18", tid, 1 - was, CUTOFF + timedelta(days=1))
    later = build_dataset(store, SPEC)
    pd.testing.assert_frame_equal(later.train, dataset.train)
    pd.testing.assert_frame_equal(later.holdout, dataset.holdout)
    assert later.manifest["labels"]["2018-04-17"] != dataset.manifest["labels"]["2018-04-17"]
    # a correction known before the cutoff is used (so the check above can fail)
    _add_label(store, "2018-04-17", tid, 1 - was, CUTOFF - timedelta(hours=1))
    corrected = build_dataset(store, SPEC)
    assert int(corrected.train["is_fraud"].iloc[0]) == 1 - was


def test_manifest_id_is_stable_and_tracks_feature_partitions(store, dataset):
    again = build_dataset(store, SPEC)
    assert again.id == dataset.id and again.manifest == dataset.manifest
    # a label day after the cutoff day is not part of the dataset at all
    _add_label(store, "2018-04-18", "nope", 1, CUTOFF + timedelta(days=1))
    assert build_dataset(store, SPEC).id == dataset.id
    hour = "2018-04-09-15:00"
    frame = tables.read_partition(store, "transaction_features", hour)
    frame[FEATURE_NAMES[0]] = frame[FEATURE_NAMES[0]] + 1.0
    tables.write_partition(store, "transaction_features", hour, frame, [])
    changed = build_dataset(store, SPEC)
    assert changed.id != dataset.id
    assert (
        changed.manifest["features"]["holdout"][hour]
        != (dataset.manifest["features"]["holdout"][hour])
    )


def test_load_dataset_by_content_address(store, dataset):
    loaded = load_dataset(store, dataset.manifest)
    pd.testing.assert_frame_equal(loaded.train, dataset.train)
    pd.testing.assert_frame_equal(loaded.holdout, dataset.holdout)
    assert loaded.id == dataset.id
    # recompute a partition with different content: the pointer moves, the old object stays
    hour = "2018-04-03-10:00"
    old_sha = dataset.manifest["features"]["train"][hour]
    frame = tables.read_partition(store, "transaction_features", hour)
    frame[FEATURE_NAMES[0]] = frame[FEATURE_NAMES[0]] * 2 + 1
    assert tables.write_partition(store, "transaction_features", hour, frame, []).created
    assert build_dataset(store, SPEC).id != dataset.id
    reloaded = load_dataset(store, dataset.manifest)
    pd.testing.assert_frame_equal(reloaded.train, dataset.train)
    # tampering the pinned object (or the manifest) is refused
    key = f"{tables.partition_prefix('transaction_features', hour)}{old_sha}.parquet"
    store.put_bytes(key, store.get_bytes(key) + b"x")
    with pytest.raises(IntegrityError):
        load_dataset(store, dataset.manifest)
    store.delete(key)
    with pytest.raises(IntegrityError, match="does not exist"):
        load_dataset(store, dataset.manifest)
    altered = json.loads(json.dumps(dataset.manifest))
    altered["spec"]["window_days"] = 7
    with pytest.raises(IntegrityError):
        load_dataset(store, altered)


def _register(registry, model, record, reason="test"):
    files = {"model.txt": model.model_text.encode(), "lineage.json": lineage_json(record)}
    return registry.register(files, {"dataset_id": record["dataset_id"]}, "tester", reason)


def test_lineage_and_reproduce(store, dataset, monkeypatch):
    monkeypatch.setenv("FRAUDLOOP_GIT_COMMIT", "abc123")
    registry = ModelRegistry(store)
    model = fit(dataset, CONFIG)
    record = lineage_record(
        dataset.manifest, CONFIG, model, {"ap": 0.5}, {"usd": 0.0, "cpu_seconds": 1.0}
    )
    assert record["dataset"] == dataset.manifest and record["dataset_id"] == dataset.id
    assert record["feature_code_hash"] == feature_code_hash()
    assert record["config"] == CONFIG.to_dict() and record["seed"] == CONFIG.seed
    assert record["git_commit"] == "abc123" and record["model_sha256"] == model.sha256
    assert set(record["libraries"]) == {"lightgbm", "numpy", "pandas", "scikit-learn", "pyarrow"}
    assert record["libraries"]["lightgbm"]
    assert record["uv_lock_sha256"] is None or len(record["uv_lock_sha256"]) == 64
    assert record["train_seconds"] > 0 and "cpu_seconds" in record
    v1 = _register(registry, model, record)

    result = reproduce(store, registry, v1.version)
    assert result.identical, result
    assert result.recorded_sha == result.rebuilt_sha == model.sha256
    assert result.library_mismatches == {} and result.dataset_id == dataset.id

    # a second version with another seed reproduces with its own config
    config7 = replace(CONFIG, seed=7)
    model7 = fit(dataset, config7)
    assert model7.sha256 != model.sha256
    v2 = _register(registry, model7, lineage_record(dataset.manifest, config7, model7, {}, {}))
    result2 = reproduce(store, registry, v2.version)
    assert result2.identical and result2.rebuilt_sha == model7.sha256

    # a lineage that does not describe its model file is caught
    v3 = _register(registry, model, lineage_record(dataset.manifest, config7, model7, {}, {}))
    mismatch = reproduce(store, registry, v3.version)
    assert not mismatch.identical and mismatch.rebuilt_sha == model7.sha256
    assert mismatch.notes

    # the recorded dataset must still be there, untouched
    hour, sha = next(iter(dataset.manifest["features"]["train"].items()))
    key = f"{tables.partition_prefix('transaction_features', hour)}{sha}.parquet"
    store.put_bytes(key, store.get_bytes(key)[:-10])
    with pytest.raises(IntegrityError):
        reproduce(store, registry, v1.version)


def test_negative_down_sampling_keeps_every_fraud_and_weighs_the_sample(store, dataset):
    """Above `max_train_rows` the window keeps every fraud and a hash sample of the rest, weighted
    1 / rate; the holdout is whole; the sample is rebuilt exactly from the manifest; a fraud
    label revoked before the cutoff turns the row into a negative that obeys the sample."""
    from fraudloop.model.datasets import _sampled

    full = dataset.train
    window_rows = len(full) + dataset.manifest["rows"]["unlabelled_train"]
    spec = replace(SPEC, max_train_rows=window_rows // 3)
    sampled = build_dataset(store, spec)
    sampling = sampled.manifest["sampling"]
    rate = sampling["negative_rate"]
    assert sampling["window_rows"] == window_rows and 0.3 < rate < 0.34
    train = sampled.train
    frauds = set(full.loc[full["is_fraud"] == 1, "transaction_id"])
    assert set(train.loc[train["is_fraud"] == 1, "transaction_id"]) == frauds
    negatives = full[full["is_fraud"] == 0]
    kept = train[train["is_fraud"] == 0]
    assert set(kept["transaction_id"]) <= set(negatives["transaction_id"])
    expected, sd = len(negatives) * rate, (len(negatives) * rate * (1 - rate)) ** 0.5
    assert abs(len(kept) - expected) < 4 * sd
    assert (kept["weight"] == 1 / rate).all()
    assert (train.loc[train["is_fraud"] == 1, "weight"] == 1.0).all()
    assert abs(train["weight"].sum() - len(full)) < 4 * sd / rate
    # the rows themselves are the full window's rows
    same = full.set_index("transaction_id").loc[train["transaction_id"]].reset_index()
    pd.testing.assert_frame_equal(same, train.drop(columns="weight"), check_dtype=False)
    pd.testing.assert_frame_equal(sampled.holdout, dataset.holdout)
    again = load_dataset(store, sampled.manifest)
    pd.testing.assert_frame_equal(again.train, train)
    # a bound the window fits under samples nothing
    whole = build_dataset(store, replace(SPEC, max_train_rows=window_rows))
    assert "sampling" not in whole.manifest
    pd.testing.assert_frame_equal(whole.train, full)

    # a fraud revoked before the cutoff, outside the hash sample, leaves the window
    fraud_rows = full[full["is_fraud"] == 1]
    outside = fraud_rows[~_sampled(fraud_rows["transaction_id"], rate, sampling["hash_key"])]
    tid = str(outside["transaction_id"].iloc[0])
    _add_label(store, "2018-04-17", tid, 0, CUTOFF - timedelta(hours=2))
    revoked = build_dataset(store, spec)
    assert tid not in set(revoked.train["transaction_id"])
    assert len(revoked.train) == len(train) - 1

    # the weights reach the booster: the same sample unweighted is another model
    weighted = fit(sampled, CONFIG)
    assert fit(sampled, CONFIG).model_text == weighted.model_text
    unweighted = fit(replace(sampled, train=train.drop(columns="weight")), CONFIG)
    assert unweighted.model_text != weighted.model_text
