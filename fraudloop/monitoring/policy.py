"""What monitoring judges against: the serving SLO, the drift and accuracy thresholds, and how
often retraining may be requested.

The defaults are written here once; `fraudloop.core.settings.from_env` reads their variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudloop.core.settings import setting


@dataclass(frozen=True)
class MonitoringPolicy:
    latency_slo_ms: float = setting(
        "FRAUDLOOP_LATENCY_SLO_MS", 10.0, "serving SLO per hour: p99 of in-service scoring"
    )
    max_error_rate: float = setting(
        "FRAUDLOOP_MAX_ERROR_RATE", 0.01, "serving SLO per hour: fallbacks per request"
    )
    drift_share: float = setting(
        "FRAUDLOOP_DRIFT_SHARE", 0.3, "share of drifted columns (Evidently) that fails a day"
    )
    accuracy_min_ratio: float = setting(
        "FRAUDLOOP_ACCURACY_MIN_RATIO",
        0.75,
        "accuracy floor: this share of the version's holdout AP",
    )
    min_label_completeness: float = setting(
        "FRAUDLOOP_MIN_LABEL_COMPLETENESS",
        0.9,
        "a day's accuracy is judged once this share of labels arrived",
    )
    retrain_cooldown_hours: int = setting(
        "FRAUDLOOP_RETRAIN_COOLDOWN_HOURS",
        24,
        "data-time cooldown between retrainings (shared by the drift and accuracy sensors)",
    )
