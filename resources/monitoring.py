"""What monitoring judges against (`fraudloop.monitoring.policy.MonitoringPolicy`) as a resource."""

from fraudloop.monitoring.policy import MonitoringPolicy
from resources.policy import policy_resource

MonitoringResource = policy_resource(
    MonitoringPolicy, "MonitoringResource", "Serving SLO, drift and accuracy thresholds, cooldown."
)
