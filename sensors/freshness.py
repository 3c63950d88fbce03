"""Freshness sensors: the prediction log observed from the store (the services write it, not
Dagster), and one incident per asset whose freshness policy fails (assets/freshness.py),
resolved when it passes again. The states are Dagster's own, computed by the daemon's
freshness evaluation and shown on each asset in the UI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState

from assets import keys
from assets.freshness import windows
from fraudloop.core import keyspace
from fraudloop.monitoring.policy import MonitoringPolicy
from resources.alerts import AlertsResource
from resources.store import ObjectStoreResource

#: a silent feed or service pages; stale derived assets and an old model are looked at
SEVERITY = {
    keys.TRANSACTION_FEED: "critical",
    keys.PREDICTION_LOG: "critical",
    keys.LABEL_FEED: "warning",
    keys.TRANSACTION_FEATURES: "warning",
    keys.MODEL_RELEASE: "warning",
}


def _since(timestamp: float | None) -> str:
    if not timestamp:
        return "never updated"
    return "last update " + datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def build(policy: MonitoringPolicy, interval_seconds: int) -> list:
    window = windows(policy)

    @dg.sensor(
        name="prediction_log_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Observes the services' prediction log in the store: a materialization of "
            "`prediction_log` (newest file, files written since) whenever new files appear, so "
            "its freshness shows a service that stopped logging."
        ),
    )
    def prediction_log_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource):
        last = float(context.cursor or 0)
        infos = store.open().list(f"{keyspace.PREDICTIONS}/")
        new = [i for i in infos if i.modified > last]
        if not new:
            return dg.SkipReason("no new prediction log files")
        newest = max(new, key=lambda i: i.modified)
        event = dg.AssetMaterialization(
            asset_key=keys.PREDICTION_LOG,
            metadata={
                "newest_file": newest.key,
                "files_written": len(new),
                "bytes_written": sum(i.size for i in new),
            },
        )
        return dg.SensorResult(asset_events=[event], cursor=str(newest.modified))

    @dg.sensor(
        name="freshness_alert_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "One incident per asset whose freshness policy fails (a silent feed or service, "
            "features not computed, an old production model), resolved when it passes again."
        ),
    )
    def freshness_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource):
        seen = json.loads(context.cursor or "{}")
        records = context.instance.get_freshness_state_records(list(window))
        changed = []
        for key, record in records.items():
            name, state = key.to_user_string(), record.freshness_state
            if seen.get(name) == state.value:
                continue
            seen[name] = state.value
            changed.append(f"{name}: {state.value}")
            incident = f"freshness/{name}"
            if state == FreshnessState.FAIL:
                latest = context.instance.get_latest_materialization_event(key)
                alerts.send(
                    title=f"{name} is stale",
                    summary=(
                        f"no update in the last {window[key]} "
                        f"({_since(latest.timestamp if latest else None)})"
                    ),
                    dedup_key=incident,
                    severity=SEVERITY[key],
                    asset=name,
                )
            elif state == FreshnessState.PASS:
                alerts.resolve(incident, f"{name} is fresh again", asset=name)
        context.update_cursor(json.dumps(seen, sort_keys=True))
        if not changed:
            return dg.SkipReason("no freshness state changed")
        context.log.info("freshness: " + ", ".join(changed))
        return None

    return [prediction_log_sensor, freshness_alert_sensor]
