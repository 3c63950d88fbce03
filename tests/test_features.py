"""Point-in-time features: batch vs a naive oracle, incremental vs batch, state bytes, leakage."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import HOUR_NS
from fraudloop.features.compute import (
    FEATURE_NAMES,
    FEATURES,
    ID_COLUMNS,
    advance_hour,
    build_features,
    feature_code_hash,
    feature_table_markdown,
)
from fraudloop.features.state import (
    NO_FRAUD_AGE_HOURS,
    NO_PREV_TX_SECONDS,
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
    """~12,500 transactions: 150 customers, 200 terminals, 40 days, ties, revised labels."""
    return bench.synthetic_data(n_customers=150, n_terminals=200, days=40, seed=2, revisions=5)


@pytest.fixture(scope="module")
def batch(data):
    tx, labels = data
    return build_features(tx, labels)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, atol: float = 1e-9) -> None:
    a = a.set_index("transaction_id").sort_index()
    b = b.set_index("transaction_id").sort_index()
    assert list(a.index) == list(b.index)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            a[name].to_numpy(), b[name].to_numpy(), rtol=0, atol=atol, err_msg=name
        )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_documents_every_feature_once():
    assert tuple(f.name for f in FEATURES) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    for spec in FEATURES:
        assert spec.description and spec.window and spec.sees
    table = feature_table_markdown()
    assert all(f"| `{name}` |" in table for name in FEATURE_NAMES)
    for w in ("1d", "7d", "30d"):
        assert {f"customer_nb_tx_{w}", f"customer_avg_amount_{w}", f"terminal_risk_{w}"} <= set(
            FEATURE_NAMES
        )


def test_feature_code_hash_is_stable_sha256():
    digest = feature_code_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == feature_code_hash()


# --------------------------------------------------------------------------------------------
# Batch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_days", [7, 2])
def test_batch_matches_naive_reference(delay_days):
    tx, labels = bench.synthetic_data(
        n_customers=60, n_terminals=80, days=25, seed=1, revisions=5, label_delay_days=delay_days
    )
    fast = build_features(tx, labels, label_delay=timedelta(days=delay_days))
    slow = bench.reference_features(tx, labels, label_delay_days=delay_days)
    _assert_same(fast, slow)
    assert (fast["terminal_risk_7d"] > 0).mean() > 0.05  # the oracle compared real risks


def test_batch_output_contract(data, batch):
    tx, labels = data
    assert list(batch.columns) == [*ID_COLUMNS, *FEATURE_NAMES]
    assert list(batch["transaction_id"]) == list(tx["transaction_id"])  # input order
    values = batch[list(FEATURE_NAMES)]
    assert (values.dtypes == np.float64).all()
    assert np.isfinite(values.to_numpy()).all()
    assert batch["tx_datetime"].dt.tz is not None
    shuffled = tx.sample(frac=1.0, random_state=3)
    again = build_features(shuffled, labels.sample(frac=1.0, random_state=4))
    assert list(again["transaction_id"]) == list(shuffled["transaction_id"])
    _assert_same(again, batch, atol=0)


def test_hand_computed_values():
    """A few transactions whose features are worked out by hand (the semantics, spelled out)."""
    t = pd.Timestamp
    tx = pd.DataFrame(
        {
            "transaction_id": ["b0", "b1", "a1", "a2", "a3", "a4"],
            "tx_datetime": [
                t("2018-03-24 09:00", tz="UTC"),  # B at M1, fraud known 2018-03-31 09:00
                t("2018-03-25 09:59", tz="UTC"),  # B at M1, legit
                t("2018-04-01 10:15", tz="UTC"),  # Sunday
                t("2018-04-01 10:15", tz="UTC"),  # same instant: ordered after a1 by id
                t("2018-04-01 11:05", tz="UTC"),
                t("2018-04-02 11:30", tz="UTC"),  # Monday
            ],
            "customer_id": ["B", "B", "A", "A", "A", "A"],
            "terminal_id": ["M1", "M1", "M1", "M1", "M2", "M2"],
            "amount": [50.0, 60.0, 10.0, 10.0, 40.0, 4.0],
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ["b0", "b1"],
            "is_fraud": [1, 0],
            "known_at": [t("2018-03-31 09:00", tz="UTC"), t("2018-04-01 09:59", tz="UTC")],
        }
    )
    f = build_features(tx, labels).set_index("transaction_id")
    a1, a2, a3, a4 = (f.loc[k] for k in ("a1", "a2", "a3", "a4"))
    assert (a1["tx_is_weekend"], a1["tx_is_night"], a1["tx_hour"]) == (1.0, 0.0, 10.0)
    assert a4["tx_is_weekend"] == 0.0
    # first transaction of A: sentinel gap, novelty, z-score 0 with one transaction
    assert a1["customer_secs_since_prev_tx"] == NO_PREV_TX_SECONDS
    assert (a1["customer_nb_tx_1d"], a1["customer_terminal_novelty"]) == (1.0, 1.0)
    assert a1["customer_amount_zscore_30d"] == 0.0
    # same instant: a2 sees a1, gap 0, same terminal, equal amounts -> std 0 -> z 0
    assert (a2["customer_secs_since_prev_tx"], a2["customer_nb_tx_1d"]) == (0.0, 2.0)
    assert (a2["customer_terminal_novelty"], a2["customer_amount_zscore_30d"]) == (0.0, 0.0)
    # a3 in the next hour: the 1h window is the previous whole hour plus this one
    assert a3["customer_nb_tx_1h"] == 3.0
    assert a3["customer_avg_amount_1d"] == pytest.approx(20.0)
    assert a3["customer_amount_ratio_1d"] == pytest.approx(2.0)
    assert a3["customer_amount_zscore_30d"] == pytest.approx(20 / np.sqrt(200))
    assert a3["customer_secs_since_prev_tx"] == 50 * 60.0
    assert a3["customer_terminal_novelty"] == 1.0
    # a4, the next day in hour 11: the 1-day window starts at 2018-04-01 11:00 (a3, not a1/a2)
    assert (a4["customer_nb_tx_1d"], a4["customer_small_tx_share_1d"]) == (2.0, 0.5)
    assert (a4["customer_nb_tx_7d"], a4["customer_nb_tx_1h"]) == (4.0, 1.0)
    assert a4["customer_terminal_novelty"] == 0.0
    # terminal M1 for a1 (hour 2018-04-01 10:00, D = 7 days): 1d window is
    # [03-24 10:00, 03-25 10:00) -> b1 only; 7d adds b0, whose fraud label is known (03-31 09:00)
    assert (a1["terminal_nb_tx_1d"], a1["terminal_risk_1d"]) == (1.0, 0.0)
    assert (a1["terminal_nb_tx_7d"], a1["terminal_risk_7d"]) == (2.0, 0.5)
    assert a3["terminal_nb_tx_30d"] == 0.0 and a3["terminal_risk_30d"] == 0.0
    # b0 (hour 03-24 09:00) is M1's only known fraud for a1 (hour 04-01 10:00): 8 d + 1 h ago
    assert (a1["terminal_first_fraud_age_30d"], a1["terminal_last_fraud_age_30d"]) == (193, 193)
    assert a3["terminal_first_fraud_age_30d"] == NO_FRAUD_AGE_HOURS  # M2: none known


def test_terminal_fraud_ages_date_the_window_frauds_known_at_the_hour_start():
    """First / last fraud ages: only frauds inside [H - D - 30 d, H - D) count, only labels
    known at the start of H, and a revoked fraud stops counting from its revocation."""
    t = pd.Timestamp
    when = {
        "old": "2018-02-18 08:00",  # fraud, but before both probes' windows
        "f1": "2018-03-01 10:30",  # fraud, known 03-08
        "f2": "2018-03-10 04:00",  # fraud, known 03-17
        "late": "2018-03-15 12:00",  # fraud, known only after both probes
        "f3": "2018-03-20 12:00",  # fraud, known 03-27 12:00, revoked 03-28 00:00
        "p2": "2018-03-27 20:00",  # window [02-18 20:00, 03-20 20:00): f3 still a fraud
        "p1": "2018-03-28 10:10",  # window [02-19 10:00, 03-21 10:00): f3 revoked
    }
    ids = list(when)
    tx = pd.DataFrame(
        {
            "transaction_id": ids,
            "tx_datetime": [t(when[k], tz="UTC") for k in ids],
            "customer_id": [f"C{i}" for i in range(len(ids))],
            "terminal_id": ["M"] * len(ids),
            "amount": [10.0] * len(ids),
        }
    )
    known = {"old": "2018-02-25 08:00", "f1": "2018-03-08 10:30", "f2": "2018-03-17 04:00"}
    known |= {"late": "2018-04-05 00:00", "f3": "2018-03-27 12:00"}
    labels = pd.DataFrame(
        {
            "transaction_id": [*known, "f3"],
            "is_fraud": [1] * len(known) + [0],
            "known_at": [t(v, tz="UTC") for v in known.values()] + [t("2018-03-28", tz="UTC")],
        }
    )
    f = build_features(tx, labels).set_index("transaction_id")

    def age(probe: str, fraud: str) -> float:
        start = t(when[probe], tz="UTC").floor("h")
        return (start - t(when[fraud], tz="UTC").floor("h")) / pd.Timedelta(hours=1)

    first, last = "terminal_first_fraud_age_30d", "terminal_last_fraud_age_30d"
    assert (f.loc["p2", first], f.loc["p2", last]) == (age("p2", "f1"), age("p2", "f3"))
    assert (f.loc["p1", first], f.loc["p1", last]) == (age("p1", "f1"), age("p1", "f2"))
    assert f.loc["f1", first] == age("f1", "old")  # old is inside f1's window
    assert f.loc["old", first] == f.loc["old", last] == NO_FRAUD_AGE_HOURS  # none before it


# --------------------------------------------------------------------------------------------
# Incremental
# --------------------------------------------------------------------------------------------


def _roll(tx, labels, hours, state=None, *, rng=None, serialise_at=()):
    """advance_hour over ``hours``; labels fed early in irregular batches (allowed: features
    only use labels known at the hour start), each one before the first hour that may use it."""
    enriched = attach_transactions(labels, tx)
    known_hour = ceil_hour(to_utc_ns(enriched["known_at"]))
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    state = state or FeatureState.empty()
    fed = np.zeros(len(enriched), dtype=bool)
    outs = []
    for hour in hours:
        ahead = int(rng.integers(0, 30)) if rng is not None else 0
        due = ~fed & (known_hour <= hour + ahead)
        fed |= due
        out, state = advance_hour(state, tx[tx_hour == hour], enriched[due], hour_key_of(hour))
        outs.append(out)
        if hour in serialise_at:
            state = FeatureState.from_bytes(state.to_bytes())
    return pd.concat(outs, ignore_index=True), state


@pytest.mark.slow
def test_incremental_equals_batch_hour_by_hour(data, batch):
    tx, labels = data
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    hours = list(range(int(tx_hour.min()), int(tx_hour.max()) + 1))
    inc, state = _roll(
        tx, labels, hours, rng=np.random.default_rng(0), serialise_at={hours[300], hours[701]}
    )
    assert len(inc) == len(tx)
    _assert_same(inc, batch)
    assert list(inc.columns) == list(batch.columns)
    # the state only keeps what the windows need
    summary = state.summary()
    assert summary["customer_buckets"] < len(tx)
    assert state.rows("cust").hour.min() >= hours[-1] + 1 - 720


@pytest.mark.slow
def test_state_bytes_are_canonical_and_pickle_free(data):
    tx, labels = data
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    last = int(tx_hour.max())
    hours = list(range(last - 24 * 12, last + 1))
    start = FeatureState.from_history(
        tx[tx_hour < hours[0]],
        labels[labels["known_at"] <= pd.Timestamp(hours[0] * HOUR_NS, tz="UTC")],
        hour_key_of(hours[0] - 1),
    )
    _, rolled = _roll(tx, labels, hours, state=start)
    known = labels[labels["known_at"] <= pd.Timestamp(last * HOUR_NS, tz="UTC")]
    direct = FeatureState.from_history(tx, known, hour_key_of(last))
    blob = rolled.to_bytes()
    assert blob == direct.to_bytes() == rolled.to_bytes()
    assert FeatureState.from_bytes(blob).to_bytes() == blob
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        assert "meta.json" in names
        assert all(n == "meta.json" or n.endswith(".npy") for n in names)
        for n in names:
            if n.endswith(".npy"):
                np.lib.format.read_array(io.BytesIO(zf.read(n)), allow_pickle=False)
    with pytest.raises((ValueError, zipfile.BadZipFile, KeyError)):
        FeatureState.from_bytes(b"not a state")


def test_advance_hour_validates_its_input(data):
    tx, labels = data
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    h = int(tx_hour.min()) + 30
    state = FeatureState.empty()
    with pytest.raises(ValueError, match="outside hour"):
        advance_hour(state, tx[(tx_hour == h) | (tx_hour == h + 1)], None, hour_key_of(h))
    with pytest.raises(ValueError, match="attach_transactions"):
        advance_hour(state, tx[tx_hour == h], labels.head(5), hour_key_of(h))
    out, state2 = advance_hour(state, tx[tx_hour == h], None, hour_key_of(h))
    assert state.hour is None and state2.hour == h  # the input state is not modified
    with pytest.raises(ValueError, match="cannot advance"):
        advance_hour(state2, tx.head(0), None, hour_key_of(h))
    empty, state3 = advance_hour(state2, tx.head(0), None, hour_key_of(h + 5))
    assert len(empty) == 0 and list(empty.columns) == list(out.columns)
    assert state3.hour == h + 5


# --------------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------------


def _hour_rows(features: pd.DataFrame, hour: int) -> pd.DataFrame:
    h = to_utc_ns(features["tx_datetime"]) // HOUR_NS
    return features[h == hour].set_index("transaction_id").sort_index()


def test_labels_known_after_the_hour_start_never_change_its_features(data, batch):
    tx, labels = data
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    rng = np.random.default_rng(5)
    for i, hour in enumerate(rng.choice(np.unique(tx_hour[tx_hour > tx_hour.min() + 480]), 16)):
        start = pd.Timestamp(int(hour) * HOUR_NS, tz="UTC")
        later = labels["known_at"] > start
        assert later.any()
        tampered = labels.copy()
        flip = later if i % 2 else later & (rng.random(len(labels)) < 0.5)
        tampered.loc[flip, "is_fraud"] = 1 - tampered.loc[flip, "is_fraud"]
        delay = later & ~flip
        tampered.loc[delay, "known_at"] = tampered.loc[delay, "known_at"] + pd.Timedelta(days=3)
        after = build_features(tx, tampered)
        pd.testing.assert_frame_equal(_hour_rows(after, hour), _hour_rows(batch, hour))
        # the same tampering does change later hours (the test can fail)
        assert not after[list(FEATURE_NAMES)].equals(batch[list(FEATURE_NAMES)])


def test_a_label_counts_exactly_from_the_hour_start_it_is_known(data):
    tx, labels = data
    tx_hour = to_utc_ns(tx["tx_datetime"]) // HOUR_NS
    target = tx.iloc[int(np.flatnonzero(tx_hour == tx_hour.max() - 30)[0])]
    hour = int(to_utc_ns(pd.Series([target["tx_datetime"]]))[0] // HOUR_NS)
    start = pd.Timestamp(hour * HOUR_NS, tz="UTC")
    # a legit transaction of the same terminal inside its 7-day window [H-D-7d, H-D)
    same = (tx["terminal_id"] == target["terminal_id"]) & (tx["is_fraud"] == 0)
    inside = same & (tx_hour >= hour - 168 - 24 * 7) & (tx_hour < hour - 168 - 24)
    victim = tx.loc[inside, "transaction_id"].iloc[0]

    def risk_with(known_at):
        extra = pd.DataFrame(
            {"transaction_id": [victim], "is_fraud": [1], "known_at": [known_at]}
        ).astype({"transaction_id": "string"})
        f = build_features(tx, pd.concat([labels, extra], ignore_index=True))
        row = f.set_index("transaction_id").loc[target["transaction_id"]]
        return row["terminal_risk_7d"], row["terminal_nb_tx_7d"], row["terminal_risk_1d"]

    base, count, base_1d = risk_with(start + pd.Timedelta(days=30))  # known long after
    assert risk_with(start + pd.Timedelta(microseconds=1)) == (base, count, base_1d)
    moved, _, moved_1d = risk_with(start)  # known exactly at the hour start: counts
    assert moved == pytest.approx(base + 1 / count)
    assert moved_1d == base_1d  # outside the 1-day window
    assert risk_with(start - pd.Timedelta(hours=5))[0] == pytest.approx(base + 1 / count)
