"""The Redis online store as several replicas use it, on a real redis-server: bit-identical to
the in-process store for the same sequence, atomic and de-duplicated under concurrent replicas,
versioned loads that switch every replica at once (idempotent, never back to an older state),
and an unreachable Redis reported (not ready, a clear error), then recovered from."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import redis

from fraudloop.core.hours import HOUR_NS
from fraudloop.features.compute import advance_hour
from fraudloop.features.online import NotLoaded, OnlineFeatureStore, TooOld
from fraudloop.features.redis_store import RedisOnlineStore
from fraudloop.features.state import FeatureState, hour_key_of, to_utc_ns
from fraudloop.serving.live import LiveFeatures
from fraudloop.serving.shared_features import OnlineStoreUnavailable, RedisFeatures
from tests.factories import load_bench_features
from tests.servers import redis_server

bench = load_bench_features()
NS = "test:online"


@pytest.fixture(scope="module")
def data():
    tx, labels = bench.synthetic_data(n_customers=60, n_terminals=80, days=33, seed=5, revisions=3)
    hours = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    last = int(hours.max())
    state = FeatureState.from_history(tx[hours < last - 47], labels, hour_key_of(last - 48))
    recent = tx[hours >= last - 47].sort_values(["tx_datetime", "transaction_id"])
    cols = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]
    return state, recent[cols].to_dict("records"), tx, labels, hours


def replica(url: str, max_observed: int = 1_000_000) -> RedisOnlineStore:
    return RedisOnlineStore(redis.Redis.from_url(url), NS, max_observed)


def pointer(state: FeatureState, sha: str) -> dict:
    return {"sha256": sha, "state_hour": state.hour_key}


def test_replicas_sharing_redis_compute_what_one_in_process_store_computes(redis_url, data):
    """Two replicas, the sequence interleaved between them (retries included, sent to the other
    replica): every feature equal to the in-process store's, bit for bit."""
    state, records, *_ = data
    a, b = replica(redis_url), replica(redis_url)
    assert a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1")) == "switched"
    memory = LiveFeatures(store=None, prefix="unused")
    memory._online = OnlineFeatureStore.from_state(state)
    assert len(records) > 100
    for i, rec in enumerate(records):
        here, there = (a, b) if i % 3 else (b, a)
        expected = memory.features_and_observe(rec)
        assert here.features_and_observe([rec])[0] == expected, i
        if i % 10 == 0:  # a client retry, answered by the other replica: counted once
            assert there.features_and_observe([rec])[0] == memory.features_and_observe(rec)
    assert a.observed() == b.observed() == memory.observed == len(records)
    # a batch goes through one pipeline and still sees each row's predecessors
    probe = [{**r, "transaction_id": f"again-{i}"} for i, r in enumerate(records[-5:])]
    assert b.features_and_observe(probe) == memory.features_and_observe_many(probe)


def test_concurrent_replicas_lose_no_update_and_count_each_transaction_once(redis_url, data):
    state, records, *_ = data
    replica(redis_url).load(OnlineFeatureStore.from_state(state), pointer(state, "s1"))
    base = records[-1]
    threads, per_thread = 6, 40
    txs = [
        {**base, "transaction_id": f"burst-{i}", "amount": 10.0 + i}
        for i in range(threads * per_thread)
    ]
    failures = []

    def send(k: int) -> None:
        try:
            mine = replica(redis_url)
            for tx in txs[k::threads]:
                mine.features_and_observe([tx])
            for tx in txs[(k + 1) % threads :: threads]:  # everyone retries a neighbour's
                mine.features_and_observe([tx])
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)

    workers = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not failures
    probe = {**base, "transaction_id": "probe"}
    alone = OnlineFeatureStore.from_state(state)
    for tx in txs:
        alone.observe(tx)
    got = replica(redis_url).features(probe)
    assert got["customer_nb_tx_1h"] == alone.features(probe)["customer_nb_tx_1h"]
    assert got["customer_nb_tx_1h"] >= len(txs) + 1
    assert replica(redis_url).observed() == len(txs)


def test_a_newer_state_replaces_the_old_one_for_every_replica(redis_url, data):
    """Load s1, score hour H, publish the state after H (s2): the switch replays what s2 lacks,
    drops what it holds, deletes s1's keys; reloading s2 is a no-op, s1 is refused."""
    state, records, tx, _, hours = data
    a, b = replica(redis_url), replica(redis_url)
    a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1"))
    memory = LiveFeatures(store=None, prefix="unused")
    memory._online = OnlineFeatureStore.from_state(state)
    first = state.hour + 1
    scored = [r for r in records if to_utc_ns([r["tx_datetime"]])[0] // HOUR_NS <= first + 1]
    for i, rec in enumerate(scored):
        assert (a, b)[i % 2].features_and_observe([rec])[0] == memory.features_and_observe(rec)
    _, newer = advance_hour(state, tx[hours == first], None, hour_key_of(first))
    keys_before = set(a.client.scan_iter(match=f"{NS}:v:1:*"))
    assert keys_before
    # the in-process service's own reload, for reference
    reference = OnlineFeatureStore.from_state(newer)
    for rec in scored:
        if to_utc_ns([rec["tx_datetime"]])[0] // HOUR_NS >= first + 1:
            reference.observe(rec)
    assert b.load(OnlineFeatureStore.from_state(newer), pointer(newer, "s2")) == "switched"
    assert a.current()["version"] == "2" and a.current()["state_hour"] == newer.hour_key
    assert not set(a.client.scan_iter(match=f"{NS}:v:1:*"))  # the old version is gone
    assert a.observed() == reference.observed  # the hour inside s2 left the overlay
    for rec in records[len(scored) : len(scored) + 20]:
        got = a.features_and_observe([rec])[0]
        assert got == reference.features(rec)
        reference.observe(rec)
    assert a.load(OnlineFeatureStore.from_state(newer), pointer(newer, "s2")) == "same"
    assert a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1")) == "older"
    assert a.current()["version"] == "2"
    with pytest.raises(TooOld, match="older than the state"):
        a.features_and_observe([{**scored[0], "transaction_id": "late"}])


def test_a_load_in_progress_elsewhere_is_not_repeated_and_nothing_is_served_before_one(
    redis_url, data
):
    state, records, *_ = data
    a = replica(redis_url)
    with pytest.raises(NotLoaded):
        a.features_and_observe([records[0]])
    a.client.set(a.keys["loading"], "another replica", ex=60)
    assert a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1")) == "busy"
    assert a.current() == {}
    a.client.delete(a.keys["loading"])
    assert a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1")) == "switched"


def test_an_unreachable_redis_is_reported_and_recovery_is_automatic(tmp_path, data):
    state, records, *_ = data
    from fraudloop.core.store import LocalObjectStore
    from fraudloop.features.feature_store import publish_online

    store = LocalObjectStore(tmp_path / "store")
    publish_online(store, state, state.hour_key)
    with redis_server(tmp_path) as (url, proc):
        features = RedisFeatures(store, "featurestore/online", url, timeout=1.0)
        assert not features.ready
        assert features.refresh() and features.ready  # loaded the published state
        assert features.state_hour == state.hour_key and features.first_hour == state.hour + 1
        features.features_and_observe(records[0])
        proc.kill()
        proc.wait()
        with pytest.raises(OnlineStoreUnavailable, match="Redis"):
            features.features_and_observe(records[1])
        assert not features.ready
        with pytest.raises(OnlineStoreUnavailable):
            features.refresh()
        assert not features.ready
    # a new Redis (empty: no persistence) on the same URL would be reloaded by the next refresh
    with redis_server(tmp_path) as (url, _):
        features = RedisFeatures(store, "featurestore/online", url, timeout=1.0)
        assert features.refresh() and features.ready
        got = features.features_and_observe(records[1])
        memory = OnlineFeatureStore.from_state(state)
        assert got == memory.features(records[1])
        features.close()


def test_log_entries_survive_as_strings(redis_url, data):
    """Amounts and nanosecond times go through Redis as exact strings (no Lua double)."""
    state, records, *_ = data
    a = replica(redis_url)
    a.load(OnlineFeatureStore.from_state(state), pointer(state, "s1"))
    rec = {**records[0], "amount": 0.1 + 0.2, "transaction_id": "exact"}
    a.features_and_observe([rec])
    entry = a.client.lindex(a.keys["log"], 0).decode().split("|")
    assert float(entry[5]) == 0.1 + 0.2
    assert int(entry[4]) == pd.Timestamp(rec["tx_datetime"]).value
