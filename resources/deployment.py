"""How a new version earns traffic (`fraudloop.delivery.policy`): the staging test's budget and
the canary rollout's steps and analysis bounds, as resources."""

from fraudloop.delivery.policy import RolloutPolicy, StagingConfig
from resources.policy import policy_resource

StagingResource = policy_resource(
    StagingConfig, "StagingResource", "The staging test: budget and replay size."
)
RolloutResource = policy_resource(
    RolloutPolicy, "RolloutResource", "Canary steps, bake time and analysis bounds."
)
