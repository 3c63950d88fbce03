"""The composition root: settings, partitions, resources and every asset, check, job, schedule
and sensor of fraudloop, built when the code location loads (not when a module is imported), so
a process's settings are read once, in one place, and tests can build definitions for any
settings without a subprocess."""

from __future__ import annotations

import warnings

import dagster as dg

from assets import deployment, features, freshness, ingestion, monitoring, training
from pipelines.config import ProjectConfig
from pipelines.jobs import ALL_JOBS
from pipelines.partitions import Partitions
from pipelines.resources import build_resources
from pipelines.schedules import hourly_refresh_schedule
from sensors import features as features_sensors
from sensors import freshness as freshness_sensors
from sensors import monitoring as monitoring_sensors
from sensors import new_data, rollout


def stage_definitions(config: ProjectConfig) -> list:
    """Every asset, external asset and check of the stages, for these settings (unbound)."""
    partitions = Partitions.of(config.settings)
    lookback = config.ingest.label_lookback_days
    stages = [
        *freshness.build(),
        *ingestion.build(partitions, lookback),
        *features.build(partitions, lookback),
        *training.build(),
        *deployment.build(),
        *monitoring.build(partitions),
    ]
    return freshness.with_freshness(stages, config.monitoring)


def build_definitions(config: ProjectConfig) -> dg.Definitions:
    with warnings.catch_warnings():
        # Dagster marks single-run backfill policies (beta) and partitioned checks (preview):
        # used on purpose, said once here instead of on every definition load
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _definitions(config)


def _definitions(config: ProjectConfig) -> dg.Definitions:
    settings = config.settings
    partitions = Partitions.of(settings)
    interval = settings.sensor_interval_seconds
    defs = stage_definitions(config)
    return dg.Definitions(
        assets=[d for d in defs if not isinstance(d, dg.AssetChecksDefinition)],
        asset_checks=[d for d in defs if isinstance(d, dg.AssetChecksDefinition)],
        jobs=ALL_JOBS,
        schedules=[hourly_refresh_schedule],
        sensors=[
            new_data.build(partitions, interval),
            features_sensors.build(partitions, interval),
            rollout.build(settings.rollout_interval_seconds),
            *monitoring_sensors.build(interval),
            *freshness_sensors.build(config.monitoring, interval),
        ],
        resources=build_resources(config),
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev`, the daemon and the code server load: the environment's settings."""
    return build_definitions(ProjectConfig.from_env())
