"""The daemon killed with SIGKILL in the middle of a sensor-launched run, files landing while it
is down, then restarted: run monitoring resolves the run that lost its worker, the sensor's
cursor picks up every file that landed meanwhile, and every hour ends ingested exactly once
(one raw version, no stale pointer) with no run left hanging."""

from __future__ import annotations

import signal

import pytest

from fraudloop.core import tables
from fraudloop.core.processes import stop_group
from fraudloop.core.store import LocalObjectStore
from tests.daemon import daemon_env, running_daemon, wait_for
from tests.factories import land_hour

pytestmark = pytest.mark.slow

BEFORE = [f"2018-04-01-{h:02d}:00" for h in range(0, 6)]
WHILE_DOWN = ["2018-04-01-07:00", "2018-04-01-06:00"]  # landed while the daemon is dead


def _runs():
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return instance.get_runs()


def _retries_armed() -> bool:
    """The daemon's run-retry consumer has kept its cursor. Until it has, a restarted daemon
    starts reading run failures from the newest event and never retries a run that failed
    before its first read: on a fresh instance whose first daemon is killed within its first
    seconds, the killed run, failed by the next daemon's run monitoring, was not retried (seen
    under load: the test timed out with 4 of its hours never ingested). A daemon that has run
    for a few seconds, as every deployed one has, has the cursor; this waits for it."""
    from dagster import DagsterEventType, DagsterInstance
    from dagster._daemon.auto_run_reexecution.event_log_consumer import _create_cursor_key

    with DagsterInstance.get() as instance:
        key = _create_cursor_key(DagsterEventType.RUN_FAILURE)  # what the consumer keeps
        return bool(instance.daemon_cursor_storage.get_cursor_values({key}))


def _print_engine_events() -> None:
    """What each run's record says happened to it (run monitoring, run retries)."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            print(f"run {run.run_id[:8]} {run.status.value} tags {dict(run.tags)}")
            for record in instance.all_logs(run.run_id):
                event = record.dagster_event
                if event and event.event_type in (
                    DagsterEventType.ENGINE_EVENT,
                    DagsterEventType.RUN_FAILURE,
                ):
                    error = getattr(event.event_specific_data, "error", None)
                    print(f"  {event.event_type.value}: {event.message} {error or ''}"[:2000])


def test_a_daemon_killed_mid_run_loses_no_file_and_leaves_no_run_hanging(tmp_path, monkeypatch):
    from dagster import DagsterRunStatus

    env = daemon_env(tmp_path, FRAUDLOOP_SENSOR_INTERVAL_SECONDS="3")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    store = LocalObjectStore(env["FRAUDLOOP_HOME"])
    for i, key in enumerate(BEFORE):
        land_hour(store, key, rows=400, seed=i)

    with running_daemon(env, ["new_data_sensor"]) as daemon:
        wait_for(_retries_armed, 120, "the daemon's run-retry consumer to keep a cursor", poll=0.2)
        wait_for(
            lambda: any(r.status == DagsterRunStatus.STARTED for r in _runs()),
            240,
            "a sensor-launched run to start",
            poll=0.2,
        )
        stop_group(daemon, sig=signal.SIGKILL)  # the daemon, its code server and the run worker
        killed = [r.run_id for r in _runs() if not r.is_finished]
        print(f"killed the daemon with {len(killed)} run(s) unfinished", flush=True)

    for i, key in enumerate(WHILE_DOWN):
        land_hour(store, key, rows=300, seed=100 + i)

    def settled() -> bool:
        pointers = [tables.read_pointer(store, "transactions", k) for k in BEFORE + WHILE_DOWN]
        valid = sum(bool(p and p["status"] == "valid") for p in pointers)
        runs = _runs()
        print(
            f"{valid} of {len(pointers)} hours valid; runs: "
            + ", ".join(f"{r.run_id[:6]} {r.status.value}" for r in runs),
            flush=True,
        )
        return valid == len(pointers) and all(r.is_finished for r in runs)

    with running_daemon(env, []):
        try:
            wait_for(settled, 480, "every landed file ingested and every run finished", poll=10)
        except AssertionError:
            _print_engine_events()
            raise

    runs = {r.run_id: r for r in _runs()}
    assert killed, "the kill landed between runs: it tests nothing"
    # run monitoring saw the dead worker: the killed run failed (it did not hang), and the
    # instance's run retry took it again
    assert all(runs[r].status == DagsterRunStatus.FAILURE for r in killed)
    retries = [r for r in runs.values() if r.tags.get("dagster/parent_run_id") in killed]
    assert retries and all(r.status == DagsterRunStatus.SUCCESS for r in retries)
    for key in BEFORE + WHILE_DOWN:
        pointer = tables.read_pointer(store, "transactions", key)
        # exactly once: one version, never replaced by a second ingestion of the same file
        rows = 400 if key in BEFORE else 300
        assert pointer["rows"] == rows and pointer["previous"] is None, key
