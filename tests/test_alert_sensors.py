"""The run-failure and run-success sensors on a real instance: a failing job is one incident
(repeats counted, not re-sent), a run Dagster will retry does not alert, the next success
resolves it."""

from __future__ import annotations

import dagster as dg
import pytest

from fraudloop.core.alerts import Alerter, read_events
from fraudloop.core.store import LocalObjectStore
from resources.alerts import AlertsResource
from resources.store import ObjectStoreResource
from sensors.monitoring import build


@dg.op
def flaky(context) -> None:
    if context.run.tags.get("outcome") == "fail":
        raise RuntimeError("the feed's endpoint answered 500")


@dg.job
def ingest_like_job():
    flaky()


@pytest.fixture
def world(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    alerts = AlertsResource(store=ObjectStoreResource.of(store))
    sensors = {s.name: s for s in build(interval_seconds=30)}
    with dg.instance_for_test() as instance:
        yield store, alerts, sensors, instance


def _fire(sensor, alerts, instance, outcome: str, **tags) -> None:
    """Run the job to `outcome`, then evaluate `sensor` on that run as the daemon would."""
    result = ingest_like_job.execute_in_process(
        instance=instance, tags={"outcome": outcome, **tags}, raise_on_error=False
    )
    run = instance.get_run_by_id(result.run_id)
    kind = "PIPELINE_FAILURE" if outcome == "fail" else "PIPELINE_SUCCESS"
    event = next(e for e in result.all_events if e.event_type_value == kind)
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"alerts": alerts},
    ) as context:
        sensor(context.for_run_failure() if outcome == "fail" else context)


def test_failures_are_one_incident_until_a_success_resolves_it(world):
    store, alerts, sensors, instance = world
    failure = sensors["run_failure_alert_sensor"]
    success = sensors["run_success_resolve_sensor"]

    _fire(failure, alerts, instance, "fail")
    _fire(failure, alerts, instance, "fail")
    (event,) = read_events(store)
    assert event["dedup_key"] == "run/ingest_like_job" and event["severity"] == "critical"
    assert "endpoint answered 500" in event["summary"] and event["details"]["steps"] == ["flaky"]
    assert Alerter(store).incident("run/ingest_like_job")["count"] == 2

    _fire(success, alerts, instance, "succeed")
    assert [e["action"] for e in read_events(store)] == ["trigger", "resolve"]
    assert Alerter(store).open_incidents() == {}


def test_a_run_that_will_be_retried_does_not_alert(world):
    store, alerts, sensors, instance = world
    failure = sensors["run_failure_alert_sensor"]
    _fire(failure, alerts, instance, "fail", **{"dagster/will_retry": "true"})
    assert read_events(store) == []


def test_a_success_with_nothing_open_is_silent(world):
    store, alerts, sensors, instance = world
    _fire(sensors["run_success_resolve_sensor"], alerts, instance, "succeed")
    assert read_events(store) == []
