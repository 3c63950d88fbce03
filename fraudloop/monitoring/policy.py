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
    drift_max_rows: int = setting(
        "FRAUDLOOP_DRIFT_MAX_ROWS",
        50_000,
        "drift report: rows sampled from each side (the version's reference, the day's traffic)",
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
    resolve_after_healthy: int = setting(
        "FRAUDLOOP_RESOLVE_AFTER_HEALTHY",
        2,
        "a health/drift/accuracy incident resolves after this many healthy partitions in a row",
    )
    accuracy_page_after_days: int = setting(
        "FRAUDLOOP_ACCURACY_PAGE_AFTER_DAYS",
        3,
        "accuracy under floor is a warning (the loop retrains by itself) and pages once this "
        "many days failed, or when a retrained production fails too",
    )
    retrain_cooldown_hours: int = setting(
        "FRAUDLOOP_RETRAIN_COOLDOWN_HOURS",
        24,
        "data-time cooldown between retrainings (shared by the drift and accuracy sensors)",
    )
    feed_fresh_hours: float = setting(
        "FRAUDLOOP_FRESH_FEED_HOURS",
        3.0,
        "freshness: the transaction feed fails when no file landed for this long (wall clock)",
    )
    labels_fresh_hours: float = setting(
        "FRAUDLOOP_FRESH_LABELS_HOURS", 36.0, "freshness: the same for the label feed"
    )
    features_fresh_hours: float = setting(
        "FRAUDLOOP_FRESH_FEATURES_HOURS", 3.0, "freshness: transaction_features last computed"
    )
    predictions_fresh_hours: float = setting(
        "FRAUDLOOP_FRESH_PREDICTIONS_HOURS",
        2.0,
        "freshness: the services' prediction log last written (a silent service)",
    )
    model_fresh_days: float = setting(
        "FRAUDLOOP_FRESH_MODEL_DAYS", 30.0, "freshness: the last model release (production's age)"
    )
