"""The monitoring loop's sensors.

- `monitoring_sensor`: new predictions, features or labels -> the monitoring runs that are due
  (hourly health from the first served hour on, daily drift once a day's features are all in,
  daily accuracy once its labels matured, re-judged while they are still arriving);
- `drift_sensor` and `accuracy_sensor`: a failed drift / accuracy check -> `training_job`, with a
  shared cooldown in data time, a run key per signal, and at most one retraining in flight
  (`fraudloop.monitoring.retraining.decide`). The candidate then goes through the same gate,
  package, staging test and canary as any other: nothing in the loop needs a human;
- `run_failure_alert_sensor`: any failed run -> an alert (transient IO faults are retried by the
  assets' RetryPolicy first, so what reaches this is worth a human look).
"""

import hashlib
import json

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.features import transaction_features
from assets.ingestion import raw_labels, raw_transactions
from fraudloop.core.hours import day_start, hours_of_day
from fraudloop.delivery import rollout
from fraudloop.monitoring import health as monitoring
from fraudloop.monitoring import retraining
from pipelines.jobs import daily_monitoring_job, health_job, training_job
from pipelines.partitions import SETTINGS
from resources.alerts import AlertsResource
from resources.monitoring import MonitoringResource
from resources.object_store import ObjectStoreResource
from resources.registry import ModelRegistryResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _latest_modified(infos, base: str) -> dict[str, float]:
    """partition -> newest write time of the objects under `base`/<partition>/..."""
    out: dict[str, float] = {}
    for info in infos:
        part = info.key[len(base) :].split("/", 1)[0]
        out[part] = max(out.get(part, 0.0), info.modified)
    return out


def _records(s, view: str) -> dict[str, float]:
    base = f"{monitoring.PREFIX}/{view}/"
    return {
        info.key[len(base) : -len(".json")]: info.modified
        for info in s.list(base)
        if info.key.endswith(".json") and "/" not in info.key[len(base) :]
    }


def _range_request(job, keys: list[str], marker: str) -> dg.RunRequest:
    first, last = min(keys), max(keys)
    digest = hashlib.sha256(f"{first}|{last}|{marker}".encode()).hexdigest()[:16]
    return dg.RunRequest(
        job_name=job.name,
        run_key=f"{job.name}:{first}..{last}:{digest}",
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
            "fraudloop/trigger": "monitoring_sensor",
        },
    )


def _in_flight_ranges(context, job) -> list[tuple[str, str]]:
    runs = context.instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=IN_FLIGHT))
    return [
        (r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
        for r in runs
        if ASSET_PARTITION_RANGE_START_TAG in r.tags
    ]


def due_monitoring(context, s, label_delay_days: int, min_completeness: float) -> dict:
    """What is due: {"health": [hours], "daily": [days]}."""
    predictions = _latest_modified(s.list("predictions/"), "predictions/")
    if not predictions:
        return {"health": [], "daily": []}
    first_served = min(predictions)
    health = _records(s, "health")
    ingested = {
        k
        for k in context.instance.get_materialized_partitions(raw_transactions.key)
        if k >= first_served
    }
    # An hour is judged once its transactions are ingested: then it is complete, and an hour
    # with transactions but no predictions is a finding (the service was down), not a race.
    hours = sorted(h for h in ingested if h not in health or predictions.get(h, 0.0) > health[h])
    featured = set(context.instance.get_materialized_partitions(transaction_features.key))
    label_days = sorted(context.instance.get_materialized_partitions(raw_labels.key))
    newest_labels = label_days[-1] if label_days else None
    drift, accuracy = _records(s, "drift"), _records(s, "accuracy")
    days = set()
    for day in sorted({h[:10] for h in predictions}):
        day_hours = hours_of_day(day)
        served = max(predictions.get(h, 0.0) for h in day_hours)
        if all(h in featured for h in day_hours) and (day not in drift or served > drift[day]):
            days.add(day)
        matured = (day_start(day) + pd.Timedelta(days=label_delay_days)).strftime("%Y-%m-%d")
        if newest_labels is None or newest_labels < matured:
            continue
        if day not in accuracy:
            days.add(day)
            continue
        record = monitoring.read_record(s, "accuracy", day) or {}
        complete = (record.get("production") or {}).get("completeness", 0.0)
        labels_pointer = s.head(f"raw/labels/{newest_labels}/_current.json")
        newer = labels_pointer is not None and labels_pointer.modified > accuracy[day]
        if complete < min_completeness and newer:
            days.add(day)
    return {"health": hours, "daily": sorted(days)}


@dg.sensor(
    name="monitoring_sensor",
    jobs=[health_job, daily_monitoring_job],
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Starts the monitoring runs that are due: hourly health for every ingested hour from "
        "the first served one (an hour with transactions but no predictions means the service "
        "was down), daily drift once the day's features are in, daily accuracy once its labels "
        "matured."
    ),
)
def monitoring_sensor(
    context: dg.SensorEvaluationContext,
    store: ObjectStoreResource,
    monitoring_config: MonitoringResource,
):
    s = store.open()
    due = due_monitoring(
        context, s, monitoring_config.label_delay_days, monitoring_config.min_label_completeness
    )
    # What a queued or running monitoring run covers is not due again (its record is on its way)
    for job, kind in ((health_job, "health"), (daily_monitoring_job, "daily")):
        for start, end in _in_flight_ranges(context, job):
            due[kind] = [k for k in due[kind] if not start <= k <= end]
    requests = []
    marker = json.dumps(due)
    if due["health"]:
        requests.append(_range_request(health_job, due["health"], marker))
    if due["daily"]:
        requests.append(_range_request(daily_monitoring_job, due["daily"], marker))
    if not requests:
        return dg.SkipReason("no monitoring due")
    return dg.SensorResult(run_requests=requests)


def _judged_version(record: dict) -> int | None:
    """The production version a drift or accuracy record judged."""
    if "model_version" in record:
        return record["model_version"]
    return (record.get("production") or {}).get("model_version")


def _signals(
    s, view: str, since: str | None, problems_of, production: int | None
) -> tuple[list, str | None]:
    """Records of `view` written after the cursor (ISO time) whose check fails for the version
    that is production now, and the new cursor. A failure of a version already replaced (the
    days before the new one took over) asks for nothing."""
    signals, newest = [], since
    for partition in sorted(_records(s, view)):
        record = monitoring.read_record(s, view, partition)
        computed = record.get("computed_at", "")
        if since is not None and computed <= since:
            continue
        newest = max(newest or "", computed)
        if _judged_version(record) != production:
            continue
        problems = problems_of(record)
        if problems:
            end = day_start(partition) + pd.Timedelta(days=1)
            signals.append(retraining.Signal(view, partition, end, "; ".join(problems)))
    return signals, newest


def _in_flight(context, s, model_name: str) -> str | None:
    runs = context.instance.get_runs(
        dg.RunsFilter(job_name=training_job.name, statuses=IN_FLIGHT), limit=1
    )
    if runs:
        return f"training run {runs[0].run_id[:8]} is {runs[0].status.value.lower()}"
    doc = rollout.read_state(s, model_name)[0]
    if doc and doc.get("status") in rollout.ACTIVE:
        return f"canary rollout of v{doc['canary_version']} is {doc['status']}"
    return None


def _last_trigger(context) -> pd.Timestamp | None:
    """Data time of the newest retraining either sensor started (the shared cooldown)."""
    times = [
        pd.Timestamp(run.tags[retraining.DATA_TIME_TAG])
        for run in context.instance.get_runs(dg.RunsFilter(job_name=training_job.name), limit=200)
        if retraining.DATA_TIME_TAG in run.tags
    ]
    return max(times) if times else None


def _retrain_sensor(view: str, problems_of):
    def evaluate(context, store, registry, monitoring_config):
        s = store.open()
        signals, cursor = _signals(
            s,
            view,
            context.cursor or None,
            lambda r: problems_of(r, monitoring_config),
            registry.open().aliases().get("production"),
        )
        decision = retraining.decide(
            signals,
            last_trigger_at=_last_trigger(context),
            cooldown_hours=monitoring_config.retrain_cooldown_hours,
            in_flight=_in_flight(context, s, registry.model_name) if signals else None,
        )
        if not decision.fire:
            return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
        context.log.info("retraining: %s", decision.reason)
        request = dg.RunRequest(
            job_name=training_job.name,
            run_key=decision.run_key,
            tags={
                retraining.RETRAIN_TAG: view,
                retraining.DATA_TIME_TAG: decision.signal.at.isoformat(),
                "fraudloop/trigger": f"{view}_sensor",
                "fraudloop/reason": decision.reason[:200],
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return evaluate


_evaluate_drift = _retrain_sensor("drift", monitoring.drift_problems)
_evaluate_accuracy = _retrain_sensor("accuracy", monitoring.accuracy_problems)


@dg.sensor(
    name="drift_sensor",
    job=training_job,
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "A day whose Evidently drift check failed -> retraining (cooldown in data time, one run "
        "key per signal, at most one retraining or rollout in flight)."
    ),
)
def drift_sensor(
    context: dg.SensorEvaluationContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    monitoring_config: MonitoringResource,
):
    return _evaluate_drift(context, store, registry, monitoring_config)


@dg.sensor(
    name="accuracy_sensor",
    job=training_job,
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "A day whose accuracy on matured labels fell under the floor -> retraining (shared "
        "cooldown with drift_sensor, at most one in flight)."
    ),
)
def accuracy_sensor(
    context: dg.SensorEvaluationContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    monitoring_config: MonitoringResource,
):
    return _evaluate_accuracy(context, store, registry, monitoring_config)


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Every failed run -> an alert with the job, the step that failed and the error.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertsResource):
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else "unknown"
    failed_steps = [e.step_key for e in context.get_step_failure_events()]
    alerts.send(
        title=f"run of {run.job_name} failed",
        summary=error[:500],
        severity="critical",
        run_id=run.run_id,
        job=run.job_name,
        steps=failed_steps,
        tags={k: v for k, v in run.tags.items() if k.startswith("fraudloop/")},
    )
