"""Jobs, each with its executor chosen on purpose.

They run in process: the steps are short and share one Python process, where the multiprocess
executor would start a process per step and re-import the code location each time (DESIGN.md
measured ~20 s against ~8 s for a trivial two-asset run). Partitioned ranges run as one run
(every partitioned asset has `BackfillPolicy.single_run()`).

Every run carries its job's place in the run queue (`PRIORITY_TAG`): the daemon launches the
highest priority first, so a retraining, and the daily drift and accuracy that ask for it, take
the next free run slot instead of waiting behind a backlog of routine runs (in `make demo` a
retraining waited 150 s that way); health, a report nobody waits for, goes last.

Ingestion and derived stages are separate jobs on purpose. A blocking check can only stop the
downstream steps of a run as a whole, and a range run (a backfill, a landed history) would lose
every good hour to one quarantined hour. So ingestion runs alone, and `features_sensor` starts
the derived jobs, whose assets refuse bad partitions one by one (they are marked blocked).
"""

from __future__ import annotations

import dagster as dg

from assets import keys
from fraudloop.monitoring.retraining import RETRAIN_TAG

#: Dagster's run-queue priority (higher first; queued runs of equal priority go oldest first)
PRIORITY_TAG = "dagster/priority"


def _job(name: str, assets: list[dg.AssetKey], description: str, priority: int, tags=None):
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=dg.in_process_executor,
        description=description,
        tags={PRIORITY_TAG: str(priority), **(tags or {})},
    )


hourly_ingestion_job = _job(
    "hourly_ingestion_job",
    [keys.RAW_TRANSACTIONS],
    "Ingest and validate the hourly transaction partition(s) of the run.",
    priority=0,
)
daily_labels_job = _job(
    "daily_labels_job",
    [keys.RAW_LABELS],
    "Ingest and validate the daily label partition(s) of the run.",
    priority=0,
)
fraud_labels_job = _job(
    "fraud_labels_job",
    [keys.FRAUD_LABELS],
    "Join the label day(s) of the run with their transactions (bi-temporal labels).",
    priority=0,
)
features_job = _job(
    "features_job",
    [keys.TRANSACTION_FEATURES, keys.ONLINE_FEATURE_STORE],
    "Compute features for a range of hours (new data, late labels, a fixed feed) and "
    "republish the online feature state.",
    priority=0,
)
training_job = _job(
    "training_job",
    [
        keys.TRAINING_DATASET,
        keys.CANDIDATE_MODEL,
        keys.MODEL_EVALUATION,
        keys.MODEL_PACKAGE,
        keys.MODEL_RELEASE,
    ],
    "Build the dataset as of the cutoff, train a candidate, evaluate it against production on "
    "the same holdout; if the blocking gate checks pass, package it, staging-test the package in "
    "a real service process, and release it (first version: production; later ones: a canary "
    "rollout that rollout_sensor drives).",
    priority=10,  # the loop's answer to drift: ahead of everything queued
    # every run of the job carries the retrain tag, launched by a sensor (value drift/accuracy),
    # from the UI's Launch button or the CLI (value manual): the run queue's tag limit
    # (`fraudloop/retrain`: 1 in every profile's dagster.yaml) then allows one at a time
    tags={RETRAIN_TAG: "manual"},
)
health_job = _job(
    "health_job",
    [keys.PREDICTION_HEALTH],
    "Serving health (latency, errors, cost, missing predictions) for a range of hours.",
    priority=-5,  # nothing waits for it: an hour's health is a report, not a gate
)
daily_monitoring_job = _job(
    "daily_monitoring_job",
    [keys.PREDICTION_DRIFT, keys.MODEL_ACCURACY],
    "Evidently drift and accuracy on matured labels for a range of days.",
    priority=5,  # what asks for a retraining
)

ALL_JOBS = [
    hourly_ingestion_job,
    daily_labels_job,
    fraud_labels_job,
    features_job,
    training_job,
    health_job,
    daily_monitoring_job,
]
