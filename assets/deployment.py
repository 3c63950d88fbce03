"""Continuous delivery of the model: package -> staging test -> release (canary or first
production) -> the rollout the controller drives.

Thin: `fraudloop.delivery.package` builds and verifies packages, `fraudloop.delivery.staging`
runs the staging test against a real service process, `fraudloop.delivery.release` promotes the
first version or starts a canary rollout. The `model_rollout` asset is materialized by
`rollout_sensor` (sensors/rollout.py), one event per decision, so the UI shows every step,
promotion and rollback with its analysis. The prediction log the services write is an external
asset here, so lineage runs from the package to monitoring.
"""

import dagster as dg

from assets import keys
from fraudloop.delivery.package import CARD_FILE, build_package, package_prefix
from fraudloop.delivery.release import release
from fraudloop.delivery.staging import check_lines, run_staging
from resources.deployment import RolloutResource, StagingResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource

VALUES = "asset_values"


@dg.asset(
    key=keys.MODEL_PACKAGE,
    group_name="deployment",
    kinds={"lightgbm", "docker"},
    owners=["team:ml-platform"],
    ins={"model_evaluation": dg.AssetIn(keys.MODEL_EVALUATION)},
    io_manager_key=VALUES,
    output_required=False,
    description=(
        "The deployment artifact of the candidate that passed the gate (a held or rejected "
        "candidate packages nothing: the step succeeds without a materialization and the "
        "release is skipped): LightGBM text model, "
        "feature spec (with the threshold it was evaluated at), request/response JSON Schemas, "
        "model card, lineage, a sha256 manifest and a Docker build context for a Dagster-free "
        "scoring image. No pickle anywhere."
    ),
)
def model_package(
    context: dg.AssetExecutionContext,
    model_evaluation: dict,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
):  # yields dg.MaterializeResult[dict] only for a promoted candidate
    version = model_evaluation["candidate"]
    verdict = model_evaluation["decision"]["decision"]
    if verdict != "promote":
        context.log.info(f"candidate v{version}: {verdict}; nothing to package, production stays")
        return
    s, reg = store.open(), registry.open()
    package = build_package(s, reg, version, evaluation=model_evaluation)
    files = package.manifest["files"]
    table = ["| file | bytes | sha256 |", "| --- | ---: | --- |"] + [
        f"| `{name}` | {entry['size']:,} | `{entry['sha256'][:16]}` |"
        for name, entry in sorted(files.items())
        if not name.startswith("build/src/")
    ]
    sources = sum(1 for name in files if name.startswith("build/src/"))
    yield dg.MaterializeResult(
        value={"version": version, "sha256": package.sha256},
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
    model_package: dict,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    staging: StagingResource,
) -> dg.AssetCheckResult:
    version = model_package["version"]
    report = run_staging(store.open(), registry.open(), version, staging.policy())
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
            # not judged: a stored hour older than its inputs waits for its recomputation
            "stored_features_current": bool(report.get("stored_partition", {}).get("current")),
        },
    )


@dg.asset(
    key=keys.MODEL_RELEASE,
    group_name="deployment",
    kinds={"python"},
    owners=["team:ml-platform"],
    ins={
        "model_package": dg.AssetIn(keys.MODEL_PACKAGE),
        "model_evaluation": dg.AssetIn(keys.MODEL_EVALUATION),
    },
    description=(
        "Releases the staged candidate: the very first version becomes production directly; "
        "any later one starts a canary rollout (canary alias + rollout document at the first "
        "step), which `rollout_sensor` drives to promotion or rollback."
    ),
)
def model_release(
    context: dg.AssetExecutionContext,
    model_package: dict,
    model_evaluation: dict,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    rollout: RolloutResource,
) -> dg.MaterializeResult:
    outcome = release(
        store.open(),
        registry.open(),
        model_package["version"],
        model_evaluation,
        rollout.policy(),
        actor="dagster:model_release",
        reason=f"released in run {context.run.run_id}",
    )
    if outcome.action == "promoted":
        return dg.MaterializeResult(
            metadata={"action": "promoted (first version)", "production": outcome.production},
            data_version=dg.DataVersion(f"production-{outcome.version}"),
        )
    if outcome.action == "none":
        return dg.MaterializeResult(metadata={"action": "none: already production"})
    doc = outcome.rollout
    return dg.MaterializeResult(
        metadata={
            "action": "canary rollout started",
            "canary": outcome.version,
            "production": outcome.production,
            "rollout_id": doc["rollout_id"],
            "share": doc["share"],
            "steps": dg.MetadataValue.json(doc["policy"]["steps"]),
            "policy": dg.MetadataValue.json(doc["policy"]),
        },
        data_version=dg.DataVersion(f"rollout-{doc['rollout_id']}"),
    )


model_rollout = dg.AssetSpec(
    keys.MODEL_ROLLOUT,
    group_name="deployment",
    kinds={"python"},
    owners=["team:ml-platform"],
    deps=[keys.MODEL_RELEASE],
    description=(
        "The canary rollout as the controller (`rollout_sensor`) moves it: one materialization "
        "per decision (advance, promote, rollback, abort) with the analysis as metadata (canary "
        "requests, error rate, p99 against production, score PSI on the same traffic, flagged "
        "rate). Also in the registry's audit log with the same evidence."
    ),
)

prediction_log = dg.AssetSpec(
    keys.PREDICTION_LOG,
    group_name="deployment",
    kinds={"parquet"},
    owners=["team:ml-platform"],
    deps=[keys.MODEL_ROLLOUT],
    description=(
        "Every decision of the scoring services (request, transaction, version, role, score, "
        "decision, latency, CPU, feature hash, status): `predictions/<hour>/<instance>-<seq>."
        "parquet`, hour of the transaction. Written by `fraudloop serve`, not by Dagster."
    ),
)


def build() -> list:
    """The deployment stage's assets, checks and the external assets it feeds."""
    return [model_package, package_passes_staging, model_release, model_rollout, prediction_log]
