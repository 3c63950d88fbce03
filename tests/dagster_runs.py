"""Running the project's assets and jobs against a test instance, the way the daemon would.

`DagsterEnv` holds definitions built by the composition root for a test's own settings, so a
test changes a setting by building definitions with it (no subprocess, nothing frozen at import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from pipelines.config import ProjectConfig
from pipelines.definitions import build_definitions, stage_definitions
from pipelines.partitions import Partitions
from pipelines.resources import build_resources


@dataclass
class DagsterEnv:
    instance: Any
    env: dict[str, str]
    config: ProjectConfig
    defs: dg.Definitions
    resources: dict
    stages: list  # the unbound assets and checks, to materialize with `resources`

    @classmethod
    def build(cls, instance, env: dict[str, str]) -> DagsterEnv:
        config = ProjectConfig.from_env(env)
        return cls(
            instance,
            env,
            config,
            build_definitions(config),
            build_resources(config),
            stage_definitions(config),
        )

    def configure(self, **variables: str) -> DagsterEnv:
        """The same instance and store with these environment variables added."""
        return DagsterEnv.build(self.instance, {**self.env, **variables})

    @property
    def settings(self):
        return self.config.settings

    @property
    def store(self):
        return self.settings.open_store()

    @property
    def partitions(self) -> Partitions:
        return Partitions.of(self.settings)

    def asset(self, name: str) -> dg.AssetsDefinition:
        for item in self.stages:
            if isinstance(item, dg.AssetsDefinition) and dg.AssetKey(name) in item.keys:
                return item
        raise KeyError(name)

    def check(self, name: str) -> dg.AssetChecksDefinition:
        for item in self.stages:
            if isinstance(item, dg.AssetChecksDefinition) and any(
                key.name == name for key in item.check_keys
            ):
                return item
        raise KeyError(name)

    def resolve(self, item):
        """An asset or a check definition from its name (definitions pass through)."""
        if not isinstance(item, str):
            return item
        try:
            return self.check(item)
        except KeyError:
            return self.asset(item)

    def sensor(self, name: str) -> dg.SensorDefinition:
        return self.defs.resolve_sensor_def(name)

    def job(self, name: str):
        return self.defs.resolve_job_def(name)


def run(env: DagsterEnv, assets, partition_key=None, start=None, end=None, resources=None):
    """Materialize `assets` (definitions or names) for one partition or the range [start, end]
    as one run."""
    tags = {}
    if start:
        tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
    resolved = [env.resolve(a) for a in assets]
    return dg.materialize(
        resolved,
        instance=env.instance,
        resources=resources or env.resources,
        partition_key=partition_key,
        tags=tags,
        raise_on_error=False,
    )


def execute(env: DagsterEnv, request: dg.RunRequest):
    """Run a sensor's request as the daemon would: its job from the code location."""
    return env.job(request.job_name).execute_in_process(
        instance=env.instance,
        tags=request.tags,
        run_config=request.run_config,
        resources=env.resources,
        raise_on_error=False,
        partition_key=request.partition_key,  # a single-partition request (ranges are tags)
    )
