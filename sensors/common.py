"""What the sensors share: runs that count as in flight, partition-range requests, and holding a
derived run back while the upstream runs that would ask for it again are still going."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARENT_RUN_ID_TAG,
    ROOT_RUN_ID_TAG,
    RUN_KEY_TAG,
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


#: How long a derived run (features, health) waits at most. Waiting turns a run per upstream
#: run, or per slice of a range run whose materializations are still being recorded, into one run
#: over all of them (each run costs seconds of start-up and a run slot: bench/orchestration.py).
#: A hold waits only for what was under way when it began (see `Hold`), so this is a backstop
#: for a stuck upstream run: twice the longest upstream run of `make demo` on a loaded machine,
#: a twelfth of the hourly cadence.
MAX_HOLD_SECONDS = 300.0
#: tags by which a run is known to a hold besides its id: the sensor request it came from, and
#: the run a retry of it re-executes
_RUN_NAME_TAGS = (RUN_KEY_TAG, PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG)


@dataclass(frozen=True)
class Hold:
    """A derived run held back, and what it waits for: the upstream runs in flight when the
    hold began (by run id, by the run key of a request made with it, and their retries) and the
    label days then landed but not ingested (until ingested, and while a run of those days is
    in flight). Runs that started later do not extend it: under a steady stream of deliveries (a
    catch-up after an outage, a replay, 100x) something upstream is always in flight, and a hold
    that waited for all of it ran into MAX_HOLD_SECONDS every time (the Docker stack's system
    test: features of the drifted days started 150 s after their hours were ingested, on the
    loop's critical path). The next run picks up what those later runs write."""

    since: float
    runs: frozenset[str] = frozenset()
    days: frozenset[str] = frozenset()

    def to_json(self) -> dict:
        return {"since": self.since, "runs": sorted(self.runs), "days": sorted(self.days)}

    @classmethod
    def from_json(cls, value) -> Hold | None:
        if value is None:
            return None
        if isinstance(value, int | float):  # a cursor from before holds named what they wait for
            return cls(float(value))
        return cls(float(value["since"]), frozenset(value["runs"]), frozenset(value["days"]))

    def waits_for(self, run) -> bool:
        names = {run.run_id, *(run.tags.get(tag) for tag in _RUN_NAME_TAGS)}
        if names & self.runs:
            return True
        covered = run_range(run)
        return covered is not None and any(
            len(covered[0]) == len(day) and covered[0] <= day <= covered[1] for day in self.days
        )


def hold(
    context,
    job_names,
    held: Hold | None,
    *,
    requested: dict[str, list[str]] | None = None,
    pending_days: Callable[[], Iterable[str]] = tuple,
    now: float | None = None,
) -> tuple[Hold | None, str | None]:
    """Should a derived run still wait, and why. `held` is the hold so far (None: not held);
    `requested` maps the run keys of upstream runs this tick requests to the days they cover
    (they join a new hold, or an old one waiting for those days); `pending_days` lists the label
    days landed and not ingested now (a store listing: called only when a hold begins or waits
    for days). Returns the hold (None: go now) and its reason."""
    now = time.time() if now is None else now
    requested = requested or {}
    runs = [run for name in job_names for run in in_flight_runs(context, name)]
    pending: frozenset[str] | None = None
    if held is None:
        ids = frozenset(run.run_id for run in runs) | set(requested)
        pending = frozenset(pending_days())
        held = Hold(now, ids, pending)
    elif now - held.since >= MAX_HOLD_SECONDS:
        return None, None
    joining = [key for key, days in requested.items() if key in held.runs or held.days & set(days)]
    if joining:
        return Hold(held.since, held.runs | set(joining), held.days), f"{joining[0]} requested"
    for run in runs:
        if held.waits_for(run):
            return held, f"{run.job_name} run {run.run_id[:8]} is {run.status.value.lower()}"
    if held.days:
        pending = frozenset(pending_days()) if pending is None else pending
        if waiting := sorted(held.days & pending):
            return held, f"labels of {waiting[0]} landed, not ingested yet"
    return None, None
