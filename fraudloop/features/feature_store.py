"""The feature store: offline feature partitions for training, online state for serving.

Offline, features are the hourly `transaction_features` partitions (see `fraudloop.core.tables`).
Online, the latest feature state is published as one verified blob under
``featurestore/online/`` with a manifest; the scoring service loads it into an
`OnlineFeatureStore`, which computes a new transaction's features with the same code that built
the offline table. Both sides therefore agree to 1e-9 (a parity test holds them to it).

The published blob is a manifest of immutable pieces (`fraudloop.features.state_blocks`): a
publish writes only the pieces not stored yet (an hour's chunks; once a day, the day's block),
and the online store is published from the latest state by publishing the same manifest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from fraudloop.core import tables
from fraudloop.core.store import ObjectStore, load_blob, load_pointer, publish_blob
from fraudloop.features.compute import feature_code_hash
from fraudloop.features.online import OnlineFeatureStore
from fraudloop.features.state import FeatureState
from fraudloop.features.state_blocks import (
    is_manifest,
    manifest_summary,
    state_from_blob,
    write_state,
)

#: the online store and the staging tests' states (``featurestore/staging/<model>-v<n>``)
FEATURESTORE_PREFIX = "featurestore"
ONLINE_PREFIX = f"{FEATURESTORE_PREFIX}/online"


def publish_state(
    store: ObjectStore, prefix: str, state: FeatureState, state_hour: str, **metadata
) -> dict:
    """Publish `state` (after hour `state_hour`) under `prefix` unless a newer one is there: a
    run over older hours (a backfill) never replaces a newer state."""
    current = load_pointer(store, prefix)
    if current is not None and current.get("state_hour", "") > state_hour:
        return current
    manifest, written = write_state(store, state)
    meta = {"state_hour": state_hour, "layout": "pieces", **written, **metadata}
    return publish_blob(store, prefix, manifest, meta)


def publish_online(
    store: ObjectStore, state: FeatureState, state_hour: str, prefix: str = ONLINE_PREFIX
) -> dict:
    """Publish `state` for the scoring service, with what it must agree on to use it."""
    return publish_state(
        store,
        prefix,
        state,
        state_hour,
        label_delay_hours=state.label_delay_hours,
        feature_code_hash=feature_code_hash(),
        customers=len(state.customers),
        terminals=len(state.terminals),
    )


def publish_online_from(store: ObjectStore, source: str, prefix: str = ONLINE_PREFIX) -> dict:
    """Publish the state published under `source` (the latest state) for the scoring service:
    the same manifest under `prefix`, nothing re-serialised, no piece rewritten. A source in the
    old one-blob layout is read and published as pieces (the migration)."""
    found = load_blob(store, source)
    if found is None:
        raise LookupError(f"no feature state has been published under {source}/ yet")
    data, pointer = found
    if not is_manifest(data):
        return publish_online(store, FeatureState.from_bytes(data), pointer["state_hour"], prefix)
    current = load_pointer(store, prefix)
    if current is not None and current.get("state_hour", "") > pointer["state_hour"]:
        return current
    sizes = manifest_summary(data)
    return publish_blob(
        store,
        prefix,
        data,
        {
            "state_hour": pointer["state_hour"],
            "layout": "pieces",
            "pieces_written": 0,
            "bytes_written": 0,
            "label_delay_hours": json.loads(data)["label_delay_hours"],
            "feature_code_hash": feature_code_hash(),
            "customers": sizes["customers"],
            "terminals": sizes["terminals"],
        },
    )


def load_online(store: ObjectStore, prefix: str = ONLINE_PREFIX) -> tuple[OnlineFeatureStore, dict]:
    """The state published under `prefix`, verified against its sha256, ready to compute
    features (staging tests publish theirs under another prefix)."""
    found = load_blob(store, prefix)
    if found is None:
        raise LookupError(f"no online feature state has been published under {prefix}/ yet")
    data, pointer = found
    if pointer.get("feature_code_hash") != feature_code_hash():
        raise ValueError(
            "the online state was built by different feature code "
            f"({pointer.get('feature_code_hash', '?')[:12]} vs {feature_code_hash()[:12]}); "
            "re-materialize online_feature_store"
        )
    return OnlineFeatureStore.from_state(state_from_blob(store, data)), pointer


def read_offline(store: ObjectStore, hour_keys: Sequence[str]) -> pd.DataFrame:
    """The valid feature rows of `hour_keys` (blocked hours are skipped), for training sets."""
    frames = []
    for key in hour_keys:
        try:
            frames.append(tables.read_partition(store, "transaction_features", key))
        except (tables.PartitionMissing, tables.PartitionQuarantined):
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
