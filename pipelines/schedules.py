"""The hourly refresh: ingest the hour that just ended, a few minutes after it closes.

Files that land later than that are picked up by `new_data_sensor`. An hour with nothing landed
is skipped with a reason, not run: a run of a missing hour fails (nothing written), and a feed
that goes silent would then page as failing runs every hour on top of its one freshness
incident (`freshness_alert_sensor`, which owns silence).
"""

from datetime import timedelta

import dagster as dg

from fraudloop.core.hours import hour_key
from fraudloop.data.ingest import landed_keys
from pipelines.jobs import hourly_ingestion_job
from resources.store import ObjectStoreResource


@dg.schedule(
    name="hourly_refresh_schedule",
    cron_schedule="10 * * * *",
    execution_timezone="UTC",
    job=hourly_ingestion_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Ingests the previous UTC hour at :10 past every hour (skipped while nothing has landed "
        "for it: silence is the freshness sensor's incident)."
    ),
)
def hourly_refresh_schedule(
    context: dg.ScheduleEvaluationContext, store: ObjectStoreResource
) -> dg.RunRequest | dg.SkipReason:
    previous = hour_key(context.scheduled_execution_time - timedelta(hours=1))
    if not landed_keys(store.open(), "transactions", previous):
        return dg.SkipReason(
            f"nothing landed for {previous} yet: new_data_sensor ingests it when it lands, "
            "freshness_alert_sensor alerts if the feed stays silent"
        )
    return dg.RunRequest(
        run_key=f"hourly_refresh:{previous}",
        partition_key=previous,
        tags={"fraudloop/trigger": "hourly_refresh_schedule"},
    )
