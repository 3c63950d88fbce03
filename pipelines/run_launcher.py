"""The local profile's run launcher: Dagster's default one, plus a worker health check.

Dagster's `DefaultRunLauncher` cannot tell whether a run's worker process is still alive, so
run monitoring never resolves a run whose worker was killed (the daemon and its code server
killed with SIGKILL, a laptop closed, the OOM killer): the run stays STARTED in the UI forever
and keeps its slot of `max_concurrent_runs`, so a couple of crashes jam the run queue. Locally
the worker is a process on this machine that announced its pid in the run's event log
("Started process for run (pid: N)"), so the check is cheap: that pid alive, and the same
process (started before it announced itself: a reused pid belongs to a younger process). A dead
worker makes run monitoring mark the run failed, and the instance's run retries take it again.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

from fraudloop.core.processes import stat_fields

CLOCK_SLACK_SECONDS = 2.0  # /proc start times are in clock ticks; event times in floats


def _process_start_epoch(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none."""
    fields = stat_fields(pid)
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    if fields is None or fields[0] == "Z":  # a zombie: it exited, its parent has not reaped it yet
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class LocalRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers run monitoring can check (see the module doc)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        announced = [
            (record, int(pid.value))
            for record in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if (pid := (record.dagster_event.event_specific_data.metadata or {}).get("pid"))
        ]
        if not announced:  # not started yet: the start timeout is run monitoring's own check
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker not announced yet")
        record, pid = announced[0]  # the run worker's own first event
        started = _process_start_epoch(pid)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone")
        if started > record.timestamp + CLOCK_SLACK_SECONDS:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker pid {pid} is gone (the pid was reused)"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
