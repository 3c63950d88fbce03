"""Monitoring: what the scoring service did, how good it was, and whether the world moved.

Thin: `fraudloop.monitoring` computes health and accuracy from the prediction log,
`fraudloop.monitoring.drift` runs Evidently, and each partition's record is written under
`monitoring/` (HTML reports beside them) for the checks, the sensors and the demo's timeline.
Per-partition numeric metadata (p99, cost, drifted share, per-feature drift scores, AP) is what
the UI plots as trends. A bad hour or day sends an alert from the asset, and its check fails.
"""

import json
from datetime import timedelta

import dagster as dg
import pandas as pd

from assets.common import RETRY, run_partition_keys
from assets.features import transaction_features
from assets.ingestion import raw_labels
from fraudloop.core import tables
from fraudloop.core.hours import day_start, hours_of_day
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.monitoring import health as monitoring
from pipelines.partitions import DAILY, HOURLY
from resources.alerts import AlertsResource
from resources.monitoring import MonitoringResource
from resources.object_store import ObjectStoreResource
from resources.registry import ModelRegistryResource

prediction_log = dg.AssetSpec(
    "prediction_log",
    group_name="deployment",
    kinds={"parquet"},
    owners=["team:ml-platform"],
    description=(
        "Every decision of the scoring services (request, transaction, version, role, score, "
        "decision, latency, CPU, feature hash, status): `predictions/<hour>/<instance>-<seq>."
        "parquet`, hour of the transaction. Written by `fraudloop serve`, not by Dagster."
    ),
)

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


def _version_metric(registry, version: int, key: str) -> float | None:
    try:
        value = registry.show(version).metadata.get("metrics", {}).get(key)
    except Exception:
        return None
    return None if value is None else float(value)


def _training_cost(registry, version: int) -> float | None:
    try:
        lineage = json.loads(registry.get_file(version, "lineage.json"))
    except Exception:
        return None
    return lineage.get("cost", {}).get("training_cost")


def _table(records: list[dict], columns: list[str]) -> dg.MetadataValue:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    rows = [
        "| "
        + " | ".join(
            f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns
        )
        + " |"
        for r in records
    ]
    return dg.MetadataValue.md("\n".join([head, *rows]))


# ------------------------------------------------------------------------------------ health


@dg.asset(
    group_name="monitoring",
    kinds={"pandas"},
    owners=["team:ml-platform"],
    deps=[prediction_log],
    partitions_def=HOURLY,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    description=(
        "Per hour and per model version x role: requests, latency p50/p95/p99, error (fallback) "
        "rate, flagged rate, CPU seconds and inference cost per 1,000 predictions; an hour with "
        "transactions but no production predictions means the service was down."
    ),
)
def prediction_health(
    context: dg.AssetExecutionContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    monitoring_config: MonitoringResource,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    s, reg = store.open(), registry.open()
    bad = 0
    for hour in run_partition_keys(context):
        log = read_predictions(s, [hour])
        pointer = tables.read_pointer(s, "transactions", hour)
        groups = monitoring.health(log, monitoring_config.cpu_hour_price)
        record = {
            "groups": groups,
            "transactions": int(pointer.get("rows", 0)) if pointer else 0,
        }
        prod = monitoring.production_row(groups)
        record["problems"] = monitoring.health_problems(record, monitoring_config)
        meta = {"predictions": len(log), "transactions": record["transactions"]}
        if prod is not None:
            meta.update(
                {
                    "production_version": prod["model_version"],
                    "requests": prod["requests"],
                    "p50_ms": prod["p50_ms"],
                    "p99_ms": prod["p99_ms"],
                    "error_rate": prod["error_rate"],
                    "flagged_rate": prod["flagged_rate"],
                    "cost_per_1000": prod["cost_per_1000"],
                    "training_cost": _training_cost(reg, prod["model_version"]) or 0.0,
                }
            )
        if groups:
            meta["by_version_and_role"] = _table(groups, HEALTH_COLUMNS)
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
        )
    return dg.MaterializeResult(
        metadata={"hours": len(run_partition_keys(context)), "unhealthy": bad}
    )


def _publish(context, s, alerts, view, partition, record, meta, *, title, severity, **details):
    """Write a partition's record and metadata; alert on a *new* finding only (a partition
    recomputed with the same problems -- a range run covering it again, more labels arriving --
    must not page anyone twice). Returns 1 if the partition has problems, for the run's count."""
    previous = monitoring.read_record(s, view, partition) or {}
    monitoring.write_record(s, view, partition, record)
    problems = record["problems"]
    if problems:
        meta["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))
        if problems != previous.get("problems"):
            alerts.send(
                title=title,
                summary="; ".join(problems),
                severity=severity,
                partition=partition,
                **details,
            )
    context.add_asset_metadata(meta, partition_key=partition)
    return int(bool(problems))


def _check_records(context, store, view: str, problems_of) -> dg.AssetCheckResult:
    s = store.open()
    failures, missing = {}, []
    for key in run_partition_keys(context):
        record = monitoring.read_record(s, view, key)
        if record is None:
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


@dg.asset_check(
    asset=prediction_health,
    partitions_def=HOURLY,
    description="p99 within the latency SLO, error rate within bound, predictions present.",
)
def serving_within_slo(
    context: dg.AssetCheckExecutionContext,
    store: ObjectStoreResource,
    monitoring_config: MonitoringResource,
) -> dg.AssetCheckResult:
    return _check_records(context, store, "health", lambda r: r.get("problems", []))


# ------------------------------------------------------------------------------------ drift


def _reference(s, reg, version: int) -> pd.DataFrame:
    """The version's training rows (a sample) with its own scores: what "no drift" looks like.
    Built once per version from its lineage (content-addressed data) and cached."""
    import io

    from fraudloop.model import datasets
    from fraudloop.model.booster import load_model

    key = f"{monitoring.PREFIX}/reference/v{version}.parquet"
    if s.exists(key):
        return pd.read_parquet(io.BytesIO(s.get_bytes(key)))
    lineage = json.loads(reg.get_file(version, "lineage.json"))
    dataset = datasets.load_dataset(s, lineage["dataset"])
    train = dataset.train
    if len(train) > 50_000:
        train = train.sample(50_000, random_state=0)
    model = load_model(reg.get_file(version, "model.txt").decode())
    frame = train[list(FEATURE_NAMES)].assign(score=model.predict(train)).reset_index(drop=True)
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    s.put_bytes(key, sink.getvalue())
    return frame


@dg.asset(
    group_name="monitoring",
    kinds={"evidently"},
    owners=["team:data-science"],
    deps=[prediction_log, transaction_features],
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    description=(
        "Input and prediction drift per day with Evidently (`DataDriftPreset`): the features of "
        "the transactions production scored (from the offline feature store) and their scores, "
        "against the training data of that version. HTML report in `monitoring/drift/`; "
        "per-feature drift scores and the drifted share as metadata (plotted in the UI)."
    ),
)
def prediction_drift(
    context: dg.AssetExecutionContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    monitoring_config: MonitoringResource,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    from fraudloop.features.feature_store import read_offline
    from fraudloop.monitoring.drift import drift_report

    s, reg = store.open(), registry.open()
    drifted_days = 0
    for day in run_partition_keys(context):
        hours = hours_of_day(day)
        log = read_predictions(s, hours)
        served = log[log["role"] == "production"] if len(log) else log
        if served.empty:
            monitoring.write_record(s, "drift", day, {"status": "no predictions"})
            context.add_asset_metadata({"status": "no predictions"}, partition_key=day)
            continue
        version = int(served["model_version"].value_counts().idxmax())
        served = served[served["model_version"] == version].drop_duplicates("transaction_id")
        features = read_offline(s, hours)
        current = features.merge(
            served[["transaction_id", "score"]].astype({"transaction_id": "string"}),
            on="transaction_id",
        )
        if current.empty:
            monitoring.write_record(s, "drift", day, {"status": "no features yet"})
            context.add_asset_metadata({"status": "no features yet"}, partition_key=day)
            continue
        result, html = drift_report(_reference(s, reg, version), current, FEATURE_NAMES, "score")
        html_key = monitoring.record_key("drift", f"{day}-v{version}", "html")
        s.put_bytes(html_key, html.encode())
        record = {"status": "computed", "model_version": version, "report": html_key}
        record.update(result.to_dict())
        record["problems"] = monitoring.drift_problems(record, monitoring_config)
        meta = {
            "status": "computed",
            "model_version": version,
            "rows": result.rows_current,
            "drifted_share": result.drifted_share,
            "dataset_drift": result.dataset_drift,
            "prediction_drift_score": result.prediction_drift_score or 0.0,
            "report": dg.MetadataValue.url(s.uri(html_key)),
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
            report=s.uri(html_key),
        )
    return dg.MaterializeResult(metadata={"days_drifted": drifted_days})


@dg.asset_check(
    asset=prediction_drift,
    partitions_def=DAILY,
    description="Drifted share of features under FRAUDLOOP_DRIFT_SHARE; scores not drifted.",
)
def drift_within_threshold(
    context: dg.AssetCheckExecutionContext,
    store: ObjectStoreResource,
    monitoring_config: MonitoringResource,
) -> dg.AssetCheckResult:
    return _check_records(
        context, store, "drift", lambda r: monitoring.drift_problems(r, monitoring_config)
    )


# ------------------------------------------------------------------------------------ accuracy


@dg.asset(
    group_name="monitoring",
    kinds={"pandas"},
    owners=["team:data-science"],
    deps=[prediction_log, raw_labels],
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    description=(
        "Accuracy per day of predictions, per version x role, with only the labels known now: "
        "AP, precision and recall at the operating threshold, CP@100, and how complete the "
        "labels are (a day is judged once FRAUDLOOP_MIN_LABEL_COMPLETENESS of them arrived)."
    ),
)
def model_accuracy(
    context: dg.AssetExecutionContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    monitoring_config: MonitoringResource,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    s, reg = store.open(), registry.open()
    failing = 0
    for day in run_partition_keys(context):
        log = read_predictions(s, hours_of_day(day))
        label_days = [
            (day_start(day) + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(0, 46)
        ]
        label_days = [d for d in label_days if tables.read_pointer(s, "labels", d)]
        groups = monitoring.accuracy(log, monitoring.labels_known(s, label_days))
        prod = monitoring.production_row(groups)
        if prod is not None:
            prod = {**prod, "reference_ap": _version_metric(reg, prod["model_version"], "ap")}
        record = {"groups": groups, "production": prod}
        record["problems"] = monitoring.accuracy_problems(record, monitoring_config)
        meta = {"predictions": len(log)}
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
        if groups:
            meta["by_version_and_role"] = _table(groups, ACCURACY_COLUMNS)
        failing += _publish(
            context,
            s,
            alerts,
            "accuracy",
            day,
            record,
            meta,
            title=f"accuracy under floor on {day}",
            severity="critical",
        )
    return dg.MaterializeResult(metadata={"days_under_floor": failing})


@dg.asset_check(
    asset=model_accuracy,
    partitions_def=DAILY,
    description="Production's AP on matured labels is at least a set share of its holdout AP.",
)
def accuracy_above_floor(
    context: dg.AssetCheckExecutionContext,
    store: ObjectStoreResource,
    monitoring_config: MonitoringResource,
) -> dg.AssetCheckResult:
    return _check_records(
        context, store, "accuracy", lambda r: monitoring.accuracy_problems(r, monitoring_config)
    )
