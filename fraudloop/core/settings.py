"""Every knob of the deployment, read from the environment in one place.

Dagster definitions, the CLI and tests all build their resources from `Settings`, so a value
is never a constant scattered in code and the UI, the daemon and the CLI agree on it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fraudloop.core.store import LocalObjectStore, ObjectStore, S3ObjectStore


def _env(env: dict[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    store_backend: str = "local"  # FRAUDLOOP_STORE: local | s3
    home: str = ".fraudloop"  # FRAUDLOOP_HOME: root of the local object store
    s3_bucket: str | None = None  # FRAUDLOOP_S3_BUCKET
    s3_prefix: str = ""  # FRAUDLOOP_S3_PREFIX
    s3_endpoint_url: str | None = None  # FRAUDLOOP_S3_ENDPOINT_URL (MinIO, moto)
    aws_region: str | None = None  # AWS_REGION
    partition_start: str = "2018-04-01-00:00"  # FRAUDLOOP_PARTITION_START (first hourly key)
    partition_end: str | None = None  # FRAUDLOOP_PARTITION_END (exclusive; open-ended if unset)
    label_delay_days: int = 7  # FRAUDLOOP_LABEL_DELAY_DAYS
    label_lookback_days: int = 45  # FRAUDLOOP_LABEL_LOOKBACK_DAYS: how old a labelled tx may be
    row_count_history_days: int = 7  # FRAUDLOOP_ROW_COUNT_HISTORY_DAYS
    row_count_ratio: float = 4.0  # FRAUDLOOP_ROW_COUNT_RATIO: allowed factor vs trailing mean
    max_amount: float = 100_000.0  # FRAUDLOOP_MAX_AMOUNT: sane cap for a card transaction
    max_file_mb: int = 256  # FRAUDLOOP_MAX_FILE_MB
    alert_file: str | None = None  # FRAUDLOOP_ALERT_FILE (default <home>/alerts/alerts.jsonl)
    alert_webhook_url: str | None = None  # FRAUDLOOP_ALERT_WEBHOOK_URL
    sensor_interval_seconds: int = 30  # FRAUDLOOP_SENSOR_INTERVAL_SECONDS
    decision_threshold: float = 0.5  # FRAUDLOOP_DECISION_THRESHOLD: score >= it -> review
    staging_p99_ms: float = 25.0  # FRAUDLOOP_STAGING_P99_MS: staging test latency budget
    rollout_steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)  # FRAUDLOOP_ROLLOUT_STEPS
    rollout_min_requests: int = 200  # FRAUDLOOP_ROLLOUT_MIN_REQUESTS (per step)
    rollout_bake_seconds: float = 60.0  # FRAUDLOOP_ROLLOUT_BAKE_SECONDS (per step)
    rollout_max_error_rate: float = 0.01  # FRAUDLOOP_ROLLOUT_MAX_ERROR_RATE
    rollout_max_p99_ratio: float = 1.5  # FRAUDLOOP_ROLLOUT_MAX_P99_RATIO (vs production)
    rollout_max_psi: float = 0.25  # FRAUDLOOP_ROLLOUT_MAX_PSI (canary vs control scores)
    rollout_max_flag_rate: float = 0.10  # FRAUDLOOP_ROLLOUT_MAX_FLAG_RATE
    rollout_interval_seconds: int = 15  # FRAUDLOOP_ROLLOUT_INTERVAL_SECONDS: controller tick
    train_window_days: int = 28  # FRAUDLOOP_TRAIN_WINDOW_DAYS
    holdout_days: int = 7  # FRAUDLOOP_HOLDOUT_DAYS
    cpu_hour_price: float = 0.05  # FRAUDLOOP_CPU_HOUR_PRICE: inference and training cost
    latency_slo_ms: float = 10.0  # FRAUDLOOP_LATENCY_SLO_MS: p99 of in-service scoring
    max_error_rate: float = 0.01  # FRAUDLOOP_MAX_ERROR_RATE: fallbacks per request, per hour
    drift_share: float = 0.3  # FRAUDLOOP_DRIFT_SHARE: drifted share of features that alerts
    accuracy_min_ratio: float = 0.75  # FRAUDLOOP_ACCURACY_MIN_RATIO: of the version's holdout AP
    min_label_completeness: float = 0.9  # FRAUDLOOP_MIN_LABEL_COMPLETENESS to judge a day
    retrain_cooldown_hours: int = 24  # FRAUDLOOP_RETRAIN_COOLDOWN_HOURS (of data time)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = str(Path(_env(env, "FRAUDLOOP_HOME", ".fraudloop")).resolve())
        return cls(
            store_backend=_env(env, "FRAUDLOOP_STORE", "local").lower(),
            home=home,
            s3_bucket=_env(env, "FRAUDLOOP_S3_BUCKET"),
            s3_prefix=_env(env, "FRAUDLOOP_S3_PREFIX", ""),
            s3_endpoint_url=_env(env, "FRAUDLOOP_S3_ENDPOINT_URL"),
            aws_region=_env(env, "AWS_REGION") or _env(env, "AWS_DEFAULT_REGION"),
            partition_start=_env(env, "FRAUDLOOP_PARTITION_START", cls.partition_start),
            partition_end=_env(env, "FRAUDLOOP_PARTITION_END"),
            label_delay_days=int(_env(env, "FRAUDLOOP_LABEL_DELAY_DAYS", "7")),
            label_lookback_days=int(_env(env, "FRAUDLOOP_LABEL_LOOKBACK_DAYS", "45")),
            row_count_history_days=int(_env(env, "FRAUDLOOP_ROW_COUNT_HISTORY_DAYS", "7")),
            row_count_ratio=float(_env(env, "FRAUDLOOP_ROW_COUNT_RATIO", "4.0")),
            max_amount=float(_env(env, "FRAUDLOOP_MAX_AMOUNT", "100000")),
            max_file_mb=int(_env(env, "FRAUDLOOP_MAX_FILE_MB", "256")),
            alert_file=_env(
                env, "FRAUDLOOP_ALERT_FILE", str(Path(home) / "alerts" / "alerts.jsonl")
            ),
            alert_webhook_url=_env(env, "FRAUDLOOP_ALERT_WEBHOOK_URL"),
            sensor_interval_seconds=int(_env(env, "FRAUDLOOP_SENSOR_INTERVAL_SECONDS", "30")),
            decision_threshold=float(_env(env, "FRAUDLOOP_DECISION_THRESHOLD", "0.5")),
            staging_p99_ms=float(_env(env, "FRAUDLOOP_STAGING_P99_MS", "25")),
            rollout_steps=tuple(
                float(x)
                for x in _env(env, "FRAUDLOOP_ROLLOUT_STEPS", "0.05,0.25,0.5,1").split(",")
                if x.strip()
            ),
            rollout_min_requests=int(_env(env, "FRAUDLOOP_ROLLOUT_MIN_REQUESTS", "200")),
            rollout_bake_seconds=float(_env(env, "FRAUDLOOP_ROLLOUT_BAKE_SECONDS", "60")),
            rollout_max_error_rate=float(_env(env, "FRAUDLOOP_ROLLOUT_MAX_ERROR_RATE", "0.01")),
            rollout_max_p99_ratio=float(_env(env, "FRAUDLOOP_ROLLOUT_MAX_P99_RATIO", "1.5")),
            rollout_max_psi=float(_env(env, "FRAUDLOOP_ROLLOUT_MAX_PSI", "0.25")),
            rollout_max_flag_rate=float(_env(env, "FRAUDLOOP_ROLLOUT_MAX_FLAG_RATE", "0.10")),
            rollout_interval_seconds=int(_env(env, "FRAUDLOOP_ROLLOUT_INTERVAL_SECONDS", "15")),
            train_window_days=int(_env(env, "FRAUDLOOP_TRAIN_WINDOW_DAYS", "28")),
            holdout_days=int(_env(env, "FRAUDLOOP_HOLDOUT_DAYS", "7")),
            cpu_hour_price=float(_env(env, "FRAUDLOOP_CPU_HOUR_PRICE", "0.05")),
            latency_slo_ms=float(_env(env, "FRAUDLOOP_LATENCY_SLO_MS", "10")),
            max_error_rate=float(_env(env, "FRAUDLOOP_MAX_ERROR_RATE", "0.01")),
            drift_share=float(_env(env, "FRAUDLOOP_DRIFT_SHARE", "0.3")),
            accuracy_min_ratio=float(_env(env, "FRAUDLOOP_ACCURACY_MIN_RATIO", "0.75")),
            min_label_completeness=float(_env(env, "FRAUDLOOP_MIN_LABEL_COMPLETENESS", "0.9")),
            retrain_cooldown_hours=int(_env(env, "FRAUDLOOP_RETRAIN_COOLDOWN_HOURS", "24")),
        )

    def validate(self) -> Settings:
        """Fail at start-up, with the variable to fix, rather than mid-run."""
        if self.store_backend not in ("local", "s3"):
            raise ValueError(f"FRAUDLOOP_STORE must be 'local' or 's3', not {self.store_backend!r}")
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ValueError("FRAUDLOOP_STORE=s3 needs FRAUDLOOP_S3_BUCKET")
        if not 0 < self.decision_threshold < 1:
            raise ValueError("FRAUDLOOP_DECISION_THRESHOLD must be in (0, 1)")
        self.rollout_policy()  # raises with the reason if the rollout settings are inconsistent
        return self

    def rollout_policy(self):
        """The canary policy new rollouts start with (a running one keeps the policy it began
        with, recorded in its document)."""
        from fraudloop.delivery.rollout import policy_from_prefixed

        try:
            return policy_from_prefixed(asdict(self))
        except ValueError as error:
            raise ValueError(f"FRAUDLOOP_ROLLOUT_*: {error}") from None

    def open_store(self) -> ObjectStore:
        """The core store these settings name, for code outside Dagster (CLI, scoring service)."""
        self.validate()
        if self.store_backend == "s3":
            return S3ObjectStore(
                self.s3_bucket,
                prefix=self.s3_prefix,
                endpoint_url=self.s3_endpoint_url,
                region_name=self.aws_region,
            )
        return LocalObjectStore(self.home)


def store_env(store: ObjectStore) -> dict[str, str]:
    """The environment that makes another process (the scoring service under a staging test)
    open the same store as `store`. Credentials are not copied: they stay in the environment."""
    if isinstance(store, LocalObjectStore):
        return {"FRAUDLOOP_STORE": "local", "FRAUDLOOP_HOME": str(store.root)}
    if isinstance(store, S3ObjectStore):
        env = {
            "FRAUDLOOP_STORE": "s3",
            "FRAUDLOOP_S3_BUCKET": store.bucket,
            "FRAUDLOOP_S3_PREFIX": store.prefix.rstrip("/"),
        }
        if store.endpoint_url:
            env["FRAUDLOOP_S3_ENDPOINT_URL"] = store.endpoint_url
        if store.region_name:
            env["AWS_REGION"] = store.region_name
        return env
    raise TypeError(f"cannot describe a {type(store).__name__} to another process")
