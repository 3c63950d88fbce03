"""The training window and decision threshold (`fraudloop.model.policy.ModelPolicy`) as a
resource, and the model registry on the project's object store."""

import dagster as dg

from fraudloop.model.policy import ModelPolicy
from fraudloop.model.registry import ModelRegistry
from resources.policy import policy_resource
from resources.store import ObjectStoreResource

TrainingResource = policy_resource(
    ModelPolicy, "TrainingResource", "The training window and the decision threshold."
)


class ModelRegistryResource(dg.ConfigurableResource):
    """The registry of one model name: numbered immutable versions and audited aliases."""

    store: dg.ResourceDependency[ObjectStoreResource]
    model_name: str

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.store.open(), name=self.model_name)
