"""What monitoring judges against: SLOs, drift and accuracy thresholds, the price of a CPU hour,
and how often retraining may be requested (values from `Settings`)."""

import dagster as dg


class MonitoringResource(dg.ConfigurableResource):
    cpu_hour_price: float = 0.05
    latency_slo_ms: float = 10.0
    max_error_rate: float = 0.01
    drift_share: float = 0.3
    accuracy_min_ratio: float = 0.75
    min_label_completeness: float = 0.9
    retrain_cooldown_hours: int = 24
    label_delay_days: int = 7
