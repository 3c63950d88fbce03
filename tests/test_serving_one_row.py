"""A slot scores one row through LightGBM's prepared single-row call: the same score to the bit as
`Booster.predict`, for every row, from several threads at once."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import pytest

from fraudloop.serving.live import Slot
from fraudloop.serving.one_row import OneRowPredictor

N_FEATURES = 12


def booster(early_stopping: bool) -> lgb.Booster:
    """A model reloaded from its text, as a package gives it to the service."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, N_FEATURES))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take their own branch
    y = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) + rng.normal(size=4000) > 1.2
    params = {"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": 1}
    train, valid = lgb.Dataset(x[:3000], y[:3000]), lgb.Dataset(x[3000:], y[3000:])
    callbacks = [lgb.early_stopping(5, verbose=False)] if early_stopping else []
    model = lgb.train(params, train, 300, valid_sets=[valid], callbacks=callbacks)
    if early_stopping:
        assert model.best_iteration < 300  # the test means something only if it stopped early
    return lgb.Booster(model_str=model.model_to_string())


def rows() -> np.ndarray:
    rng = np.random.default_rng(9)
    x = rng.normal(scale=3.0, size=(3000, N_FEATURES))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:5] = [np.inf, -np.inf, 0.0, 1e300, -1e300, 0, 0, 0, 0, 0, 0, 0][:N_FEATURES]
    return x


@pytest.mark.parametrize("early_stopping", [False, True], ids=["all trees", "best iteration"])
def test_one_row_scores_are_booster_predict_to_the_bit(early_stopping):
    model = booster(early_stopping)
    predictor = OneRowPredictor(model, N_FEATURES)
    x = rows()
    want = model.predict(x, num_threads=1)
    got = np.concatenate([predictor.predict(x[i : i + 1]) for i in range(len(x))])
    assert np.array_equal(got, want)
    # a row given as float32 or as a non-contiguous view scores as its float64 copy
    assert predictor.predict(x[7:8].astype(np.float32)) == model.predict(
        x[7:8].astype(np.float32), num_threads=1
    )
    assert predictor.predict(np.asfortranarray(x[:2])[1:2]) == want[1]


def test_a_row_of_the_wrong_width_is_refused():
    predictor = OneRowPredictor(booster(False), N_FEATURES)
    with pytest.raises(ValueError, match="one row of 12 features"):
        predictor.predict(np.zeros((1, N_FEATURES - 1)))
    with pytest.raises(ValueError, match="one row of 12 features"):
        predictor.predict(np.zeros((2, N_FEATURES)))


def test_threads_sharing_a_slot_get_each_their_own_scores():
    """The prepared call's buffers serve one caller at a time; the others take Booster.predict.
    Whichever path a call took, its score is its row's."""
    model = booster(False)
    features = tuple(f"f{i}" for i in range(N_FEATURES))
    slot = Slot("production", 1, "sha", 0.5, features, model)
    assert slot.one_row is not None
    x = rows()
    want = model.predict(x, num_threads=1)
    wrong: list[int] = []

    def score(offset: int) -> None:
        for i in range(offset, len(x), 4):
            if slot.predict(x[i : i + 1])[0] != want[i]:
                wrong.append(i)

    threads = [threading.Thread(target=score, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert np.array_equal(slot.predict(x[:10]), want[:10])  # several rows: Booster.predict


def test_a_slot_copied_with_another_model_predicts_with_that_model():
    """The prepared call belongs to the booster: replacing the booster replaces it."""
    import dataclasses

    class Constant:
        def predict(self, matrix, **_kwargs):
            return np.full(len(matrix), 0.25)

    model = booster(False)
    slot = Slot("production", 1, "sha", 0.5, tuple(f"f{i}" for i in range(N_FEATURES)), model)
    other = dataclasses.replace(slot, booster=Constant())
    assert other.one_row is None
    assert other.predict(rows()[:1]).tolist() == [0.25]
    assert slot.predict(rows()[:1]) == model.predict(rows()[:1], num_threads=1)
