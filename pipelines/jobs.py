"""Jobs, each with its executor chosen on purpose.

They run in process: the steps are short and share one Python process, where the multiprocess
executor would start a process per step and re-import the code location each time (DESIGN.md
measured ~20 s against ~8 s for a trivial two-asset run). Partitioned ranges run as one run
(every partitioned asset has `BackfillPolicy.single_run()`).

Ingestion and derived stages are separate jobs on purpose. A blocking check can only stop the
downstream steps of a run as a whole, and a range run (a backfill, a landed history) would lose
every good hour to one quarantined hour. So ingestion runs alone, and `features_sensor` starts
the derived jobs, whose assets refuse bad partitions one by one (they are marked blocked).
"""

from __future__ import annotations

import dagster as dg

from assets.deployment import model_package, model_release
from assets.features import fraud_labels, online_feature_store, transaction_features
from assets.ingestion import raw_labels, raw_transactions
from assets.monitoring import model_accuracy, prediction_drift, prediction_health
from assets.training import candidate_model, model_evaluation, training_dataset

hourly_ingestion_job = dg.define_asset_job(
    name="hourly_ingestion_job",
    selection=dg.AssetSelection.assets(raw_transactions),
    executor_def=dg.in_process_executor,
    description="Ingest and validate the hourly transaction partition(s) of the run.",
)

daily_labels_job = dg.define_asset_job(
    name="daily_labels_job",
    selection=dg.AssetSelection.assets(raw_labels),
    executor_def=dg.in_process_executor,
    description="Ingest and validate the daily label partition(s) of the run.",
)

fraud_labels_job = dg.define_asset_job(
    name="fraud_labels_job",
    selection=dg.AssetSelection.assets(fraud_labels),
    executor_def=dg.in_process_executor,
    description="Join the label day(s) of the run with their transactions (bi-temporal labels).",
)

features_job = dg.define_asset_job(
    name="features_job",
    selection=dg.AssetSelection.assets(transaction_features, online_feature_store),
    executor_def=dg.in_process_executor,
    description=(
        "Compute features for a range of hours (new data, late labels, a fixed feed) and "
        "republish the online feature state."
    ),
)

training_job = dg.define_asset_job(
    name="training_job",
    selection=dg.AssetSelection.assets(
        training_dataset, candidate_model, model_evaluation, model_package, model_release
    ),
    executor_def=dg.in_process_executor,
    description=(
        "Build the dataset as of the cutoff, train a candidate, evaluate it against production "
        "on the same holdout; if the blocking gate checks pass, package it, staging-test the "
        "package in a real service process, and release it (first version: production; later "
        "ones: a canary rollout that rollout_sensor drives)."
    ),
)

health_job = dg.define_asset_job(
    name="health_job",
    selection=dg.AssetSelection.assets(prediction_health),
    executor_def=dg.in_process_executor,
    description="Serving health (latency, errors, cost, missing predictions) for a range of hours.",
)

daily_monitoring_job = dg.define_asset_job(
    name="daily_monitoring_job",
    selection=dg.AssetSelection.assets(prediction_drift, model_accuracy),
    executor_def=dg.in_process_executor,
    description="Evidently drift and accuracy on matured labels for a range of days.",
)
