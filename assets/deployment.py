"""Continuous delivery of the model: package -> staging test -> release (canary or first
production) -> the rollout the controller drives.

Thin: `fraudloop.delivery.package` builds and verifies packages, `fraudloop.delivery.staging` runs
the staging test against a real service process, `fraudloop.delivery.rollout` starts and records
rollouts. The `model_rollout` asset is materialized by `rollout_sensor` (sensors/rollout.py), one
event per decision, so the UI shows every step, promotion and rollback with its analysis.
"""

import json

import dagster as dg

from assets.training import EVALUATION_PREFIX, _latest_decision, model_evaluation
from fraudloop.delivery import rollout
from fraudloop.delivery.package import (
    CARD_FILE,
    PackageError,
    build_package,
    package_prefix,
    require_staged,
    staging_record,
)
from fraudloop.delivery.staging import check_lines, run_staging
from resources.deployment import DeploymentResource
from resources.object_store import ObjectStoreResource
from resources.registry import ModelRegistryResource


def _candidate(registry: ModelRegistryResource) -> int:
    return registry.open().aliases()["candidate"]


@dg.asset(
    group_name="deployment",
    kinds={"lightgbm", "docker"},
    owners=["team:ml-platform"],
    deps=[model_evaluation],
    description=(
        "The deployment artifact of the candidate that passed the gate: LightGBM text model, "
        "feature spec, request/response JSON Schemas, model card, lineage, a sha256 manifest and "
        "a Docker build context for a Dagster-free scoring image. No pickle anywhere."
    ),
)
def model_package(
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    deployment: DeploymentResource,
) -> dg.MaterializeResult:
    s = store.open()
    reg = registry.open()
    version = _candidate(registry)
    evaluation = None
    if s.exists(f"{EVALUATION_PREFIX}/v{version}.json"):
        evaluation = json.loads(s.get_bytes(f"{EVALUATION_PREFIX}/v{version}.json"))
    package = build_package(
        s, reg, version, decision_threshold=deployment.decision_threshold, evaluation=evaluation
    )
    files = package.manifest["files"]
    table = ["| file | bytes | sha256 |", "| --- | ---: | --- |"] + [
        f"| `{name}` | {entry['size']:,} | `{entry['sha256'][:16]}` |"
        for name, entry in sorted(files.items())
        if not name.startswith("build/src/")
    ]
    sources = sum(1 for name in files if name.startswith("build/src/"))
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "package_sha256": package.sha256,
            "model_sha256": package.manifest["model_sha256"],
            "decision_threshold": package.spec["decision_threshold"],
            "num_trees": package.spec["num_trees"],
            "files": dg.MetadataValue.md("\n".join(table) + f"\n\n+ {sources} source files"),
            "model_card": dg.MetadataValue.md(package.files[CARD_FILE].decode()),
            "uri": dg.MetadataValue.url(s.uri(package_prefix(reg.name, version))),
        },
        data_version=dg.DataVersion(package.sha256),
    )


@dg.asset_check(
    asset=model_package,
    blocking=True,
    description=(
        "Staging test: the package served by a real `fraudloop.serving` process on a free "
        "127.0.0.1 port replays a stored hour; scores must equal batch scores, responses match "
        "the schema, malformed requests get 422/413 naming the field, p99 within budget."
    ),
)
def package_passes_staging(
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    deployment: DeploymentResource,
) -> dg.AssetCheckResult:
    version = _candidate(registry)
    report = run_staging(store.open(), registry.open(), version, deployment.staging())
    checks = "\n".join(f"- `{line}`" for line in check_lines(report))
    return dg.AssetCheckResult(
        passed=report["passed"],
        metadata={
            "version": version,
            "checks": dg.MetadataValue.md(checks),
            "replayed_hour": report.get("hour", "n/a"),
            "rows": report.get("rows", 0),
            "p50_ms": float(report.get("p50_ms", float("nan"))),
            "p99_ms": float(report.get("p99_ms", float("nan"))),
            "max_abs_score_diff": float(report.get("max_abs_diff", float("nan"))),
        },
    )


@dg.asset(
    group_name="deployment",
    kinds={"python"},
    owners=["team:ml-platform"],
    deps=[model_package],
    description=(
        "Releases the staged candidate: the very first version becomes production directly; "
        "any later one starts a canary rollout (canary alias + rollout document at the first "
        "step), which `rollout_sensor` drives to promotion or rollback."
    ),
)
def model_release(
    context: dg.AssetExecutionContext,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    deployment: DeploymentResource,
) -> dg.MaterializeResult:
    s = store.open()
    reg = registry.open()
    version = _candidate(registry)
    try:
        require_staged(s, reg.name, version)
    except PackageError as error:
        raise dg.Failure(str(error)) from None
    evidence = {
        "evaluation": _latest_decision(store, registry),
        "staging": staging_record(s, reg.name, version),
    }
    production = reg.aliases().get("production")
    if production is None:
        aliases = reg.promote(
            version,
            to="production",
            actor="dagster:model_release",
            reason=f"first version, staged and gated, released in run {context.run.run_id}",
            evidence=evidence,
            expect={"production": None},
        )
        return dg.MaterializeResult(
            metadata={"action": "promoted (first version)", "production": aliases["production"]},
            data_version=dg.DataVersion(f"production-{version}"),
        )
    if production == version:
        return dg.MaterializeResult(metadata={"action": "none: already production"})
    doc = rollout.start(
        s,
        reg,
        version,
        policy=deployment.policy(),
        expected=evidence["evaluation"].get("expected_live"),
        actor="dagster:model_release",
        reason=f"canary rollout started in run {context.run.run_id}",
        evidence={"staging_passed": True, "gate": evidence["evaluation"]["decision"]["decision"]},
    )
    return dg.MaterializeResult(
        metadata={
            "action": "canary rollout started",
            "canary": version,
            "production": production,
            "rollout_id": doc["rollout_id"],
            "share": doc["share"],
            "steps": dg.MetadataValue.json(doc["policy"]["steps"]),
            "policy": dg.MetadataValue.json(doc["policy"]),
        },
        data_version=dg.DataVersion(f"rollout-{doc['rollout_id']}"),
    )


model_rollout = dg.AssetSpec(
    "model_rollout",
    group_name="deployment",
    kinds={"python"},
    owners=["team:ml-platform"],
    deps=[model_release],
    description=(
        "The canary rollout as the controller (`rollout_sensor`) moves it: one materialization "
        "per decision (advance, promote, rollback, abort) with the analysis as metadata (canary "
        "requests, error rate, p99 against production, score PSI on the same traffic, flagged "
        "rate). Also in the registry's audit log with the same evidence."
    ),
)
