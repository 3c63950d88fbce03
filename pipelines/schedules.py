"""The hourly refresh: ingest the hour that just ended, a few minutes after it closes.

Files that land later than that are picked up by `new_data_sensor`, so the schedule is the
heartbeat that makes a *missing* hour visible (an alert) rather than the only way in.
"""

from datetime import timedelta

import dagster as dg

from fraudloop.core.hours import hour_key
from pipelines.jobs import hourly_ingestion_job


@dg.schedule(
    name="hourly_refresh_schedule",
    cron_schedule="10 * * * *",
    execution_timezone="UTC",
    job=hourly_ingestion_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Ingests the previous UTC hour at :10 past every hour.",
)
def hourly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    previous = hour_key(context.scheduled_execution_time - timedelta(hours=1))
    return dg.RunRequest(
        run_key=f"hourly_refresh:{previous}",
        partition_key=previous,
        tags={"fraudloop/trigger": "hourly_refresh_schedule"},
    )
