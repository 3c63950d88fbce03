"""Training a candidate, its lineage record, and bit-for-bit reproduction from that record.

A candidate is trained on a dataset (:mod:`fraudloop.model.datasets`) with a deterministic
LightGBM configuration (:mod:`fraudloop.model.booster`) and registered with everything needed to
audit and rebuild it: ``lineage.json`` (dataset manifest, feature-code hash, config and seed,
library versions, uv.lock hash, git commit, metrics, time and cost). `fraudloop models reproduce`
retrains from that record and must produce a byte-identical model file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core.store import ObjectStore, sha256_hex
from fraudloop.features.compute import FEATURE_NAMES, feature_code_hash
from fraudloop.model.booster import TrainConfig, TrainedModel, train
from fraudloop.model.datasets import Dataset, load_dataset
from fraudloop.model.evaluation import evaluate, score_frame
from fraudloop.model.registry import UnknownFileError

MANIFEST_FORMAT = 1
LIBRARIES: tuple[str, ...] = ("lightgbm", "numpy", "pandas", "scikit-learn", "pyarrow")
MODEL_FILE = "model.txt"
LINEAGE_FILE = "lineage.json"
#: training rows (a sample) with the model's own scores: what "no drift" looks like for it
DRIFT_REFERENCE_FILE = "drift_reference.parquet"
DRIFT_REFERENCE_ROWS = 50_000
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def fit(dataset: Dataset, config: TrainConfig, splits: Iterable[str] = ("train",)) -> TrainedModel:
    """Train on the given splits of a dataset (the one way lineage and reproduce train); a
    down-sampled window brings its weights (``weight``; 1 for the rows of an unsampled split)."""
    frames = [getattr(dataset, s) for s in splits]
    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    weights = data["weight"].fillna(1.0).to_numpy() if "weight" in data.columns else None
    return train(data, data["is_fraud"].to_numpy(), config, weights)


def drift_reference(model, train: pd.DataFrame, rows: int = DRIFT_REFERENCE_ROWS) -> bytes:
    """Parquet bytes of a fixed-size sample of the training rows' features with the model's own
    scores: the reference monitoring compares served traffic with. Produced once, with the
    model, and registered beside it, so monitoring never rebuilds a training artifact. A
    down-sampled window is drawn by its weights, so the reference has the traffic's class mix."""
    weights = train["weight"] if "weight" in train.columns else None
    sample = train.sample(rows, weights=weights, random_state=0) if len(train) > rows else train
    frame = sample[list(FEATURE_NAMES)].assign(score=model.predict(sample))
    sink = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(sink, index=False)
    return sink.getvalue()


@dataclass(frozen=True)
class Candidate:
    """A trained and registered candidate: what travels from training to its evaluation."""

    version: int
    model_sha256: str
    dataset_id: str
    metrics: dict[str, Any]
    cost: dict[str, Any]
    config: dict[str, Any]
    best_iteration: int
    train_rows: int
    training_seconds: float
    importance: dict[str, float]
    lineage: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


def train_candidate(
    registry,
    dataset: Dataset,
    config: TrainConfig,
    *,
    cpu_hour_price: float,
    actor: str,
    reason: str,
) -> Candidate:
    """Train `config` on the dataset's window, evaluate it on its holdout, and register it as a
    new immutable version (``model.txt``, ``lineage.json``, the drift reference) with the alias
    ``candidate``. The one way candidates are made: the asset, the CLI and the tests call it."""
    model = fit(dataset, config)  # the same path `reproduce` retrains with
    metrics = evaluate(score_frame(model, dataset.holdout))
    cost = {
        "cpu_seconds": round(model.cpu_seconds, 3),
        "cpu_hour_price": cpu_hour_price,
        "training_cost": round(model.cpu_seconds / 3600 * cpu_hour_price, 6),
    }
    lineage = lineage_record(dataset.manifest, config, model, metrics, cost)
    version = registry.register(
        {
            MODEL_FILE: model.model_text.encode(),
            LINEAGE_FILE: lineage_json(lineage),
            DRIFT_REFERENCE_FILE: drift_reference(model, dataset.train),
        },
        metadata={
            "dataset_id": dataset.id,
            "params": config.to_dict(),
            "metrics": {k: metrics[k] for k in ("auc", "ap", "cp_at_100")},
        },
        actor=actor,
        reason=reason,
    )
    registry.set_alias("candidate", version.version, actor=actor, reason="newly trained")
    return Candidate(
        version=version.version,
        model_sha256=model.sha256,
        dataset_id=dataset.id,
        metrics={k: metrics[k] for k in ("auc", "ap", "cp_at_100", "precision", "recall")},
        cost=cost,
        config=config.to_dict(),
        best_iteration=int(model.best_iteration),
        train_rows=len(dataset.train),
        training_seconds=round(model.train_seconds, 2),
        importance={k: round(float(v), 2) for k, v in model.feature_importance().items()},
        lineage=lineage,
    )


def training_cost(registry, version: int) -> float | None:
    """What training `version` cost (its lineage records it; None for a version without one),
    shown beside the inference cost."""
    try:
        lineage = json.loads(registry.get_file(version, LINEAGE_FILE))
    except UnknownFileError:
        return None
    cost = (lineage.get("cost") or {}).get("training_cost")
    return None if cost is None else float(cost)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _uv_lock_sha() -> str | None:
    path = PROJECT_ROOT / "uv.lock"
    return sha256_hex(path.read_bytes()) if path.is_file() else None


def _git_commit() -> str:
    env = os.environ.get("FRAUDLOOP_GIT_COMMIT")
    if env:
        return env
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else "unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def lineage_record(
    manifest: dict[str, Any],
    config: TrainConfig,
    model: TrainedModel,
    metrics: dict[str, Any],
    cost: dict[str, Any],
    *,
    splits: Iterable[str] = ("train",),
) -> dict[str, Any]:
    """Everything needed to audit and rebuild a model (store it as ``lineage.json``)."""
    record = {
        "format": MANIFEST_FORMAT,
        "dataset": manifest,
        "dataset_id": manifest["id"],
        "splits": list(splits),
        "feature_code_hash": feature_code_hash(),
        "config": config.to_dict(),
        "seed": config.seed,
        "libraries": library_versions(),
        "uv_lock_sha256": _uv_lock_sha(),
        "git_commit": _git_commit(),
        "model_sha256": model.sha256,
        "best_iteration": model.best_iteration,
        "metrics": metrics,
        "train_seconds": model.train_seconds,
        "cpu_seconds": model.cpu_seconds,
        "cost": cost,
    }
    return json.loads(json.dumps(record, default=_json_default))


def lineage_json(record: dict[str, Any]) -> bytes:
    """The bytes to register as ``lineage.json``."""
    return json.dumps(record, indent=2, sort_keys=True, default=_json_default).encode()


@dataclass(frozen=True)
class ReproduceResult:
    identical: bool
    recorded_sha: str  # sha256 of the registered model.txt
    rebuilt_sha: str
    seconds: float
    version: int = 0
    dataset_id: str = ""
    #: library -> {"recorded": ..., "current": ...} for every library whose version differs
    library_mismatches: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: the feature code changed since training (the stored features are still what was used)
    feature_code_changed: bool = False
    notes: tuple[str, ...] = ()


def reproduce(store: ObjectStore, registry, version: int | str) -> ReproduceResult:
    """Retrain a registered version from its lineage and compare the model file sha256.

    ``registry`` is a :class:`fraudloop.model.registry.ModelRegistry`; files are read verified
    (its IntegrityError on tampering), and the dataset objects too (see :func:`load_dataset`).
    """
    started = time.perf_counter()
    loaded = registry.load(version)
    lineage = json.loads(loaded.files[LINEAGE_FILE])
    recorded_sha = sha256_hex(loaded.files[MODEL_FILE])
    dataset = load_dataset(store, lineage["dataset"])
    config = TrainConfig.from_dict(lineage["config"])
    rebuilt = fit(dataset, config, lineage.get("splits", ["train"]))
    current = library_versions()
    mismatches = {
        name: {"recorded": recorded, "current": current.get(name)}
        for name, recorded in sorted(lineage.get("libraries", {}).items())
        if recorded != current.get(name)
    }
    notes = []
    if lineage.get("model_sha256") not in (None, recorded_sha):
        notes.append("lineage model_sha256 differs from the registered model.txt")
    if "lightgbm" in mismatches:
        notes.append("lightgbm version differs: a different model file may be legitimate")
    identical = rebuilt.sha256 == recorded_sha
    return ReproduceResult(
        identical=identical,
        recorded_sha=recorded_sha,
        rebuilt_sha=rebuilt.sha256,
        seconds=time.perf_counter() - started,
        version=loaded.version,
        dataset_id=dataset.id,
        library_mismatches=mismatches,
        feature_code_changed=lineage.get("feature_code_hash") != feature_code_hash(),
        notes=tuple(notes),
    )
