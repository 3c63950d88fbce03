"""new_data_sensor: every new or changed landed file triggers ingestion of its partition once.

The cursor is a watermark plus the files of the last few minutes (`fraudloop.data.landing`),
so it stays small however long the history grows. Files are hashed here so the run key names
the exact content: a re-delivered, corrected file is a new run; the same bytes never run twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import dagster as dg

from assets import keys
from fraudloop.core import keyspace
from fraudloop.core.store import sha256_hex
from fraudloop.data import held_labels
from fraudloop.data.landing import (
    WatchCursor,
    contiguous,
    defer,
    detect_changes,
    group_into_runs,
    labels_waiting,
)
from pipelines.jobs import daily_labels_job, hourly_ingestion_job
from pipelines.partitions import Partitions
from resources.store import ObjectStoreResource
from sensors.common import in_flight_runs, range_tags, run_range

JOB_OF_TABLE = {"transactions": hourly_ingestion_job.name, "labels": daily_labels_job.name}
FEED_OF_TABLE = {"transactions": keys.TRANSACTION_FEED, "labels": keys.LABEL_FEED}


def feed_events(changed) -> list[dg.AssetMaterialization]:
    """One runless materialization per feed that delivered: what landed, so the feed's
    freshness (assets/freshness.py) tracks deliveries, not scheduled runs."""
    events = []
    for table, feed in FEED_OF_TABLE.items():
        files = sorted(f.key for f in changed if f.table == table)
        if files:
            partitions = sorted({f.partition_key for f in changed if f.table == table})
            metadata = {
                "files": len(files),
                "newest_file": files[-1],
                "partitions": f"{partitions[0]} .. {partitions[-1]}",
            }
            events.append(dg.AssetMaterialization(asset_key=feed, metadata=metadata))
    return events


def run_request_for(run) -> dg.RunRequest:
    tags = {
        "fraudloop/trigger": "new_data_sensor",
        "fraudloop/files": str(len(run.file_versions)),
        "fraudloop/first_file": run.file_versions[0].split("@")[0],
    }
    job = JOB_OF_TABLE[run.table]
    if run.start == run.end:
        return dg.RunRequest(run_key=run.run_key, job_name=job, partition_key=run.start, tags=tags)
    tags.update(range_tags(run.start, run.end, "new_data_sensor"))
    return dg.RunRequest(run_key=run.run_key, job_name=job, tags=tags)


HELD_TRIGGER = "new_data_sensor: held labels released"


def held_label_requests(
    store, partitions: Partitions, ingesting: Callable[[], list[tuple[str, str]]]
) -> list[dg.RunRequest]:
    """Label days that hold labels for a transactions hour which can be read now
    (`fraudloop.data.held_labels`), once no ingestion of those hours is in flight (`ingesting`:
    the hour ranges of ingestion runs in flight, asked only when some day holds labels): one run
    per stretch of consecutive days, keyed by the state of the hours they waited for, so a day
    is ingested again once per change of those hours (a landed history's days in one run, not
    one run each)."""
    versions = {
        day: version
        for day, version in held_labels.released(store, ingesting)
        if partitions.daily.has_partition_key(day)
    }
    requests = []
    for group in contiguous("labels", versions):
        first, last = group[0], group[-1]
        if len(group) == 1:
            run_key, tags = f"held-labels/{first}@{versions[first]}", {}
        else:
            state = "|".join(f"{day}@{versions[day]}" for day in group)
            run_key = f"held-labels/{first}..{last}@{sha256_hex(state.encode())[:16]}"
            tags = range_tags(first, last, HELD_TRIGGER)
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                job_name=daily_labels_job.name,
                partition_key=first if len(group) == 1 else None,
                tags={"fraudloop/trigger": HELD_TRIGGER, **tags},
            )
        )
    return requests


def build(partitions: Partitions, interval_seconds: int) -> dg.SensorDefinition:
    partitions_of = {"transactions": partitions.hourly, "labels": partitions.daily}

    @dg.sensor(
        name="new_data_sensor",
        minimum_interval_seconds=interval_seconds,
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
        changed, next_cursor = detect_changes(s.list(f"{keyspace.LANDING}/"), cursor)

        @functools.cache
        def ingesting() -> list[tuple[str, str]]:
            """(first hour, last hour) of each ingestion run in flight: two instance queries,
            made at most once a tick and only when something needs them."""
            runs = in_flight_runs(context, hourly_ingestion_job.name, 50)
            return [r for r in map(run_range, runs) if r]

        released = held_label_requests(s, partitions, ingesting)
        if not changed:
            if released:
                return dg.SensorResult(run_requests=released, cursor=next_cursor.to_json())
            return dg.SkipReason("no new or changed files in the landing zone")
        delivered = feed_events(changed)
        versions = []
        for landed in changed:
            if not partitions_of[landed.table].has_partition_key(landed.partition_key):
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
                run_requests=released,
                skip_reason=None if released else "new files, but none for a configured partition",
                cursor=next_cursor.to_json(),
                asset_events=delivered,
            )
        waiting = labels_waiting(versions, [first for first, _ in ingesting()])
        if waiting:
            next_cursor = defer(next_cursor, waiting)
            versions = [(landed, sha) for landed, sha in versions if landed not in waiting]
            context.log.info(f"{len(waiting)} label file(s) wait for transaction ingestion")
        if not versions:
            return dg.SensorResult(
                run_requests=released,
                skip_reason=None if released else "label files wait for transactions ingestion",
                cursor=next_cursor.to_json(),
                asset_events=delivered,
            )
        runs = group_into_runs(versions)
        context.log.info(f"{len(versions)} new file version(s) -> {len(runs)} run(s)")
        return dg.SensorResult(
            run_requests=[run_request_for(run) for run in runs] + released,
            cursor=next_cursor.to_json(),
            asset_events=delivered,
        )

    return new_data_sensor
