"""Continuous integration for the model: dataset -> candidate -> evaluation gate -> promotion.

Thin: `fraudloop.model.training` builds datasets from the feature store as of a cutoff (with a
content-addressed manifest), `fraudloop.model` trains deterministically,
`fraudloop.model.evaluation` scores both models on the same holdout and decides with a bootstrap
interval, and `fraudloop.model.registry` keeps versions, aliases and the audit log."""

import json
import time

import dagster as dg
import pandas as pd

from assets.common import RETRY
from assets.features import transaction_features
from assets.ingestion import raw_labels
from fraudloop.core.hours import hour_start
from fraudloop.core.store import load_blob, publish_blob
from fraudloop.model import datasets, training
from fraudloop.model.booster import TrainConfig, load_model
from fraudloop.model.evaluation import evaluate, gate
from pipelines.partitions import SETTINGS
from resources.object_store import ObjectStoreResource
from resources.registry import ModelRegistryResource

DATASET_PREFIX = "datasets/current"
EVALUATION_PREFIX = "reports/evaluations"


class DatasetConfig(dg.Config):
    """What the candidate learns from. `cutoff` ("as of", ISO 8601 UTC) defaults to the end of
    the newest hour with stored features; a past cutoff trains exactly what was known then
    (backtests)."""

    cutoff: str | None = None
    window_days: int = SETTINGS.train_window_days
    holdout_days: int = SETTINGS.holdout_days
    label_delay_days: int = SETTINGS.label_delay_days


class CandidateConfig(dg.Config):
    """LightGBM hyperparameters; deterministic settings are always on (`fraudloop.model`)."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 600
    min_child_samples: int = 400
    class_weight: str = "none"
    seed: int = 42
    num_threads: int = 2
    early_stopping_rounds: int = 50
    validation_share: float = 0.2
    cpu_hour_price: float = SETTINGS.cpu_hour_price  # cost of training, per CPU hour


class GateConfig(dg.Config):
    """Floors every model must meet, and how much better than production a candidate must be
    (the lower end of the bootstrap interval of the AP difference)."""

    floor_auc: float = 0.80
    floor_ap: float = 0.40
    min_delta: float = 0.0
    n_boot: int = 1000


def _newest_feature_hour_end(store) -> pd.Timestamp:
    """The default cutoff: the end of the newest hour whose features are stored. Not the newest
    ingested hour: a retraining requested while features lag behind ingestion would otherwise
    ask for a holdout that does not exist yet."""
    from fraudloop.core import tables

    keys = tables.list_partitions(store, datasets.FEATURE_TABLE)
    valid = [
        k
        for k in keys
        if (tables.read_pointer(store, datasets.FEATURE_TABLE, k) or {}).get("status") == "valid"
    ]
    if not valid:
        raise dg.Failure("no features have been computed yet; nothing to train on")
    return hour_start(max(valid)) + pd.Timedelta(hours=1)


@dg.asset(
    group_name="training",
    kinds={"pandas", "parquet"},
    owners=["team:data-science"],
    deps=[transaction_features, raw_labels],
    retry_policy=RETRY,
    description=(
        "The training window (default: the last 28 days whose labels have matured as of the "
        "cutoff) and the holdout after it, joined with the labels known as of the cutoff. Its "
        "manifest (feature partitions and label days with their sha256) is the dataset version."
    ),
)
def training_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: ObjectStoreResource
) -> dg.MaterializeResult:
    s = store.open()
    cutoff = pd.Timestamp(config.cutoff) if config.cutoff else _newest_feature_hour_end(s)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    spec = datasets.DatasetSpec(
        cutoff=cutoff,
        window_days=config.window_days,
        holdout_days=config.holdout_days,
        label_delay_days=config.label_delay_days,
    )
    dataset = datasets.build_dataset(s, spec)
    if dataset.train.empty or dataset.holdout.empty:
        raise dg.Failure(
            f"empty training or holdout set as of {cutoff} (manifest {dataset.manifest})"
        )
    manifest = dataset.manifest
    publish_blob(
        s, DATASET_PREFIX, json.dumps(manifest, sort_keys=True).encode(), {"id": manifest["id"]}
    )
    return dg.MaterializeResult(
        metadata={
            "dataset_id": manifest["id"],
            "cutoff": cutoff.isoformat(),
            "train_rows": len(dataset.train),
            "train_frauds": int(dataset.train["is_fraud"].sum()),
            "holdout_rows": len(dataset.holdout),
            "holdout_frauds": int(dataset.holdout["is_fraud"].sum()),
            "skipped_hours": len(manifest.get("skipped_hours", [])),
            "unlabelled_rows": int(manifest.get("unlabelled_rows", 0)),
            "manifest": dg.MetadataValue.json(manifest),
        },
        data_version=dg.DataVersion(manifest["id"]),
    )


def _current_dataset(s) -> dict:
    found = load_blob(s, DATASET_PREFIX)
    if found is None:
        raise dg.Failure("materialize training_dataset first")
    return json.loads(found[0])


def expected_live(cand_scores: pd.DataFrame, prod_scores: pd.DataFrame | None) -> dict:
    """The score shift (PSI) and flagged rate the holdout predicts for a canary of this
    candidate against production: the rollout analysis tolerates that much (a model retrained
    for a new fraud pattern is *meant* to score differently), not more."""
    from fraudloop.delivery.rollout import psi

    out = {"flag_rate": float((cand_scores["score"] >= 0.5).mean())}
    if prod_scores is not None:
        out["psi"] = psi(prod_scores["score"].to_numpy(), cand_scores["score"].to_numpy())
        out["production_flag_rate"] = float((prod_scores["score"] >= 0.5).mean())
    return out


def _scores(model, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["transaction_id", "tx_datetime", "customer_id", "is_fraud"]].assign(
        score=model.predict(frame)
    )


@dg.asset(
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    deps=[training_dataset],
    description=(
        "A LightGBM candidate trained deterministically (fixed threads and seeds, row-wise) on "
        "the training window with early stopping on its latest part, registered as a new "
        "immutable version with `model.txt` and `lineage.json` (alias `candidate`)."
    ),
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateConfig,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    s = store.open()
    manifest = _current_dataset(s)
    dataset = datasets.load_dataset(s, manifest)
    train_config = TrainConfig(
        num_leaves=config.num_leaves,
        learning_rate=config.learning_rate,
        n_estimators=config.n_estimators,
        min_child_samples=config.min_child_samples,
        class_weight=config.class_weight,
        seed=config.seed,
        num_threads=config.num_threads,
        early_stopping_rounds=config.early_stopping_rounds,
        validation_share=config.validation_share,
    )
    model = training.fit(dataset, train_config)  # the same path `reproduce` retrains with
    metrics = evaluate(_scores(model, dataset.holdout))
    cost = {
        "cpu_seconds": round(model.cpu_seconds, 3),
        "cpu_hour_price": config.cpu_hour_price,
        "training_cost": round(model.cpu_seconds / 3600 * config.cpu_hour_price, 6),
    }
    lineage = training.lineage_record(manifest, train_config, model, metrics, cost)
    reg = registry.open()
    version = reg.register(
        {
            "model.txt": model.model_text.encode(),
            "lineage.json": training.lineage_json(lineage),
        },
        metadata={
            "dataset_id": manifest["id"],
            "params": train_config.to_dict(),
            "metrics": {k: metrics[k] for k in ("auc", "ap", "cp_at_100")},
        },
        actor="dagster:candidate_model",
        reason=f"trained in run {context.run.run_id}",
    )
    reg.set_alias(
        "candidate", version.version, actor="dagster:candidate_model", reason="newly trained"
    )
    importance = model.feature_importance()
    return dg.MaterializeResult(
        metadata={
            "version": version.version,
            "model_sha256": model.sha256,
            "dataset_id": manifest["id"],
            "holdout_auc": float(metrics["auc"]),
            "holdout_ap": float(metrics["ap"]),
            "holdout_cp_at_100": float(metrics["cp_at_100"]),
            "best_iteration": int(model.best_iteration),
            "train_rows": len(dataset.train),
            "training_seconds": round(model.train_seconds, 2),
            "training_cost": cost["training_cost"],
            "params": dg.MetadataValue.json(train_config.to_dict()),
            "feature_importance_gain": dg.MetadataValue.md(
                importance.round(2).to_frame("gain").to_markdown()
            ),
            "lineage": dg.MetadataValue.json(lineage),
        },
        data_version=dg.DataVersion(model.sha256),
    )


def _report(decision, candidate: int, production: int | None, cand_metrics, prod_metrics) -> str:
    rows = [
        ("AUC ROC", "auc"),
        ("Average precision", "ap"),
        ("Card precision@100", "cp_at_100"),
        ("Precision @ threshold", "precision"),
        ("Recall @ threshold", "recall"),
        ("Brier score", "brier"),
    ]
    prod_label = f"v{production}" if production else "(none)"
    lines = [
        f"# Evaluation of candidate v{candidate}",
        "",
        f"**Decision: {decision.decision}** — " + "; ".join(decision.reasons),
        "",
        f"| metric | candidate v{candidate} | production {prod_label} | delta |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        c = cand_metrics.get(key)
        p = prod_metrics.get(key) if prod_metrics else None
        delta = f"{c - p:+.4f}" if c is not None and p is not None else ""
        lines.append(f"| {label} | {c:.4f} | {'' if p is None else f'{p:.4f}'} | {delta} |")
    if decision.ci_low is not None:
        lines += [
            "",
            f"AP difference {decision.ap_delta:+.4f}, bootstrap interval "
            f"[{decision.ci_low:+.4f}, {decision.ci_high:+.4f}] (paired, resampling cards).",
        ]
    return "\n".join(lines) + "\n"


@dg.asset(
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    deps=[candidate_model],
    description=(
        "The candidate and the current production model scored on the same holdout: AUC, AP, "
        "CP@100, precision/recall at the threshold, calibration; a paired bootstrap decides "
        "promote / hold / reject. The Markdown report is kept in `reports/evaluations/`."
    ),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: GateConfig,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    s = store.open()
    reg = registry.open()
    candidate = reg.load("candidate")
    lineage = json.loads(candidate.files["lineage.json"])
    holdout = datasets.load_dataset(s, lineage["dataset"]).holdout
    cand_scores = _scores(load_model(candidate.files["model.txt"].decode()), holdout)
    production = reg.aliases().get("production")
    prod_scores = None
    if production is not None:
        prod_scores = _scores(load_model(reg.get_file(production, "model.txt").decode()), holdout)
    decision = gate(
        cand_scores,
        prod_scores,
        floors={"auc": config.floor_auc, "ap": config.floor_ap},
        min_delta=config.min_delta,
        n_boot=config.n_boot,
    )
    cand_metrics = evaluate(cand_scores)
    prod_metrics = evaluate(prod_scores) if prod_scores is not None else None
    report = _report(decision, candidate.version, production, cand_metrics, prod_metrics)
    key = f"{EVALUATION_PREFIX}/v{candidate.version}"
    record = {
        # what a canary of this candidate should look like next to production on live traffic
        "expected_live": expected_live(cand_scores, prod_scores),
        "candidate": candidate.version,
        "production": production,
        "decision": decision.to_dict(),
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    s.put_bytes(f"{key}.md", report.encode())
    s.put_bytes(f"{key}.json", json.dumps(record, indent=2, default=str).encode())
    return dg.MaterializeResult(
        metadata={
            "decision": decision.decision,
            "candidate": candidate.version,
            "production": production if production is not None else "none",
            "ap_delta": decision.ap_delta if decision.ap_delta is not None else float("nan"),
            "report": dg.MetadataValue.md(report),
            "report_uri": dg.MetadataValue.url(s.uri(f"{key}.md")),
        }
    )


def _latest_decision(store: ObjectStoreResource, registry: ModelRegistryResource) -> dict:
    candidate = registry.open().aliases()["candidate"]
    return json.loads(store.open().get_bytes(f"{EVALUATION_PREFIX}/v{candidate}.json"))


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description="The candidate meets the absolute floors (AUC, AP) on the holdout.",
)
def candidate_meets_floors(
    store: ObjectStoreResource, registry: ModelRegistryResource
) -> dg.AssetCheckResult:
    record = _latest_decision(store, registry)
    failures = record["decision"]["floor_failures"]
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={
            "floors": dg.MetadataValue.json(record["decision"]["floors"]),
            "failures": dg.MetadataValue.json(failures),
        },
    )


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description=(
        "The candidate is significantly better than production: the lower end of the paired "
        "bootstrap interval of the AP difference is above the minimum delta (the first model "
        "passes on floors alone)."
    ),
)
def candidate_beats_production(
    store: ObjectStoreResource, registry: ModelRegistryResource
) -> dg.AssetCheckResult:
    record = _latest_decision(store, registry)
    decision = record["decision"]
    return dg.AssetCheckResult(
        passed=decision["decision"] == "promote",
        severity=dg.AssetCheckSeverity.ERROR,  # hold and reject both keep production as it is
        metadata={
            "decision": decision["decision"],
            "ap_delta": decision.get("ap_delta"),
            "ci_low": decision.get("ci_low"),
            "ci_high": decision.get("ci_high"),
        },
    )
