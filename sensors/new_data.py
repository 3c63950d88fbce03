"""new_data_sensor: every new or changed landed file triggers ingestion of its partition once.

The cursor is a watermark plus the files of the last few minutes (`fraudloop.landing_watch`),
so it stays small however long the history grows. Files are hashed here so the run key names
the exact content: a re-delivered, corrected file is a new run; the same bytes never run twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from fraudloop.landing_watch import WatchCursor, defer, detect_changes, group_into_runs
from fraudloop.storage import sha256_hex
from pipelines.jobs import daily_labels_job, hourly_ingestion_job
from pipelines.partitions import DAILY, HOURLY, SETTINGS
from resources.object_store import ObjectStoreResource

JOB_OF_TABLE = {"transactions": hourly_ingestion_job.name, "labels": daily_labels_job.name}
PARTITIONS_OF_TABLE = {"transactions": HOURLY, "labels": DAILY}


def run_request_for(run) -> dg.RunRequest:
    tags = {
        "fraudloop/trigger": "new_data_sensor",
        "fraudloop/files": str(len(run.file_versions)),
        "fraudloop/first_file": run.file_versions[0].split("@")[0],
    }
    if run.start == run.end:
        return dg.RunRequest(
            run_key=run.run_key,
            job_name=JOB_OF_TABLE[run.table],
            partition_key=run.start,
            tags=tags,
        )
    tags[ASSET_PARTITION_RANGE_START_TAG] = run.start
    tags[ASSET_PARTITION_RANGE_END_TAG] = run.end
    return dg.RunRequest(run_key=run.run_key, job_name=JOB_OF_TABLE[run.table], tags=tags)


def _ingesting(context) -> list[str]:
    """Transaction hours being ingested by queued or running runs (their first hour is enough:
    labels wait for hours up to their own day)."""
    in_flight = context.instance.get_runs(
        dg.RunsFilter(
            job_name=hourly_ingestion_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=50,
    )
    return [
        run.tags.get(ASSET_PARTITION_RANGE_START_TAG) or run.tags.get("dagster/partition", "")
        for run in [*in_flight, *_awaiting_retry(context)]
    ]


def _awaiting_retry(context) -> list:
    """Ingestion runs that failed and that the run-retry policy is about to start again (a
    killed run container, a lost worker): until the retry exists they are still in flight.
    Without this, labels of those hours were released in that gap and rejected as referring to
    transactions never ingested (found by the Docker stack's system test)."""
    import time

    failed = context.instance.get_runs(
        dg.RunsFilter(
            job_name=hourly_ingestion_job.name,
            statuses=[dg.DagsterRunStatus.FAILURE],
            tags={"dagster/will_retry": "true"},
            updated_after=datetime.fromtimestamp(time.time() - 600, UTC),
        ),
        limit=20,
    )
    return [
        run
        for run in failed
        if not context.instance.get_runs(
            dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}), limit=1
        )
    ]


@dg.sensor(
    name="new_data_sensor",
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    jobs=[hourly_ingestion_job, daily_labels_job],
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Watches the landing zone; one run per new or changed file version (contiguous "
        "partitions that land together share one range run). Late files for old hours work."
    ),
)
def new_data_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource):
    s = store.open()
    cursor = WatchCursor.from_json(context.cursor)
    changed, next_cursor = detect_changes(s.list("landing/"), cursor)
    if not changed:
        return dg.SkipReason("no new or changed files in the landing zone")
    versions = []
    for landed in changed:
        if not PARTITIONS_OF_TABLE[landed.table].has_partition_key(landed.partition_key):
            context.log.warning(
                f"{landed.key}: partition {landed.partition_key} is outside the configured "
                "partitions (FRAUDLOOP_PARTITION_START/END); not ingested"
            )
            continue
        try:
            versions.append((landed, sha256_hex(s.get_bytes(landed.key))))
        except KeyError:
            context.log.info(f"{landed.key} vanished before it could be read; skipped")
    if not versions:
        return dg.SensorResult(
            skip_reason="new files, but none for a configured partition",
            cursor=next_cursor.to_json(),
        )
    # Labels are checked against the transactions they refer to: a label file of day D waits in
    # the cursor while transactions of hours up to the end of D are being ingested (in this tick
    # or a run still in flight). Only those: with feeds landing continuously some ingestion is
    # always running, and waiting for all of them would starve the labels.
    busy = [landed.partition_key for landed, _ in versions if landed.table == "transactions"]
    busy += _ingesting(context)
    first_busy = min((k for k in busy if k), default=None)
    waiting = [
        landed
        for landed, _ in versions
        if landed.table == "labels"
        and first_busy is not None
        and first_busy <= f"{landed.partition_key}-23:00"
    ]
    if waiting:
        next_cursor = defer(next_cursor, waiting)
        versions = [(landed, sha) for landed, sha in versions if landed not in waiting]
        context.log.info(f"{len(waiting)} label file(s) wait for transaction ingestion to finish")
    if not versions:
        return dg.SensorResult(
            skip_reason="label files wait for transactions being ingested",
            cursor=next_cursor.to_json(),
        )
    runs = group_into_runs(versions)
    context.log.info(f"{len(versions)} new file version(s) -> {len(runs)} run(s)")
    return dg.SensorResult(
        run_requests=[run_request_for(run) for run in runs], cursor=next_cursor.to_json()
    )
