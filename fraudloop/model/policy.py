"""What every candidate is trained on and held to: the training window, the decision threshold,
and the gate's floors and margin.

The defaults are written here once; `fraudloop.core.settings.from_env` reads their variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudloop.core.settings import setting


@dataclass(frozen=True)
class ModelPolicy:
    """The training window of every `training_job` (sensor-triggered ones included) and the
    threshold the deployed model flags at."""

    #: 84, not 28: on the handbook protocol's validation week a longer window scored AP 0.686
    #: (28 d) / 0.696 (56 d) / 0.703 (84 d) (`bench/quality.py --windows 28,56,84`); a fit costs
    #: about three times as much (linear in rows)
    train_window_days: int = setting(
        "FRAUDLOOP_TRAIN_WINDOW_DAYS", 84, "days of matured labels every candidate trains on"
    )
    holdout_days: int = setting(
        "FRAUDLOOP_HOLDOUT_DAYS", 7, "days after the window the gate evaluates on"
    )
    #: 3 M rows: ~3 GB at the training step's peak; the window at 1x (~0.8 M rows) and 10x is
    #: whole, at 100x (~84 M) its negatives are sampled at ~3.5 % (`fraudloop.model.datasets`)
    train_max_rows: int = setting(
        "FRAUDLOOP_TRAIN_MAX_ROWS",
        3_000_000,
        "above this many window rows, legitimate transactions are sampled (weighted 1/rate)",
    )
    decision_threshold: float = setting(
        "FRAUDLOOP_DECISION_THRESHOLD",
        0.5,
        "score at or above it -> `review`; evaluated by the gate, recorded in the package",
    )

    def __post_init__(self) -> None:
        if not 0 < self.decision_threshold < 1:
            raise ValueError("the decision threshold must be in (0, 1)")
        if self.train_window_days < 1 or self.holdout_days < 1:
            raise ValueError("the training window and the holdout need at least one day each")
        if self.train_max_rows < 1_000:
            raise ValueError("FRAUDLOOP_TRAIN_MAX_ROWS must be >= 1,000")


@dataclass(frozen=True)
class GatePolicy:
    """Floors every model must meet on the holdout, and how much better than production a
    candidate must be (the lower end of the bootstrap interval of the AP difference)."""

    floor_auc: float = 0.80
    floor_ap: float = 0.40
    min_delta: float = 0.0
    n_boot: int = 1000

    @property
    def floors(self) -> dict[str, float]:
        return {"auc": self.floor_auc, "ap": self.floor_ap}
