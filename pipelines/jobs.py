"""Jobs, each with its executor chosen on purpose.

They run in process: the steps are short and share one Python process, where the multiprocess
executor would start a process per step and re-import the code location each time (DESIGN.md
measured ~20 s against ~8 s for a trivial two-asset run). Partitioned ranges run as one run
(every partitioned asset has `BackfillPolicy.single_run()`).

Every run carries its job's place in the run queue (`PRIORITY_TAG`): the daemon launches the
highest priority first, so a retraining takes the next free run slot instead of waiting behind
a backlog (in `make demo` a retraining waited 150 s that way); health, a report nobody waits
for, goes last. In between, the data path (ingestion, labels, features) and the daily drift and
accuracy share one priority and go oldest first: a retraining needs both, the new data and the
signal. (With the data path below the monitoring, a delivery's landed hours waited 84 s in the
queue behind drift runs and doomed early retrainings in `make demo`.)

Transactions ingestion and the features are separate jobs on purpose. A blocking check can only
stop the downstream steps of a run as a whole, and a range run (a backfill, a landed history)
would lose every good hour to one quarantined hour. So ingestion runs alone, and
`features_sensor` starts the features, whose assets refuse bad partitions one by one (they are
marked blocked). The features also wait for the label days that land with the hours (the terminal
risk of an hour reads the labels known by then), so they could not share the ingestion's run.

A label day's ingestion and its fraud labels do share a run (`daily_labels_job`): both are daily,
`fraud_labels` refuses a bad day itself, and the label check blocks only when nothing was
written (a quarantined day is a WARN, handled). One run fewer on the chain every delivery walks
(land -> transactions -> labels -> features) saved its start-up and queue wait (`make demo`,
README). `fraud_labels_job` stays for raw labels materialized alone (a UI re-execution, a
backfill of `raw_labels`): `features_sensor` starts it for those.
"""

from __future__ import annotations

import dagster as dg

from assets import keys
from fraudloop.monitoring.retraining import RETRAIN_TAG

#: Dagster's run-queue priority (higher first; queued runs of equal priority go oldest first)
PRIORITY_TAG = "dagster/priority"
#: the monitoring runs (health, drift and accuracy) carry this tag: the run queues of the local
#: and production profiles (infra/*/dagster.yaml) take one of them at a time, so they never hold
#: every slot while new data waits to be ingested and featurized (in `make demo`, a health and a
#: drift run together held a labels run back 7 s, and a features run ~10 s)
LANE_TAG = "fraudloop/lane"
MONITORING_LANE = "monitoring"


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
    priority=5,
)
daily_labels_job = _job(
    "daily_labels_job",
    [keys.RAW_LABELS, keys.FRAUD_LABELS],
    "Ingest and validate the daily label partition(s) of the run, and join them with their "
    "transactions (bi-temporal fraud labels).",
    priority=5,
)
fraud_labels_job = _job(
    "fraud_labels_job",
    [keys.FRAUD_LABELS],
    "Join the label day(s) of the run with their transactions (bi-temporal labels): for raw "
    "labels materialized outside daily_labels_job.",
    priority=5,
)
features_job = _job(
    "features_job",
    [keys.TRANSACTION_FEATURES, keys.ONLINE_FEATURE_STORE],
    "Compute features for a range of hours (new data, late labels, a fixed feed) and "
    "republish the online feature state.",
    priority=5,
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
    tags={LANE_TAG: MONITORING_LANE},
)
daily_monitoring_job = _job(
    "daily_monitoring_job",
    [keys.PREDICTION_DRIFT, keys.MODEL_ACCURACY],
    "Evidently drift and accuracy on matured labels for a range of days.",
    priority=5,  # what asks for a retraining, beside the data it needs
    tags={LANE_TAG: MONITORING_LANE},
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
