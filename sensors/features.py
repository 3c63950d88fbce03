"""features_sensor: new raw data or new labels -> the derived stages, in the right ranges.

- new `raw_labels` days materialized without their `fraud_labels` (a UI re-execution, a backfill
  of `raw_labels` alone) -> `fraud_labels_job` for those days; `daily_labels_job`, which
  new_data_sensor starts, builds them in the same run;
- new `raw_transactions` hours or new `fraud_labels` days -> `features_job` over the range
  `fraudloop.features.pipeline.recompute_range` names, in one run.

The cursor is the event-log storage id up to which materializations were handled, so each
materialization triggers exactly once; the run key is derived from it. A materialization that
re-ingested identical content (metadata `changed: False`) triggers nothing.

The features run waits (`sensors.common.Hold`) for the ingestion, label and fraud-label runs in
flight when new hours or labels showed up, and for the label days landed then and not ingested
yet (their files wait in new_data_sensor for the transactions' ingestion to end): their
materializations would ask for features again a minute later, over mostly the same hours.
Waiting makes one run of a delivery's hours and its label days (and of a range run whose
materializations are still being recorded) instead of two or three; the cursor stays where it
was for those tables meanwhile, so nothing is lost. Runs that start during the wait do not
prolong it: the next features run covers what they write.
"""

from __future__ import annotations

import json

import dagster as dg

from assets import keys
from fraudloop.core import keyspace
from fraudloop.features.pipeline import recompute_range
from pipelines.jobs import daily_labels_job, features_job, fraud_labels_job, hourly_ingestion_job
from pipelines.partitions import Partitions
from resources.store import ObjectStoreResource
from sensors.common import Hold, hold, range_tags

WATCHED = {
    "raw_transactions": keys.RAW_TRANSACTIONS,
    "raw_labels": keys.RAW_LABELS,
    "fraud_labels": keys.FRAUD_LABELS,
}
#: runs whose materializations lead to another features run
UPSTREAM = (hourly_ingestion_job.name, daily_labels_job.name, fraud_labels_job.name)
#: the cursor's entries a held features run leaves unconsumed, and the hold (`Hold.to_json`)
FEATURE_INPUTS = ("raw_transactions", "fraud_labels")
HELD = "held"
#: the key under which cursors before `Hold` kept when the hold began
OLD_HELD = "held_since"


def _changed(record) -> bool:
    """Did this materialization change the partition's content? (A re-ingest of identical
    bytes says `changed: False`; there is nothing to recompute for it.)"""
    value = record.asset_materialization.metadata.get("changed")
    return True if value is None else bool(value.value)


def _builds_fraud_labels(context, run_id: str) -> bool:
    """Does this run build the fraud labels of the raw labels it materialized? It does if it
    planned `fraud_labels` (a run of `daily_labels_job`, not a subset of it without them): the
    plan is written when the run is created, so the answer holds while the run is going."""
    planned = context.instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    return any(r.event_log_entry.dagster_event.asset_key == keys.FRAUD_LABELS for r in planned)


def _new_partitions(context, cursor: dict) -> tuple[dict[str, set[str]], dict]:
    found, after = {}, dict(cursor)
    for name, key in WATCHED.items():
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor.get(name)),
            limit=10_000,
            ascending=True,
        ).records
        if records:
            after[name] = records[-1].storage_id
            if key == keys.RAW_LABELS:
                runs = {r.run_id for r in records}
                joined = {run_id for run_id in runs if _builds_fraud_labels(context, run_id)}
                records = [r for r in records if r.run_id not in joined]
            changed = {r.partition_key for r in records if r.partition_key and _changed(r)}
            if changed:
                found[name] = changed
    return found, after


def _labels_pending(context, store, partitions: Partitions) -> list[str]:
    """The label days that landed (in the configured partitions) and were never ingested."""
    landed = {
        found[1]
        for info in store.list(f"{keyspace.LANDING}/labels/")
        if (found := keyspace.partition_from_landing_key(info.key))
        and partitions.daily.has_partition_key(found[1])
    }
    return sorted(landed - set(context.instance.get_materialized_partitions(keys.RAW_LABELS)))


def build(partitions: Partitions, interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="features_sensor",
        jobs=[fraud_labels_job, features_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "New raw labels -> fraud_labels; new raw transactions or fraud labels -> features "
            "from the earliest affected hour to the newest ingested hour (one range run)."
        ),
    )
    def features_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        held = Hold.from_json(cursor.pop(HELD, cursor.pop(OLD_HELD, None)))
        found, after = _new_partitions(context, cursor)
        if not found:
            if after != cursor or held is not None:
                return dg.SensorResult(
                    skip_reason="nothing changed content", cursor=json.dumps(after)
                )
            return dg.SkipReason("no new raw data or labels")
        marker = ".".join(str(after.get(n, 0)) for n in WATCHED)
        requests, requested = [], {}
        if found.get("raw_labels"):
            days = sorted(found["raw_labels"])
            requested[f"fraud_labels@{marker}"] = days
            requests.append(
                dg.RunRequest(
                    job_name=fraud_labels_job.name,
                    run_key=f"fraud_labels@{marker}",
                    tags=range_tags(days[0], days[-1], "features_sensor"),
                )
            )
        ingested = context.instance.get_materialized_partitions(keys.RAW_TRANSACTIONS)
        newest = max((k for k in ingested if partitions.hourly.has_partition_key(k)), default=None)
        hours = recompute_range(
            found.get("raw_transactions", set()), found.get("fraud_labels", set()), newest
        )
        if hours is not None:
            held, busy = hold(
                context,
                UPSTREAM,
                held,
                requested=requested,
                pending_days=lambda: _labels_pending(context, store.open(), partitions),
            )
            if held is not None:
                kept = {name: cursor.get(name) for name in FEATURE_INPUTS}
                context.log.info(f"features {hours[0]}..{hours[1]} wait: {busy}")
                return dg.SensorResult(
                    run_requests=requests,
                    cursor=json.dumps({**after, **kept, HELD: held.to_json()}),
                    skip_reason=None if requests else f"features wait: {busy}",
                )
            requests.append(
                dg.RunRequest(
                    job_name=features_job.name,
                    run_key=f"features@{marker}",
                    tags=range_tags(*hours, "features_sensor"),
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(after))

    return features_sensor
