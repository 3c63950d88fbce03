"""Online feature stores: same features as the batch, one transaction at a time. The behaviour
tests run against both stores (in-process and a real Redis), which must agree bit for bit."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import HOUR_NS
from fraudloop.features.compute import FEATURE_NAMES, advance_hour, build_features
from fraudloop.features.online import OnlineFeatureStore
from fraudloop.features.redis_store import RedisOnlineStore
from fraudloop.features.state import (
    FeatureState,
    attach_transactions,
    ceil_hour,
    hour_key_of,
    to_utc_ns,
)
from tests.factories import load_bench_features

bench = load_bench_features()


@pytest.fixture(scope="module")
def data():
    tx, labels = bench.synthetic_data(
        n_customers=150, n_terminals=200, days=36, seed=11, revisions=5
    )
    hours = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    return tx, labels, hours


@pytest.fixture(scope="module")
def batch(data):
    tx, labels, _ = data
    return build_features(tx, labels).set_index("transaction_id")


class RedisBacked:
    """The Redis store loaded from a state, with the in-process store's test surface."""

    def __init__(self, url: str, state: FeatureState, label_delay=None):
        import redis

        online = OnlineFeatureStore.from_state(state, label_delay)
        self.store = RedisOnlineStore(redis.Redis.from_url(url), "test:online")
        pointer = {"sha256": uuid.uuid4().hex, "state_hour": state.hour_key or ""}
        assert self.store.load(online, pointer) == "switched"

    def features(self, tx):
        return self.store.features(tx)

    def vector(self, tx):
        return list(self.features(tx).values())

    def observe(self, tx):
        self.store.observe(tx)

    @property
    def observed(self) -> int:
        return self.store.observed()


@pytest.fixture(params=["memory", "redis"])
def load(request):
    """state -> an online store of the parametrised kind."""
    if request.param == "memory":
        return OnlineFeatureStore.from_state
    url = request.getfixturevalue("redis_url")
    return lambda state, label_delay=None: RedisBacked(url, state, label_delay)


def _records(frame: pd.DataFrame) -> list[dict]:
    ordered = frame.sort_values(["tx_datetime", "transaction_id"])
    return ordered[
        ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]
    ].to_dict("records")


def _check(got: dict[str, float], want: pd.Series) -> None:
    assert list(got) == list(FEATURE_NAMES)
    np.testing.assert_allclose(
        np.array(list(got.values())), want[list(FEATURE_NAMES)].to_numpy(dtype=float),
        rtol=0, atol=1e-9, err_msg=str(want.name),
    )  # fmt: skip


def test_online_equals_batch_over_a_day(data, batch, load):
    """Each hour: the state as of the hour start (transactions before it, labels known at its
    start), then every transaction scored and observed in time order."""
    tx, labels, hours = data
    last = int(hours.max())
    first = last - 23
    state = FeatureState.from_history(
        tx[hours < first],
        labels[labels["known_at"] <= pd.Timestamp(first * HOUR_NS, tz="UTC")],
        hour_key_of(first - 1),
    )
    enriched = attach_transactions(labels, tx)
    known_hour = ceil_hour(to_utc_ns(enriched["known_at"]))
    scored = 0
    for hour in range(first, last + 1):
        newly = enriched[(known_hour > hour - 1) & (known_hour <= hour)]
        state = state.with_labels(newly)  # labels known at the hour start
        store = load(state, timedelta(days=7))
        for rec in _records(tx[hours == hour]):
            _check(store.features(rec), batch.loc[rec["transaction_id"]])
            store.observe(rec)
            scored += 1
        _, state = advance_hour(state, tx[hours == hour], None, hour_key_of(hour))
    assert scored == int((hours >= first).sum()) > 200


def _eight_hours(data) -> tuple[FeatureState, pd.DataFrame]:
    """The state 30 hours before the data's end, with the labels known 8 hours later, and
    the 8 hours' transactions."""
    tx, labels, hours = data
    first = int(hours.max()) - 30
    span = 8
    cutoff = pd.Timestamp((first + span) * HOUR_NS, tz="UTC")
    state = FeatureState.from_history(
        tx[hours < first], labels[labels["known_at"] <= cutoff], hour_key_of(first - 1)
    )
    return state, tx[(hours >= first) & (hours < first + span)]


def test_one_store_serves_several_hours(data, batch, load):
    """Loaded once, observing as it goes: windows slide across hour boundaries. Labels that
    become known in those hours must be in the state already (the store filters on known_at)."""
    state, window = _eight_hours(data)
    store = load(state)
    for rec in _records(window):
        _check(store.features(rec), batch.loc[rec["transaction_id"]])
        store.observe(rec)
    assert store.observed == len(window)


def test_features_is_pure_and_accepts_usual_time_types(data, load):
    tx, labels, hours = data
    last = int(hours.max())
    state = FeatureState.from_history(tx[hours < last], labels, hour_key_of(last - 1))
    store = load(state)
    rec = _records(tx[hours == last])[0]
    first = store.features(rec)
    assert store.features(rec) == first and store.observed == 0
    ts = pd.Timestamp(rec["tx_datetime"])
    for value in (ts, ts.to_pydatetime(), ts.isoformat(), ts.value, ts.tz_convert(None)):
        assert store.features({**rec, "tx_datetime": value}) == first
    assert store.vector(rec) == list(first.values())
    store.observe(rec)
    after = store.features({**rec, "transaction_id": "again"})
    assert after["customer_nb_tx_1h"] == first["customer_nb_tx_1h"] + 1
    assert after["customer_terminal_novelty"] == 0.0
    with pytest.raises(ValueError, match="older than the state"):
        store.features({**rec, "tx_datetime": ts - pd.Timedelta(hours=2)})


def test_unknown_entities_get_the_degenerate_values(data, load):
    tx, labels, hours = data
    state = FeatureState.from_history(tx, labels, hour_key_of(int(hours.max())))
    store = load(state)
    when = pd.Timestamp((int(hours.max()) + 1) * HOUR_NS + 60 * 10**9, tz="UTC")
    f = store.features(
        {"transaction_id": "new", "tx_datetime": when, "customer_id": "nobody",
         "terminal_id": "nowhere", "amount": 12.5}
    )  # fmt: skip
    assert f["customer_nb_tx_30d"] == 1.0 and f["customer_amount_ratio_30d"] == 1.0
    assert f["customer_amount_zscore_30d"] == 0.0 and f["customer_terminal_novelty"] == 1.0
    assert f["customer_secs_since_prev_tx"] == 30 * 86_400.0
    assert f["terminal_nb_tx_30d"] == 0.0 and f["terminal_risk_30d"] == 0.0
    assert all(np.isfinite(v) for v in f.values())


def test_label_delay_must_match_the_state(data):
    tx, labels, hours = data
    state = FeatureState.from_history(tx, labels, hour_key_of(int(hours.max())))
    with pytest.raises(ValueError, match="label_delay"):
        OnlineFeatureStore.from_state(state, timedelta(days=3))


def test_latency_is_microseconds(data):
    """A loose bound (shared CI machines); bench/features.py reports the real p50/p99."""
    tx, labels, hours = data
    last = int(hours.max())
    state = FeatureState.from_history(tx[hours < last - 2], labels, hour_key_of(last - 3))
    store = OnlineFeatureStore.from_state(state)
    recs = _records(tx[hours >= last - 2])
    lat = []
    for rec in recs * 3:
        start = time.perf_counter()
        store.features(rec)
        lat.append(time.perf_counter() - start)
    assert np.percentile(lat, 50) < 500e-6


def test_a_late_arrival_gets_the_features_of_its_own_time(data, batch, load):
    """A transaction scored after later ones of its card (another switch, a delayed
    authorization) gets what the offline features give it at its time: the later ones are not
    in its windows, nor its time since the previous one (they made it negative before). Those
    scored before it could not see it: they get the features of the history without it."""
    tx, labels, _ = data
    state, frame = _eight_hours(data)
    window = _records(frame)
    # a card's transaction with at least 3 later ones in the window, none at its terminal (whose
    # pair would then be "seen": the overlay keeps a pair's last hour only)
    late = next(
        r
        for i, r in enumerate(window)
        if len(later := [o for o in window[i + 1 :] if o["customer_id"] == r["customer_id"]]) >= 3
        and all(o["terminal_id"] != r["terminal_id"] for o in later)
        and all(o["tx_datetime"] > r["tx_datetime"] for o in later)
    )
    without = build_features(tx[tx["transaction_id"] != late["transaction_id"]], labels).set_index(
        "transaction_id"
    )
    store = load(state)
    for rec in [r for r in window if r is not late]:
        _check(store.features(rec), without.loc[rec["transaction_id"]])
        store.observe(rec)
    got = store.features(late)
    _check(got, batch.loc[late["transaction_id"]])
    assert got["customer_secs_since_prev_tx"] >= 0
