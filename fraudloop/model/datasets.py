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

**Negative down-sampling** bounds what training holds in memory, whatever the traffic: when the
training window's partitions hold more than ``max_train_rows`` rows (their pointers say how
many), every fraud is kept and a legitimate transaction only if a keyed hash of its id falls
under the rate ``r = max_train_rows / rows`` (at 100x, 84 days are ~84 M rows: 20 GB as float64).
The kept negatives carry the weight ``1 / r`` (column ``weight``), so the booster sees the
class balance of the full window and its scores stay probabilities. The sample is a function of
the ids, the rate and the key recorded in the manifest, so a dataset is rebuilt identically, and
it is applied object by object while reading (features, and labels too: only the label records
of kept, holdout or fraudulent transactions are held), so the peak memory is that of the sample.
The holdout is never sampled: the gate and the threshold see every transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
#: the key of the sampling hash (pandas' SipHash key: 16 bytes); recorded in each manifest
SAMPLE_HASH_KEY = "fraudloop-sample"


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
    #: negatives of the training window are down-sampled above this many rows; None = never
    max_train_rows: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff", _utc(self.cutoff))
        if self.window_days < 1 or self.holdout_days < 0 or self.label_delay_days < 0:
            raise ValueError("window_days must be >= 1, holdout/label delay days >= 0")
        if self.max_train_rows is not None and self.max_train_rows < 1_000:
            raise ValueError("max_train_rows must be >= 1,000 (or None: never sample)")

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
        out = {
            "cutoff": self.cutoff.isoformat(),
            "window_days": self.window_days,
            "holdout_days": self.holdout_days,
            "label_delay_days": self.label_delay_days,
            # derived, for people reading the manifest
            "train_start": self.train_start.isoformat(),
            "holdout_start": self.holdout_start.isoformat(),
            "end": self.end.isoformat(),
        }
        if self.max_train_rows is not None:  # absent: the manifests of before stay as they were
            out["max_train_rows"] = self.max_train_rows
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        bound = data.get("max_train_rows")
        return cls(
            cutoff=pd.Timestamp(data["cutoff"]),
            window_days=int(data["window_days"]),
            holdout_days=int(data["holdout_days"]),
            label_delay_days=int(data["label_delay_days"]),
            max_train_rows=None if bound is None else int(bound),
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
) -> tuple[dict[str, str], dict[str, str], int]:
    """(partition -> sha256 of the current valid version, partition -> why it was skipped, the
    rows the pinned versions hold as their pointers record them)."""
    keys = list(keys)
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        pointers = list(pool.map(lambda k: tables.read_pointer(store, table, k), keys))
    pinned, skipped, rows = {}, {}, 0
    for key, pointer in zip(keys, pointers, strict=True):
        if pointer is None:
            skipped[key] = "missing"
        elif pointer.get("status") == "valid":
            pinned[key] = pointer["sha256"]
            rows += int(pointer.get("rows") or 0)
        else:
            skipped[key] = str(pointer.get("status"))
    return pinned, skipped, rows


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
    store: ObjectStore,
    table: str,
    pinned: dict[str, str],
    columns: list[str],
    keep: Callable[[pa.Table], pa.Table] | None = None,
) -> pd.DataFrame:
    """The pinned objects (verified) as one frame with the table's canonical dtypes; `keep`
    filters each object as it is read (the sample), so only what it keeps is ever held at once.

    Decoded with pyarrow and converted to pandas once (as :func:`tables.frame_from_parquet` does
    per object): hundreds of small hourly objects would otherwise dominate the build time.
    """
    items = sorted(pinned.items())

    def read(item: tuple[str, str]) -> pa.Table:
        part = _read_object(store, table, *item).select(columns)
        return keep(part) if keep is not None else part

    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        parts = list(pool.map(read, items))
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


def _sampled(ids: pd.Series, rate: float, key: str) -> np.ndarray:
    """Which ids fall in the sample of `rate`: a keyed 64-bit hash of the id under the rate."""
    hashed = pd.util.hash_array(ids.to_numpy(dtype=object), hash_key=key, categorize=False)
    return hashed < np.uint64(min(int(rate * 2.0**64), 2**64 - 1))


class _Sample:
    """The negative down-sampling of one dataset (see the module docstring)."""

    def __init__(self, rate: float, key: str, frauds: set[str], holdout: set[str]):
        self.rate, self.key = rate, key
        # indexes keep their hash table once built: every stored object of the window is looked
        # up in them (at 100x the holdout alone is ~7 M ids)
        self.frauds = pd.Index(list(frauds), dtype=object)
        self.frauds_or_holdout = pd.Index(list(frauds | holdout), dtype=object)

    def _in(self, table: pa.Table, listed: pd.Index) -> np.ndarray:
        ids = table.column("transaction_id").to_pandas().astype(object)
        return _sampled(ids, self.rate, self.key) | (listed.get_indexer(ids) >= 0)

    def label_records(self, table: pa.Table) -> pa.Table:
        return table.filter(self._in(table, self.frauds_or_holdout))

    def features(self, table: pa.Table) -> pa.Table:
        return table.filter(self._in(table, self.frauds))

    def kept(self, ids: pd.Series, is_fraud: np.ndarray) -> np.ndarray:
        """Which labelled rows stay: negatives outside the hash sample go (a revoked fraud was
        kept by its id when read), so the negatives are exactly the sample."""
        return _sampled(ids, self.rate, self.key) | (is_fraud != 0)

    def weights(self, is_fraud: np.ndarray) -> np.ndarray:
        """The kept negatives weigh 1 / rate, the frauds 1."""
        return np.where(is_fraud == 0, 1.0 / self.rate, 1.0)


def _fraud_ids(store: ObjectStore, pinned: dict[str, str], cutoff: pd.Timestamp) -> set[str]:
    """Every transaction with a fraud label known by the cutoff (revoked ones too): few."""

    def frauds(table: pa.Table) -> pa.Table:
        known = pc.less_equal(table.column("known_at"), pa.scalar(cutoff.to_pydatetime()))
        return table.filter(pc.and_(known, pc.equal(table.column("is_fraud"), 1)))

    found = _read_all(
        store, LABEL_TABLE, pinned, ["transaction_id", "is_fraud", "known_at"], frauds
    )
    return set(found["transaction_id"].astype(str))


def _assemble(
    store: ObjectStore, manifest: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    spec = DatasetSpec.from_dict(manifest["spec"])
    label_columns = ["transaction_id", "is_fraud", "known_at"]
    columns = list(ID_COLUMNS) + list(manifest["feature_names"])
    sampling = manifest.get("sampling")
    sample = None
    holdout = _read_all(store, FEATURE_TABLE, manifest["features"]["holdout"], columns)
    if sampling is not None:
        sample = _Sample(
            float(sampling["negative_rate"]),
            sampling["hash_key"],
            _fraud_ids(store, manifest["labels"], spec.cutoff),
            set(holdout["transaction_id"].astype(str)),
        )
    labels = _read_all(
        store,
        LABEL_TABLE,
        manifest["labels"],
        label_columns,
        sample.label_records if sample is not None else None,
    )
    label_of = _labels_as_of(labels, spec.cutoff).set_index("transaction_id")["is_fraud"]
    del labels
    out, counts = [], {}
    for split in ("train", "holdout"):
        if split == "holdout":
            feats, holdout = holdout, None
        else:
            keep = sample.features if sample is not None else None
            feats = _read_all(store, FEATURE_TABLE, manifest["features"][split], columns, keep)
        frame, unlabelled = _labelled_in_order(
            feats, label_of, sample if split == "train" else None
        )
        del feats  # the frame is its one copy (at 100x, the window was held five times over)
        counts[f"unlabelled_{split}"] = unlabelled
        counts[split] = len(frame)
        counts[f"fraud_{split}"] = int(frame["is_fraud"].sum())
        out.append(frame)
    counts["unlabelled_rows"] = counts["unlabelled_train"] + counts["unlabelled_holdout"]
    return out[0], out[1], counts


def _labelled_in_order(
    feats: pd.DataFrame, label_of: pd.Series, sample: _Sample | None
) -> tuple[pd.DataFrame, int]:
    """The rows of ``feats`` with a label (``label_of``: is_fraud by transaction id), in
    (tx_datetime, transaction_id) order, with ``is_fraud`` (and ``weight`` when ``sample``
    down-samples them), and how many had no label. Every row is chosen and ordered first, then
    the frame is copied once."""
    is_fraud = feats["transaction_id"].map(label_of).to_numpy()
    rows = np.flatnonzero(~pd.isna(is_fraud))
    unlabelled = len(feats) - len(rows)
    keys = pd.DataFrame(
        {
            "tx_datetime": feats["tx_datetime"].to_numpy()[rows],
            "transaction_id": feats["transaction_id"].to_numpy()[rows],
        }
    )
    order = rows[keys.sort_values(["tx_datetime", "transaction_id"], kind="mergesort").index]
    labels = is_fraud[order].astype("int8")
    if sample is not None:
        kept = sample.kept(feats["transaction_id"].iloc[order], labels)
        order, labels = order[kept], labels[kept]
    frame = feats.take(order)
    frame.index = pd.RangeIndex(len(frame))  # in place: reset_index would copy it all again
    frame["is_fraud"] = labels
    if sample is not None:
        frame["weight"] = sample.weights(labels)
    return frame, unlabelled


def build_dataset(store: ObjectStore, spec: DatasetSpec) -> Dataset:
    """The dataset of ``spec`` from the current partition pointers, pinned in a manifest.

    Hours whose ``transaction_features`` partition is missing or blocked (quarantined) are
    listed under ``skipped_hours``; label days likewise under ``skipped_label_days``.
    """
    train_f, train_skip, train_rows = _pinned(store, FEATURE_TABLE, spec.train_hours)
    hold_f, hold_skip, _ = _pinned(store, FEATURE_TABLE, spec.holdout_hours)
    labels, label_skip, _ = _pinned(store, LABEL_TABLE, spec.label_days)
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
    if spec.max_train_rows is not None and train_rows > spec.max_train_rows:
        manifest["sampling"] = {
            "negative_rate": round(spec.max_train_rows / train_rows, 9),
            "hash_key": SAMPLE_HASH_KEY,
            "window_rows": train_rows,
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
