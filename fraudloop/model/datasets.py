"""Training datasets as of a cutoff, pinned by content address.

A training dataset is described by a *manifest*: the sha256 of every
``transaction_features`` hour and every raw ``labels`` day it was built from, plus the
:class:`DatasetSpec`. Partition objects are content-addressed and immutable
(``<prefix>/<partition>/<sha256>.parquet``), so :func:`load_dataset` rebuilds exactly the same
frames from a manifest even after the partitions were recomputed and their pointers moved on.

Time windows (``end = floor_hour(cutoff) - label_delay_days``): labels mature ``label_delay_days``
after a transaction, so only transactions before ``end`` are used::

    train   = hours [end - holdout_days - window_days, end - holdout_days)
    holdout = hours [end - holdout_days, end)

Labels are taken *as of the cutoff*: per transaction the latest label record with
``known_at <= cutoff`` (fraud wins a tie, like the features). Transactions with no label known
by then are dropped and counted (``unlabelled_rows``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core import tables
from fraudloop.core.errors import ModelError
from fraudloop.core.hours import DAY_KEY_FORMAT, HOUR_KEY_FORMAT, hour_start
from fraudloop.core.store import ObjectNotFound, ObjectStore, sha256_hex
from fraudloop.features.compute import FEATURE_NAMES, ID_COLUMNS

MANIFEST_FORMAT = 1
FEATURE_TABLE = "transaction_features"
LABEL_TABLE = "labels"
DATASET_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *FEATURE_NAMES, "is_fraud")
READ_WORKERS = 16


def _utc(ts: Any) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class DatasetSpec:
    """Which hours and labels a training dataset uses (see the module docstring)."""

    cutoff: pd.Timestamp
    window_days: int = 28
    holdout_days: int = 7
    label_delay_days: int = 7

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff", _utc(self.cutoff))
        if self.window_days < 1 or self.holdout_days < 0 or self.label_delay_days < 0:
            raise ValueError("window_days must be >= 1, holdout/label delay days >= 0")

    @property
    def end(self) -> pd.Timestamp:
        return self.cutoff.floor("h") - timedelta(days=self.label_delay_days)

    @property
    def holdout_start(self) -> pd.Timestamp:
        return self.end - timedelta(days=self.holdout_days)

    @property
    def train_start(self) -> pd.Timestamp:
        return self.holdout_start - timedelta(days=self.window_days)

    def hours(self, start: pd.Timestamp, stop: pd.Timestamp) -> list[str]:
        n = int((stop - start) / timedelta(hours=1))
        return [(start + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(n)]

    @property
    def train_hours(self) -> list[str]:
        return self.hours(self.train_start, self.holdout_start)

    @property
    def holdout_hours(self) -> list[str]:
        return self.hours(self.holdout_start, self.end)

    @property
    def label_days(self) -> list[str]:
        """Label days that can hold a label of a window transaction known by the cutoff."""
        first, last = self.train_start.floor("D"), self.cutoff.floor("D")
        n = int((last - first) / timedelta(days=1)) + 1
        return [(first + timedelta(days=d)).strftime(DAY_KEY_FORMAT) for d in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "window_days": self.window_days,
            "holdout_days": self.holdout_days,
            "label_delay_days": self.label_delay_days,
            # derived, for people reading the manifest
            "train_start": self.train_start.isoformat(),
            "holdout_start": self.holdout_start.isoformat(),
            "end": self.end.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        return cls(
            cutoff=pd.Timestamp(data["cutoff"]),
            window_days=int(data["window_days"]),
            holdout_days=int(data["holdout_days"]),
            label_delay_days=int(data["label_delay_days"]),
        )


@dataclass
class Dataset:
    """Train and holdout frames (ID columns, FEATURE_NAMES, ``is_fraud``) and their manifest."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    manifest: dict[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_dict(self.manifest["spec"])

    @property
    def unlabelled_rows(self) -> int:
        return int(self.manifest["rows"]["unlabelled_rows"])


# ---------------------------------------------------------------------------- manifest


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_id(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without its ``id``."""
    return sha256_hex(_canonical_json({k: v for k, v in manifest.items() if k != "id"}))


def _pinned(
    store: ObjectStore, table: str, keys: Iterable[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(partition -> sha256 of the current valid version, partition -> why it was skipped)."""
    keys = list(keys)
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        pointers = list(pool.map(lambda k: tables.read_pointer(store, table, k), keys))
    pinned, skipped = {}, {}
    for key, pointer in zip(keys, pointers, strict=True):
        if pointer is None:
            skipped[key] = "missing"
        elif pointer.get("status") == "valid":
            pinned[key] = pointer["sha256"]
        else:
            skipped[key] = str(pointer.get("status"))
    return pinned, skipped


def _object_key(table: str, partition: str, sha: str) -> str:
    return f"{tables.partition_prefix(table, partition)}{sha}.parquet"


def _read_object(store: ObjectStore, table: str, partition: str, sha: str) -> pa.Table:
    key = _object_key(table, partition, sha)
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        raise tables.IntegrityError(
            f"{table} partition {partition}: the dataset pins {key}, which does not exist"
        ) from None
    actual = sha256_hex(data)
    if actual != sha:
        raise tables.IntegrityError(
            f"{table} partition {partition}: {key} has sha256 {actual}, the dataset pinned {sha}"
        )
    return pq.read_table(pa.BufferReader(data))


def _read_all(
    store: ObjectStore, table: str, pinned: dict[str, str], columns: list[str]
) -> pd.DataFrame:
    """The pinned objects (verified) as one frame with the table's canonical dtypes.

    Decoded with pyarrow and converted to pandas once (as :func:`tables.frame_from_parquet` does
    per object): hundreds of small hourly objects would otherwise dominate the build time.
    """
    items = sorted(pinned.items())
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        parts = list(pool.map(lambda kv: _read_object(store, table, *kv).select(columns), items))
    dtypes = tables.spec(table).columns
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "string")) for c in columns})
    frame = pa.concat_tables(parts, promote_options="permissive").to_pandas()
    return tables.with_canonical_dtypes(table, frame)


def _labels_as_of(labels: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    labels = labels[labels["known_at"] <= cutoff]
    labels = labels.sort_values(["transaction_id", "known_at", "is_fraud"], kind="mergesort")
    latest = labels.drop_duplicates("transaction_id", keep="last")
    return latest[["transaction_id", "is_fraud"]].reset_index(drop=True)


def _assemble(
    store: ObjectStore, manifest: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    spec = DatasetSpec.from_dict(manifest["spec"])
    label_columns = ["transaction_id", "is_fraud", "known_at"]
    labels = _read_all(store, LABEL_TABLE, manifest["labels"], label_columns)
    labels = _labels_as_of(labels, spec.cutoff)
    columns = list(ID_COLUMNS) + list(manifest["feature_names"])
    out, counts = [], {}
    for split in ("train", "holdout"):
        feats = _read_all(store, FEATURE_TABLE, manifest["features"][split], columns)
        joined = feats.merge(labels, on="transaction_id", how="left", validate="many_to_one")
        has_label = joined["is_fraud"].notna()
        counts[f"unlabelled_{split}"] = int((~has_label).sum())
        frame = joined[has_label].astype({"is_fraud": "int8"})
        frame = frame.sort_values(["tx_datetime", "transaction_id"], kind="mergesort")
        frame = frame[[*columns, "is_fraud"]].reset_index(drop=True)
        counts[split] = len(frame)
        counts[f"fraud_{split}"] = int(frame["is_fraud"].sum())
        out.append(frame)
    counts["unlabelled_rows"] = counts["unlabelled_train"] + counts["unlabelled_holdout"]
    return out[0], out[1], counts


def build_dataset(store: ObjectStore, spec: DatasetSpec) -> Dataset:
    """The dataset of ``spec`` from the current partition pointers, pinned in a manifest.

    Hours whose ``transaction_features`` partition is missing or blocked (quarantined) are
    listed under ``skipped_hours``; label days likewise under ``skipped_label_days``.
    """
    train_f, train_skip = _pinned(store, FEATURE_TABLE, spec.train_hours)
    hold_f, hold_skip = _pinned(store, FEATURE_TABLE, spec.holdout_hours)
    labels, label_skip = _pinned(store, LABEL_TABLE, spec.label_days)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "spec": spec.to_dict(),
        "feature_table": FEATURE_TABLE,
        "feature_names": list(FEATURE_NAMES),
        "features": {"train": train_f, "holdout": hold_f},
        "skipped_hours": {**train_skip, **hold_skip},
        "labels": labels,
        "skipped_label_days": label_skip,
    }
    train_df, holdout_df, counts = _assemble(store, manifest)
    manifest["rows"] = counts
    manifest["id"] = manifest_id(manifest)
    return Dataset(train=train_df, holdout=holdout_df, manifest=manifest)


def load_dataset(store: ObjectStore, manifest: dict[str, Any]) -> Dataset:
    """Rebuild a dataset exactly from its manifest, by content address (not current pointers).

    Raises :class:`fraudloop.core.tables.IntegrityError` (a
    :class:`fraudloop.core.store.IntegrityError`) when the manifest was altered, a pinned object is
    gone or its bytes do not match.
    """
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"unsupported dataset manifest format {manifest.get('format')!r}")
    if manifest_id(manifest) != manifest.get("id"):
        raise tables.IntegrityError("dataset manifest does not match its id (altered)")
    train_df, holdout_df, counts = _assemble(store, manifest)
    if counts != manifest["rows"]:
        raise tables.IntegrityError(
            f"dataset {manifest['id']}: rebuilt row counts {counts} != recorded {manifest['rows']}"
        )
    return Dataset(train=train_df, holdout=holdout_df, manifest=dict(manifest))


def default_cutoff(store: ObjectStore) -> pd.Timestamp:
    """The cutoff a training run uses unless told: the end of the newest hour whose features are
    stored. Not the newest ingested hour: a retraining requested while features lag behind
    ingestion would otherwise ask for a holdout that does not exist yet."""
    for key in reversed(tables.list_partitions(store, FEATURE_TABLE)):  # newest first
        if (tables.read_pointer(store, FEATURE_TABLE, key) or {}).get("status") == "valid":
            return hour_start(key) + pd.Timedelta(hours=1)
    raise ModelError("no features have been computed yet; nothing to train on")
