"""The jobs (pipelines.jobs): one retraining at a time however a training run starts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._utils.tags import TagConcurrencyLimitsCounter

from pipelines.config import ProjectConfig
from pipelines.definitions import build_definitions

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions(ProjectConfig.from_env())


@pytest.mark.parametrize("profile", ["local", "production"])
def test_a_training_run_from_the_ui_waits_for_a_sensor_retraining_and_back(defs, profile):
    """The run queue's tag limit (`fraudloop/retrain`: 1) only holds runs that carry the tag.
    The sensors add it with the trigger as value; the job itself carries it too, so a run
    launched from the UI's Launch button or the CLI (job tags only) is held while a retraining
    runs, and holds one back while it runs itself. Checked with Dagster's own queue counter."""
    config = yaml.safe_load((ROOT / "infra" / profile / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    instance = dg.DagsterInstance.ephemeral()
    training_job = defs.resolve_job_def("training_job")
    health_job = defs.resolve_job_def("health_job")
    # a run carries its job's tags, merged under the tags of whoever launched it (the webserver
    # for the Launch button, the daemon for a sensor's RunRequest)
    from_ui = instance.create_run_for_job(training_job, tags=training_job.run_tags)
    sensor_tags = {"fraudloop/retrain": "drift", "fraudloop/trigger": "drift_sensor"}
    from_sensor = instance.create_run_for_job(
        training_job, tags={**training_job.run_tags, **sensor_tags}
    )
    other = instance.create_run_for_job(health_job, tags=health_job.run_tags)

    assert TagConcurrencyLimitsCounter(limits, [from_sensor]).is_blocked(from_ui)
    assert TagConcurrencyLimitsCounter(limits, [from_ui]).is_blocked(from_sensor)
    assert not TagConcurrencyLimitsCounter(limits, [from_ui]).is_blocked(other)
    assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(from_ui)


def test_monitoring_runs_never_hold_both_run_slots_of_the_local_profile(defs):
    """With two run slots, a health run and a drift run together would leave new data nothing
    to run in: the local profile lets one monitoring run go at a time (Dagster's own queue
    counter over the profile's limits)."""
    config = yaml.safe_load((ROOT / "infra" / "local" / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    instance = dg.DagsterInstance.ephemeral()

    def run(name: str):
        job = defs.resolve_job_def(name)
        return instance.create_run_for_job(job, tags=job.run_tags)

    health, monitoring = run("health_job"), run("daily_monitoring_job")
    assert TagConcurrencyLimitsCounter(limits, [health]).is_blocked(monitoring)
    assert TagConcurrencyLimitsCounter(limits, [monitoring]).is_blocked(run("health_job"))
    for name in ("hourly_ingestion_job", "daily_labels_job", "features_job", "training_job"):
        assert not TagConcurrencyLimitsCounter(limits, [health]).is_blocked(run(name))
    assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(monitoring)


def test_the_loop_s_runs_go_first(defs):
    """A retraining takes the next free run slot, whatever is queued; the data path (ingestion,
    labels, features) and the drift/accuracy runs go oldest first among themselves (a
    retraining needs both); health, a report, goes last."""
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    instance = dg.DagsterInstance.ephemeral()
    order = [
        "health_job",
        "features_job",
        "daily_monitoring_job",
        "hourly_ingestion_job",
        "daily_labels_job",
        "fraud_labels_job",
        "training_job",
    ]
    runs = []  # oldest first, as the queue reads them
    for name in order:
        job = defs.resolve_job_def(name)
        runs.append(instance.create_run_for_job(job, tags=job.run_tags))
    launched = QueuedRunCoordinatorDaemon(interval_seconds=1)._priority_sort(runs)
    assert [run.job_name for run in launched] == [
        "training_job",
        "features_job",
        "daily_monitoring_job",
        "hourly_ingestion_job",
        "daily_labels_job",
        "fraud_labels_job",
        "health_job",
    ]
