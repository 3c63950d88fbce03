"""A package is only as trustworthy as what the registry recorded for its version.

A package's manifest hashes its own files, so whoever can rewrite the package can also rewrite
the manifest (a threshold of 0.999 with a recomputed hash passed ``load_package``). The registry
version is the independent record: its manifest holds the model file's sha256 from registration,
and the version's evaluation record holds the decision threshold it was judged at. The service
serves a package only when both agree with it.
"""

from __future__ import annotations

import hashlib
import json
import logging

from fraudloop.core import keyspace
from fraudloop.core.store import IntegrityError, ObjectNotFound, ObjectStore
from fraudloop.delivery.package import MODEL_FILE, Package
from fraudloop.model.registry import ModelRegistry

log = logging.getLogger(__name__)


def evaluation_record_key(version: int) -> str:
    """Where ``fraudloop.model.evaluation.write_evaluation`` keeps a version's record (a test
    holds the two equal). Not imported from there: that module pulls the training stack
    (datasets, metrics) into the service and added seconds to its start."""
    return f"{keyspace.REPORTS}/evaluations/v{version}.json"


def recorded_threshold(store: ObjectStore, registry: ModelRegistry, version: int) -> float | None:
    """The decision threshold recorded for ``version``: the registry metadata's
    ``decision_threshold`` if present, else the threshold of its evaluation record."""
    metadata = registry.show(version).metadata
    if metadata.get("decision_threshold") is not None:
        return float(metadata["decision_threshold"])
    try:
        record = json.loads(store.get_bytes(evaluation_record_key(version)))
    except ObjectNotFound:
        return None
    return float(record["threshold"])


def check_against_registry(store: ObjectStore, registry: ModelRegistry, package: Package) -> None:
    """:class:`IntegrityError` unless the package's model bytes are the registry version's and
    its threshold is the one recorded for that version."""
    version = package.version
    entry = registry.show(version).files.get(MODEL_FILE)
    got = hashlib.sha256(package.files[MODEL_FILE]).hexdigest()
    if entry is None or entry.get("sha256") != got:
        raise IntegrityError(
            f"package v{version}: model bytes (sha256 {got[:12]}) are not registry version "
            f"{version}'s model (sha256 {(entry or {}).get('sha256', 'none')[:12]})"
        )
    threshold = float(package.spec["decision_threshold"])
    recorded = recorded_threshold(store, registry, version)
    if recorded is None:
        log.warning(
            "v%s: no threshold recorded for the version (no evaluation); serving the package's %s",
            version,
            threshold,
        )
    elif abs(recorded - threshold) > 1e-12:
        raise IntegrityError(
            f"package v{version}: decision threshold {threshold} differs from the {recorded} "
            f"recorded for the version"
        )
