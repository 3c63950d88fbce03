"""The real thing: the Dagster daemon evaluates new_data_sensor and launches ingestion runs.

Everything runs as separate processes, as in `make ui`: `dagster sensor start` flips the
sensor on in a temporary instance, `dagster-daemon run` ticks it and launches the runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraudloop.core import tables
from fraudloop.core.store import LocalObjectStore
from tests.factories import land_hour

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def daemon_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "infra" / "local" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FRAUDLOOP_HOME": str(tmp_path / "fraudloop"),
        "FRAUDLOOP_SENSOR_INTERVAL_SECONDS": "3",
    }
    return env


def _finished_runs(trigger: str) -> list:
    """Runs started by `trigger` that have finished (any outcome), read from the instance."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"fraudloop/trigger": trigger}))
    return [r for r in runs if r.is_finished]


@pytest.mark.slow
def test_daemon_sensors_ingest_new_and_late_files_then_features(daemon_env, monkeypatch):
    from dagster import DagsterRunStatus

    monkeypatch.setenv("DAGSTER_HOME", daemon_env["DAGSTER_HOME"])
    store = LocalObjectStore(daemon_env["FRAUDLOOP_HOME"])
    for i, key in enumerate(["2018-04-01-05:00", "2018-04-01-06:00"]):
        land_hour(store, key, seed=i)
    for sensor in ("new_data_sensor", "features_sensor"):
        subprocess.run(
            [BIN / "dagster", "sensor", "start", sensor, "-w", "workspace.yaml"],
            cwd=ROOT,
            env=daemon_env,
            check=True,
            capture_output=True,
        )
    daemon = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=daemon_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: len(_finished_runs("new_data_sensor")) == 1, 240, "the first run")
        land_hour(store, "2018-04-01-01:00", seed=5)  # a late file for an old hour
        _wait_for(lambda: len(_finished_runs("new_data_sensor")) == 2, 180, "the late file's run")

        def features_done():
            pointers = [
                tables.read_pointer(store, "transaction_features", key)
                for key in ("2018-04-01-01:00", "2018-04-01-05:00", "2018-04-01-06:00")
            ]
            return all(p and p["status"] == "valid" for p in pointers)

        _wait_for(features_done, 180, "features of every ingested hour")
        _wait_for(lambda: all(r.is_finished for r in _all_runs()), 120, "every run to finish")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()

    ingestion = _finished_runs("new_data_sensor")
    assert len(ingestion) == 2  # one range run for the two hours, one for the late file
    assert all(r.status == DagsterRunStatus.SUCCESS for r in _all_runs())
    assert {r.job_name for r in _finished_runs("features_sensor")} == {"features_job"}
    for key in ("2018-04-01-01:00", "2018-04-01-05:00", "2018-04-01-06:00"):
        assert tables.read_pointer(store, "transactions", key)["status"] == "valid"


def _all_runs() -> list:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return instance.get_runs()
