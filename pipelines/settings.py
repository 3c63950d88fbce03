"""Every knob of the deployment, read from the environment in one place.

Dagster definitions, the CLI and tests all build their resources from `Settings`, so a value
is never a constant scattered in code and the UI, the daemon and the CLI agree on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fraudloop.storage import LocalObjectStore, ObjectStore, S3ObjectStore


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
        )

    def validate(self) -> Settings:
        """Fail at start-up, with the variable to fix, rather than mid-run."""
        if self.store_backend not in ("local", "s3"):
            raise ValueError(f"FRAUDLOOP_STORE must be 'local' or 's3', not {self.store_backend!r}")
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ValueError("FRAUDLOOP_STORE=s3 needs FRAUDLOOP_S3_BUCKET")
        return self

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
