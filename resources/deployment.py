"""How packages are built, staging-tested and rolled out (values from `Settings`)."""

import dagster as dg

from fraudloop.delivery.policy import RolloutPolicy
from fraudloop.delivery.rollout import policy_from_prefixed
from fraudloop.delivery.policy import StagingConfig


class DeploymentResource(dg.ConfigurableResource):
    """Decision threshold of new packages, the staging test's budget and the canary policy."""

    decision_threshold: float = 0.5
    staging_p99_ms: float = 25.0
    label_delay_days: int = 7
    history_start: str = "2018-04-01"
    rollout_steps: list[float] = list(RolloutPolicy().steps)  # noqa: RUF012 - pydantic copies
    rollout_min_requests: int = 200
    rollout_bake_seconds: float = 60.0
    rollout_max_error_rate: float = 0.01
    rollout_max_p99_ratio: float = 1.5
    rollout_max_psi: float = 0.25
    rollout_max_flag_rate: float = 0.10

    def policy(self) -> RolloutPolicy:
        return policy_from_prefixed(dict(self))

    def staging(self) -> StagingConfig:
        return StagingConfig(
            p99_budget_ms=self.staging_p99_ms,
            label_delay_days=self.label_delay_days,
            history_start=self.history_start,
        )
