"""The feature store resource: offline partitions and the online state, on the object store."""

import dagster as dg

from fraudloop.features import feature_store
from resources.object_store import ObjectStoreResource


class FeatureStoreResource(dg.ConfigurableResource):
    """Where features live for training (offline) and serving (online); label delay included,
    because the terminal windows are defined relative to it."""

    store: dg.ResourceDependency[ObjectStoreResource]
    label_delay_days: int = 7

    def publish_online(self, state, state_hour: str) -> dict:
        return feature_store.publish_online(self.store.open(), state, state_hour)

    def load_online(self):
        return feature_store.load_online(self.store.open())

    def read_offline(self, hour_keys):
        return feature_store.read_offline(self.store.open(), hour_keys)
