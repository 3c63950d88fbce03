"""What the crash suite's writer processes do, and the invariants checked after each kill.

Run as ``python -m tests.chaos.workload OP ROOT`` in a child process. With
``FRAUDLOOP_CHAOS_KILL_AT=<n>:<before|after>`` the child SIGKILLs itself at its n-th commit
(``os.replace`` or ``os.link``: the moment a local write becomes visible), just before it
(a finished temp file that is never renamed) or just after it (renamed, directory not yet
fsynced, the rest of the operation never done). Without it, the parent kills the child after a
seeded delay. Each operation is idempotent, so a rerun finishes what a killed run began.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT, hour_start
from fraudloop.core.store import LocalObjectStore, sha256_hex
from fraudloop.delivery import rollout
from fraudloop.delivery.package import build_package, load_package, record_staging
from fraudloop.delivery.policy import RolloutPolicy
from fraudloop.model.registry import ModelRegistry

KILL_AT = "FRAUDLOOP_CHAOS_KILL_AT"
MODEL_TEXT = "FRAUDLOOP_CHAOS_MODEL"  # path of a small LightGBM text model (packaging)
HOURS = [
    (pd.Timestamp("2018-04-01", tz="UTC") + pd.Timedelta(hours=h)).strftime(HOUR_KEY_FORMAT)
    for h in range(4)
]
MODEL_TAGS = (1, 2, 3)
MODEL_BYTES = 1 << 20  # a model file of the size that made the leftovers worth sweeping


def hour_frame(index: int, rows: int = 20_000) -> pd.DataFrame:
    """The canonical transactions of hour `index`: the same every run (the rerun converges)."""
    rng = np.random.default_rng(index)
    start = hour_start(HOURS[index])
    return pd.DataFrame(
        {
            "transaction_id": pd.array([f"h{index}-{i}" for i in range(rows)], dtype="string"),
            "tx_datetime": start + pd.to_timedelta(rng.integers(0, 3600, rows), unit="s"),
            "customer_id": pd.array([f"c{i % 97}" for i in range(rows)], dtype="string"),
            "terminal_id": pd.array([f"t{i % 89}" for i in range(rows)], dtype="string"),
            "amount": rng.uniform(1, 200, rows).round(2),
        }
    )


def model_files(tag: int) -> dict[str, bytes]:
    rng = np.random.default_rng(1000 + tag)
    return {
        "model.txt": rng.integers(0, 256, MODEL_BYTES, dtype=np.uint8).tobytes(),
        "lineage.json": json.dumps({"tag": tag}).encode(),
    }


def ingest(store: LocalObjectStore) -> None:
    """Raw ingestion writes: every hour's partition (object, then pointer)."""
    for index, key in enumerate(HOURS):
        tables.write_partition(store, "transactions", key, hour_frame(index), [])


def register(store: LocalObjectStore) -> None:
    """Registration and promotion: each tag committed once, production on the newest."""
    registry = ModelRegistry(store)
    for tag in MODEL_TAGS:
        committed = {v.metadata.get("tag"): v.version for v in registry.list_versions()}
        version = committed.get(tag)
        if version is None:
            version = registry.register(
                model_files(tag), {"tag": tag}, actor="chaos", reason=f"tag {tag}"
            ).version
        registry.promote(version, actor="chaos", reason=f"tag {tag} to production")


def small_model_text(path: Path) -> str:
    """A real LightGBM model of three features, trained once and kept at `path`."""
    if not path.exists():
        import lightgbm as lgb

        rng = np.random.default_rng(7)
        x = pd.DataFrame(rng.normal(size=(400, 3)), columns=["amount", "velocity", "risk"])
        y = (x["amount"] + rng.normal(scale=0.5, size=400) > 1).astype(int)
        params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": 1}
        booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=5)
        path.write_text(booster.model_to_string())
    return path.read_text()


def package(store: LocalObjectStore) -> None:
    """Packaging: the model registered once (tag "pkg"), then its package built."""
    registry = ModelRegistry(store)
    versions = [v.version for v in registry.list_versions() if v.metadata.get("tag") == "pkg"]
    if not versions:
        files = {
            "model.txt": Path(os.environ[MODEL_TEXT]).read_bytes(),
            "lineage.json": json.dumps({"seed": 1, "dataset": {"spec": {}}}).encode(),
        }
        versions = [registry.register(files, {"tag": "pkg"}, "chaos", "package me").version]
    build_package(store, registry, versions[0], decision_threshold=0.5)


LOG_COLUMNS = [
    "request_id", "transaction_id", "customer_id", "served_at", "role", "model_version",
    "score", "decision", "latency_ms", "status",
]  # fmt: skip


def _staged_version(store: LocalObjectStore, registry: ModelRegistry, tag: str) -> int:
    """The version registered under `tag` (once), packaged and recorded as staging-tested."""
    versions = [v.version for v in registry.list_versions() if v.metadata.get("tag") == tag]
    if not versions:
        files = {
            "model.txt": Path(os.environ[MODEL_TEXT]).read_bytes(),
            "lineage.json": json.dumps({"seed": 1, "tag": tag, "dataset": {"spec": {}}}).encode(),
        }
        versions = [registry.register(files, {"tag": tag}, "chaos", f"{tag}").version]
    built = build_package(store, registry, versions[0], decision_threshold=0.5)
    record_staging(store, built, {"passed": True, "checks": []})
    return versions[0]


def roll_out(store: LocalObjectStore) -> None:
    """The rollout controller's writes: v"base" in production, v"canary" started as a canary
    and promoted by the controller (a promote decision applied as the controller applies it),
    with the controller's own tick in between, which must finish what a killed run began."""
    registry = ModelRegistry(store)
    base = _staged_version(store, registry, "base")
    canary = _staged_version(store, registry, "canary")
    if "production" not in registry.aliases():
        registry.promote(base, actor="chaos", reason="first production")
    doc, _ = rollout.read_state(store, registry.name)
    if doc is None:
        rollout.start(store, registry, canary, policy=RolloutPolicy(), actor="chaos", reason="go")
    rollout.tick(store, registry)  # a restarted controller: recovery, else waits for traffic
    doc, etag = rollout.read_state(store, registry.name)
    if doc["status"] == rollout.RUNNING:
        analysis = rollout.analyze(pd.DataFrame(columns=LOG_COLUMNS), doc, RolloutPolicy())
        decision = rollout.Decision("promote", "chaos: every step passed")
        rollout.apply(store, registry, doc, etag, decision, analysis, actor="rollout-controller")


OPERATIONS = {"ingest": ingest, "register": register, "package": package, "rollout": roll_out}


def _package_files(store: LocalObjectStore) -> dict[int, dict[str, str]]:
    """Version -> file -> sha256 of every committed package, each verified on the way."""
    found = {}
    for info in store.list("models/fraud/packages/"):
        parts = info.key.split("/")
        if len(parts) == 5 and parts[4] == "manifest.json":
            committed = load_package(store, "fraud", int(parts[3]), include_build=True)
            found[committed.version] = {
                name: entry["sha256"] for name, entry in committed.manifest["files"].items()
            }
    return found


def expected_package(scratch: Path, version: int) -> dict:
    """The package a clean run leaves when the model got number `version` (a killed
    registration leaves its number unused, and the package names its version)."""
    clean = LocalObjectStore(scratch)
    for gap in range(1, version):
        clean.put_bytes(f"models/fraud/versions/{gap}/_claim.json", b"{}")
    package(clean)
    return _package_files(clean)


def _rollout_outcome(store: LocalObjectStore) -> dict:
    """Where the rollout ended, by tags (killed registrations leave version numbers unused)."""
    registry = ModelRegistry(store)
    tags = {v.version: v.metadata.get("tag") for v in registry.list_versions()}
    doc, _ = rollout.read_state(store, registry.name)
    return {
        "aliases": {alias: tags.get(v) for alias, v in registry.aliases().items()},
        "status": (doc or {}).get("status"),
        "actions": [d["action"] for d in (doc or {}).get("decisions", [])],
    }


def expected_hashes(op: str, scratch: Path) -> dict:
    """What a clean run leaves: the content hashes the rerun must converge to."""
    if op == "rollout":
        roll_out(LocalObjectStore(scratch))
        return _rollout_outcome(LocalObjectStore(scratch))
    if op == "package":
        return expected_package(scratch, 1)
    if op == "ingest":
        return {
            key: sha256_hex(tables.parquet_bytes("transactions", hour_frame(i)))
            for i, key in enumerate(HOURS)
        }
    return {
        tag: {name: sha256_hex(data) for name, data in model_files(tag).items()}
        for tag in MODEL_TAGS
    }


def converged(store: LocalObjectStore, op: str) -> dict:
    """The content hashes the store holds now, in the shape of :func:`expected_hashes`."""
    if op == "rollout":
        return _rollout_outcome(store)
    if op == "package":
        return _package_files(store)
    if op == "ingest":
        return {
            key: (tables.read_pointer(store, "transactions", key) or {}).get("sha256")
            for key in HOURS
        }
    registry = ModelRegistry(store)
    found: dict = {}
    for version in registry.list_versions():
        hashes = {name: entry["sha256"] for name, entry in version.files.items()}
        if found.setdefault(version.metadata["tag"], hashes) != hashes:
            found[version.metadata["tag"]] = "two versions of one tag differ"
    return found


def violations(store: LocalObjectStore) -> list[str]:
    """Everything a reader could trip over now; empty when every invariant holds.

    - no listing shows a temp file, and every listed key can be read;
    - every raw pointer names bytes that verify (read_partition succeeds);
    - every committed registry version and package loads verified; every alias names a
      committed version;
    - the audit log parses, and its alias revisions (with those aliases.json carries) are
      contiguous from 1.
    """
    found = []
    for info in store.list(""):
        if "/.tmp-" in f"/{info.key}":
            found.append(f"listing shows temp file {info.key}")
    for key in tables.list_partitions(store, "transactions"):
        try:
            tables.read_partition(store, "transactions", key)
        except Exception as error:  # any failure is what a reader would see
            found.append(f"raw {key}: {type(error).__name__}: {error}")
    registry = ModelRegistry(store)
    try:
        committed = {v.version for v in registry.list_versions()}
        for version in committed:
            registry.load(version)
        for alias, version in registry.aliases().items():
            if version not in committed:
                found.append(f"alias {alias} -> v{version}, which is not committed")
        _package_files(store)  # every committed package verifies
        doc, _ = rollout.read_state(store, registry.name)  # parses, names committed versions
        if doc is not None:
            for field in ("canary_version", "baseline_version"):
                if doc[field] not in committed:
                    found.append(f"rollout {field} v{doc[field]} is not committed")
            if doc["status"] == rollout.ABORTED:  # nobody aborts in this workload
                found.append(f"rollout aborted: {doc['decisions'][-1]['reason']}")
        revisions = [e["revision"] for e in registry.history() if "revision" in e]
        if revisions != list(range(1, len(revisions) + 1)):
            found.append(f"audit revisions not contiguous: {revisions}")
    except Exception as error:
        found.append(f"registry: {type(error).__name__}: {error}")
    return found


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*") if p.is_file()]


def _arm_kill(spec: str) -> None:
    """SIGKILL this process at the n-th commit, before or after it (see the module doc)."""
    n, when = spec.split(":")
    count = {"calls": 0}

    def wrap(real):
        def commit(*args, **kwargs):
            count["calls"] += 1
            hit = count["calls"] == int(n)
            if hit and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args, **kwargs)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return commit

    os.replace = wrap(os.replace)
    os.link = wrap(os.link)


def main(argv: list[str]) -> None:
    op, root = argv
    store = LocalObjectStore(root, temp_max_age_seconds=float(os.environ.get("TEMP_AGE", 600)))
    if op in ("package", "rollout"):
        import lightgbm  # noqa: F401  (imported before "ready": delays measure the writing)
    if os.environ.get(KILL_AT):
        _arm_kill(os.environ[KILL_AT])
    print("ready", flush=True)
    OPERATIONS[op](store)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
