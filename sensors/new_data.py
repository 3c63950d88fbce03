"""new_data_sensor: every new or changed landed file triggers ingestion of its partition once.

The cursor is a watermark plus the files of the last few minutes (`fraudloop.landing_watch`),
so it stays small however long the history grows. Files are hashed here so the run key names
the exact content: a re-delivered, corrected file is a new run; the same bytes never run twice.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.ingestion import raw_labels, raw_transactions
from fraudloop.landing_watch import WatchCursor, detect_changes, group_into_runs
from fraudloop.storage import sha256_hex
from pipelines.partitions import DAILY, HOURLY, SETTINGS
from resources.object_store import ObjectStoreResource

ASSET_OF_TABLE = {"transactions": raw_transactions.key, "labels": raw_labels.key}
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
            asset_selection=[ASSET_OF_TABLE[run.table]],
            partition_key=run.start,
            tags=tags,
        )
    tags[ASSET_PARTITION_RANGE_START_TAG] = run.start
    tags[ASSET_PARTITION_RANGE_END_TAG] = run.end
    return dg.RunRequest(
        run_key=run.run_key, asset_selection=[ASSET_OF_TABLE[run.table]], tags=tags
    )


@dg.sensor(
    name="new_data_sensor",
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    asset_selection=[raw_transactions, raw_labels],
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
    runs = group_into_runs(versions)
    context.log.info(f"{len(versions)} new file version(s) -> {len(runs)} run(s)")
    return dg.SensorResult(
        run_requests=[run_request_for(run) for run in runs], cursor=next_cursor.to_json()
    )
