"""What the sensors share: run states that count as in flight, and partition-range requests."""

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def range_tags(start: str, end: str, trigger: str) -> dict[str, str]:
    """Tags that make a run cover the partition range [start, end] (one run, BackfillPolicy)."""
    return {
        ASSET_PARTITION_RANGE_START_TAG: start,
        ASSET_PARTITION_RANGE_END_TAG: end,
        "fraudloop/trigger": trigger,
    }


def in_flight_runs(context, job_name: str, limit: int | None = None) -> list:
    return context.instance.get_runs(
        dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=limit
    )


def run_range(run) -> tuple[str, str] | None:
    """The partition range a run covers (a single partition is a range of one)."""
    if ASSET_PARTITION_RANGE_START_TAG in run.tags:
        return run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG]
    key = run.tags.get("dagster/partition")
    return (key, key) if key else None
