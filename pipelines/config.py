"""Every setting of the project, read from the environment once, when definitions load.

The shared deployment settings and each stage's policy are core dataclasses whose defaults are
written in one place (`fraudloop.core.settings.setting`); this bundles them for the composition
root (`pipelines.definitions`) and the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from fraudloop.core.settings import Settings, from_env, settings_table
from fraudloop.data.policy import IngestPolicy
from fraudloop.delivery.policy import RolloutPolicy, StagingConfig
from fraudloop.model.policy import ModelPolicy
from fraudloop.monitoring.policy import MonitoringPolicy
from fraudloop.serving.config import ServeConfig

#: every class whose settings come from the environment (docs/configuration.md lists them)
SETTINGS_CLASSES = (
    Settings,
    IngestPolicy,
    ModelPolicy,
    StagingConfig,
    RolloutPolicy,
    MonitoringPolicy,
    ServeConfig,
)


@dataclass(frozen=True)
class ProjectConfig:
    settings: Settings
    ingest: IngestPolicy
    model: ModelPolicy
    staging: StagingConfig
    rollout: RolloutPolicy
    monitoring: MonitoringPolicy

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProjectConfig:
        settings = Settings.from_env(env)
        staging = from_env(StagingConfig, env)
        return cls(
            settings=settings,
            ingest=from_env(IngestPolicy, env),
            model=from_env(ModelPolicy, env),
            # the staging test rebuilds online state with the deployment's windows and history
            staging=dataclasses.replace(
                staging,
                label_delay_days=settings.label_delay_days,
                history_start=settings.history_start,
            ),
            rollout=from_env(RolloutPolicy, env),
            monitoring=from_env(MonitoringPolicy, env),
        )


def configuration_markdown() -> str:
    """The table of every setting, as docs/configuration.md shows it (a test keeps it current)."""
    return settings_table(list(SETTINGS_CLASSES))
