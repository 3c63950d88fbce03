"""The model registry as a resource: numbered immutable versions and audited aliases."""

import dagster as dg

from fraudloop.model.registry import ModelRegistry
from resources.object_store import ObjectStoreResource


class ModelRegistryResource(dg.ConfigurableResource):
    """The registry of one model name on the project's object store."""

    store: dg.ResourceDependency[ObjectStoreResource]
    model_name: str = "fraud"

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.store.open(), name=self.model_name)
