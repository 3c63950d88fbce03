"""features_sensor: new raw data or new labels -> the derived stages, in the right ranges.

- new `raw_labels` days -> `fraud_labels_job` for those days;
- new `raw_transactions` hours or new `fraud_labels` days -> `features_job` from the earliest
  affected hour (a label of day D changes terminal risk from D's first hour on) to the newest
  ingested hour, in one range run.

The cursor is the event-log storage id up to which materializations were handled, so each
materialization triggers exactly once; the run key is derived from it. A materialization that
re-ingested identical content (metadata `changed: False`) triggers nothing.
"""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets.features import fraud_labels
from assets.ingestion import raw_labels, raw_transactions
from pipelines.jobs import features_job, fraud_labels_job
from pipelines.partitions import HOURLY, SETTINGS

WATCHED = {
    "raw_transactions": raw_transactions,
    "raw_labels": raw_labels,
    "fraud_labels": fraud_labels,
}


def _changed(record) -> bool:
    """Did this materialization change the partition's content? (A re-ingest of identical
    bytes says `changed: False`; there is nothing to recompute for it.)"""
    value = record.asset_materialization.metadata.get("changed")
    return True if value is None else bool(value.value)


def _new_partitions(context, cursor: dict) -> tuple[dict[str, set[str]], dict]:
    found, after = {}, dict(cursor)
    for name, asset in WATCHED.items():
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, after_storage_id=cursor.get(name)),
            limit=10_000,
            ascending=True,
        ).records
        if records:
            after[name] = records[-1].storage_id
            changed = {r.partition_key for r in records if r.partition_key and _changed(r)}
            if changed:
                found[name] = changed
    return found, after


def _range(start: str, end: str, key: str, trigger: str) -> dict:
    return {
        "run_key": key,
        "tags": {
            ASSET_PARTITION_RANGE_START_TAG: start,
            ASSET_PARTITION_RANGE_END_TAG: end,
            "fraudloop/trigger": trigger,
        },
    }


@dg.sensor(
    name="features_sensor",
    jobs=[fraud_labels_job, features_job],
    minimum_interval_seconds=SETTINGS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "New raw labels -> fraud_labels; new raw transactions or fraud labels -> features from "
        "the earliest affected hour to the newest ingested hour (one range run)."
    ),
)
def features_sensor(context: dg.SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {}
    found, after = _new_partitions(context, cursor)
    if not found:
        if after != cursor:
            return dg.SensorResult(skip_reason="nothing changed content", cursor=json.dumps(after))
        return dg.SkipReason("no new raw data or labels")
    marker = ".".join(str(after.get(n, 0)) for n in WATCHED)
    requests = []
    if found.get("raw_labels"):
        days = sorted(found["raw_labels"])
        requests.append(
            dg.RunRequest(
                job_name=fraud_labels_job.name,
                **_range(days[0], days[-1], f"fraud_labels@{marker}", "features_sensor"),
            )
        )
    starts = sorted(found.get("raw_transactions", set())) + [
        f"{day}-00:00" for day in sorted(found.get("fraud_labels", set()))
    ]
    ingested = context.instance.get_materialized_partitions(raw_transactions.key)
    latest = max((k for k in ingested if HOURLY.has_partition_key(k)), default=None)
    if starts and latest is not None and min(starts) <= latest:
        requests.append(
            dg.RunRequest(
                job_name=features_job.name,
                **_range(min(starts), latest, f"features@{marker}", "features_sensor"),
            )
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(after))
