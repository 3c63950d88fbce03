"""Fraud-detection metrics: AUC ROC, Average Precision, Card Precision@k, alerts, calibration.

Dagster-free and cheap to import. Definitions follow the "Reproducible Machine Learning for Credit
Card Fraud Detection" handbook (Le Borgne et al.), so our figures compare with its tables:

- :func:`auc_roc` and :func:`average_precision` are scikit-learn's ``roc_auc_score`` and
  ``average_precision_score`` over all transactions pooled;
- :func:`card_precision_at_k` is the handbook's ``card_precision_top_k`` (see its docstring);
- :func:`precision_recall_at_threshold` is what an alert threshold yields;
- :func:`calibration` is the Brier score, the expected calibration error and reliability bins.

Score frames have one row per transaction with ``score`` (higher = more suspicious), ``is_fraud``
(0/1), ``customer_id`` (the card) and ``tx_datetime`` (UTC; the test day is its UTC date).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Calibration",
    "auc_roc",
    "average_precision",
    "calibration",
    "card_precision_at_k",
    "card_precision_per_day",
    "p99_interval",
    "per_card_weights",
    "precision_recall_at_threshold",
]


def _arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true and y_score must be 1-d of equal length ({y.shape}, {s.shape})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1")
    return y, s


def auc_roc(y_true, y_score) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y, s = _arrays(y_true, y_score)
    if y.min(initial=0) == y.max(initial=0):
        return float("nan")
    return float(roc_auc_score(y, s))


def average_precision(y_true, y_score) -> float:
    """Average Precision = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds
    (scikit-learn's step-wise definition, no interpolation); NaN without a positive."""
    from sklearn.metrics import average_precision_score

    y, s = _arrays(y_true, y_score)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def _check_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"score frame lacks columns {sorted(missing)}")


def card_precision_per_day(
    frame: pd.DataFrame,
    k: int = 100,
    *,
    score: str = "score",
    remove_detected: bool = True,
) -> pd.DataFrame:
    """Card Precision@k for each test day, as the handbook's ``card_precision_top_k``.

    For each UTC day of ``tx_datetime``, in order:

    1. drop the transactions of cards *detected* on earlier test days (compromised cards that
       were in an earlier day's top k: investigators already found them) when ``remove_detected``;
    2. aggregate per card (``customer_id``): its score is its maximum transaction score of the day,
       it is compromised if any of its transactions that day is a fraud;
    3. rank the cards by that score (ties: ``customer_id`` ascending, for determinism) and take the
       top ``k``; CP@k = compromised cards among them / ``k`` (``k``, not the number of cards, as
       the handbook does, so a day with fewer than ``k`` cards cannot reach 1);
    4. the compromised cards of that top k become detected for the following days.

    Returns one row per day: ``day``, ``cp_at_k``, ``n_cards`` (after removal), ``n_compromised``
    (compromised cards that day after removal), ``n_detected`` (compromised cards in the top k).
    """
    if k <= 0:
        raise ValueError("k must be positive")
    _check_frame(frame, ("tx_datetime", "customer_id", "is_fraud", score))
    day = pd.to_datetime(frame["tx_datetime"], utc=True).dt.floor("D")
    df = pd.DataFrame(
        {
            "day": day.to_numpy(),
            "card": frame["customer_id"].astype(str).to_numpy(),
            "fraud": frame["is_fraud"].to_numpy().astype(np.int64),
            "score": frame[score].to_numpy(dtype=np.float64),
        }
    )
    detected: set[str] = set()
    rows = []
    for d, df_day in df.groupby("day", sort=True):
        if remove_detected and detected:
            df_day = df_day[~df_day["card"].isin(detected)]
        cards = df_day.groupby("card", sort=True).agg(
            score=("score", "max"), fraud=("fraud", "max")
        )
        cards = cards.reset_index().sort_values(
            ["score", "card"], ascending=[False, True], kind="mergesort"
        )
        top = cards.head(k)
        hits = top.loc[top["fraud"] == 1, "card"].tolist()
        rows.append(
            {
                "day": d,
                "cp_at_k": len(hits) / k,
                "n_cards": len(cards),
                "n_compromised": int(cards["fraud"].sum()),
                "n_detected": len(hits),
            }
        )
        detected.update(hits)
    return pd.DataFrame(rows, columns=["day", "cp_at_k", "n_cards", "n_compromised", "n_detected"])


def card_precision_at_k(
    frame: pd.DataFrame, k: int = 100, *, score: str = "score", remove_detected: bool = True
) -> float:
    """Mean over test days of :func:`card_precision_per_day` (NaN for an empty frame)."""
    per_day = card_precision_per_day(frame, k, score=score, remove_detected=remove_detected)
    return float(per_day["cp_at_k"].mean()) if len(per_day) else float("nan")


def precision_recall_at_threshold(y_true, y_score, threshold: float = 0.5) -> dict[str, float]:
    """Alerts are the transactions with ``score >= threshold``.

    Returns ``precision`` = TP / alerts (NaN without an alert), ``recall`` = TP / frauds (NaN
    without a fraud), ``f1``, ``alerts``, ``tp``, ``fp``, ``fn`` and ``threshold``.
    """
    y, s = _arrays(y_true, y_score)
    alert = s >= threshold
    tp = int((alert & (y == 1)).sum())
    fp = int((alert & (y == 0)).sum())
    fn = int((~alert & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "alerts": tp + fp,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


@dataclass(frozen=True)
class Calibration:
    """Brier score, expected calibration error and reliability bins of probability scores.

    Bin i covers ``[edges[i], edges[i+1])`` (the last one includes 1.0); empty bins have count 0
    and NaN means. ECE = sum over bins of count/n x |mean score - fraud rate|.
    """

    brier: float
    ece: float
    edges: tuple[float, ...]
    count: tuple[int, ...]
    mean_score: tuple[float, ...]
    fraud_rate: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "lo": self.edges[:-1],
                "hi": self.edges[1:],
                "count": self.count,
                "mean_score": self.mean_score,
                "fraud_rate": self.fraud_rate,
            }
        )


def calibration(y_true, y_score, bins: int | tuple[float, ...] = 10) -> Calibration:
    """Calibration of scores in [0, 1]: ``bins`` equal-width bins, or explicit edges."""
    y, s = _arrays(y_true, y_score)
    if len(s) and (s.min() < 0 or s.max() > 1):
        raise ValueError("calibration needs probability scores in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1) if isinstance(bins, int) else np.asarray(bins, float)
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    count = np.bincount(idx, minlength=nb)
    sum_s = np.bincount(idx, weights=s, minlength=nb)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_s = np.where(count > 0, sum_s / count, np.nan)
        rate = np.where(count > 0, sum_y / count, np.nan)
    n = len(s)
    brier = float(np.mean((s - y) ** 2)) if n else float("nan")
    ece = float(np.nansum(count / n * np.abs(mean_s - rate))) if n else float("nan")
    return Calibration(
        brier=brier,
        ece=ece,
        edges=tuple(float(e) for e in edges),
        count=tuple(int(c) for c in count),
        mean_score=tuple(float(v) for v in mean_s),
        fraud_rate=tuple(float(v) for v in rate),
    )


#: PSI bin edges on the score. Fraud probabilities spread over orders of magnitude (most
#: transactions score 0.001-0.05), so the edges are roughly geometric. Fixed edges, not quantiles
#: of the baseline: a tree ensemble's scores have many ties, and quantile edges that fall on a
#: tie make two near-identical models (correlation 0.999) look like a PSI of 1.5.
SCORE_EDGES = np.array([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5])


def psi(
    expected: np.ndarray,
    actual: np.ndarray,
    edges: np.ndarray = SCORE_EDGES,
    weights: np.ndarray | None = None,
) -> float:
    """Population stability index of ``actual`` scores against ``expected`` ones (0: the same
    distribution; above 0.25 is the usual "significant shift"); `weights` (one per row of
    paired scores) serve resampling."""
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    bins = len(edges) + 1
    e = np.bincount(np.searchsorted(edges, expected, side="right"), weights, minlength=bins)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), weights, minlength=bins)
    eps = 1e-4
    pe = np.maximum(e / e.sum(), eps)
    pa_ = np.maximum(a / a.sum(), eps)
    return float(np.sum((pa_ - pe) * np.log(pa_ / pe)))


def per_card_weights(cards: np.ndarray | pd.Series) -> np.ndarray:
    """Row weights that give every card one vote in total, however many rows it has. A score
    shift is judged per card: a card-testing burst is ten cards making hundreds of requests, and
    weighted per request a model retrained to catch them looks like a broken one (in the Docker
    stack such a canary showed a PSI of 3.5 at 100 %; per card the same demo traffic is 0.3-0.5),
    while a broken model shifts the scores of every card and still shows its whole shift."""
    codes, _ = pd.factorize(np.asarray(cards))
    return 1.0 / np.bincount(codes)[codes]


def p99_interval(
    latencies_ms: np.ndarray | list[float],
    confidence: float = 0.90,
) -> tuple[float, float]:
    """A distribution-free interval of the p99 latency, from two order statistics. The staging
    test and a canary step see a few hundred requests, so their p99 is their two or three
    slowest: one request behind a busy core or a garbage collection is the p99 (in the Docker
    stack 3.5 ms against a 3.2 ms bound rolled a good model back; in the suite at load ~6 a
    staging test measured 44 ms against 25). Judged on the interval's low end, a package fails
    for a slow tail, not for one slow request.

    How many of n requests fall below the true p99 is Binomial(n, 0.99), whatever the latency
    distribution, so the l-th and u-th smallest latencies bound it with the given confidence
    (each end missing with probability at most (1 - confidence) / 2): of 200 requests, the
    6th slowest is the low end. One partial sort, O(n): a bootstrap needed a resample of
    every request ~200 times, a 200 x n array at each tick of the rollout controller (~67 MB
    and ~0.3 s for a step of an issuer's hour). Too few requests to bound an end at that
    confidence: that end is the smallest (or largest) latency, which judges nothing slow."""
    from scipy.stats import binom

    values = np.asarray(latencies_ms, dtype=float)
    n = len(values)
    if not n:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    below = binom.cdf(np.arange(n), n, 0.99)  # below[k]: P(at most k requests under the p99)
    low = max(int(np.searchsorted(below, alpha, side="right")), 1) - 1  # 0-based ranks
    high = min(int(np.searchsorted(below, 1 - alpha, side="left")), n - 1)
    ranked = np.partition(values, [low, high])
    return float(ranked[low]), float(ranked[high])
