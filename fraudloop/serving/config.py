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
    instance: str = field(default_factory=_instance_id)

    def __post_init__(self) -> None:
        if self.poll_seconds <= 0 or self.flush_seconds <= 0:
            raise ConfigError("FRAUDLOOP_SERVE_POLL_SECONDS and _FLUSH_SECONDS must be > 0")
        if self.max_body_bytes < 1024:
            raise ConfigError("FRAUDLOOP_SERVE_MAX_BODY_BYTES must be at least 1024")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServeConfig:
        return from_env(cls, env, **overrides)
