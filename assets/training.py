"""Continuous integration for the model: dataset -> candidate -> evaluation gate.

Thin: `fraudloop.model.datasets` builds the dataset as of a cutoff (its manifest is the dataset
version), `fraudloop.model.training` trains and registers the candidate, and
`fraudloop.model.evaluation` scores candidate and production on the same holdout and decides.
What each step made travels to the next as an asset value (`resources.asset_values`): the
evaluation the gate checks judge, the package's model card shows and the release acts on is the
one this run computed, not whatever the `candidate` alias points at by then.
"""

import dagster as dg
import pandas as pd

from assets import keys
from assets.common import RETRY, run_config
from fraudloop.core.processes import peak_rss_mb
from fraudloop.model import datasets
from fraudloop.model.booster import TrainConfig
from fraudloop.model.evaluation import Evaluation, evaluate_candidate, write_evaluation
from fraudloop.model.policy import GatePolicy
from fraudloop.model.training import Candidate, train_candidate
from resources.alerts import AlertsResource
from resources.reports import ReportsResource
from resources.settings import SettingsResource
from resources.store import ObjectStoreResource
from resources.training import ModelRegistryResource, TrainingResource

VALUES = "asset_values"  # the IO manager that carries the values between steps


class DatasetConfig(dg.Config):
    """What the candidate learns from. `cutoff` ("as of", ISO 8601 UTC) defaults to the end of
    the newest hour with stored features; a past cutoff trains exactly what was known then
    (backtests). Window and holdout default to the training resource's."""

    cutoff: str | None = None
    window_days: int | None = None
    holdout_days: int | None = None


CandidateConfig = run_config(
    TrainConfig,
    "CandidateConfig",
    "LightGBM hyperparameters (defaults: what training_job ships, `fraudloop.model.booster`); "
    "the deterministic settings are always on.",
    exclude=("features",),
)
GateConfig = run_config(
    GatePolicy,
    "GateConfig",
    "Floors every model must meet, and how much better than production a candidate must be "
    "(the lower end of the bootstrap interval of the AP difference).",
)


@dg.asset(
    key=keys.TRAINING_DATASET,
    group_name="training",
    kinds={"pandas", "parquet"},
    owners=["team:data-science"],
    deps=[keys.TRANSACTION_FEATURES, keys.RAW_LABELS],
    retry_policy=RETRY,
    io_manager_key=VALUES,
    description=(
        "The training window (default: the last 84 days whose labels have matured as of the "
        "cutoff) and the holdout after it, joined with the labels known as of the cutoff. Its "
        "manifest (feature partitions and label days with their sha256) is the dataset version."
    ),
)
def training_dataset(
    config: DatasetConfig,
    store: ObjectStoreResource,
    training: TrainingResource,
    settings: SettingsResource,
) -> dg.MaterializeResult[dict]:
    s, policy = store.open(), training.policy()
    cutoff = pd.Timestamp(config.cutoff) if config.cutoff else datasets.default_cutoff(s)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    spec = datasets.DatasetSpec(
        cutoff=cutoff,
        window_days=config.window_days or policy.train_window_days,
        holdout_days=config.holdout_days or policy.holdout_days,
        label_delay_days=settings.label_delay_days,
        max_train_rows=policy.train_max_rows,
    )
    dataset = datasets.build_dataset(s, spec)
    manifest = dataset.manifest
    if dataset.train.empty or dataset.holdout.empty:
        raise dg.Failure(f"empty training or holdout set as of {cutoff} (manifest {manifest})")
    return dg.MaterializeResult(
        value=manifest,
        metadata={
            "dataset_id": manifest["id"],
            "cutoff": cutoff.isoformat(),
            "train_rows": len(dataset.train),
            "train_frauds": int(dataset.train["is_fraud"].sum()),
            "holdout_rows": len(dataset.holdout),
            "holdout_frauds": int(dataset.holdout["is_fraud"].sum()),
            "skipped_hours": len(manifest.get("skipped_hours", [])),
            "unlabelled_rows": int(manifest["rows"]["unlabelled_rows"]),
            # 1.0 = the whole window; below, the share of legitimate transactions kept
            "negative_rate": float(manifest.get("sampling", {}).get("negative_rate", 1.0)),
            "process_peak_rss_mb": peak_rss_mb(),
            "manifest": dg.MetadataValue.json(manifest),
        },
        data_version=dg.DataVersion(manifest["id"]),
    )


@dg.asset(
    key=keys.CANDIDATE_MODEL,
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    ins={"training_dataset": dg.AssetIn(keys.TRAINING_DATASET)},
    io_manager_key=VALUES,
    description=(
        "A LightGBM candidate trained deterministically (fixed threads and seeds, row-wise) on "
        "the training window with early stopping on its latest part, registered as a new "
        "immutable version with `model.txt`, `lineage.json` and its drift reference (alias "
        "`candidate`)."
    ),
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateConfig,
    training_dataset: dict,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    settings: SettingsResource,
) -> dg.MaterializeResult[dict]:
    dataset = datasets.load_dataset(store.open(), training_dataset)
    candidate = train_candidate(
        registry.open(),
        dataset,
        TrainConfig(**config.model_dump()),
        cpu_hour_price=settings.cpu_hour_price,
        actor="dagster:candidate_model",
        reason=f"trained in run {context.run.run_id}",
    )
    importance = pd.Series(candidate.importance).sort_values(ascending=False)
    return dg.MaterializeResult(
        value=candidate.to_dict(),
        metadata={
            "version": candidate.version,
            "model_sha256": candidate.model_sha256,
            "dataset_id": candidate.dataset_id,
            "holdout_auc": float(candidate.metrics["auc"]),
            "holdout_ap": float(candidate.metrics["ap"]),
            "holdout_cp_at_100": float(candidate.metrics["cp_at_100"]),
            "best_iteration": candidate.best_iteration,
            "train_rows": candidate.train_rows,
            "training_seconds": candidate.training_seconds,
            "training_cost": candidate.cost["training_cost"],
            "process_peak_rss_mb": peak_rss_mb(),
            "params": dg.MetadataValue.json(candidate.config),
            "feature_importance_gain": dg.MetadataValue.md(
                importance.to_frame("gain").to_markdown()
            ),
            "lineage": dg.MetadataValue.json(candidate.lineage),
        },
        data_version=dg.DataVersion(candidate.model_sha256),
    )


@dg.asset(
    key=keys.MODEL_EVALUATION,
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    ins={"candidate_model": dg.AssetIn(keys.CANDIDATE_MODEL)},
    io_manager_key=VALUES,
    check_specs=[
        dg.AssetCheckSpec(
            "candidate_meets_floors",
            asset=keys.MODEL_EVALUATION,
            blocking=True,
            description=(
                "The candidate meets the absolute floors (AUC, AP) on the holdout (WARN when "
                "not: a rejected candidate is the gate working; nothing is packaged)."
            ),
        ),
        dg.AssetCheckSpec(
            "candidate_beats_production",
            asset=keys.MODEL_EVALUATION,
            blocking=True,
            description=(
                "The candidate is significantly better than production: the lower end of the "
                "paired bootstrap interval of the AP difference is above the minimum delta (the "
                "first model passes on floors alone). WARN when not: the candidate is held, "
                "nothing is packaged, production stays, the run is green."
            ),
        ),
    ],
    description=(
        "The candidate and the current production model scored on the same holdout, at the "
        "decision threshold the service flags at: AUC, AP, CP@100, precision/recall, "
        "calibration; a paired bootstrap decides promote / hold / reject. The evaluation is the "
        "evidence the gate checks, the package and the release use; its Markdown report is kept "
        "in `reports/evaluations/`."
    ),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: GateConfig,
    candidate_model: dict,
    store: ObjectStoreResource,
    registry: ModelRegistryResource,
    training: TrainingResource,
    alerts: AlertsResource,
    reports: ReportsResource,
):  # returns dg.MaterializeResult with the gate's check results
    s = store.open()
    candidate = Candidate.from_dict(candidate_model)
    evaluation = evaluate_candidate(
        s,
        registry.open(),
        candidate.version,
        GatePolicy(**config.model_dump()),
        threshold=training.decision_threshold,
    )
    report_key = write_evaluation(s, evaluation)
    _alert_verdict(alerts, registry.model_name, evaluation)
    decision = evaluation.decision
    return dg.MaterializeResult(
        value=evaluation.to_dict(),
        metadata={
            "decision": evaluation.verdict,
            "candidate": evaluation.candidate,
            "production": evaluation.production if evaluation.production else "none",
            "threshold": evaluation.threshold,
            "ap_delta": decision["ap_delta"] if decision["ap_delta"] is not None else float("nan"),
            "process_peak_rss_mb": peak_rss_mb(),
            "report": dg.MetadataValue.md(evaluation.report),
            "report_link": dg.MetadataValue.url(reports.link(report_key)),
        },
        check_results=gate_checks(evaluation),
    )


def gate_checks(evaluation: Evaluation) -> list[dg.AssetCheckResult]:
    """The gate's checks, judged on this evaluation (the one of this run).

    A held or rejected candidate is the loop working, not a breakage: the checks fail with
    WARN (yellow in the UI, the run stays green) and `model_package` packages nothing unless
    the verdict is promote, so release never runs and production stays as it is. ERROR is
    left for what is actually broken (the evaluation step raising)."""
    decision = evaluation.decision
    floors = dg.AssetCheckResult(
        check_name="candidate_meets_floors",
        passed=not evaluation.floor_failures,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "floors": dg.MetadataValue.json(decision["floors"]),
            "failures": dg.MetadataValue.json(evaluation.floor_failures),
        },
    )
    beats = dg.AssetCheckResult(
        check_name="candidate_beats_production",
        passed=evaluation.verdict == "promote",
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "decision": evaluation.verdict,
            "ap_delta": decision.get("ap_delta"),
            "ci_low": decision.get("ci_low"),
            "ci_high": decision.get("ci_high"),
        },
    )
    return [floors, beats]


def _alert_verdict(alerts: AlertsResource, model: str, evaluation: Evaluation) -> None:
    """A rejected candidate (under the floors: the data or the training may be wrong) is one
    warning per model until a candidate is promoted; a held one (not better: noise never
    promotes) alerts nobody."""
    incident = f"training/{model}/rejected"
    if evaluation.verdict == "reject":
        alerts.send(
            title=f"candidate v{evaluation.candidate} rejected: under the floors",
            summary="; ".join(f"{k} {v:.4f}" for k, v in evaluation.floor_failures.items()),
            dedup_key=incident,
            severity="warning",
            candidate=evaluation.candidate,
            production=evaluation.production,
        )
    elif evaluation.verdict == "promote":
        alerts.resolve(incident, f"candidate v{evaluation.candidate} passed the gate")


def build() -> list:
    """The training stage's assets (no partitions: a candidate is trained as of a cutoff)."""
    return [training_dataset, candidate_model, model_evaluation]
