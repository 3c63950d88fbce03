"""The partition store: canonical Parquet, content-addressed, with a current pointer.

It holds the raw tables ("transactions" with hourly keys, "labels" with daily keys) and the
derived tables built from them ("fraud_labels", "transaction_features"), so every table of the
pipeline is versioned, verified and refused in exactly the same way. Layout per partition::

    <prefix>/<partition>/<sha256>.parquet   immutable, named by the sha256 of its bytes
    <prefix>/<partition>/_current.json      which version readers use, or why none may be used

with ``<prefix>`` = ``raw/<table>`` for raw tables and ``features/<table>`` for derived ones.

The Parquet bytes are deterministic: rows sorted by the table's sort key, no pandas index and no
pandas schema metadata, fixed zstd compression. The same content therefore always gives the same
sha256 (for the same pyarrow version), so re-ingesting the same files is a no-op.

The pointer is replaced with compare-and-swap on both backends (``if_match`` / ``if_none_match``),
so two concurrent writers cannot silently lose each other's update. Readers go through
:func:`read_partition`, which refuses quarantined partitions and verifies the sha256 of the
bytes against the pointer before handing out a frame.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core import keyspace
from fraudloop.core.errors import DataError
from fraudloop.core.hours import DAY_KEY_FORMAT, HOUR_KEY_FORMAT, day_start, hour_start
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS, TRANSACTION_KEY_COLUMNS
from fraudloop.core.store import IntegrityError as StoreIntegrityError
from fraudloop.core.store import ObjectNotFound, ObjectStore, PreconditionFailed, sha256_hex


@dataclass(frozen=True)
class TableSpec:
    """A partitioned table: where it lives, its canonical columns, and how rows are ordered."""

    name: str
    prefix: str  # key prefix of its partitions (under keyspace.RAW or keyspace.FEATURES)
    columns: dict[str, str]  # canonical column -> dtype; extra columns are kept as strings
    sort: tuple[str, ...]  # row order of the stored bytes (deterministic content hashes)
    time: str  # the column whose min/max the pointer records
    #: the type of every other column: raw tables keep a feed's extra columns as text (sorted
    #: by name); the feature table's value columns are numbers, in the order its stage wrote them
    extra_dtype: str = "string"
    sort_extras: bool = True

    def dtype(self, column: str) -> str:
        return self.columns.get(column, self.extra_dtype)

    def extra_columns(self, columns) -> list[str]:
        """The columns beyond the canonical ones, in their stored order."""
        extras = [c for c in columns if c not in self.columns]
        return sorted(extras) if self.sort_extras else extras


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            name="transactions",
            prefix=f"{keyspace.RAW}/transactions",
            columns=TRANSACTION_COLUMNS,
            sort=("tx_datetime", "transaction_id"),
            time="tx_datetime",
        ),
        TableSpec(
            name="labels",
            prefix=f"{keyspace.RAW}/labels",
            columns=LABEL_COLUMNS,
            sort=("known_at", "transaction_id"),
            time="known_at",
        ),
        # labels joined with what the feature state needs of their transaction (bi-temporal)
        TableSpec(
            name="fraud_labels",
            prefix=f"{keyspace.FEATURES}/fraud_labels",
            columns={
                **LABEL_COLUMNS,
                **{
                    c: TRANSACTION_COLUMNS[c] for c in ("tx_datetime", "customer_id", "terminal_id")
                },
            },
            sort=("known_at", "transaction_id"),
            time="known_at",
        ),
        # one row per transaction: its key columns, then every feature (fraudloop.features)
        TableSpec(
            name="transaction_features",
            prefix=f"{keyspace.FEATURES}/transaction_features",
            columns={c: TRANSACTION_COLUMNS[c] for c in TRANSACTION_KEY_COLUMNS},
            sort=("tx_datetime", "transaction_id"),
            time="tx_datetime",
            extra_dtype="float64",
            sort_extras=False,
        ),
    )
}
POINTER_NAME = "_current.json"
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3
PARQUET_ROW_GROUP_SIZE = 1_048_576


class TableError(DataError):
    """Base class of the errors a partition read can raise."""


class PartitionMissing(TableError):
    """Nothing was ingested for this partition."""


class PartitionQuarantined(TableError):
    """The latest delivery of this partition was rejected; readers must not use it."""

    def __init__(self, table: str, partition_key: str, pointer: dict[str, Any]):
        self.table = table
        self.partition_key = partition_key
        self.pointer = pointer
        self.reason = pointer.get("reason", "")
        super().__init__(f"{table} partition {partition_key} is quarantined: {self.reason}")


class IntegrityError(TableError, StoreIntegrityError):
    """The stored bytes do not match the sha256 recorded in the pointer (or are gone)."""

    exit_code = StoreIntegrityError.exit_code


@dataclass(frozen=True)
class PartitionVersion:
    table: str
    partition_key: str
    sha256: str
    key: str
    rows: int
    bytes: int
    created: bool  # False when this exact version was already current (a no-op re-ingest)
    pointer: dict[str, Any]
    #: True when a newer delivery was already current: the pointer kept it, and this object
    #: describes that current version, not the frame that was offered
    superseded: bool = False


def spec(table: str) -> TableSpec:
    """The spec of `table`."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    return TABLES[table]


def partition_prefix(table: str, partition_key: str) -> str:
    return f"{spec(table).prefix}/{partition_key}/"


def pointer_key(table: str, partition_key: str) -> str:
    return partition_prefix(table, partition_key) + POINTER_NAME


def list_partitions(store: ObjectStore, table: str) -> list[str]:
    """Partition keys of `table` that have a pointer (valid or quarantined), sorted."""
    base = f"{spec(table).prefix}/"
    return sorted(
        info.key[len(base) : -len(POINTER_NAME) - 1]
        for info in store.list(base)
        if info.key.endswith(f"/{POINTER_NAME}") and info.key[len(base) :].count("/") == 1
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def canonical_order(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns first (schema order), extra columns after them (sorted by name, or as
    given for a table that keeps their order); rows sorted by the table's sort key; a fresh
    RangeIndex."""
    table_spec = spec(table)
    canonical = list(table_spec.columns)
    missing = [c for c in canonical if c not in frame.columns]
    if missing:
        raise ValueError(f"{table} frame lacks canonical column(s) {missing}")
    extras = table_spec.extra_columns(frame.columns)
    out = frame[canonical + extras]
    out = out.sort_values(list(table_spec.sort), kind="mergesort", na_position="last")
    return out.reset_index(drop=True)


_ARROW_TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "int8": pa.int8(),
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
}


def _arrow_type(dtype: str) -> pa.DataType:
    return _ARROW_TYPES[dtype]


def parquet_bytes(table: str, frame: pd.DataFrame) -> bytes:
    """Deterministic Parquet bytes of a canonical frame."""
    table_spec = spec(table)
    frame = canonical_order(table, frame)
    for column, dtype in table_spec.columns.items():
        if str(frame[column].dtype) != dtype:
            frame = frame.astype({column: dtype})
    for column in frame.columns:
        if column not in table_spec.columns and str(frame[column].dtype) != table_spec.extra_dtype:
            frame = frame.astype({column: table_spec.extra_dtype})
    # An explicit Arrow schema: the same values always get the same physical types (pandas may
    # hand over `large_string` for a concatenated frame), hence the same bytes and sha256.
    schema = pa.schema([(c, _arrow_type(table_spec.dtype(c))) for c in frame.columns])
    arrow = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    arrow = arrow.replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(
        arrow,
        sink,
        compression=PARQUET_COMPRESSION,
        compression_level=PARQUET_COMPRESSION_LEVEL,
        row_group_size=PARQUET_ROW_GROUP_SIZE,
    )
    return sink.getvalue()


def frame_from_parquet(table: str, data: bytes) -> pd.DataFrame:
    """Parquet bytes written by :func:`parquet_bytes` back to a frame with canonical dtypes."""
    return with_canonical_dtypes(table, pq.read_table(pa.BufferReader(data)).to_pandas())


def with_canonical_dtypes(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The table's declared dtypes (timestamps as UTC; extra columns as the table says), in
    place."""
    table_spec = spec(table)
    for column in frame.columns:
        dtype = table_spec.dtype(column)
        if dtype.startswith("datetime64"):
            col = frame[column]
            if getattr(col.dt, "tz", None) is None:
                col = col.dt.tz_localize("UTC")
            frame[column] = col.dt.tz_convert("UTC").astype(dtype)
        else:
            frame[column] = frame[column].astype(dtype)
    return frame


def read_pointer(store: ObjectStore, table: str, partition_key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(pointer_key(table, partition_key)))
    except ObjectNotFound:
        return None


def _swap_pointer(store: ObjectStore, table: str, partition_key: str, build) -> dict[str, Any]:
    """Read-modify-write of the pointer with compare-and-swap; ``build(current) -> new | None``
    (None keeps the current pointer)."""
    key = pointer_key(table, partition_key)
    for _ in range(20):
        try:
            data, etag = store.get_with_etag(key)
            current = json.loads(data)
        except ObjectNotFound:
            current, etag = None, None
        new = build(current)
        if new is None:
            return current
        body = json.dumps(new, indent=2, sort_keys=True).encode()
        try:
            if etag is None:
                store.put_bytes(key, body, if_none_match=True)
            else:
                store.put_bytes(key, body, if_match=etag)
        except PreconditionFailed:
            continue  # another writer won; re-read and rebuild
        return new
    raise RuntimeError(f"could not update {key}: too many concurrent writers")


def delivered_at(store: ObjectStore, sources: list[dict[str, Any]]) -> float | None:
    """When the newest of a version's landed files arrived (epoch seconds), from the store.

    This orders deliveries of a partition: a run that ingests an older delivery may finish after
    one that ingested a newer delivery, and finishing last must not make it current. None when
    no source is a stored object (frames written from elsewhere carry no delivery order).
    """
    times = []
    for source in sources:
        key = source.get("key")
        info = store.head(key) if isinstance(key, str) else None
        if info is not None:
            times.append(info.modified)
        elif source.get("delivered_at") is not None:
            times.append(float(source["delivered_at"]))
    return max(times) if times else None


def _is_older_delivery(current: dict[str, Any] | None, delivered: float | None) -> bool:
    """Whether a version delivered at `delivered` is older than the one `current` records."""
    recorded = (current or {}).get("delivered_at")
    return delivered is not None and recorded is not None and delivered < float(recorded)


def write_partition(
    store: ObjectStore,
    table: str,
    partition_key: str,
    canonical_df: pd.DataFrame,
    sources: list[dict[str, Any]],
    *,
    validation: dict[str, Any] | None = None,
) -> PartitionVersion:
    """Write a validated canonical frame as the current version of a partition.

    ``validation`` is the Great Expectations statistics of the run that accepted the frame; the
    pointer keeps it (``expectations_evaluated`` etc.) as evidence for checks and audits.

    The Parquet object is created only if absent (its key is its content hash, so an existing
    object is this very content). The pointer is then moved to it; when it already points at the
    same sha256 from the same sources nothing is rewritten (``created=False``); the same sha256
    from other sources rewrites the pointer's sources and time only (still ``created=False``).

    For a raw table the pointer records when the version's newest landed file arrived
    (:func:`delivered_at`) and never moves back to an older delivery: if the current pointer
    names a newer one, it is kept and the result describes it (``superseded=True``).
    """
    table_spec = spec(table)
    store.sweep_temp_files(partition_prefix(table, partition_key))  # of a killed writer
    data = parquet_bytes(table, canonical_df)
    sha = sha256_hex(data)
    key = f"{partition_prefix(table, partition_key)}{sha}.parquet"
    store.put_if_absent(key, data)
    times = canonical_df[table_spec.time]
    extras = table_spec.extra_columns(canonical_df.columns)
    pointer = {
        "status": "valid",
        "table": table,
        "partition": partition_key,
        "sha256": sha,
        "key": key,
        "rows": len(canonical_df),
        "bytes": len(data),
        "sources": [
            {"key": s.get("key"), "sha256": s.get("sha256"), "size": s.get("size")}
            for s in sorted(sources, key=lambda s: str(s.get("key")))
        ],
        "min_timestamp": _iso(times.min()) if len(times) else None,
        "max_timestamp": _iso(times.max()) if len(times) else None,
        "columns": list(table_spec.columns) + extras,
        "written_at": _now(),
    }
    if table_spec.prefix.startswith(f"{keyspace.RAW}/"):
        # only raw tables' sources are deliveries (landed files, written once); a derived
        # table's sources are content-addressed objects whose age says nothing of its order
        pointer["delivered_at"] = delivered_at(store, sources)
    if validation is not None:
        pointer["validation"] = validation
        pointer["expectations_evaluated"] = int(validation.get("evaluated_expectations", 0))
    created, superseded = True, False

    def build(current):
        nonlocal created, superseded
        same_content = bool(current) and current.get("status") == "valid"
        same_content = same_content and current.get("sha256") == sha
        if same_content and current.get("sources") == pointer["sources"]:
            created = False
            return None
        if _is_older_delivery(current, pointer.get("delivered_at")):
            created, superseded = False, True
            return None
        if same_content:
            # the same bytes from other inputs (a recompute after new labels that did not move
            # this hour's features): the content stands, the pointer records what it was
            # computed from and when, so "computed after those labels" stays answerable
            created = False
            return {**pointer, "previous": current.get("previous")}
        previous = None
        if current:
            previous = (
                current.get("sha256")
                if current.get("status") == "valid"
                else current.get("previous")
            )
        return {**pointer, "previous": previous}

    final = _swap_pointer(store, table, partition_key, build)
    if superseded:
        return _current_version(table, partition_key, final)
    return PartitionVersion(
        table=table,
        partition_key=partition_key,
        sha256=sha,
        key=key,
        rows=len(canonical_df),
        bytes=len(data),
        created=created,
        pointer=final,
    )


def _current_version(table: str, partition_key: str, pointer: dict[str, Any]) -> PartitionVersion:
    """The version a newer delivery made current (a quarantined one has no sha256 or rows)."""
    return PartitionVersion(
        table=table,
        partition_key=partition_key,
        sha256=pointer.get("sha256", ""),
        key=pointer.get("key", ""),
        rows=int(pointer.get("rows", 0)),
        bytes=int(pointer.get("bytes", 0)),
        created=False,
        pointer=pointer,
        superseded=True,
    )


def mark_quarantined(
    store: ObjectStore,
    table: str,
    partition_key: str,
    reason: str,
    quarantine_keys: list[str] | None = None,
    delivered_ids_key: str | None = None,
) -> dict[str, Any]:
    """Point the partition at nothing: its latest delivery was rejected.

    ``previous`` keeps the last valid sha256 (the data is still there for forensics, but readers
    refuse the partition until a good delivery is ingested).
    """
    spec(table)

    def build(current):
        previous = None
        if current:
            previous = (
                current.get("sha256")
                if current.get("status") == "valid"
                else current.get("previous")
            )
        return {
            "status": "quarantined",
            "table": table,
            "partition": partition_key,
            "reason": reason,
            "previous": previous,
            "quarantine_keys": list(quarantine_keys or []),
            "delivered_ids_key": delivered_ids_key,
            "quarantined_at": _now(),
        }

    return _swap_pointer(store, table, partition_key, build)


def read_partition(store: ObjectStore, table: str, partition_key: str) -> pd.DataFrame:
    """The current canonical frame of a partition, verified against its pointer.

    Raises PartitionMissing (never ingested), PartitionQuarantined (latest delivery rejected)
    or IntegrityError (bytes missing or not matching the recorded sha256).
    """
    pointer = read_pointer(store, table, partition_key)
    if pointer is None:
        raise PartitionMissing(f"{table} partition {partition_key} has not been ingested")
    status = pointer.get("status")
    if status == "quarantined":
        raise PartitionQuarantined(table, partition_key, pointer)
    if status != "valid":
        raise IntegrityError(
            f"{table} partition {partition_key}: unknown pointer status {status!r}"
        )
    return frame_from_parquet(table, _verified_bytes(store, table, partition_key, pointer))


def _verified_bytes(
    store: ObjectStore, table: str, partition_key: str, pointer: dict[str, Any]
) -> bytes:
    key = pointer["key"]
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        raise IntegrityError(
            f"{table} partition {partition_key}: pointer names {key}, which does not exist"
        ) from None
    actual = sha256_hex(data)
    if actual != pointer["sha256"]:
        raise IntegrityError(
            f"{table} partition {partition_key}: {key} has sha256 {actual}, "
            f"the pointer recorded {pointer['sha256']} (modified after it was written)"
        )
    return data


#: what the id cache of :func:`known_transaction_ids` holds for a quarantined hour whose ids
#: could not be read (its file is not a table): see :func:`unreadable_hours`
UNREADABLE = "unreadable"
#: ... and for an hour whose file landed but is not ingested yet (its run queued, running, or
#: awaiting its retry): its ids are as unknown as an unreadable hour's
PENDING = "pending"


def _window_ids(
    store: ObjectStore,
    day: str | pd.Timestamp,
    lookback_days: int,
    max_workers: int,
    cache: dict | None,
) -> list[tuple[str, pd.Series | str | None]]:
    """Per hour of the labels' window, oldest first: its ids (a Series), :data:`UNREADABLE`,
    :data:`PENDING` (landed, no pointer yet) or None (nothing landed, or quarantined before ids
    were kept). Each hour is read once per cache."""
    start = day_start(day) if isinstance(day, str) else pd.Timestamp(day)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    first = start.floor("D") - timedelta(days=lookback_days)
    hours = int((start.floor("D") + timedelta(days=1) - first) / timedelta(hours=1))
    keys = [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(hours)]

    def ids_of(key: str) -> pd.Series | str | None:
        pointer = read_pointer(store, "transactions", key)
        if pointer and pointer.get("status") == "quarantined":
            if not pointer.get("delivered_ids_key"):
                return UNREADABLE
            data = store.get_bytes(pointer["delivered_ids_key"])
            return pq.read_table(pa.BufferReader(data)).column(0).to_pandas()
        if not pointer:
            landed = any(True for _ in store.list(keyspace.hour_landing_prefix(key)))
            return PENDING if landed else None
        if pointer.get("status") != "valid":
            return None
        data = _verified_bytes(store, "transactions", key, pointer)
        column = pq.read_table(pa.BufferReader(data), columns=["transaction_id"]).column(0)
        return column.to_pandas()

    cache = {} if cache is None else cache  # a range of label days re-reads no hour
    missing = [k for k in keys if k not in cache]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        cache.update(zip(missing, pool.map(ids_of, missing), strict=True))
    return [(k, cache[k]) for k in keys]


def known_transaction_ids(
    store: ObjectStore,
    day: str | pd.Timestamp,
    lookback_days: int,
    *,
    max_workers: int = 16,
    cache: dict | None = None,
) -> pd.Index:
    """Unique ids of the valid transactions partitions from ``lookback_days`` before ``day``
    through the end of ``day`` (the set labels known on ``day`` may refer to).

    A quarantined hour contributes the ids it delivered when they could be read (kept beside
    its quarantined files), so its labels are not rejected for the transactions' fault; missing
    hours contribute nothing; a tampered partition raises IntegrityError. Reads only the
    transaction_id column (after verifying each object's sha256), fetching hours concurrently.
    """
    window = _window_ids(store, day, lookback_days, max_workers, cache)
    parts = [ids for _, ids in window if isinstance(ids, pd.Series)]
    if not parts:
        return pd.Index([], dtype="string", name="transaction_id")
    ids = pd.concat(parts, ignore_index=True).astype("string")
    return pd.Index(ids.unique(), dtype="string", name="transaction_id")


def unreadable_hours(
    store: ObjectStore,
    day: str | pd.Timestamp,
    lookback_days: int,
    *,
    max_workers: int = 16,
    cache: dict | None = None,
) -> list[str]:
    """The hours of the same window whose ids cannot be read: quarantined ones whose file was
    not a table, and those whose file landed but is not ingested yet (a label file may be
    ingested before the transactions it labels, e.g. while their run awaits its retry). A label
    of one of their transactions looks like a label of a transaction never delivered, so
    ingestion holds such labels instead of failing the label day. Shares ``cache`` with
    :func:`known_transaction_ids` (each pointer is read once)."""
    window = _window_ids(store, day, lookback_days, max_workers, cache)
    return [key for key, ids in window if isinstance(ids, str) and ids in (UNREADABLE, PENDING)]


def history_pointers(
    store: ObjectStore, table: str, partition_key: str, lookback: int = 14
) -> list[dict]:
    """The raw pointers of valid partitions comparable to ``partition_key``, oldest first.

    Transactions: the same hour of day on each of the previous ``lookback`` days (traffic has a
    strong daily shape). Labels: each of the previous ``lookback`` days. Quarantined and missing
    partitions are skipped. One read per day back: callers that need several facts of the same
    history (row counts, amount profiles) share one list instead of reading the pointers again
    (on S3 each is a request).
    """
    spec(table)
    if table == "transactions":
        start, fmt = hour_start(partition_key), HOUR_KEY_FORMAT
    else:
        start, fmt = day_start(partition_key), DAY_KEY_FORMAT
    pointers: list[dict] = []
    for days_back in range(lookback, 0, -1):
        key = (start - timedelta(days=days_back)).strftime(fmt)
        pointer = read_pointer(store, table, key)
        if pointer and pointer.get("status") == "valid":
            pointers.append(pointer)
    return pointers


def row_counts(pointers: list[dict]) -> list[int]:
    """The row counts of ``pointers`` (valid ones: :func:`history_pointers`), in their order."""
    return [int(p["rows"]) for p in pointers]


def history_counts(
    store: ObjectStore, table: str, partition_key: str, lookback: int = 14
) -> list[int]:
    """Row counts of :func:`history_pointers`, oldest first."""
    return row_counts(history_pointers(store, table, partition_key, lookback))
