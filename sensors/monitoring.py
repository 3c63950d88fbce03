"""The monitoring loop's sensors.

- `monitoring_sensor`: new predictions, features or labels -> the monitoring runs that are due
  (`fraudloop.monitoring.due`), minus what runs in flight already cover; health waits (bounded)
  while transactions are being ingested, so a delivery's hours get one health run, not one per
  slice of the ingestion run's materializations;
- `drift_sensor` and `accuracy_sensor`: a failed drift / accuracy check -> `training_job`, with a
  shared cooldown in data time, a run key per signal, and at most one retraining in flight
  (`fraudloop.monitoring.retraining`). The candidate then goes through the same gate, package,
  staging test and canary as any other: nothing in the loop needs a human;
- `run_failure_alert_sensor`: any failed run -> an alert (transient IO faults are retried by the
  assets' RetryPolicy first, so what reaches this is worth a human look).
"""

import hashlib
import json

import dagster as dg
import pandas as pd

from assets import keys
from assets.monitoring import judged_days_config
from fraudloop.delivery import rollout
from fraudloop.monitoring import retraining
from fraudloop.monitoring.accuracy import accuracy_problems
from fraudloop.monitoring.drift import drift_problems
from fraudloop.monitoring.due import Due, due
from pipelines.jobs import daily_monitoring_job, health_job, hourly_ingestion_job, training_job
from resources.alerts import AlertsResource
from resources.monitoring import MonitoringResource
from resources.settings import SettingsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource, TrainingResource
from sensors.common import (
    WILL_RETRY_TAG,
    Hold,
    hold,
    in_flight_runs,
    range_tags,
    run_range,
)

HEALTH_HELD = "health_held"
#: the key under which cursors before `Hold` kept when the hold began
OLD_HEALTH_HELD = "health_held_since"


def _range_request(job, partitions: list[str], marker: str, run_config=None) -> dg.RunRequest:
    first, last = min(partitions), max(partitions)
    digest = hashlib.sha256(f"{first}|{last}|{marker}".encode()).hexdigest()[:16]
    return dg.RunRequest(
        job_name=job.name,
        run_key=f"{job.name}:{first}..{last}:{digest}",
        tags=range_tags(first, last, "monitoring_sensor"),
        run_config=run_config or {},
    )


def _in_flight(context, s, model_name: str) -> str | None:
    """Why a retraining must wait, if it must: a training run or a canary rollout in flight."""
    runs = in_flight_runs(context, training_job.name, limit=1)
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


def _retrain_sensor(view: str, problems_of, interval_seconds: int, description: str):
    @dg.sensor(
        name=f"{view}_sensor",
        job=training_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=description,
    )
    def retrain_sensor(
        context: dg.SensorEvaluationContext,
        store: ObjectStoreResource,
        registry: ModelRegistryResource,
        monitoring: MonitoringResource,
        settings: SettingsResource,
        training: TrainingResource,
    ):
        s, policy, models = store.open(), monitoring.policy(), registry.open()
        production = models.aliases().get("production")
        signals, cursor = retraining.failing_signals(
            s, view, context.cursor or None, lambda record: problems_of(record, policy), production
        )
        data = None
        if signals:
            holdout_days = training.policy().holdout_days
            data = retraining.training_data(
                s, models, production, settings.label_delay_days, holdout_days
            )
        decision = retraining.decide(
            signals,
            last_trigger_at=_last_trigger(context),
            cooldown_hours=policy.retrain_cooldown_hours,
            in_flight=_in_flight(context, s, registry.model_name) if signals else None,
            data=data,
        )
        if decision.waiting:  # keep the cursor: the same signals are looked at again
            return dg.SensorResult(skip_reason=decision.reason, cursor=context.cursor)
        if not decision.fire:
            return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
        runs = context.instance.get_runs_count(dg.RunsFilter(job_name=training_job.name))
        taken = retraining.claim(s, data, decision, f"v{production}-after-{runs}-runs")
        if taken is not None:
            return dg.SensorResult(
                skip_reason=f"{decision.reason}: already asked for by {taken} "
                "(no training run has started since)",
                cursor=cursor,
            )
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

    return retrain_sensor


def _hold_health(context, todo: Due, held: Hold | None) -> tuple[Due, Hold | None]:
    """Health waits (`sensors.common.Hold`) for the ingestion runs in flight when its hours
    showed up: the hours of a range run are recorded one by one, and asking now would split them
    over two health runs. Returns what is due now and the hold (None: not held)."""
    if not todo.health:
        return todo, None
    held = hold(context, [hourly_ingestion_job.name], held)[0]
    if held is None:
        return todo, None
    return todo.without("health", [(todo.health[0], todo.health[-1])]), held


def _root_cause(error):
    """Dagster wraps a step's exception ("Error occurred while executing op"); the innermost
    cause is the one that names what broke."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def build(interval_seconds: int) -> list:
    @dg.sensor(
        name="monitoring_sensor",
        jobs=[health_job, daily_monitoring_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Starts the monitoring runs that are due: hourly health for every ingested hour "
            "from the first served one (an hour with transactions but no predictions means the "
            "service was down), daily drift once the day's features are in, daily accuracy once "
            "its labels matured."
        ),
    )
    def monitoring_sensor(
        context: dg.SensorEvaluationContext,
        store: ObjectStoreResource,
        monitoring: MonitoringResource,
        settings: SettingsResource,
    ):
        instance = context.instance
        todo = due(
            store.open(),
            ingested_hours=instance.get_materialized_partitions(keys.RAW_TRANSACTIONS),
            featured_hours=instance.get_materialized_partitions(keys.TRANSACTION_FEATURES),
            label_days=instance.get_materialized_partitions(keys.RAW_LABELS),
            label_delay_days=settings.label_delay_days,
            min_completeness=monitoring.min_label_completeness,
        )
        for job, kind in ((health_job, "health"), (daily_monitoring_job, "daily")):
            ranges = [r for r in map(run_range, in_flight_runs(context, job.name)) if r]
            todo = todo.without(kind, ranges)
        state = json.loads(context.cursor or "{}")
        held = Hold.from_json(state.get(HEALTH_HELD, state.get(OLD_HEALTH_HELD)))
        todo, holding = _hold_health(context, todo, held)
        cursor = json.dumps({HEALTH_HELD: holding.to_json()} if holding is not None else {})
        marker = json.dumps({"health": todo.health, "daily": [todo.drift, todo.accuracy]})
        requests = []
        if todo.health:
            requests.append(_range_request(health_job, todo.health, marker))
        if todo.daily:
            # the range spans the days due for either asset; each judges only its own
            only = judged_days_config(todo.drift, todo.accuracy)
            requests.append(_range_request(daily_monitoring_job, todo.daily, marker, only))
        if not requests and holding is None and held is None:
            return dg.SkipReason("no monitoring due")
        if not requests:
            why = "health waits for ingestion" if holding is not None else "no monitoring due"
            return dg.SensorResult(skip_reason=why, cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "A failed run (something broke: a quarantined file or a held candidate is a "
            "successful run) -> one incident per job, with the failed step and the error; "
            "a run Dagster will retry does not page, its last retry does."
        ),
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertsResource):
        run = context.dagster_run
        if run.tags.get(WILL_RETRY_TAG) == "true":
            context.log.info(f"run {run.run_id} failed and will be retried: no alert yet")
            return
        step_failures = context.get_step_failure_events()
        failed_steps = [e.step_key for e in step_failures]
        errors = [  # the step's own error says what broke; the run's message only that it did
            f"{e.step_key}: {_root_cause(e.event_specific_data.error).message.strip()}"
            for e in step_failures
            if getattr(e.event_specific_data, "error", None) is not None
        ]
        run_error = context.failure_event.message if context.failure_event else "unknown"
        alerts.send(
            title=f"runs of {run.job_name} are failing",
            summary="; ".join(errors or [run_error])[:500],
            dedup_key=f"run/{run.job_name}",
            severity="critical",
            run_id=run.run_id,
            job=run.job_name,
            steps=failed_steps,
            tags={k: v for k, v in run.tags.items() if k.startswith("fraudloop/")},
        )

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="run_success_resolve_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="A successful run of a job whose runs were failing resolves that incident.",
    )
    def run_success_resolve_sensor(context: dg.RunStatusSensorContext, alerts: AlertsResource):
        run = context.dagster_run
        alerts.resolve(
            f"run/{run.job_name}",
            f"run {run.run_id} of {run.job_name} succeeded",
            run_id=run.run_id,
        )

    drift_sensor = _retrain_sensor(
        "drift",
        drift_problems,
        interval_seconds,
        "A day whose Evidently drift check failed -> retraining (cooldown in data time, one run "
        "key per signal, at most one retraining or rollout in flight).",
    )
    accuracy_sensor = _retrain_sensor(
        "accuracy",
        accuracy_problems,
        interval_seconds,
        "A day whose accuracy on matured labels fell under the floor -> retraining (shared "
        "cooldown with drift_sensor, at most one in flight).",
    )
    return [
        monitoring_sensor,
        drift_sensor,
        accuracy_sensor,
        run_failure_alert_sensor,
        run_success_resolve_sensor,
    ]
