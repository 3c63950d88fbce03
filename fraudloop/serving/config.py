"""Configuration of the scoring service, from the environment (the container's only input)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from fraudloop.delivery.contract import DEFAULT_MAX_BODY_BYTES
from fraudloop.features.feature_store import ONLINE_PREFIX


def _instance_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "fraud"  # FRAUDLOOP_MODEL_NAME
    #: serve exactly this exported package (a container image) instead of following aliases
    package_dir: str | None = None  # FRAUDLOOP_SERVE_PACKAGE_DIR / --package-dir
    #: serve exactly this registry version's package as production (staging tests)
    pin_version: int | None = None  # --version
    features_prefix: str = ONLINE_PREFIX  # FRAUDLOOP_SERVE_FEATURES_PREFIX
    poll_seconds: float = 1.0  # FRAUDLOOP_SERVE_POLL_SECONDS: how often aliases are re-read
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # FRAUDLOOP_SERVE_MAX_BODY_BYTES
    flush_seconds: float = 5.0  # FRAUDLOOP_SERVE_FLUSH_SECONDS: prediction log flush period
    flush_rows: int = 20_000  # FRAUDLOOP_SERVE_FLUSH_ROWS
    shadow_queue: int = 10_000  # FRAUDLOOP_SERVE_SHADOW_QUEUE: bounded off-path work
    log_predictions: bool = True  # FRAUDLOOP_SERVE_LOG_PREDICTIONS
    admin_token: str | None = field(default=None, repr=False)  # FRAUDLOOP_ADMIN_TOKEN
    instance: str = field(default_factory=_instance_id)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> ServeConfig:
        env = dict(os.environ if env is None else env)

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        values = {
            "model_name": get("FRAUDLOOP_MODEL_NAME", "fraud"),
            "package_dir": get("FRAUDLOOP_SERVE_PACKAGE_DIR"),
            "features_prefix": get("FRAUDLOOP_SERVE_FEATURES_PREFIX", ONLINE_PREFIX),
            "poll_seconds": float(get("FRAUDLOOP_SERVE_POLL_SECONDS", "1.0")),
            "max_body_bytes": int(
                get("FRAUDLOOP_SERVE_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
            ),
            "flush_seconds": float(get("FRAUDLOOP_SERVE_FLUSH_SECONDS", "5")),
            "flush_rows": int(get("FRAUDLOOP_SERVE_FLUSH_ROWS", "20000")),
            "shadow_queue": int(get("FRAUDLOOP_SERVE_SHADOW_QUEUE", "10000")),
            "log_predictions": get("FRAUDLOOP_SERVE_LOG_PREDICTIONS", "1") not in ("0", "false"),
            "admin_token": get("FRAUDLOOP_ADMIN_TOKEN"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        if config.poll_seconds <= 0 or config.flush_seconds <= 0:
            raise ValueError("FRAUDLOOP_SERVE_POLL_SECONDS and _FLUSH_SECONDS must be > 0")
        if config.max_body_bytes < 1024:
            raise ValueError("FRAUDLOOP_SERVE_MAX_BODY_BYTES must be at least 1024")
        return config
