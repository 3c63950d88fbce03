"""Monitoring: what the scoring service did, how good it was, and whether the world moved.

Thin: `fraudloop.monitoring.health`, `.drift` (Evidently, against the reference registered with
the model) and `.accuracy` compute each partition's record; `fraudloop.monitoring.records`
publishes it under `monitoring/` (HTML reports beside them) for the checks, the sensors and the
demo's timeline. Per-partition numeric metadata (p99, cost, drifted share, per-feature drift
scores, AP) is what the UI plots as trends. A new finding sends one alert, and the check fails.
"""

import dagster as dg

from assets import keys
from assets.common import RETRY, run_partition_keys
from fraudloop.model.training import training_cost
from fraudloop.monitoring import records
from fraudloop.monitoring.accuracy import accuracy_problems, accuracy_severity, day_accuracy
from fraudloop.monitoring.drift import day_drift, drift_problems
from fraudloop.monitoring.health import health_problems, hour_health
from fraudloop.monitoring.records import production_row
from pipelines.partitions import Partitions
from resources.alerts import AlertsResource
from resources.ingestion import IngestionResource
from resources.monitoring import MonitoringResource
from resources.reports import ReportsResource
from resources.settings import SettingsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource

SINGLE_RUN = dg.BackfillPolicy.single_run()
ACCURACY_COLUMNS = [
    "model_version",
    "role",
    "predictions",
    "completeness",
    "frauds",
    "ap",
    "recall",
    "precision",
    "cp_at_100",
]


class JudgedDays(dg.Config):
    """Which days of the run's range this asset judges again (None: every day of the range).

    A daily run covers a contiguous range and both drift and accuracy. `monitoring_sensor`
    asks for the days that are due, and those of one asset are often not those of the other:
    accuracy is judged again as late labels land, drift once a day's features are in. Without
    this, a run for accuracy on 04-13 and drift on 04-16 re-ran Evidently on 04-13..16 (`make
    demo`: ~5 s a day, in the run slot the retraining's data waits for). A run launched from the
    UI or the CLI leaves it unset and judges every day it names."""

    days: list[str] | None = None

    def skips(self, day: str) -> bool:
        return self.days is not None and day not in self.days


#: the daily assets' checks, by asset (their ops take the same config as the asset)
DAILY_CHECKS = {
    keys.PREDICTION_DRIFT: "drift_within_threshold",
    keys.MODEL_ACCURACY: "accuracy_above_floor",
}


def judged_days_config(drift: list[str], accuracy: list[str]) -> dict:
    """The run config of a daily run that judges only these days of each asset (its check
    then counts a missing record only on those days)."""
    ops = {}
    for key, days in ((keys.PREDICTION_DRIFT, drift), (keys.MODEL_ACCURACY, accuracy)):
        op = key.to_python_identifier()
        for name in (op, f"{op}_{DAILY_CHECKS[key]}"):
            ops[name] = {"config": {"days": list(days)}}
    return {"ops": ops}


#: what a partition the run did not judge again says in the UI
KEPT = "kept: not due for this asset when the run was asked for (its record stands)"

HEALTH_COLUMNS = [
    "model_version",
    "role",
    "requests",
    "p50_ms",
    "p99_ms",
    "error_rate",
    "flagged_rate",
    "cost_per_1000",
]


def _table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = [
        "| "
        + " | ".join(
            f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns
        )
        + " |"
        for r in rows
    ]
    return dg.MetadataValue.md("\n".join([head, *body]))


def _publish(
    context, s, alerts, view, partition, record, meta, *, title, severity, healthy_needed, **details
):
    """Write a partition's record and metadata; open the view's incident on a *new* finding
    (a partition recomputed with the same problems -- a range run covering it again, more
    labels arriving -- must not page anyone twice) and resolve it once `healthy_needed`
    partitions newer than the last failing one are healthy. `severity` may be a function of the
    open incident (None if none). Returns 1 if the partition has problems, for the run's
    count."""
    problems = record["problems"]
    incident = f"monitoring/{view}"
    if callable(severity):  # decided on what the incident has seen so far
        severity = severity(alerts.incident(incident))
    if records.publish(s, view, partition, record):
        alerts.send(
            title=title,
            summary="; ".join(problems),
            dedup_key=incident,
            severity=severity,
            partition=partition,
            **details,
        )
    elif not problems:
        alerts.resolve(
            incident,
            f"{view} is healthy again in {partition}",
            after=partition,
            healthy_needed=healthy_needed,
        )
    if problems:
        meta["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))
    context.add_asset_metadata(meta, partition_key=partition)
    return int(bool(problems))


def _check_records(
    context, store, view: str, problems_of, judged: JudgedDays | None = None
) -> dg.AssetCheckResult:
    """A record kept from before (a day the run did not judge again) is checked as it stands;
    a missing one counts only on a day the run judged."""
    s = store.open()
    failures, missing = {}, []
    for key in run_partition_keys(context):
        record = records.read_record(s, view, key)
        if record is None:
            if judged is None or not judged.skips(key):
                missing.append(key)
            continue
        problems = problems_of(record)
        if problems:
            failures[key] = "; ".join(problems)
    metadata = {"partitions_checked": len(run_partition_keys(context)), "failed": len(failures)}
    if failures:
        metadata["failures"] = dg.MetadataValue.md(
            "\n".join(f"- `{k}`: {v}" for k, v in sorted(failures.items()))
        )
    return dg.AssetCheckResult(
        passed=not failures and not missing,
        severity=dg.AssetCheckSeverity.WARN if not missing else dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=(
            "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))[:500]
            or (f"no record for {', '.join(missing[:5])}" if missing else "within bounds")
        ),
    )


def _record_check(
    asset,
    name: str,
    view: str,
    partitions_def,
    problems_of,
    description: str,
    judged_days: bool = False,
):
    """The check of a monitoring asset: every partition of the run has a record, and the record
    has no problems under the policy in force (`problems_of(record, policy)`). With
    `judged_days`, it takes its asset's `JudgedDays` config (a daily asset's)."""
    spec = dict(asset=asset, name=name, partitions_def=partitions_def, description=description)

    def evaluate(context, store, monitoring, judged=None) -> dg.AssetCheckResult:
        policy = monitoring.policy()
        return _check_records(
            context, store, view, lambda record: problems_of(record, policy), judged
        )

    if not judged_days:

        @dg.asset_check(**spec)
        def check(
            context: dg.AssetCheckExecutionContext,
            store: ObjectStoreResource,
            monitoring: MonitoringResource,
        ) -> dg.AssetCheckResult:
            return evaluate(context, store, monitoring)

        return check

    @dg.asset_check(**spec)
    def daily_check(
        context: dg.AssetCheckExecutionContext,
        config: JudgedDays,
        store: ObjectStoreResource,
        monitoring: MonitoringResource,
    ) -> dg.AssetCheckResult:
        return evaluate(context, store, monitoring, config)

    return daily_check


def build(partitions: Partitions) -> list:
    """The monitoring stage's assets and checks for these partitions."""

    @dg.asset(
        key=keys.PREDICTION_HEALTH,
        group_name="monitoring",
        kinds={"pandas"},
        owners=["team:ml-platform"],
        deps=[keys.PREDICTION_LOG],
        partitions_def=partitions.hourly,
        backfill_policy=SINGLE_RUN,
        retry_policy=RETRY,
        description=(
            "Per hour and per model version x role: requests, latency p50/p95/p99, error "
            "(fallback) rate, flagged rate, CPU seconds and inference cost per 1,000 "
            "predictions; an hour with transactions but no production predictions means the "
            "service was down."
        ),
    )
    def prediction_health(
        context: dg.AssetExecutionContext,
        store: ObjectStoreResource,
        registry: ModelRegistryResource,
        monitoring: MonitoringResource,
        settings: SettingsResource,
        alerts: AlertsResource,
    ) -> dg.MaterializeResult:
        s, reg, policy = store.open(), registry.open(), monitoring.policy()
        bad = 0
        for hour in run_partition_keys(context):
            record = hour_health(s, hour, policy, settings.cpu_hour_price)
            meta = {"predictions": record["predictions"], "transactions": record["transactions"]}
            prod = production_row(record["groups"])
            if prod is not None:
                meta.update(
                    {
                        "production_version": prod["model_version"],
                        **{
                            k: prod[k]
                            for k in (
                                "requests",
                                "p50_ms",
                                "p99_ms",
                                "error_rate",
                                "flagged_rate",
                                "cost_per_1000",
                            )
                        },
                        "training_cost": training_cost(reg, prod["model_version"]) or 0.0,
                    }
                )
            if record["groups"]:
                meta["by_version_and_role"] = _table(record["groups"], HEALTH_COLUMNS)
            bad += _publish(
                context,
                s,
                alerts,
                "health",
                hour,
                record,
                meta,
                title=f"serving unhealthy in {hour}",
                severity="critical",
                healthy_needed=policy.resolve_after_healthy,
            )
        return dg.MaterializeResult(
            metadata={"hours": len(run_partition_keys(context)), "unhealthy": bad}
        )

    serving_within_slo = _record_check(
        prediction_health,
        "serving_within_slo",
        "health",
        partitions.hourly,
        health_problems,
        "p99 within the latency SLO, error rate within bound, predictions present.",
    )

    @dg.asset(
        key=keys.PREDICTION_DRIFT,
        group_name="monitoring",
        kinds={"evidently"},
        owners=["team:data-science"],
        deps=[keys.PREDICTION_LOG, keys.TRANSACTION_FEATURES],
        partitions_def=partitions.daily,
        backfill_policy=SINGLE_RUN,
        retry_policy=RETRY,
        description=(
            "Input and prediction drift per day with Evidently (`DataDriftPreset`): the features "
            "of the transactions production scored (from the offline feature store) and their "
            "scores, against the reference registered with that version at training time. HTML "
            "report in `monitoring/drift/`; per-feature drift scores and the drifted share as "
            "metadata (plotted in the UI)."
        ),
    )
    def prediction_drift(
        context: dg.AssetExecutionContext,
        config: JudgedDays,
        store: ObjectStoreResource,
        registry: ModelRegistryResource,
        monitoring: MonitoringResource,
        alerts: AlertsResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        s, reg, policy = store.open(), registry.open(), monitoring.policy()
        drifted_days = 0
        for day in run_partition_keys(context):
            if config.skips(day):
                context.add_asset_metadata({"status": KEPT}, partition_key=day)
                continue
            record, result = day_drift(s, reg, day, policy)
            if result is None:
                # a day judged before its features are in is not judged: no record, so it is
                # due again once they are (its accuracy can be due first, and runs with it)
                if record["status"] != "no features yet":
                    records.write_record(s, "drift", day, record)
                context.add_asset_metadata({"status": record["status"]}, partition_key=day)
                continue
            version = record["model_version"]
            link = reports.link(record["report"])  # opens in a browser, in every profile
            meta = {
                "status": "computed",
                "model_version": version,
                "rows": result.rows_current_total,
                "rows_compared": result.rows_current,
                "drifted_share": result.drifted_share,
                "dataset_drift": result.dataset_drift,
                "prediction_drift_score": result.prediction_drift_score or 0.0,
                "report": dg.MetadataValue.url(link),
                "seconds": round(result.seconds, 2),
                **{
                    f"drift_{name}": float("nan") if v is None else float(v)
                    for name, v in sorted(result.feature_scores.items())
                },
            }
            drifted_days += _publish(
                context,
                s,
                alerts,
                "drift",
                day,
                record,
                meta,
                title=f"drift in {day} (v{version})",
                severity="warning",
                healthy_needed=policy.resolve_after_healthy,
                report=link,
            )
        return dg.MaterializeResult(metadata={"days_drifted": drifted_days})

    drift_within_threshold = _record_check(
        prediction_drift,
        DAILY_CHECKS[keys.PREDICTION_DRIFT],
        "drift",
        partitions.daily,
        drift_problems,
        "Drifted share of features under FRAUDLOOP_DRIFT_SHARE; scores not drifted.",
        judged_days=True,
    )

    @dg.asset(
        key=keys.MODEL_ACCURACY,
        group_name="monitoring",
        kinds={"pandas"},
        owners=["team:data-science"],
        deps=[keys.PREDICTION_LOG, keys.RAW_LABELS],
        partitions_def=partitions.daily,
        backfill_policy=SINGLE_RUN,
        retry_policy=RETRY,
        description=(
            "Accuracy per day of predictions, per version x role, with only the labels known "
            "now: AP, precision and recall at the operating threshold, CP@100, and how complete "
            "the labels are (a day is judged once FRAUDLOOP_MIN_LABEL_COMPLETENESS of them "
            "arrived)."
        ),
    )
    def model_accuracy(
        context: dg.AssetExecutionContext,
        config: JudgedDays,
        store: ObjectStoreResource,
        registry: ModelRegistryResource,
        monitoring: MonitoringResource,
        ingestion: IngestionResource,
        alerts: AlertsResource,
    ) -> dg.MaterializeResult:
        s, reg, policy = store.open(), registry.open(), monitoring.policy()
        lookback = ingestion.policy().label_lookback_days
        failing = 0
        for day in run_partition_keys(context):
            if config.skips(day):
                context.add_asset_metadata({"status": KEPT}, partition_key=day)
                continue
            record = day_accuracy(s, reg, day, policy, lookback)
            prod = record["production"]
            meta = {"predictions": record["predictions"]}
            if prod is not None:
                meta.update(
                    {
                        "production_version": prod["model_version"],
                        "completeness": prod["completeness"],
                        "frauds": prod["frauds"],
                        **{
                            k: float(prod[k])
                            for k in ("ap", "precision", "recall", "cp_at_100", "reference_ap")
                            if prod.get(k) is not None
                        },
                    }
                )
            if record["groups"]:
                meta["by_version_and_role"] = _table(record["groups"], ACCURACY_COLUMNS)
            failing += _publish(
                context,
                s,
                alerts,
                "accuracy",
                day,
                record,
                meta,
                title=f"accuracy under floor on {day}",
                severity=lambda incident, day=day, prod=prod: accuracy_severity(
                    incident, day, (prod or {}).get("model_version"), policy
                ),
                healthy_needed=policy.resolve_after_healthy,
                model_version=(prod or {}).get("model_version"),
            )
        return dg.MaterializeResult(metadata={"days_under_floor": failing})

    accuracy_above_floor = _record_check(
        model_accuracy,
        DAILY_CHECKS[keys.MODEL_ACCURACY],
        "accuracy",
        partitions.daily,
        accuracy_problems,
        "Production's AP on matured labels is at least a set share of its holdout AP.",
        judged_days=True,
    )

    return [
        prediction_health,
        serving_within_slo,
        prediction_drift,
        drift_within_threshold,
        model_accuracy,
        accuracy_above_floor,
    ]
