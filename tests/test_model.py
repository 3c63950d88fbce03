"""Metrics (hand-computed), deterministic LightGBM training, accuracy floor, promotion gate."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudloop.model.booster import TrainConfig, load_model, time_split, train
from fraudloop.model.evaluation import (
    bootstrap_ap_delta,
    evaluate,
    expected_live,
    gate,
    weighted_ap,
)
from fraudloop.model.metrics import (
    auc_roc,
    average_precision,
    calibration,
    card_precision_at_k,
    card_precision_per_day,
    p99_interval,
    precision_recall_at_threshold,
)

# ---------------------------------------------------------------------------------------------
# metrics, hand-computed
# ---------------------------------------------------------------------------------------------


def test_auc_and_ap_hand_computed():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4
    assert auc_roc(y, s) == pytest.approx(0.75)
    # ranked: 0.8 (+) P=1 R=.5; 0.4 (-); 0.35 (+) P=2/3 R=1 -> .5 * 1 + .5 * 2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(auc_roc([0, 0], [0.1, 0.2]))
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_weighted_ap_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    s = np.round(rng.random(500) + y * 0.3, 2)  # rounding makes ties
    w = rng.integers(0, 4, 500).astype(float)
    assert weighted_ap(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert weighted_ap(y, s, w) == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-12
    )


def test_bootstrap_replicates_are_each_draws_card_weighted_ap_delta():
    """The replicates, computed per segment and card, are what sklearn gives with each row
    weighted by how often its card was drawn (ties, cards never drawn, chunks of any size)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(7)
    n, n_cards = 400, 60
    y = (rng.random(n) < 0.1).astype(np.int64)
    cards = np.unique(rng.integers(0, n_cards, n), return_inverse=True)[1]
    candidate = np.round(rng.random(n) + y * 0.4, 2)
    production = np.round(rng.random(n) + y * 0.2, 2)
    deltas = bootstrap_ap_delta(y, candidate, production, cards, n_boot=7, seed=11, chunk=3)

    draws_rng, units = np.random.default_rng(11), int(cards.max()) + 1
    expected = []
    for b in (3, 3, 1):  # the replicates' draws, chunk by chunk
        for row in draws_rng.integers(0, units, size=(b, units)):
            w = np.bincount(row, minlength=units)[cards]
            expected.append(
                average_precision_score(y, candidate, sample_weight=w)
                - average_precision_score(y, production, sample_weight=w)
            )
    np.testing.assert_allclose(deltas, expected, atol=1e-12)
    assert np.abs(deltas).min() > 0  # the models differ in every replicate: not a zero test
    identical = bootstrap_ap_delta(y, candidate, candidate.copy(), cards, n_boot=20, seed=1)
    assert (identical == 0).all()


def _frame(rows):
    """rows: (day offset, card, score, is_fraud)"""
    t0 = pd.Timestamp("2018-08-08 10:00", tz="UTC")
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i}" for i in range(len(rows))],
            "tx_datetime": [t0 + pd.Timedelta(days=d, minutes=i) for i, (d, *_) in enumerate(rows)],
            "customer_id": [r[1] for r in rows],
            "score": [r[2] for r in rows],
            "is_fraud": [r[3] for r in rows],
        }
    )


def test_card_precision_at_k_hand_computed():
    frame = _frame(
        [
            # day 1: card scores A .9 (fraud), C .85 (max; its fraud is the .1 tx), B .8 (genuine)
            (0, "A", 0.9, 1),
            (0, "B", 0.8, 0),
            (0, "B", 0.2, 0),
            (0, "C", 0.85, 0),
            (0, "C", 0.1, 1),
            # day 2: A and C were detected on day 1 -> removed; top 2 = B (fraud), D (genuine)
            (1, "A", 0.99, 1),
            (1, "C", 0.98, 1),
            (1, "B", 0.7, 1),
            (1, "D", 0.6, 0),
            (1, "E", 0.5, 1),
        ]
    )
    per_day = card_precision_per_day(frame, k=2)
    assert per_day["cp_at_k"].tolist() == [1.0, 0.5]
    assert per_day["n_cards"].tolist() == [3, 3]
    assert per_day["n_compromised"].tolist() == [2, 2]
    assert card_precision_at_k(frame, k=2) == pytest.approx(0.75)
    # without removal day 2's top 2 are A and C, both compromised
    assert card_precision_at_k(frame, k=2, remove_detected=False) == pytest.approx(1.0)
    # divided by k, not by the number of cards (handbook)
    # day 2 after removal: B and E compromised among B, D, E
    assert card_precision_at_k(frame, k=100) == pytest.approx((2 / 100 + 2 / 100) / 2)


def test_card_precision_ties_by_card_id():
    frame = _frame([(0, "Z", 0.5, 1), (0, "Y", 0.5, 0)])
    assert card_precision_at_k(frame, k=1) == 0.0  # Y ranks before Z
    assert card_precision_at_k(frame, k=2) == 0.5


def test_p99_interval_ranks_and_coverage():
    """The interval's ends are order statistics chosen by the binomial: of 200 requests the
    low end is the 6th slowest and the high end the slowest; too few requests to bound an end
    give the extreme. Over many samples it covers the true p99 at least as often as it says."""
    latencies = np.arange(1, 201, dtype=float)[::-1]  # any order
    assert p99_interval(latencies) == (195.0, 200.0)
    assert p99_interval(np.arange(1.0, 11.0)) == (9.0, 10.0)
    assert all(np.isnan(p99_interval([])))
    rng = np.random.default_rng(7)
    truth = -np.log(0.01)  # the exponential's p99
    covered = [
        low <= truth <= high
        for low, high in (p99_interval(rng.exponential(size=1000)) for _ in range(400))
    ]
    assert np.mean(covered) >= 0.87  # nominal 0.90, binomial noise over 400 draws ~0.015


def test_precision_recall_at_threshold():
    out = precision_recall_at_threshold([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.7, 0.9], 0.5)
    assert (out["tp"], out["fp"], out["fn"], out["alerts"]) == (2, 1, 1, 3)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert np.isnan(precision_recall_at_threshold([0, 1], [0.1, 0.2], 0.9)["precision"])


def test_calibration_hand_computed():
    cal = calibration([0, 0, 1, 0], [0.05, 0.15, 0.95, 0.85], bins=2)
    assert cal.count == (2, 2)
    assert cal.mean_score == pytest.approx((0.1, 0.9))
    assert cal.fraud_rate == pytest.approx((0.0, 0.5))
    assert cal.ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert cal.brier == pytest.approx((0.05**2 + 0.15**2 + 0.05**2 + 0.85**2) / 4)
    assert calibration([1], [1.0], bins=4).count == (0, 0, 0, 1)  # 1.0 in the last bin


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

FAST = TrainConfig(
    num_leaves=15,
    learning_rate=0.1,
    n_estimators=80,
    min_child_samples=50,
    early_stopping_rounds=15,
    validation_share=0.25,
)


@pytest.fixture(scope="module")
def data():
    """40 days at scale 0.2 (~78,000 tx, ~700 frauds), features with labels known after 7 days."""
    from fraudloop.features.compute import build_features
    from fraudloop.feeds.population import make_population
    from fraudloop.feeds.scenarios import generate_day

    pop = make_population(42, 0.2)
    tx = pd.concat(
        [generate_day(pop, date(2018, 4, 1) + timedelta(days=i)) for i in range(40)],
        ignore_index=True,
    )
    labels = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "is_fraud": tx["is_fraud"].astype(np.int8),
            "known_at": tx["tx_datetime"] + pd.Timedelta(days=7),
        }
    )
    feats = build_features(tx, labels)
    feats["is_fraud"] = tx["is_fraud"].to_numpy()
    train_df = feats[(feats["tx_datetime"] >= "2018-04-08") & (feats["tx_datetime"] < "2018-05-01")]
    test_df = feats[feats["tx_datetime"] >= "2018-05-04"].reset_index(drop=True)
    return train_df.reset_index(drop=True), test_df


@pytest.fixture(scope="module")
def model(data):
    train_df, _ = data
    return train(train_df, train_df["is_fraud"], FAST)


@pytest.mark.slow
def test_training_is_bit_identical(data, model):
    train_df, _ = data
    # same data in another row order, same config: the very same model file
    shuffled = train_df.sample(frac=1.0, random_state=1)
    again = train(shuffled, shuffled["is_fraud"], FAST)
    assert again.model_text == model.model_text
    assert again.sha256 == model.sha256
    assert "[deterministic: 1]" in model.model_text
    assert "[num_threads: 2]" in model.model_text


def test_model_text_round_trip(data, model):
    _, test_df = data
    loaded = load_model(model.model_text)
    assert np.array_equal(loaded.predict(test_df), model.predict(test_df))
    assert loaded.booster.model_to_string() == model.model_text
    imp = model.feature_importance()
    assert set(imp.index) == set(FAST.features) and imp.iloc[0] > 0
    assert model.train_seconds > 0 and model.cpu_seconds > 0
    assert model.summary()["config"]["seed"] == 42


@pytest.mark.slow
def test_early_stopping_uses_the_latest_rows(data):
    train_df, _ = data
    cfg = TrainConfig(**{**FAST.to_dict(), "refit": False})
    m = train(train_df, train_df["is_fraud"], cfg)
    t = train_df["tx_datetime"]
    split = time_split(t, cfg.validation_share)
    assert m.validation_start == split
    assert split == (t.max() - (t.max() - t.min()) * 0.25).floor("h")
    latest = train_df[t >= split]
    assert m.n_valid == len(latest) and m.n_train == len(train_df) - len(latest)
    assert m.best_iteration < cfg.n_estimators  # it did stop early
    # the recorded validation AP is the AP of the model on exactly those latest rows
    assert m.valid_score == pytest.approx(
        average_precision(latest["is_fraud"], m.predict(latest)), abs=1e-6
    )
    # with refit, the final model learns from every row for the same number of rounds
    refit = train(train_df, train_df["is_fraud"], FAST)
    assert refit.best_iteration == m.best_iteration and refit.n_train == len(train_df)
    assert refit.num_trees == m.best_iteration


def test_accuracy_floor(data, model):
    """Measured on this data: AUC 0.931, AP 0.656, CP@20 0.436; the floors leave a margin."""
    _, test_df = data
    scores = test_df.assign(score=model.predict(test_df))
    metrics = evaluate(scores, k=20)
    assert metrics["auc"] >= 0.85
    assert metrics["ap"] >= 0.50
    assert metrics["n_days"] == 7


def test_bad_inputs():
    with pytest.raises(ValueError):
        TrainConfig(num_threads=0)
    with pytest.raises(ValueError):
        TrainConfig(validation_share=1.0)
    with pytest.raises(ValueError):
        load_model("not a model")


# ---------------------------------------------------------------------------------------------
# gate
# ---------------------------------------------------------------------------------------------


def _scores(noise: float, seed: int, n_cards: int = 800, days: int = 7) -> pd.DataFrame:
    """Score frame on fixed data (seed 0) with model noise ``noise`` drawn from ``seed``."""
    rng = np.random.default_rng(0)
    n = n_cards * days * 2
    card = rng.integers(0, n_cards, n)
    fraud = (rng.random(n) < 0.02).astype(int)
    t = pd.Timestamp("2018-08-08", tz="UTC") + pd.to_timedelta(
        rng.integers(0, days * 86400, n), "s"
    )
    noise_rng = np.random.default_rng(seed)
    signal = fraud * 1.0 + noise_rng.normal(0, noise, n)
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i}" for i in range(n)],
            "tx_datetime": t,
            "customer_id": [f"C{c}" for c in card],
            "is_fraud": fraud,
            "score": 1 / (1 + np.exp(-4 * (signal - 0.5))),
        }
    )


def test_gate_identical_models_hold():
    s = _scores(0.6, seed=1)
    d = gate(s, s.copy(), n_boot=200)
    assert d.decision == "hold" and not d.promote
    assert d.ap_delta == 0 and d.ci_low == 0 and d.ci_high == 0
    assert d.non_regression


def test_gate_same_quality_other_noise_not_promoted():
    d = gate(_scores(0.6, seed=2), _scores(0.6, seed=3), n_boot=300, seed=5)
    assert d.decision == "hold", d.reasons
    assert d.ci_low <= 0 <= d.ci_high


def test_gate_better_promoted_worse_rejected():
    good, bad = _scores(0.35, seed=2), _scores(0.7, seed=3)
    up = gate(good, bad, n_boot=300)
    assert up.decision == "promote" and up.ci_low > 0 and up.ap_delta > 0
    down = gate(bad, good, n_boot=300)
    assert down.decision == "reject" and down.ci_high < 0
    assert down.to_dict()["production"]["ap"] == pytest.approx(up.to_dict()["candidate"]["ap"])


def test_gate_first_model_and_floors():
    s = _scores(0.6, seed=1)
    ap = evaluate(s)["ap"]
    first = gate(s, None, floors={"ap": ap - 0.05, "auc": 0.5})
    assert first.decision == "promote" and first.production is None
    low = gate(s, None, floors={"ap": ap + 0.05})
    assert low.decision == "reject" and "ap" in low.floor_failures
    # floors are enforced even against a much worse production model
    vs = gate(s, _scores(2.0, seed=4), floors={"ap": ap + 0.05}, n_boot=100)
    assert vs.decision == "reject" and vs.ci_low > 0
    with pytest.raises(ValueError):
        gate(s, None, floors={"nonsense": 1.0})
    with pytest.raises(ValueError):
        gate(s, s.iloc[:-1], n_boot=10)


def test_expected_live_and_the_gate_flag_at_the_deployment_s_threshold():
    """The canary's expected flag rate and the gate's precision/recall use the threshold the
    service will flag at, not 0.5 (a skewed bound would roll back a good canary)."""
    candidate, production = _scores(0.6, seed=1), _scores(0.6, seed=2)
    for threshold in (0.3, 0.5, 0.8):
        expected = expected_live(candidate, production, threshold)
        assert expected["threshold"] == threshold
        assert expected["flag_rate"] == pytest.approx((candidate["score"] >= threshold).mean())
        assert expected["production_flag_rate"] == pytest.approx(
            (production["score"] >= threshold).mean()
        )
        decision = gate(candidate, production, n_boot=50, threshold=threshold)
        assert decision.candidate["precision"] == pytest.approx(
            evaluate(candidate, threshold=threshold)["precision"]
        )
    low, high = (expected_live(candidate, None, t)["flag_rate"] for t in (0.3, 0.8))
    assert low > high


def test_expected_live_weighs_the_score_shift_per_card():
    """The bound the canary's score shift is held to comes from the holdout measured the way
    the canary is: per card. A model that now scores one busy card (card testing: hundreds of
    requests) very differently shifts that card, not the traffic; one that scores every card
    differently shifts it all."""
    from fraudloop.model.metrics import psi

    production = _scores(0.6, seed=2)
    burst = pd.DataFrame(
        {
            "transaction_id": [f"B{i}" for i in range(3000)],
            "tx_datetime": production["tx_datetime"].iloc[0],
            "customer_id": "C-burst",
            "is_fraud": 1,
            "score": 0.05,
        }
    )
    production = pd.concat([production, burst], ignore_index=True)
    retrained = production.assign(
        score=np.where(production["customer_id"] == "C-burst", 0.95, production["score"])
    )
    per_request = psi(production["score"].to_numpy(), retrained["score"].to_numpy())
    per_card = expected_live(retrained, production, 0.5)["psi"]
    assert per_card < per_request / 10
    broken = production.assign(score=1 - production["score"])
    assert expected_live(broken, production, 0.5)["psi"] > 10 * per_card
