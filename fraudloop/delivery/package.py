"""Model packages: what a registry version becomes to be deployed, and its staging record.

A package is a directory of plain files in the object store, written create-only (never
overwritten) and committed by its create-only ``manifest.json`` (every file's sha256 and size),
like a registry version::

    models/<name>/packages/<n>/model.txt             LightGBM text model (same bytes as the version)
    models/<name>/packages/<n>/feature_spec.json     feature names in model order, feature-code
                                                     hash, decision threshold, label delay
    models/<name>/packages/<n>/request.schema.json   JSON Schemas of the HTTP contract
    models/<name>/packages/<n>/response.schema.json
    models/<name>/packages/<n>/model_card.md         data, metrics, intended use, limits
    models/<name>/packages/<n>/lineage.json          the version's lineage record
    models/<name>/packages/<n>/Dockerfile            container build context (this directory):
    models/<name>/packages/<n>/build/...             pyproject + uv.lock + the Dagster-free source
    models/<name>/packages/<n>/objects/<sha256>      a file whose name another packager (or a
                                                     killed one) already holds with other bytes
    models/<name>/packages/<n>/manifest.json         commit point: name -> sha256, size (and the
                                                     object key when not stored under the name)
    models/<name>/packages/<n>/staging.json          the staging test's result (outside the
                                                     manifest: written later, may be re-run)

Why a separate artifact rather than serving the registry version directly: the package pins
everything the service needs to agree on (feature order and code, threshold, schema), it is the
unit that a staging test certifies, and it is a complete ``docker build`` context whose image
contains exactly one model and no Dagster. Nothing in it is a pickle.

Dagster-free: the scoring service loads packages through :func:`load_package`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudloop.core.errors import DeliveryError
from fraudloop.core.store import IntegrityError, ObjectNotFound, ObjectStore, sha256_hex
from fraudloop.delivery.contract import (
    batch_request_schema,
    batch_response_schema,
    request_schema,
    response_schema,
)
from fraudloop.features.compute import feature_code_hash
from fraudloop.model.booster import load_model

MANIFEST = "manifest.json"
STAGING = "staging.json"
MODEL_FILE = "model.txt"
SPEC_FILE = "feature_spec.json"
LINEAGE_FILE = "lineage.json"
CARD_FILE = "model_card.md"
DOCKERFILE = "Dockerfile"
OBJECTS = "objects"  # content-addressed files a concurrent packager could not write by name
PACKAGE_FORMAT = 1
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: the core packages the scoring service imports (a test holds serving to them): all an image needs
SERVING_PACKAGES = ("core", "features", "model", "delivery", "serving")
#: distributions the scoring image leaves out, with whatever only they pull in
PRUNED_FROM_IMAGE = (
    "dagster",
    "dagster-webserver",
    "dagster-docker",
    "dagster-postgres",
    "dagster-aws",
    "dagster-k8s",
    "great-expectations",
    "evidently",
    "psycopg2-binary",
    "tqdm",
    "scikit-learn",
)


class PackageError(DeliveryError, RuntimeError):
    """A package is missing, incomplete, or not certified for what was asked of it."""


@dataclass(frozen=True)
class Package:
    """A verified package: every file checked against the manifest."""

    name: str
    version: int
    files: dict[str, bytes]
    manifest: dict[str, Any]

    @property
    def sha256(self) -> str:
        """Identity of the package: the sha256 of its manifest (which hashes every file)."""
        return self.manifest["package_sha256"]

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.files[SPEC_FILE])

    @property
    def model_text(self) -> str:
        return self.files[MODEL_FILE].decode()


def package_prefix(name: str, version: int) -> str:
    return f"models/{name}/packages/{int(version)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


# ---------------------------------------------------------------------------------- contents


def _dockerfile(name: str, version: int) -> str:
    prunes = " ".join(f"--prune {p}" for p in PRUNED_FROM_IMAGE)
    return f"""# syntax=docker/dockerfile:1
# Scoring service image for {name} v{version}: this package directory is the build context.
#   docker build -t fraudloop-{name}:v{version} .
# The image serves exactly this model (`--package-dir`), verified against manifest.json at start;
# features come from the online feature store (FRAUDLOOP_STORE / FRAUDLOOP_HOME / S3 settings).
# Dependencies are the versions of build/uv.lock with Dagster, Great Expectations and Evidently
# pruned from the tree (`uv export --prune` drops a package and what only it pulls in).
FROM python:3.11-slim AS requirements
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${{UV_VERSION}}"
WORKDIR /src
COPY build/pyproject.toml build/uv.lock build/README.md ./
RUN uv export --locked --no-dev --no-hashes --no-emit-project --format requirements.txt \\
      {prunes} --output-file requirements.txt \\
 && if grep -iE '^(dagster|great-expectations|evidently)' requirements.txt; then \\
      echo "a pipeline-only dependency leaked into the serving image" >&2; exit 1; fi

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/opt/fraudloop/app FRAUDLOOP_HOME=/opt/fraudloop/home
RUN groupadd --system --gid 10001 fraudloop \\
 && useradd --system --uid 10001 --gid fraudloop --home-dir /opt/fraudloop fraudloop
COPY --from=requirements /src/requirements.txt /opt/fraudloop/requirements.txt
RUN pip install --no-cache-dir --no-deps --requirement /opt/fraudloop/requirements.txt \\
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('dagster') is not None)"
COPY build/src/fraudloop /opt/fraudloop/app/fraudloop
COPY . /opt/fraudloop/package
RUN rm -rf /opt/fraudloop/package/build && mkdir -p /opt/fraudloop/home \\
 && chown fraudloop:fraudloop /opt/fraudloop/home
USER fraudloop
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/readyz')"
ENTRYPOINT ["python", "-m", "fraudloop.serving"]
CMD ["--package-dir", "/opt/fraudloop/package", "--host", "0.0.0.0", "--port", "8000"]
"""


def _build_context(root: Path) -> dict[str, bytes]:
    """pyproject, uv.lock and the source of what serving imports (:data:`SERVING_PACKAGES`):
    not the simulator, ingestion, validation or monitoring."""
    files: dict[str, bytes] = {}
    for fname in ("pyproject.toml", "uv.lock"):
        path = root / fname
        if not path.exists():
            raise PackageError(
                f"{path} not found: packaging needs the project's pyproject.toml and uv.lock "
                "(run it from a checkout or an image that ships them)"
            )
        files[f"build/{fname}"] = path.read_bytes()
    files["build/README.md"] = b"Build context of a fraudloop model package; see model_card.md.\n"
    sources = [root / "fraudloop" / "__init__.py"]
    for package in SERVING_PACKAGES:
        sources += sorted((root / "fraudloop" / package).rglob("*.py"))
    for path in sources:
        rel = path.relative_to(root).as_posix()
        files[f"build/src/{rel}"] = path.read_bytes()
    return files


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def model_card(
    name: str,
    version: int,
    lineage: dict[str, Any],
    spec: dict[str, Any],
    evaluation: dict[str, Any] | None,
) -> str:
    """The model card (Markdown): what the model is, what it learnt from, how good, its limits."""
    dataset = lineage.get("dataset", {})
    spec_ds = dataset.get("spec", {})
    metrics = lineage.get("metrics", {})
    lines = [
        f"# Model card: {name} v{version}",
        "",
        "## Intended use",
        "Scores card-present and card-not-present transactions for fraud in real time. A score "
        f">= {spec['decision_threshold']} sends the transaction to review (`decision: review`); "
        "the score is a calibrated probability, so a team may pick another operating point. "
        "It is decision support for fraud investigators, not an automatic block.",
        "",
        "## Data",
        f"- dataset id `{lineage.get('dataset_id', '?')}`; cutoff {spec_ds.get('cutoff', '?')}, "
        f"training window {spec_ds.get('window_days', '?')} days, holdout "
        f"{spec_ds.get('holdout_days', '?')} days, labels as known at the cutoff "
        f"(label delay {spec_ds.get('label_delay_days', '?')} days)",
        f"- features ({len(spec['features'])}, in model order): "
        + ", ".join(f"`{f}`" for f in spec["features"]),
        f"- feature code `{spec['feature_code_hash'][:12]}`; online features must come from the "
        "same code (the service refuses an online state built by other code)",
        "",
        "## Metrics on the holdout",
        "| metric | value |",
        "| --- | --- |",
    ]
    for key in ("auc", "ap", "cp_at_100", "precision", "recall", "brier", "ece"):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    if evaluation:
        decision = evaluation.get("decision", {})
        lines += [
            "",
            "## Evaluation gate",
            f"- decision: **{decision.get('decision', '?')}** against production "
            f"v{evaluation.get('production', 'none')}; AP delta {_fmt(decision.get('ap_delta'))} "
            f"(bootstrap interval {_fmt(decision.get('ci_low'))} .. "
            f"{_fmt(decision.get('ci_high'))})",
        ]
    config = lineage.get("config", {})
    lines += [
        "",
        "## Training",
        f"- LightGBM {lineage.get('libraries', {}).get('lightgbm', '?')}, deterministic, seed "
        f"{lineage.get('seed', '?')}, {lineage.get('best_iteration', '?')} trees, "
        f"num_leaves {config.get('num_leaves', '?')}, learning rate "
        f"{config.get('learning_rate', '?')}",
        f"- {_fmt(lineage.get('train_seconds'))} s wall, {_fmt(lineage.get('cpu_seconds'))} CPU s;"
        f" git `{str(lineage.get('git_commit', '?'))[:12]}`; rebuild bit-identically with "
        f"`fraudloop models reproduce {version}`",
        "",
        "## Limits",
        "- Trained on simulated card transactions (the handbook's generator); fraud patterns not "
        "seen in the window (a new compromised-terminal campaign, a new spending shape) are "
        "missed until monitoring detects drift and a retrained version is promoted.",
        "- Labels mature after the label delay; metrics of the most recent days are provisional.",
        "- Terminal-risk features use labels known before the transaction only; a terminal new to "
        "the system scores as low risk.",
        "- Scores are comparable across versions only roughly; compare versions on the same "
        "traffic (shadow / canary analysis), not on different weeks.",
        "",
    ]
    return "\n".join(lines)


def build_package(
    store: ObjectStore,
    registry,
    version: int,
    *,
    evaluation: dict[str, Any] | None = None,
    decision_threshold: float | None = None,
    project_root: Path = PROJECT_ROOT,
) -> Package:
    """Write the package of registry ``version`` (idempotent: an existing one is verified and
    returned). ``registry`` is a :class:`fraudloop.model.registry.ModelRegistry`.

    The decision threshold is the one the version was evaluated at (``evaluation``, the record
    of `fraudloop.model.evaluation.Evaluation`), so the gate, the canary's expected flag rate and
    the service flag at the same score; ``decision_threshold`` is for a version packaged without
    an evaluation (and must agree with it when both are given)."""

    recorded = evaluation.get("threshold") if evaluation else None
    if recorded is not None and decision_threshold not in (None, recorded):
        raise PackageError(
            f"v{version} was evaluated at threshold {recorded}, not {decision_threshold}"
        )
    decision_threshold = recorded if recorded is not None else decision_threshold
    if decision_threshold is None or not 0 < decision_threshold < 1:
        raise PackageError(f"a decision threshold in (0, 1) is needed, got {decision_threshold}")
    loaded = registry.load(version)  # verified against the version's manifest
    prefix = package_prefix(registry.name, loaded.version)
    # what killed packagers (or registrations) left under the model, committed or not
    store.sweep_temp_files(f"models/{registry.name}/")
    if store.exists(f"{prefix}/{MANIFEST}"):
        return load_package(store, registry.name, loaded.version)
    model_text = loaded.files[MODEL_FILE].decode()
    lineage = json.loads(loaded.files[LINEAGE_FILE])
    model = load_model(model_text)
    spec = {
        "format": PACKAGE_FORMAT,
        "model": registry.name,
        "version": loaded.version,
        "model_sha256": sha256_hex(loaded.files[MODEL_FILE]),
        "features": list(model.features),
        "feature_code_hash": lineage.get("feature_code_hash", feature_code_hash()),
        "label_delay_days": lineage.get("dataset", {}).get("spec", {}).get("label_delay_days"),
        "decision_threshold": decision_threshold,
        "num_trees": model.num_trees,
    }
    files: dict[str, bytes] = {
        MODEL_FILE: loaded.files[MODEL_FILE],
        LINEAGE_FILE: loaded.files[LINEAGE_FILE],
        SPEC_FILE: _json(spec),
        "request.schema.json": _json(request_schema()),
        "response.schema.json": _json(response_schema()),
        "batch_request.schema.json": _json(batch_request_schema()),
        "batch_response.schema.json": _json(batch_response_schema()),
        CARD_FILE: model_card(registry.name, loaded.version, lineage, spec, evaluation).encode(),
        DOCKERFILE: _dockerfile(registry.name, loaded.version).encode(),
        **_build_context(project_root),
    }
    entries = {fname: _stage_file(store, prefix, fname, data) for fname, data in files.items()}
    body = {
        "format": PACKAGE_FORMAT,
        "model": registry.name,
        "version": loaded.version,
        "model_sha256": spec["model_sha256"],
        "created_at": _now(),
        "files": entries,
    }
    body["package_sha256"] = sha256_hex(json.dumps(body, sort_keys=True).encode())
    # the commit point; a concurrent packager may have won, and then its package is verified
    store.put_if_absent(f"{prefix}/{MANIFEST}", _json(body))
    return load_package(store, registry.name, loaded.version)


def _stage_file(store: ObjectStore, prefix: str, fname: str, data: bytes) -> dict[str, Any]:
    """Write one package file create-only and return its manifest entry.

    Nothing in a package directory is ever overwritten: two packagers of one version (the CLI
    without the evaluation, the asset with it) or a packager and what a killed one left may hold
    different bytes for the same name, and an overwrite between another packager's write and its
    manifest would leave a committed package that never verifies. So the first writer of a name
    keeps it, and different bytes go to a content-addressed ``objects/<sha256>`` that the entry
    names (``key``). Whichever manifest commits names bytes that exist and cannot change.
    """
    sha = sha256_hex(data)
    entry: dict[str, Any] = {"sha256": sha, "size": len(data)}
    if store.put_if_absent(f"{prefix}/{fname}", data):
        return entry
    try:
        if sha256_hex(store.get_bytes(f"{prefix}/{fname}")) == sha:
            return entry  # the same bytes: share them
    except ObjectNotFound:
        pass
    store.put_if_absent(f"{prefix}/{OBJECTS}/{sha}", data)
    return {**entry, "key": f"{OBJECTS}/{sha}"}


def load_package(
    store: ObjectStore, name: str, version: int, *, include_build: bool = False
) -> Package:
    """A package with every file verified against its manifest; :class:`IntegrityError` if a
    file was changed or is missing, :class:`PackageError` if the package does not exist."""
    prefix = package_prefix(name, version)
    try:
        manifest = json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    except ObjectNotFound:
        raise PackageError(
            f"{name} v{version} has no package ({prefix}); materialize model_package for it"
        ) from None

    def read(fname: str) -> bytes:
        key = manifest["files"][fname].get("key", fname)
        try:
            return store.get_bytes(f"{prefix}/{key}")
        except ObjectNotFound:
            raise IntegrityError(f"package file {prefix}/{key} is missing") from None

    return _verified(manifest, read, store.uri(prefix), include_build)


def load_package_dir(path: str | Path) -> Package:
    """A package exported to a directory (the container image), verified the same way."""
    root = Path(path).resolve()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise PackageError(f"{root} holds no package ({MANIFEST} missing)") from None

    def read(fname: str) -> bytes:
        try:
            return (root / fname).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"package file {root / fname} is missing") from None

    return _verified(manifest, read, str(root), include_build=False)


def _verified(
    manifest: dict[str, Any], read: Callable[[str], bytes], where: str, include_build: bool
) -> Package:
    body = {k: v for k, v in manifest.items() if k != "package_sha256"}
    if sha256_hex(json.dumps(body, sort_keys=True).encode()) != manifest.get("package_sha256"):
        raise IntegrityError(f"{where}/{MANIFEST} does not match its own package_sha256")
    files = {}
    for fname, entry in sorted(manifest["files"].items()):
        if fname.startswith("build/") and not include_build:
            continue
        data = read(fname)
        if len(data) != entry["size"] or sha256_hex(data) != entry["sha256"]:
            raise IntegrityError(
                f"package file {where}/{fname} does not match the manifest sha256 "
                "(tampered or corrupted): refusing to use the package"
            )
        files[fname] = data
    if sha256_hex(files[MODEL_FILE]) != manifest["model_sha256"]:
        raise IntegrityError(f"{where}/{MODEL_FILE} is not the model the manifest names")
    return Package(
        name=manifest["model"], version=int(manifest["version"]), files=files, manifest=manifest
    )


def export_package(store: ObjectStore, name: str, version: int, target: str | Path) -> Path:
    """Write the verified package, build context included, to a directory (``docker build`` it)."""
    package = load_package(store, name, version, include_build=True)
    root = Path(target)
    for fname, data in package.files.items():
        path = root / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / MANIFEST).write_bytes(_json(package.manifest))
    return root


# ---------------------------------------------------------------------------------- staging


def record_staging(store: ObjectStore, package: Package, report: dict[str, Any]) -> dict:
    """Store the staging test's result next to the package (latest result wins)."""
    record = {
        **report,
        "model": package.name,
        "version": package.version,
        "package_sha256": package.sha256,
        "tested_at": _now(),
    }
    store.put_bytes(f"{package_prefix(package.name, package.version)}/{STAGING}", _json(record))
    return record


def staging_record(store: ObjectStore, name: str, version: int) -> dict | None:
    try:
        return json.loads(store.get_bytes(f"{package_prefix(name, version)}/{STAGING}"))
    except ObjectNotFound:
        return None


def require_staged(store: ObjectStore, name: str, version: int) -> Package:
    """The verified package of ``version`` if it passed its staging test; PackageError if not.

    The gate in front of ``shadow`` and ``canary``: only a package proven in staging gets traffic.
    """
    package = load_package(store, name, version)
    record = staging_record(store, name, version)
    if record is None:
        raise PackageError(f"{name} v{version}: its package has not been staging-tested")
    if record.get("package_sha256") != package.sha256:
        raise PackageError(f"{name} v{version}: the staging record is for another package")
    if not record.get("passed"):
        failed = [c["name"] for c in record.get("checks", []) if not c.get("passed")]
        raise PackageError(f"{name} v{version} failed its staging test: {', '.join(failed)}")
    return package
