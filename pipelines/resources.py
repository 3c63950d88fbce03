"""The resources of a deployment, built from its settings (local directory or S3, file or
webhook alerts). Secrets reach resources as `dg.EnvVar`, so the UI never shows their values."""

from __future__ import annotations

import os

import dagster as dg

from pipelines.config import ProjectConfig
from resources.alerts import AlertsResource
from resources.asset_values import AssetValueIOManager
from resources.deployment import RolloutResource, StagingResource
from resources.features import FeatureStoreResource
from resources.ingestion import IngestionResource
from resources.monitoring import MonitoringResource
from resources.settings import SettingsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource, TrainingResource

WEBHOOK_ENV = "FRAUDLOOP_ALERT_WEBHOOK_URL"


def build_resources(config: ProjectConfig) -> dict:
    settings = config.settings
    store = ObjectStoreResource.of(settings.open_store())
    webhook = settings.alert_webhook_url
    if webhook and os.environ.get(WEBHOOK_ENV) == webhook:
        webhook = dg.EnvVar(WEBHOOK_ENV)  # resolved in the run; the UI shows the name only
    return {
        "store": store,
        "settings": SettingsResource.of(settings),
        "registry": ModelRegistryResource(store=store, model_name=settings.model_name),
        "feature_store": FeatureStoreResource(
            store=store,
            label_delay_days=settings.label_delay_days,
            history_start=settings.history_start,
        ),
        "ingestion": IngestionResource.of(config.ingest),
        "training": TrainingResource.of(config.model),
        "staging": StagingResource.of(config.staging),
        "rollout": RolloutResource.of(config.rollout),
        "monitoring": MonitoringResource.of(config.monitoring),
        "alerts": AlertsResource(
            file_path=settings.alert_path,
            webhook_url=webhook,
            # on S3 (containers) alerts are objects in the store; locally the file under home
            store=store if settings.store_backend == "s3" else None,
        ),
        "asset_values": AssetValueIOManager(store=store),
    }
