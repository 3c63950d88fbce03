"""What the sensors share: runs that count as in flight, partition-range requests, and holding a
derived run back while the upstream runs that would ask for it again are still going."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

#: the tag Dagster sets on a failed run that its run-retry policy will start again
WILL_RETRY_TAG = "dagster/will_retry"
#: how long after its failure a run that will be retried still counts as in flight
RETRY_HORIZON = timedelta(minutes=10)
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
    """Runs of `job_name` queued or running, and failed ones the run-retry policy is about to
    start again (a killed run container, a lost worker): until the retry exists they are
    still in flight. Without the latter, labels of hours whose ingestion awaited its retry were
    released in that gap and rejected as referring to transactions never ingested (found by
    the Docker stack's system test)."""
    runs = context.instance.get_runs(
        dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=limit
    )
    failed = context.instance.get_runs(
        dg.RunsFilter(
            job_name=job_name,
            statuses=[dg.DagsterRunStatus.FAILURE],
            tags={WILL_RETRY_TAG: "true"},
            updated_after=datetime.now(UTC) - RETRY_HORIZON,
        ),
        limit=20,
    )
    retrying = []
    seen = {run.run_id for run in runs}
    for run in failed:
        child = context.instance.get_runs(
            dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}), limit=1
        )
        if not child:  # the retry is not created yet: the failed run stands for it
            retrying.append(run)
        elif child[0].status in IN_FLIGHT and child[0].run_id not in seen:
            # created after the in-flight query above: without it, neither would be counted
            retrying.append(child[0])
    return [*runs, *retrying]


def run_range(run) -> tuple[str, str] | None:
    """The partition range a run covers (a single partition is a range of one)."""
    if ASSET_PARTITION_RANGE_START_TAG in run.tags:
        return run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG]
    key = run.tags.get("dagster/partition")
    return (key, key) if key else None


#: How long a derived run (features, health) waits for upstream runs in flight. Waiting turns a
#: run per upstream run, or per slice of a range run whose materializations are still being
#: recorded, into one run over all of them (each run costs seconds of start-up and a run slot:
#: bench/orchestration.py); the bound keeps new hours flowing however busy ingestion is. Five
#: minutes: twice the longest upstream run of `make demo` on a loaded machine, a twelfth of the
#: hourly cadence.
MAX_HOLD_SECONDS = 300.0


def busy_upstream(context, job_names) -> str | None:
    """Why a derived run should wait, if it should: a run of one of `job_names` in flight."""
    for name in job_names:
        runs = in_flight_runs(context, name, limit=1)
        if runs:
            return f"{name} run {runs[0].run_id[:8]} is {runs[0].status.value.lower()}"
    return None


def hold(busy: str | None, since: float | None, now: float | None = None) -> float | None:
    """When the hold began if the derived run should still wait for `busy` (None: go now)."""
    now = time.time() if now is None else now
    if busy is None or (since is not None and now - since >= MAX_HOLD_SECONDS):
        return None
    return now if since is None else since
