"""Settings: every knob of a deployment, read from the environment by one reader.

Each stage owns the settings it is configured by, as a frozen dataclass whose fields are declared
with :func:`setting`: the default is written once, with its variable name and one line of help
beside it. :func:`from_env` reads any such class, so the Dagster definitions, the CLI, the scoring
service and the tests parse the environment the same way, and the configuration table in
``docs/configuration.md`` is generated from the same declarations (a test keeps it current).

:class:`Settings` holds what the whole deployment shares: where the object store is, which
partitions exist, the label delay, where alerts go, how often automation looks and the price of
a CPU hour. Each stage's own settings live in its ``policy`` module (``fraudloop.data.policy``,
``fraudloop.model.policy``, ``fraudloop.delivery.policy``, ``fraudloop.monitoring.policy``) and
the scoring service's in ``fraudloop.serving.config``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from fraudloop.core.alerts import SEVERITIES
from fraudloop.core.errors import ConfigError
from fraudloop.core.store import LocalObjectStore, ObjectStore, S3ObjectStore

T = TypeVar("T")


def setting(env: str | tuple[str, ...], default: Any, help: str, *, secret: bool = False) -> Any:
    """A dataclass field read from the environment variable `env` (the first set one of a
    tuple). ``secret`` values are never shown (repr, UI, docs)."""
    names = (env,) if isinstance(env, str) else tuple(env)
    metadata = {"env": names, "help": help, "secret": secret}
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that are read from the environment, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


def _parse(text: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):  # X | None: an empty value means None
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _parse(text, inner[0], name)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if origin is tuple:
            item = typing.get_args(kind)[0]
            return tuple(
                _parse(part.strip(), item, name) for part in text.split(",") if part.strip()
            )
        if kind in (int, float, str):
            return kind(text)
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from None
    raise TypeError(f"{name}: no parser for {kind!r}")


def from_env(cls: type[T], env: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """An instance of the settings dataclass `cls` from `env` (default: the process environment).

    An unset or empty variable keeps the field's default; `overrides` win over both."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in declared(cls):
        for name in f.metadata["env"]:
            text = (env.get(name) or "").strip()
            if text:
                values[f.name] = _parse(text, hints[f.name], name)
                break
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as error:  # a stage's own consistency check (__post_init__)
        names = ", ".join(f.metadata["env"][0] for f in declared(cls))
        raise ConfigError(f"{cls.__name__} ({names}): {error}") from None


def settings_table(classes: list[type]) -> str:
    """The Markdown table of every setting of `classes` (docs/configuration.md)."""
    rows = ["| variable | default | meaning | declared in |", "| --- | --- | --- | --- |"]
    for cls in classes:
        for f in declared(cls):
            default = f.default
            if f.metadata["secret"] or default in (None, ""):
                shown = "unset"
            elif isinstance(default, tuple):
                shown = "`" + ",".join(f"{v:g}" for v in default) + "`"
            else:
                shown = f"`{default}`"
            names = " or ".join(f"`{n}`" for n in f.metadata["env"])
            where = cls.__module__.replace(".", "/") + ".py"
            rows.append(f"| {names} | {shown} | {f.metadata['help']} | `{where}` |")
    return "\n".join(rows)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the whole deployment shares (stage settings live with their stage)."""

    store_backend: str = setting("FRAUDLOOP_STORE", "local", "`local` or `s3`")
    home: str = setting(
        "FRAUDLOOP_HOME", ".fraudloop", "root of the local object store (made absolute)"
    )
    store_temp_max_age_seconds: float = setting(
        "FRAUDLOOP_STORE_TEMP_MAX_AGE_SECONDS",
        600.0,
        "local store: age after which an unlocked temp file of a killed writer is swept",
    )
    s3_bucket: str | None = setting("FRAUDLOOP_S3_BUCKET", None, "bucket of the S3 object store")
    s3_prefix: str = setting("FRAUDLOOP_S3_PREFIX", "", "key prefix inside the bucket")
    s3_endpoint_url: str | None = setting(
        "FRAUDLOOP_S3_ENDPOINT_URL", None, "S3-compatible endpoint (MinIO, moto); unset = AWS"
    )
    s3_timeout_seconds: float = setting(
        "FRAUDLOOP_S3_TIMEOUT_SECONDS",
        10.0,
        "S3 connect and read timeout of one attempt: a stalled endpoint fails the attempt and "
        "is retried instead of holding a run for boto's 60 s",
    )
    s3_max_attempts: int = setting(
        "FRAUDLOOP_S3_MAX_ATTEMPTS", 5, "attempts per S3 call (boto's standard retry mode)"
    )
    aws_region: str | None = setting(
        ("AWS_REGION", "AWS_DEFAULT_REGION"), None, "region of the bucket"
    )
    partition_start: str = setting(
        "FRAUDLOOP_PARTITION_START", "2018-04-01-00:00", "first hourly partition (labels: its day)"
    )
    partition_end: str | None = setting(
        "FRAUDLOOP_PARTITION_END", None, "exclusive end of the partitions; unset = open-ended"
    )
    label_delay_days: int = setting(
        "FRAUDLOOP_LABEL_DELAY_DAYS", 7, "days until a label is known (terminal windows, accuracy)"
    )
    state_sweep_grace_hours: float = setting(
        "FRAUDLOOP_STATE_SWEEP_GRACE_HOURS",
        24.0,
        "feature-state pieces no manifest names are deleted at a day's checkpoint once this old",
    )
    alert_webhook_url: str | None = setting(
        "FRAUDLOOP_ALERT_WEBHOOK_URL", None, "every alert event is POSTed here as JSON", secret=True
    )
    alert_slack_webhook_url: str | None = setting(
        "FRAUDLOOP_ALERT_SLACK_WEBHOOK_URL", None, "Slack incoming webhook", secret=True
    )
    alert_slack_min_severity: str = setting(
        "FRAUDLOOP_ALERT_SLACK_MIN_SEVERITY", "warning", "least severity posted to Slack"
    )
    alert_pagerduty_routing_key: str | None = setting(
        "FRAUDLOOP_ALERT_PAGERDUTY_ROUTING_KEY",
        None,
        "PagerDuty Events API v2 integration (routing) key",
        secret=True,
    )
    alert_pagerduty_url: str = setting(
        "FRAUDLOOP_ALERT_PAGERDUTY_URL",
        "https://events.pagerduty.com",
        "PagerDuty Events API base URL",
    )
    alert_ca_bundle: str | None = setting(
        "FRAUDLOOP_ALERT_CA_BUNDLE", None, "CA file the alert channels trust; unset = the system's"
    )
    alert_pagerduty_min_severity: str = setting(
        "FRAUDLOOP_ALERT_PAGERDUTY_MIN_SEVERITY", "critical", "least severity that pages"
    )
    reports_url: str | None = setting(
        "FRAUDLOOP_REPORTS_URL",
        None,
        "where reports are served over HTTP (`make ui`: its report server); unset on S3 = "
        "presigned links",
    )
    sensor_interval_seconds: int = setting(
        "FRAUDLOOP_SENSOR_INTERVAL_SECONDS", 30, "tick of the data and monitoring sensors"
    )
    rollout_interval_seconds: int = setting(
        "FRAUDLOOP_ROLLOUT_INTERVAL_SECONDS", 15, "tick of the rollout controller"
    )
    cpu_hour_price: float = setting(
        "FRAUDLOOP_CPU_HOUR_PRICE", 0.05, "price of a CPU hour (training and inference cost)"
    )
    model_name: str = setting("FRAUDLOOP_MODEL_NAME", "fraud", "the registry's model name")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        settings = from_env(cls, env, **overrides)
        home = str(Path(settings.home).resolve())
        return dataclasses.replace(settings, home=home).validate()

    def validate(self) -> Settings:
        """Fail at start-up, with the variable to fix, rather than mid-run."""
        if self.store_backend not in ("local", "s3"):
            raise ConfigError(
                f"FRAUDLOOP_STORE must be 'local' or 's3', not {self.store_backend!r}"
            )
        if self.store_backend == "s3" and not self.s3_bucket:
            raise ConfigError("FRAUDLOOP_STORE=s3 needs FRAUDLOOP_S3_BUCKET")
        for name in ("alert_slack_min_severity", "alert_pagerduty_min_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise ConfigError(
                    f"FRAUDLOOP_{name.upper()} must be one of {SEVERITIES}, "
                    f"not {getattr(self, name)!r}"
                )
        if self.store_temp_max_age_seconds <= 0:
            raise ConfigError("FRAUDLOOP_STORE_TEMP_MAX_AGE_SECONDS must be positive")
        if self.state_sweep_grace_hours < 1:
            raise ConfigError("FRAUDLOOP_STATE_SWEEP_GRACE_HOURS must be >= 1 (longer than a run)")
        if self.label_delay_days < 0:
            raise ConfigError("FRAUDLOOP_LABEL_DELAY_DAYS must not be negative")
        return self

    @property
    def history_start(self) -> str:
        """The first day of the history (a daily partition key)."""
        return self.partition_start[:10]

    def open_store(self) -> ObjectStore:
        """The object store these settings name: the one place local and S3 are told apart."""
        if self.store_backend == "s3":
            return S3ObjectStore(
                self.s3_bucket,
                prefix=self.s3_prefix,
                endpoint_url=self.s3_endpoint_url,
                region_name=self.aws_region,
                timeout_seconds=self.s3_timeout_seconds,
                max_attempts=self.s3_max_attempts,
            )
        return LocalObjectStore(self.home, temp_max_age_seconds=self.store_temp_max_age_seconds)


def store_env(store: ObjectStore) -> dict[str, str]:
    """The environment that makes another process (the scoring service under a staging test)
    open the same store as `store`. Credentials are not copied: they stay in the environment."""
    location = store.location()
    env = {"FRAUDLOOP_STORE": location["backend"]}
    names = {
        "root": "FRAUDLOOP_HOME",
        "bucket": "FRAUDLOOP_S3_BUCKET",
        "prefix": "FRAUDLOOP_S3_PREFIX",
        "endpoint_url": "FRAUDLOOP_S3_ENDPOINT_URL",
        "region_name": "AWS_REGION",
        "timeout_seconds": "FRAUDLOOP_S3_TIMEOUT_SECONDS",
        "max_attempts": "FRAUDLOOP_S3_MAX_ATTEMPTS",
    }
    env.update({names[k]: str(v) for k, v in location.items() if k in names and v})
    return env
