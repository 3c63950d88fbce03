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
from resources.reports import ReportsResource
from resources.settings import SettingsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource, TrainingResource


def _secret(value: str | None, env_name: str):
    """A secret as `dg.EnvVar` when it came from that variable (resolved in the run, the UI
    shows the name only), else the value given in code (tests)."""
    if value and os.environ.get(env_name) == value:
        return dg.EnvVar(env_name)
    return value


def build_resources(config: ProjectConfig) -> dict:
    settings = config.settings
    store = ObjectStoreResource.of(settings.open_store())
    return {
        "store": store,
        "settings": SettingsResource.of(settings),
        "registry": ModelRegistryResource(store=store, model_name=settings.model_name),
        "feature_store": FeatureStoreResource(
            store=store,
            label_delay_days=settings.label_delay_days,
            history_start=settings.history_start,
            sweep_grace_hours=settings.state_sweep_grace_hours,
        ),
        "ingestion": IngestionResource.of(config.ingest),
        "training": TrainingResource.of(config.model),
        "staging": StagingResource.of(config.staging),
        "rollout": RolloutResource.of(config.rollout),
        "monitoring": MonitoringResource.of(config.monitoring),
        "alerts": AlertsResource(
            store=store,  # the durable record of every alert, in every profile
            webhook_url=_secret(settings.alert_webhook_url, "FRAUDLOOP_ALERT_WEBHOOK_URL"),
            slack_webhook_url=_secret(
                settings.alert_slack_webhook_url, "FRAUDLOOP_ALERT_SLACK_WEBHOOK_URL"
            ),
            slack_min_severity=settings.alert_slack_min_severity,
            pagerduty_routing_key=_secret(
                settings.alert_pagerduty_routing_key, "FRAUDLOOP_ALERT_PAGERDUTY_ROUTING_KEY"
            ),
            pagerduty_url=settings.alert_pagerduty_url,
            pagerduty_min_severity=settings.alert_pagerduty_min_severity,
            ca_bundle=settings.alert_ca_bundle,
        ),
        "asset_values": AssetValueIOManager(store=store),
        "reports": ReportsResource(store=store, base_url=settings.reports_url),
    }
