"""What ingestion accepts (`fraudloop.data.policy.IngestPolicy`) as a resource."""

from fraudloop.data.policy import IngestPolicy
from resources.policy import policy_resource

IngestionResource = policy_resource(
    IngestPolicy, "IngestionResource", "Guards and thresholds every landed file is held to."
)
