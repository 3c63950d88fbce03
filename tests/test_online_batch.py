"""A batch's online features as arrays equal, bit for bit, what scoring its rows one by one in
time order gives, on both stores (in process and a real redis-server): cards and terminals seen
again within the batch, retries (same identity: observed once) and reused ids with other
content (both observed), a card hot enough to split the batch, an overlay that overflows
``max_observed`` within the batch, and a transaction older than the state."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from fraudloop.core.hours import HOUR_NS
from fraudloop.features import online_batch
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.online import OnlineFeatureStore, TooOld, identity
from fraudloop.features.redis_store import RedisOnlineStore
from fraudloop.features.state import FeatureState, hour_key_of, to_utc_ns
from fraudloop.serving.live import LiveFeatures
from tests.factories import load_bench_features

bench = load_bench_features()
NS = "test:batch"


@pytest.fixture(scope="module")
def data():
    tx, labels = bench.synthetic_data(n_customers=60, n_terminals=80, days=33, seed=5, revisions=3)
    hours = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    last = int(hours.max())
    state = FeatureState.from_history(tx[hours < last - 143], labels, hour_key_of(last - 144))
    recent = tx[hours >= last - 143].sort_values(["tx_datetime", "transaction_id"])
    cols = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]
    records = recent[cols].to_dict("records")
    for r in records:
        r["tx_datetime"] = int(r["tx_datetime"].value)
    return state, records


def in_time_order(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["tx_datetime"], r["transaction_id"]))


def with_repeats(records: list[dict]) -> list[dict]:
    """``records`` plus retries (same id and content), reused ids with other content, and a
    burst of one card on a few terminals within minutes."""
    out = list(records)
    out += [dict(r) for r in records[::7]]  # retries
    out += [{**r, "amount": r["amount"] + 1.5} for r in records[3::11]]  # reused ids
    hot = records[len(records) // 2]
    out += [
        {
            **hot,
            "transaction_id": f"burst-{i}",
            "tx_datetime": hot["tx_datetime"] + i * 20 * 10**9,
            "terminal_id": records[i % 5]["terminal_id"],
            "amount": 1.0 + i,
        }
        for i in range(40)
    ]
    return in_time_order(out)


def memory(state: FeatureState, max_observed: int = 1_000_000) -> LiveFeatures:
    features = LiveFeatures(store=None, prefix="unused", max_observed=max_observed)
    features._online = OnlineFeatureStore.from_state(state)
    return features


def one_by_one(features: LiveFeatures, records: list[dict]) -> np.ndarray:
    return np.vstack([features.features_and_observe_matrix([r]) for r in records])


def redis_store(url: str, state: FeatureState, max_observed: int = 1_000_000):
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = RedisOnlineStore(client, NS, max_observed)
    assert store.load(OnlineFeatureStore.from_state(state), {"sha256": "s", "state_hour": "x"})
    return store


def batches(records: list[dict], sizes: tuple[int, ...]) -> list[list[dict]]:
    out, at = [], 0
    for size in sizes:
        out.append(records[at : at + size])
        at += size
    out.append(records[at:])
    return [b for b in out if b]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_batch_gets_exactly_the_features_of_its_rows_one_by_one(data, redis_url, kind):
    state, records = data
    sequence = with_repeats(records)
    reference = memory(state)
    expected = one_by_one(reference, sequence)
    store = memory(state) if kind == "memory" else redis_store(redis_url, state)
    warm = len(sequence) // 4  # an overlay from single requests first
    got = [np.vstack([store.features_and_observe_matrix([r]) for r in sequence[:warm]])]
    for part in batches(sequence[warm:], (1, 15, 16, 57, 300)):
        got.append(store.features_and_observe_matrix(part))
    got = np.vstack(got)
    assert got.shape == expected.shape == (len(sequence), len(expected[0]))
    assert len(sequence) - warm > 500
    np.testing.assert_array_equal(got, expected)
    # the same transactions were observed (retries once), so what follows matches too
    observed = store.observed if kind == "memory" else store.observed()
    assert observed == reference.observed < len(sequence)
    probe = [{**r, "transaction_id": f"probe-{i}"} for i, r in enumerate(sequence[-40:])]
    np.testing.assert_array_equal(
        store.features_and_observe_matrix(probe), one_by_one(reference, probe)
    )


def test_a_batch_split_for_hot_cards_gives_the_same_features(data, monkeypatch):
    state, records = data
    sequence = with_repeats(records)
    expected = one_by_one(memory(state), sequence)
    monkeypatch.setattr(online_batch, "MAX_PAIRS", 50)
    np.testing.assert_array_equal(memory(state).features_and_observe_matrix(sequence), expected)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_batch_overflowing_the_overlay_forgets_as_rows_one_by_one_do(data, redis_url, kind):
    state, records = data
    sequence = with_repeats(records)
    bound = len(sequence) // 3
    reference = memory(state, bound)
    expected = one_by_one(reference, sequence)
    store = memory(state, bound) if kind == "memory" else redis_store(redis_url, state, bound)
    got = np.vstack([store.features_and_observe_matrix(p) for p in batches(sequence, (200,))])
    np.testing.assert_array_equal(got, expected)
    assert reference.forgotten > 0


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_batch_with_a_transaction_older_than_the_state_is_refused(data, redis_url, kind):
    state, records = data
    store = memory(state) if kind == "memory" else redis_store(redis_url, state)
    first = OnlineFeatureStore.from_state(state).first_hour
    old = {**records[0], "transaction_id": "old", "tx_datetime": (first - 1) * HOUR_NS}
    with pytest.raises(TooOld):
        store.features_and_observe_matrix([old, *records[:40]])


def test_batch_identities_are_the_row_identities(data):
    _, records = data
    rows = [*records[:50], {**records[0], "amount": 7}, {**records[1], "amount": 0.1 + 0.2}]
    got = online_batch.identities(
        [r["transaction_id"] for r in rows],
        [r["tx_datetime"] for r in rows],
        [r["customer_id"] for r in rows],
        [r["terminal_id"] for r in rows],
        [float(r["amount"]) for r in rows],
    )
    assert got == [identity(r) for r in rows]


def test_the_segment_bisection_finds_what_a_search_of_the_whole_state_finds():
    """`lower_bound` searches each row's entity segment only; on keys laid out as the state's
    (segments of hours, empty segments, targets below, inside, between and above a segment) it
    answers what `np.searchsorted` over every key answers."""
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 40, 300)
    lengths[::17] = 0  # entities with no loaded rows
    starts = np.cumsum(lengths) - lengths
    hours = [np.sort(rng.choice(5_000, size=n, replace=False)) for n in lengths]
    flat = online_batch.flat(starts, lengths, np.concatenate(hours), np.zeros(lengths.sum()))
    which = rng.integers(0, len(lengths), 20_000)
    lo, hi = starts[which], starts[which] + lengths[which]
    base = starts[which] * online_batch.SEGMENT + online_batch.HOUR_OFFSET
    targets = base + rng.integers(-50, 5_050, len(which))
    found = online_batch.lower_bound(flat.keys, targets, lo, hi)
    whole = np.searchsorted(flat.keys, targets, "left")
    has = hi > lo
    assert np.array_equal(found[has], whole[has])
    assert np.array_equal(found[~has], lo[~has])  # no segment: nothing valid, nothing read
    assert ((found >= lo) & (found <= hi)).all()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_late_arrivals_in_a_batch_get_the_features_they_get_one_by_one(data, redis_url, kind):
    """Rows out of time order (late arrivals, within the batch and behind the overlay) are
    counted only in the windows of rows at or after their time, as one by one."""
    state, records = data
    sequence = in_time_order(records)
    warm = len(sequence) // 2
    rest = sequence[warm:]
    late = rest[len(rest) // 3 :: 9]  # every 9th of the later rows arrives at the end
    ids = {r["transaction_id"] for r in late}
    arrival = sequence[:warm] + [r for r in rest if r["transaction_id"] not in ids] + late
    assert len(late) > 20
    expected = one_by_one(memory(state), arrival)
    store = memory(state) if kind == "memory" else redis_store(redis_url, state)
    got = [np.vstack([store.features_and_observe_matrix([r]) for r in arrival[:warm]])]
    for part in batches(arrival[warm:], (40, 300)):
        got.append(store.features_and_observe_matrix(part))
    np.testing.assert_array_equal(np.vstack(got), expected)
    secs_since_prev = FEATURE_NAMES.index("customer_secs_since_prev_tx")
    assert (expected[:, secs_since_prev] >= 0).all()
