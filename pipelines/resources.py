"""Resource wiring per profile: local directory or S3, file or webhook alerts."""

from __future__ import annotations

from dataclasses import asdict

from fraudloop.settings import Settings
from resources.alerts import AlertsResource
from resources.deployment import DeploymentResource
from resources.feature_store import FeatureStoreResource
from resources.monitoring import MonitoringResource
from resources.object_store import (
    LocalObjectStoreResource,
    ObjectStoreResource,
    S3ObjectStoreResource,
)
from resources.registry import ModelRegistryResource


def store_resource(settings: Settings) -> ObjectStoreResource:
    """The resource twin of `Settings.open_store()`."""
    settings.validate()
    if settings.store_backend == "s3":
        return S3ObjectStoreResource(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region,
        )
    return LocalObjectStoreResource(root=settings.home)


def build_resources(settings: Settings) -> dict:
    store = store_resource(settings)
    return {
        "store": store,
        "registry": ModelRegistryResource(store=store),
        "feature_store": FeatureStoreResource(
            store=store, label_delay_days=settings.label_delay_days
        ),
        "deployment": DeploymentResource(
            decision_threshold=settings.decision_threshold,
            staging_p99_ms=settings.staging_p99_ms,
            label_delay_days=settings.label_delay_days,
            history_start=settings.partition_start[:10],
            **{
                name: list(value) if isinstance(value, tuple) else value
                for name, value in asdict(settings).items()
                if name in DeploymentResource.model_fields and name.startswith("rollout_")
            },
        ),
        "monitoring_config": MonitoringResource(
            **{
                name: value
                for name, value in asdict(settings).items()
                if name in MonitoringResource.model_fields
            }
        ),
        "alerts": AlertsResource(
            file_path=settings.alert_file,
            webhook_url=settings.alert_webhook_url,
            # on S3 (containers) alerts are objects in the store; locally the file under home
            store=store if settings.store_backend == "s3" else None,
        ),
    }
