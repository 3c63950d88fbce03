"""A stored world for the deployment tests: ten days of simulated history, features and labels
for the first eight, two registered versions trained on them (a good one and a deliberately bad
one), the online state published at the end of day eight, and the transactions of days nine and
ten kept aside as live traffic. Built once per session, copied per test."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pandas as pd

from fraudloop.core.store import LocalObjectStore
from fraudloop.features.feature_store import publish_online
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.model.booster import TrainConfig
from fraudloop.model.datasets import DatasetSpec, build_dataset
from fraudloop.model.registry import ModelRegistry
from tests.factories import hour_keys, register, simulated_history, store_history

START = date(2018, 4, 1)
STORED_DAYS = 8
TRAFFIC_DAYS = 2
LABEL_DELAY = timedelta(days=1)
SPEC = DatasetSpec(
    cutoff=pd.Timestamp("2018-04-09 00:00", tz="UTC"),
    window_days=5,
    holdout_days=2,
    label_delay_days=1,
)
#: a fixed number of rounds: early stopping on this window's last day (a dozen frauds) picks a
#: different round per seed, and the level of two seeds' scores then differs (a score PSI of
#: 0.26-1.3 between v1 and v3 once the terminal fraud ages were features), while the rollout
#: tests need two good models that agree (0.01 with fixed rounds)
GOOD = TrainConfig(
    n_estimators=60, min_child_samples=20, early_stopping_rounds=0, validation_share=0.0
)
#: balanced class weights: scores several times higher, far more reviews -- a canary that the
#: rollout analysis must refuse (score shift and flagged rate)
BAD = replace(GOOD, class_weight="balanced")
TX_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]


def build_world(root) -> tuple[LocalObjectStore, pd.DataFrame]:
    """(store, live traffic of days 9-10 in time order)."""
    history = simulated_history(START, STORED_DAYS + TRAFFIC_DAYS, seed=7, scale=0.1)
    store = LocalObjectStore(root)
    stored_hours = hour_keys(START, STORED_DAYS)
    end = pd.Timestamp(START + timedelta(days=STORED_DAYS), tz="UTC")
    stored = history[history["tx_datetime"] < end]
    store_history(store, stored, stored_hours, label_delay=LABEL_DELAY)
    run = compute_feature_hours(
        store, stored_hours, label_delay=LABEL_DELAY, history_start=str(START)
    )
    publish_online(store, run.state, run.state_hour)
    dataset = build_dataset(store, SPEC)
    registry = ModelRegistry(store)
    register(registry, dataset, GOOD)
    register(registry, dataset, BAD)
    traffic = history[history["tx_datetime"] >= end].sort_values(
        ["tx_datetime", "transaction_id"], kind="mergesort"
    )
    return store, traffic[TX_COLUMNS].reset_index(drop=True)


#: a second good model (other seed): close to v1's scores, the canary that should be promoted
GOOD_OTHER_SEED = replace(GOOD, seed=43)


def build_deployable_world(root) -> tuple[LocalObjectStore, pd.DataFrame]:
    """`build_world` plus a third version (good, other seed), and all three packaged and
    staging-tested for real (each test starts the service in its own process)."""
    from fraudloop.delivery.package import build_package
    from fraudloop.delivery.policy import StagingConfig
    from fraudloop.delivery.staging import run_staging

    store, traffic = build_world(root)
    registry = ModelRegistry(store)
    register(registry, build_dataset(store, SPEC), GOOD_OTHER_SEED)
    for version in (1, 2, 3):
        build_package(store, registry, version, decision_threshold=0.5)
        # the default latency budget: on a busy machine the probe-relative rule keeps it fair
        report = run_staging(store, registry, version, StagingConfig(label_delay_days=1))
        assert report["passed"], report
        assert report["probe_p99_ms"] > 0, report
    return store, traffic


def requests_of(traffic: pd.DataFrame) -> list[dict]:
    """JSON bodies of the traffic rows, in time order."""
    out = []
    for rec in traffic.to_dict("records"):
        rec["tx_datetime"] = pd.Timestamp(rec["tx_datetime"]).isoformat()
        rec["amount"] = float(rec["amount"])
        out.append(rec)
    return out
