"""The real thing: the Dagster daemon evaluates new_data_sensor and launches ingestion runs.

Everything runs as separate processes, as in `make ui`: `dagster sensor start` flips the
sensor on in a temporary instance, `dagster-daemon run` ticks it and launches the runs.
"""

from __future__ import annotations

import pytest

from fraudloop.core import tables
from fraudloop.core.store import LocalObjectStore
from tests.daemon import daemon_env, running_daemon, wait_for
from tests.factories import land_hour


def _finished_runs(trigger: str) -> list:
    """Runs started by `trigger` that have finished (any outcome), read from the instance."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"fraudloop/trigger": trigger}))
    return [r for r in runs if r.is_finished]


@pytest.mark.slow
def test_daemon_sensors_ingest_new_and_late_files_then_features(tmp_path, monkeypatch):
    from dagster import DagsterRunStatus

    env = daemon_env(tmp_path, FRAUDLOOP_SENSOR_INTERVAL_SECONDS="3")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    store = LocalObjectStore(env["FRAUDLOOP_HOME"])
    for i, key in enumerate(["2018-04-01-05:00", "2018-04-01-06:00"]):
        land_hour(store, key, seed=i)
    with running_daemon(env, ["new_data_sensor", "features_sensor"]):
        wait_for(lambda: len(_finished_runs("new_data_sensor")) == 1, 240, "the first run")
        land_hour(store, "2018-04-01-01:00", seed=5)  # a late file for an old hour
        wait_for(lambda: len(_finished_runs("new_data_sensor")) == 2, 180, "the late file's run")

        def features_done():
            pointers = [
                tables.read_pointer(store, "transaction_features", key)
                for key in ("2018-04-01-01:00", "2018-04-01-05:00", "2018-04-01-06:00")
            ]
            return all(p and p["status"] == "valid" for p in pointers)

        wait_for(features_done, 180, "features of every ingested hour")
        wait_for(lambda: all(r.is_finished for r in _all_runs()), 120, "every run to finish")

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
