"""The code location: every asset, check, job, schedule, sensor and resource of fraudloop."""

from __future__ import annotations

import dagster as dg

from assets import deployment, features, ingestion, monitoring, training
from pipelines.jobs import (
    daily_labels_job,
    daily_monitoring_job,
    features_job,
    fraud_labels_job,
    health_job,
    hourly_ingestion_job,
    training_job,
)
from pipelines.partitions import SETTINGS
from pipelines.resources import build_resources
from pipelines.schedules import hourly_refresh_schedule
from sensors.features import features_sensor
from sensors.monitoring import (
    accuracy_sensor,
    drift_sensor,
    monitoring_sensor,
    run_failure_alert_sensor,
)
from sensors.new_data import new_data_sensor
from sensors.rollout import rollout_sensor

defs = dg.Definitions(
    # model_rollout is an AssetSpec (materialized by rollout_sensor): module loading skips specs
    assets=[
        *dg.load_assets_from_modules([ingestion, features, training, deployment, monitoring]),
        deployment.model_rollout,
        monitoring.prediction_log,
    ],
    asset_checks=dg.load_asset_checks_from_modules(
        [ingestion, features, training, deployment, monitoring]
    ),
    jobs=[
        hourly_ingestion_job,
        daily_labels_job,
        fraud_labels_job,
        features_job,
        training_job,
        health_job,
        daily_monitoring_job,
    ],
    schedules=[hourly_refresh_schedule],
    sensors=[
        new_data_sensor,
        features_sensor,
        rollout_sensor,
        monitoring_sensor,
        drift_sensor,
        accuracy_sensor,
        run_failure_alert_sensor,
    ],
    resources=build_resources(SETTINGS),
    executor=dg.in_process_executor,
)
