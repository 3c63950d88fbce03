"""Running the project's assets and jobs against a test instance, the way the daemon would."""

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from pipelines.definitions import defs


def run(env, assets, partition_key=None, start=None, end=None, resources=None):
    """Materialize `assets` for one partition or the range [start, end] as one run."""
    tags = {}
    if start:
        tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
    return dg.materialize(
        assets,
        instance=env.instance,
        resources=resources or env.resources,
        partition_key=partition_key,
        tags=tags,
        raise_on_error=False,
    )


def execute(env, request: dg.RunRequest):
    """Run a sensor's request as the daemon would: its job from the code location."""
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=env.instance, tags=request.tags, resources=env.resources, raise_on_error=False
    )
