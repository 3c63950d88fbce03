"""Releasing a staged, gated version: the very first becomes production directly (there is
nothing to compare a canary with); every later one starts a canary rollout that the controller
drives to promotion or rollback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fraudloop.core.store import ObjectStore
from fraudloop.delivery import rollout
from fraudloop.delivery.package import require_staged, staging_record
from fraudloop.delivery.policy import RolloutPolicy


@dataclass(frozen=True)
class Release:
    action: str  # "promoted" | "canary" | "none"
    version: int
    production: int | None
    rollout: dict[str, Any] = field(default_factory=dict)


def release(
    store: ObjectStore,
    registry,
    version: int,
    evaluation: dict[str, Any],
    policy: RolloutPolicy,
    *,
    actor: str,
    reason: str,
) -> Release:
    """Release `version`, whose package passed staging (refused otherwise), with its evaluation
    (`fraudloop.model.evaluation.Evaluation` as a dict) as the evidence in the audit log; the
    canary's analysis tolerates the shift that evaluation predicted (``expected_live``)."""
    require_staged(store, registry.name, version)
    evidence = {"evaluation": evaluation, "staging": staging_record(store, registry.name, version)}
    production = registry.aliases().get("production")
    if production is None:
        aliases = registry.promote(
            version,
            to="production",
            actor=actor,
            reason=f"first version, staged and gated; {reason}",
            evidence=evidence,
            expect={"production": None},
        )
        return Release("promoted", version, aliases["production"])
    if production == version:
        return Release("none", version, production)
    doc = rollout.start(
        store,
        registry,
        version,
        policy=policy,
        expected=evaluation.get("expected_live"),
        actor=actor,
        reason=f"canary rollout started; {reason}",
        evidence={"staging_passed": True, "gate": evaluation["decision"]["decision"]},
    )
    return Release("canary", version, production, doc)
