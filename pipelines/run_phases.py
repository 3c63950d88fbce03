"""Where a Dagster run's wall time goes, read back from its event log.

The loop's runs are short, so what surrounds their steps matters as much as the steps: writing
the run and its planned events (`create`), waiting in the queue (`queued`), the run worker's
process start, imports and instance (`launch`), loading the code location and planning
(`boot`), and resource set-up and event writes around the steps (`other`). `make demo` prints
the split for the runs of its delivery window and bench/orchestration.py for runs it launches
itself, both from this one reading, so their figures compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

#: the engine event the run worker writes once its process is up and its instance open
PROCESS_STARTED = "Started process for run"
#: start-up phases, in the order a run passes them; `steps` is the rest of `total`
STARTUP = ("create", "queued", "launch", "boot", "other")


@dataclass(frozen=True)
class RunPhases:
    run_id: str
    job_name: str
    created: float  # epoch seconds the run record was written
    create: float
    queued: float
    launch: float
    boot: float
    steps: float
    other: float
    events: int

    @property
    def total(self) -> float:
        return self.startup + self.steps

    @property
    def startup(self) -> float:
        return sum(getattr(self, name) for name in STARTUP)


def run_phases(instance, record) -> RunPhases | None:
    """The phases of one finished run (None while it has not finished). A phase whose marker
    event is missing (a run that failed before its process started) counts as zero and its time
    goes to the next one."""
    from dagster import DagsterEventType as Kind

    events = instance.all_logs(record.dagster_run.run_id)
    marks: dict[str, float] = {}
    step_starts: dict[str, float] = {}
    steps = 0.0
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == Kind.RUN_ENQUEUED:
            marks.setdefault("enqueued", entry.timestamp)
        elif kind == Kind.RUN_STARTING:
            marks.setdefault("starting", entry.timestamp)
        elif kind == Kind.ENGINE_EVENT and (event.message or "").startswith(PROCESS_STARTED):
            marks.setdefault("process", entry.timestamp)
        elif kind == Kind.RUN_START:
            marks.setdefault("start", entry.timestamp)
        elif kind == Kind.STEP_START:
            step_starts[event.step_key] = entry.timestamp
        elif kind in (Kind.STEP_SUCCESS, Kind.STEP_FAILURE):
            steps += entry.timestamp - step_starts.pop(event.step_key, entry.timestamp)
        elif kind in (Kind.RUN_SUCCESS, Kind.RUN_FAILURE, Kind.RUN_CANCELED):
            marks["end"] = entry.timestamp
    if "end" not in marks:
        return None
    created = record.create_timestamp.timestamp()
    # each mark falls back to the previous one, so the phases always add up to the run's span
    order = [("enqueued", "create"), ("starting", "queued"), ("process", "launch")]
    order += [("start", "boot")]
    spans, last = {}, created
    for mark, phase in order:
        at = max(marks.get(mark, last), last)
        spans[phase] = at - last
        last = at
    after_start = max(marks["end"] - last, 0.0)
    return RunPhases(
        run_id=record.dagster_run.run_id,
        job_name=record.dagster_run.job_name,
        created=created,
        steps=min(steps, after_start),
        other=max(after_start - steps, 0.0),
        events=len(events),
        **spans,
    )


def phases_between(instance, since: float | None = None, until: float | None = None):
    """Phases of the finished runs created in [since, until] (epoch seconds), oldest first."""
    from datetime import UTC, datetime

    from dagster import RunsFilter

    window = RunsFilter(
        created_after=datetime.fromtimestamp(since, UTC) if since else None,
        created_before=datetime.fromtimestamp(until, UTC) if until else None,
    )
    found = (run_phases(instance, r) for r in instance.get_run_records(window, limit=1000))
    return sorted((p for p in found if p is not None), key=lambda p: p.created)


def totals(phases: Iterable[RunPhases]) -> dict[str, float]:
    """Seconds per phase summed over runs (they overlap in wall time), with `startup`, `total`
    and `startup_share` (start-up over the runs' whole time)."""
    names = [f.name for f in fields(RunPhases) if f.name in (*STARTUP, "steps")]
    out = {name: 0.0 for name in names}
    count = 0
    for p in phases:
        count += 1
        for name in names:
            out[name] += getattr(p, name)
    out["startup"] = sum(out[name] for name in STARTUP)
    out["total"] = out["startup"] + out["steps"]
    out["startup_share"] = out["startup"] / out["total"] if out["total"] else 0.0
    out["runs"] = count
    return out


def describe(phases: Sequence[RunPhases]) -> str:
    """One line: where the runs' time went, start-up phase by phase."""
    t = totals(phases)
    if not t["runs"]:
        return "no finished runs"
    parts = ", ".join(f"{name} {t[name]:.0f} s" for name in STARTUP)
    return (
        f"{t['runs']} runs: {t['startup']:.0f} s start-up ({parts}) vs {t['steps']:.0f} s in "
        f"steps: {t['startup_share']:.0%} start-up"
    )
