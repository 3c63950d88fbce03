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

from fraudloop import raw
from fraudloop.storage import LocalObjectStore
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


@pytest.mark.slow
def test_daemon_sensor_ingests_new_and_late_files(daemon_env, monkeypatch):
    store = LocalObjectStore(daemon_env["FRAUDLOOP_HOME"])
    for i, key in enumerate(["2018-04-01-05:00", "2018-04-01-06:00"]):
        land_hour(store, key, seed=i)
    subprocess.run(
        [BIN / "dagster", "sensor", "start", "new_data_sensor", "-w", "workspace.yaml"],
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

        def valid(key):
            pointer = raw.read_pointer(store, "transactions", key)
            return pointer is not None and pointer["status"] == "valid"

        _wait_for(lambda: valid("2018-04-01-05:00") and valid("2018-04-01-06:00"), 240, "first run")
        land_hour(store, "2018-04-01-01:00", seed=5)  # a late file for an old hour
        _wait_for(lambda: valid("2018-04-01-01:00"), 180, "the late file's run")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    monkeypatch.setenv("DAGSTER_HOME", daemon_env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"fraudloop/trigger": "new_data_sensor"}))
        assert len(runs) == 2
        assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
