"""The feature store as a resource: offline partitions for training, the online state for
serving, on the project's object store."""

from datetime import timedelta

import dagster as dg

from fraudloop.features import feature_store
from resources.store import ObjectStoreResource


class FeatureStoreResource(dg.ConfigurableResource):
    """Where features live; the label delay and the first day of history are included, because
    the terminal windows and the rebuild of a missing checkpoint are defined by them."""

    store: dg.ResourceDependency[ObjectStoreResource]
    label_delay_days: int
    history_start: str
    sweep_grace_hours: float = 24.0

    @property
    def label_delay(self) -> timedelta:
        return timedelta(days=self.label_delay_days)

    def publish_online(self, state, state_hour: str) -> dict:
        return feature_store.publish_online(self.store.open(), state, state_hour)

    def load_online(self):
        return feature_store.load_online(self.store.open())
