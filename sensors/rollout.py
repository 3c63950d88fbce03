"""rollout_sensor: the canary controller.

Each evaluation reads the rollout document and the prediction log written since the current
step began, runs the analysis (`fraudloop.delivery.rollout.analyze`) and acts on the decision: wait,
advance to the next share, promote (production -> previous, canary -> production) or roll back
(canary alias removed, alert sent). Every action is in the registry's audit log with the analysis
as evidence, and reported as a materialization of `model_rollout` so the UI shows the rollout's
history with its numbers. Waiting is a skip reason (visible on the sensor's tick list).
"""

import dagster as dg

from assets import keys
from fraudloop.delivery import rollout
from resources.alerts import AlertsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource


def _metadata(doc: dict, analysis: rollout.Analysis | None, decision: rollout.Decision) -> dict:
    meta = {
        "action": decision.action,
        "reason": decision.reason,
        "rollout_id": doc["rollout_id"],
        "canary_version": doc["canary_version"],
        "baseline_version": doc["baseline_version"],
        "status": doc["status"],
        "step": doc["step"],
        "share": float(doc["share"]),
    }
    if analysis is not None:
        values = analysis.to_dict()
        for key in (
            "canary_requests",
            "production_requests",
            "fallbacks",
            "error_rate",
            "canary_p99_ms",
            "production_p99_ms",
            "paired",
            "psi",
            "flag_rate",
            "control_flag_rate",
        ):
            value = values[key]
            meta[key] = float("nan") if value is None else value
        meta["checks"] = dg.MetadataValue.json(values["checks"])
    return meta


def build(interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="rollout_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Canary controller: advances the canary through its traffic steps while the analysis "
            "passes (error rate, p99 vs production, score PSI on the same traffic, flagged rate), "
            "promotes it at the end, rolls it back and alerts on failure."
        ),
    )
    def rollout_sensor(
        context: dg.SensorEvaluationContext,
        store: ObjectStoreResource,
        registry: ModelRegistryResource,
        alerts: AlertsResource,
    ):
        result = rollout.tick(store.open(), registry.open())
        doc, decision = result.doc, result.decision
        if decision is None:
            status = doc["status"] if doc else "none"
            return dg.SkipReason(f"no running rollout (last: {status})")
        if decision.action == "wait":
            return dg.SkipReason(
                f"canary v{doc['canary_version']} at {doc['share']:.0%}: {decision.reason}"
            )
        context.log.info("rollout %s: %s (%s)", doc["rollout_id"], decision.action, decision.reason)
        model = registry.model_name
        if decision.action in ("rollback", "abort"):
            alerts.send(
                title=f"canary v{doc['canary_version']} {decision.action}",
                summary=decision.reason,
                dedup_key=f"rollout/{model}",
                severity="warning",  # production never moved; someone should look, not wake up
                rollout_id=doc["rollout_id"],
                production=doc["baseline_version"],
                analysis=result.analysis.to_dict() if result.analysis else None,
            )
        elif decision.action == "promote":
            alerts.resolve(
                f"rollout/{model}",
                f"v{doc['canary_version']} promoted to production ({decision.reason})",
            )
            alerts.send(
                title=f"v{doc['canary_version']} promoted to production",
                summary=decision.reason,
                dedup_key=f"release/{model}/v{doc['canary_version']}",
                severity="info",
                rollout_id=doc["rollout_id"],
                previous=doc["baseline_version"],
            )
        return dg.SensorResult(
            asset_events=[
                dg.AssetMaterialization(
                    asset_key=keys.MODEL_ROLLOUT, metadata=_metadata(doc, result.analysis, decision)
                )
            ]
        )

    return rollout_sensor
