"""LightGBM fraud model: deterministic training, native text model files, no pickle.

Dagster-free; LightGBM is imported inside the functions (importing it costs seconds).

Reproducibility (``fraudloop models reproduce N`` must rebuild a byte-identical model file): the
booster is trained with ``deterministic=True``, ``force_row_wise=True``, a fixed ``num_threads``
and every LightGBM seed derived from :attr:`TrainConfig.seed`, on a float64 matrix whose column
order is :attr:`TrainConfig.features` and whose row order is (``tx_datetime``,
``transaction_id``), whatever the order of the input frame. Same data + same config + same
LightGBM version => same :attr:`TrainedModel.model_text` (tested).

Early stopping uses a *time-based* split: the latest ``validation_share`` of the training time
window is the validation set (never a random sample: that would leak the future into the past).
With ``refit=True`` (default) the final booster is then retrained on the whole window for the
best number of rounds, so the most recent days, the most relevant ones, are learnt from too.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.features.compute import FEATURE_NAMES

__all__ = ["FraudModel", "TrainConfig", "TrainedModel", "load_model", "time_split", "train"]


LIGHTGBM_DEFAULT_MAX_BIN = 255


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model, recorded in the lineage (``to_dict``)."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 600  # maximum boosting rounds
    min_child_samples: int = 400
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    min_split_gain: float = 0.0
    max_depth: int = -1
    #: histogram bins per feature: 4095 beat LightGBM's 255 on the window's validation part
    #: (the tails of amounts and ages get bins of their own; README, model quality)
    max_bin: int = 4095
    #: "none", "balanced" (scale_pos_weight = negatives / positives) or a float weight
    class_weight: str | float = "none"
    seed: int = 42
    num_threads: int = 2
    early_stopping_rounds: int = 50
    #: share of the training *time* window (the latest part) used for early stopping; 0 disables
    validation_share: float = 0.2
    #: early-stopping metric: LightGBM's "average_precision", "auc" or "binary_logloss"
    metric: str = "average_precision"
    refit: bool = True
    features: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        if not 0 <= self.validation_share < 1:
            raise ValueError("validation_share must be in [0, 1)")
        if self.num_threads < 1:
            raise ValueError("num_threads must be fixed and >= 1 (0 = all cores is not stable)")
        if isinstance(self.class_weight, str) and self.class_weight not in ("none", "balanced"):
            try:  # a number given as text (run config from the UI)
                object.__setattr__(self, "class_weight", float(self.class_weight))
            except ValueError:
                raise ValueError("class_weight must be 'none', 'balanced' or a number") from None
        object.__setattr__(self, "features", tuple(self.features))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        # lineage recorded before the field existed was trained with LightGBM's default
        data.setdefault("max_bin", LIGHTGBM_DEFAULT_MAX_BIN)
        if "features" in data:
            data["features"] = tuple(data["features"])
        return cls(**data)

    def lgb_params(self, pos_weight: float = 1.0) -> dict[str, Any]:
        """LightGBM parameters, all seeds and thread count pinned."""
        return {
            "objective": "binary",
            "metric": [self.metric],
            "boosting_type": "gbdt",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "min_gain_to_split": self.min_split_gain,
            "max_depth": self.max_depth,
            "max_bin": self.max_bin,
            "scale_pos_weight": pos_weight,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "bagging_seed": self.seed + 1,
            "feature_fraction_seed": self.seed + 2,
            "data_random_seed": self.seed + 3,
            "drop_seed": self.seed + 4,
            "extra_seed": self.seed + 5,
            "objective_seed": self.seed + 6,
            "feature_pre_filter": False,
            "verbosity": -1,
        }


def _matrix(
    df: pd.DataFrame, features: tuple[str, ...], order: np.ndarray | None = None
) -> np.ndarray:
    """The features as one C-contiguous float64 matrix, its rows in ``order`` if given. Filled
    a column at a time, so each value is copied once: on a 3 M-row window, selecting the
    columns, converting them and reordering the rows held three 600 MB copies at once."""
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ValueError(f"feature frame lacks columns {missing}")
    x = np.empty((len(df) if order is None else len(order), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        column = df[name].to_numpy(dtype=np.float64)
        x[:, j] = column if order is None else column[order]
    return x


class FraudModel:
    """A booster held as its LightGBM text (the model file); scoring and importances."""

    def __init__(self, model_text: str):
        if not model_text.startswith("tree"):
            raise ValueError("not a LightGBM text model")
        self.model_text = model_text

    @cached_property
    def booster(self):
        import lightgbm as lgb

        return lgb.Booster(model_str=self.model_text)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.booster.feature_name())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_text.encode()).hexdigest()

    @property
    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def predict(self, features_df: pd.DataFrame, *, num_threads: int = 2) -> np.ndarray:
        """Fraud probability for each row of ``features_df`` (columns by name, order free)."""
        if len(features_df) == 0:
            return np.zeros(0)
        x = _matrix(features_df, self.features)
        return self.booster.predict(x, num_threads=num_threads)

    def feature_importance(self, kind: str = "gain") -> pd.Series:
        """Importance by feature (``gain``: total split gain; ``split``: split count), sorted."""
        values = self.booster.feature_importance(importance_type=kind)
        return pd.Series(values, index=list(self.features), name=kind).sort_values(ascending=False)


@dataclass(eq=False)
class TrainedModel(FraudModel):
    """A freshly trained model and how it was trained (for the lineage record)."""

    model_text: str
    config: TrainConfig
    best_iteration: int
    n_train: int
    n_valid: int
    n_fraud: int
    validation_start: pd.Timestamp | None
    valid_score: float  # early-stopping metric on the validation split at best_iteration
    train_seconds: float
    cpu_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        FraudModel.__init__(self, self.model_text)

    def summary(self) -> dict[str, Any]:
        return {
            "model_sha256": self.sha256,
            "best_iteration": self.best_iteration,
            "n_train": self.n_train,
            "n_valid": self.n_valid,
            "n_fraud": self.n_fraud,
            "validation_start": None
            if self.validation_start is None
            else self.validation_start.isoformat(),
            "valid_" + self.config.metric: self.valid_score,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "config": self.config.to_dict(),
        }


def load_model(text: str) -> FraudModel:
    """A model from its LightGBM text (as written by ``TrainedModel.model_text``)."""
    return FraudModel(text)


def time_split(times: pd.Series, share: float) -> pd.Timestamp | None:
    """Start of the validation part: the latest ``share`` of the [min, max] time span, floored to
    the hour (so a split never cuts an hour's features in two). None when ``share`` is 0."""
    if share <= 0 or len(times) == 0:
        return None
    t = pd.to_datetime(times, utc=True)
    lo, hi = t.min(), t.max()
    return (hi - (hi - lo) * share).floor("h")


def train(
    features_df: pd.DataFrame,
    labels: pd.Series | np.ndarray,
    config: TrainConfig | None = None,
    weights: pd.Series | np.ndarray | None = None,
) -> TrainedModel:
    """Train on ``features_df`` (``tx_datetime``, ``transaction_id`` and the config's features)
    with 0/1 ``labels`` aligned by position, and per-row ``weights`` when the rows are a sample
    (down-sampled negatives weigh 1 / their rate; the early-stopping metric is weighted too).

    Rows are put in (``tx_datetime``, ``transaction_id``) order first, so the model does not
    depend on the order of the input. With ``validation_share`` > 0 the rows at or after
    :func:`time_split` are the early-stopping set (it must hold both classes).
    """
    import lightgbm as lgb

    config = config or TrainConfig()
    y_all = np.asarray(labels).astype(np.int64)
    if len(y_all) != len(features_df):
        raise ValueError("labels and features_df differ in length")
    if len(features_df) == 0:
        raise ValueError("nothing to train on")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    t = pd.to_datetime(features_df["tx_datetime"], utc=True)
    order = np.lexsort((features_df["transaction_id"].astype(str).to_numpy(), t.to_numpy()))
    x_all = _matrix(features_df, config.features, order)
    y_all = y_all[order]
    w_all = None if weights is None else np.asarray(weights, dtype=np.float64)[order]
    t_sorted = pd.DatetimeIndex(t.to_numpy()[order])
    split = time_split(pd.Series(t_sorted), config.validation_share)
    # rows are in time order: the validation part (from the split on) is the rows from `cut`
    # on, and both parts are views of x_all, not copies
    cut = len(y_all) if split is None else int(t_sorted.searchsorted(split, side="left"))
    if split is not None and cut in (0, len(y_all)):
        raise ValueError("the time-based validation split is empty or covers everything")
    train_rows, valid_rows = slice(0, cut), slice(cut, len(y_all))
    x_tr, y_tr = x_all[train_rows], y_all[train_rows]
    if y_tr.min() == y_tr.max():
        raise ValueError("the training part needs both classes")

    def part(rows: slice) -> np.ndarray | None:
        return None if w_all is None else w_all[rows]

    def weight(y: np.ndarray, w: np.ndarray | None) -> float:
        if config.class_weight == "balanced":
            w = np.ones(len(y)) if w is None else w
            return float(w[y == 0].sum() / max(w[y == 1].sum(), 1.0))
        if config.class_weight == "none":
            return 1.0
        return float(config.class_weight)

    names = list(config.features)
    params = config.lgb_params(weight(y_tr, part(train_rows)))
    history: dict[str, list[float]] = {}
    best_iteration = config.n_estimators
    valid_score = float("nan")
    n_valid = len(y_all) - cut
    if n_valid:
        if y_all[valid_rows].min() == y_all[valid_rows].max():
            raise ValueError("the validation split needs both classes (widen validation_share)")
        dtrain = lgb.Dataset(
            x_tr, y_tr, weight=part(train_rows), feature_name=names, free_raw_data=False
        )
        dvalid = lgb.Dataset(
            x_all[valid_rows],
            y_all[valid_rows],
            weight=part(valid_rows),
            reference=dtrain,
            feature_name=names,
        )
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=config.n_estimators,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(config.early_stopping_rounds, verbose=False),
                lgb.record_evaluation(history),
            ],
        )
        best_iteration = int(booster.best_iteration) or config.n_estimators
        valid_score = float(history["valid"][config.metric][best_iteration - 1])
        if config.refit:
            # the early-stopping booster and its binned datasets go before the refit's are
            # built: the two never share the peak
            del booster, dtrain, dvalid
            params = config.lgb_params(weight(y_all, w_all))
            dfull = lgb.Dataset(x_all, y_all, weight=w_all, feature_name=names)
            booster = lgb.train(params, dfull, num_boost_round=best_iteration)
    else:
        dtrain = lgb.Dataset(x_tr, y_tr, weight=part(train_rows), feature_name=names)
        booster = lgb.train(params, dtrain, num_boost_round=config.n_estimators)
    text = booster.model_to_string(num_iteration=best_iteration if not config.refit else -1)
    return TrainedModel(
        model_text=text,
        config=config,
        best_iteration=best_iteration,
        n_train=int(len(y_all) if config.refit else len(y_tr)),
        n_valid=int(n_valid),
        n_fraud=int(y_all.sum()),
        validation_start=split,
        valid_score=valid_score,
        train_seconds=time.perf_counter() - start_wall,
        cpu_seconds=time.process_time() - start_cpu,
        history={k: list(v) for k, v in history.get("valid", {}).items()},
    )
