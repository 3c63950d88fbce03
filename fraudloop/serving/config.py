"""Configuration of the scoring service, from the environment (the container's only input)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fraudloop.core.errors import ConfigError
from fraudloop.core.settings import Settings, from_env, setting
from fraudloop.delivery.contract import DEFAULT_MAX_BODY_BYTES
from fraudloop.features.feature_store import ONLINE_PREFIX


def _instance_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = Settings.model_name  # the deployment's (FRAUDLOOP_MODEL_NAME, Settings)
    #: serve exactly this exported package (a container image) instead of following aliases
    package_dir: str | None = setting(
        "FRAUDLOOP_SERVE_PACKAGE_DIR", None, "serve this exported package instead of the aliases"
    )
    #: serve exactly this registry version's package as production (staging tests)
    pin_version: int | None = None  # --version
    features_prefix: str = setting(
        "FRAUDLOOP_SERVE_FEATURES_PREFIX", ONLINE_PREFIX, "where the online feature state is read"
    )
    online_store: str = setting(
        "FRAUDLOOP_ONLINE_STORE",
        "memory",
        "online features: `memory` (in the process; one replica) or `redis` (shared by replicas)",
    )
    redis_url: str = setting(
        "FRAUDLOOP_REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "the Redis of FRAUDLOOP_ONLINE_STORE=redis (default redis://127.0.0.1:6379/0; rediss:// "
        "for TLS; a password goes in the URL, hence secret)",
        secret=True,
    )
    redis_timeout_seconds: float = setting(
        "FRAUDLOOP_REDIS_TIMEOUT_SECONDS",
        0.25,
        "connect and read timeout of the scoring path's Redis calls (then 503, not ready)",
    )
    poll_seconds: float = setting(
        "FRAUDLOOP_SERVE_POLL_SECONDS", 1.0, "how often a service re-reads aliases and features"
    )
    max_body_bytes: int = setting(
        "FRAUDLOOP_SERVE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, "request body limit (413 above)"
    )
    flush_seconds: float = setting(
        "FRAUDLOOP_SERVE_FLUSH_SECONDS", 5.0, "prediction log flush period"
    )
    flush_rows: int = setting("FRAUDLOOP_SERVE_FLUSH_ROWS", 20_000, "prediction log flush size")
    shadow_queue: int = setting(
        "FRAUDLOOP_SERVE_SHADOW_QUEUE", 10_000, "off-path (shadow, control) queue; full drops"
    )
    log_predictions: bool = setting(
        "FRAUDLOOP_SERVE_LOG_PREDICTIONS", True, "write the prediction log"
    )
    admin_token: str | None = setting(
        "FRAUDLOOP_ADMIN_TOKEN", None, "bearer token of the admin endpoints", secret=True
    )
    score_token: str | None = setting(
        "FRAUDLOOP_SCORE_TOKEN",
        None,
        "bearer token required on /v1/score* (scoring writes online features); unset = open",
        secret=True,
    )
    max_clock_skew_seconds: float = setting(
        "FRAUDLOOP_SERVE_MAX_CLOCK_SKEW_SECONDS",
        300.0,
        "a tx_datetime later than now + this is refused (422)",
    )
    max_observed: int = setting(
        "FRAUDLOOP_SERVE_MAX_OBSERVED",
        2_000_000,
        "transactions kept in the online overlay since the loaded state; the oldest go first",
    )
    retry_answer_seconds: float = setting(
        "FRAUDLOOP_SERVE_RETRY_ANSWER_SECONDS",
        600.0,
        "a retried transaction (same id and content) gets its first features for this long; "
        "later it is scored as a new one (0: never). Redis holds ~0.44 kB per transaction for "
        "it (265 MB at 1,000 transactions/s; bench/serve.py)",
    )
    max_in_flight: int = setting(
        "FRAUDLOOP_SERVE_MAX_IN_FLIGHT",
        64,
        "scoring requests in progress at once; more are shed with 503 + Retry-After",
    )
    retry_after_seconds: int = setting(
        "FRAUDLOOP_SERVE_RETRY_AFTER_SECONDS",
        1,
        "Retry-After of a 503 (shed, not ready, online store unavailable)",
    )
    header_timeout_seconds: float = setting(
        "FRAUDLOOP_SERVE_HEADER_TIMEOUT_SECONDS",
        10.0,
        "a connection whose request head is not complete by then is closed",
    )
    body_timeout_seconds: float = setting(
        "FRAUDLOOP_SERVE_BODY_TIMEOUT_SECONDS",
        10.0,
        "a request body not received by then is answered 408",
    )
    keep_alive_seconds: float = setting(
        "FRAUDLOOP_SERVE_KEEP_ALIVE_SECONDS", 5.0, "idle keep-alive connections are closed then"
    )
    gil_switch_ms: float = setting(
        "FRAUDLOOP_SERVE_GIL_SWITCH_MS",
        0.5,
        "Python's thread switch interval in the service: a batch thread holds the GIL at most "
        "this long while a single request waits (Python's default is 5 ms)",
    )
    otel: bool = setting(
        "FRAUDLOOP_SERVE_OTEL",
        False,
        "FastAPI's OpenTelemetry instrumentation (spans, metrics and logs to the providers the "
        "process configures); off, a request skips its provider look-ups (seen in a profile, not "
        "measurable in requests/s here)",
    )
    store_timeout_seconds: float = setting(
        "FRAUDLOOP_SERVE_STORE_TIMEOUT_SECONDS",
        5.0,
        "connect and read timeout of the service's S3 calls",
    )
    ready_max_sync_age_seconds: float = setting(
        "FRAUDLOOP_SERVE_READY_MAX_SYNC_AGE_SECONDS",
        30.0,
        "not ready when the registry and features were last read successfully longer ago",
    )
    spool_dir: str | None = setting(
        "FRAUDLOOP_SERVE_SPOOL_DIR",
        None,
        "root of the local prediction-log spool (on a volume; each process takes a free slot "
        "in it); unset = a per-store directory under the system temp dir; `off` = memory only",
    )
    spool_sync: bool = setting(
        "FRAUDLOOP_SERVE_SPOOL_SYNC",
        True,
        "answer only after the decision is fsync'd to the spool; false = within spool_commit_ms",
    )
    spool_commit_ms: float = setting(
        "FRAUDLOOP_SERVE_SPOOL_COMMIT_MS",
        0.0,
        "group commit: wait this long to gather a group (0: a group is what arrived during the "
        "previous fsync)",
    )
    log_pseudonym_key: str | None = setting(
        "FRAUDLOOP_LOG_PSEUDONYM_KEY",
        None,
        "key of the keyed hash of card and terminal ids in the prediction log; unset = a "
        "public demo key (no protection, warned at start)",
        secret=True,
    )
    log_retention_hours: int = setting(
        "FRAUDLOOP_SERVE_LOG_RETENTION_HOURS",
        0,
        "delete prediction-log hours older than the newest logged hour minus this; 0 = keep",
    )
    instance: str = field(default_factory=_instance_id)

    def __post_init__(self) -> None:
        if self.poll_seconds <= 0 or self.flush_seconds <= 0:
            raise ConfigError("FRAUDLOOP_SERVE_POLL_SECONDS and _FLUSH_SECONDS must be > 0")
        if self.max_body_bytes < 1024:
            raise ConfigError("FRAUDLOOP_SERVE_MAX_BODY_BYTES must be at least 1024")
        if self.max_in_flight < 1 or self.max_observed < 1:
            raise ConfigError("FRAUDLOOP_SERVE_MAX_IN_FLIGHT and _MAX_OBSERVED must be >= 1")
        timeouts = (
            self.header_timeout_seconds,
            self.body_timeout_seconds,
            self.keep_alive_seconds,
            self.store_timeout_seconds,
            self.ready_max_sync_age_seconds,
            self.redis_timeout_seconds,
        )
        if min(timeouts) <= 0 or self.max_clock_skew_seconds < 0 or self.gil_switch_ms <= 0:
            raise ConfigError("the FRAUDLOOP_SERVE_*_SECONDS timeouts must be > 0")
        if self.online_store not in ("memory", "redis"):
            raise ConfigError("FRAUDLOOP_ONLINE_STORE must be `memory` or `redis`")
        if self.retry_answer_seconds < 0:
            raise ConfigError("FRAUDLOOP_SERVE_RETRY_ANSWER_SECONDS must be >= 0")
        if self.log_retention_hours < 0 or self.spool_commit_ms < 0:
            raise ConfigError("FRAUDLOOP_SERVE_LOG_RETENTION_HOURS and _SPOOL_COMMIT_MS >= 0")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        return from_env(cls, env, **overrides)
