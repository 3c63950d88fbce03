"""The transaction-id index: which hour holds each ingested transaction id, and when it happened.

Uniqueness used to be checked within an hour only, so a transaction re-delivered in another
hour (an overlapping export, a feed replaying a window) was ingested twice. This index answers
"is this id already in another hour?" for a whole hour of ids at once, and gives labels the
``tx_datetime`` of the transaction they refer to.

Layout: one Parquet object per day, ``index/transaction_ids/<YYYY-MM-DD>.parquet``, with
one row per accepted transaction: ``hash`` (a keyed 64-bit hash of the id), ``tx_ns`` (its
``tx_datetime`` in ns since the epoch) and ``hour`` (its partition, as hours since the epoch:
an int reads much faster than a key string). 20 bytes an id: about 29 MB for the handbook's
1.8 M transactions (the hashes do not compress).

- Writes touch one day's object, replaced with compare-and-swap, so hours of the same day
  ingested concurrently cannot lose each other's ids; re-ingesting an hour replaces that hour's
  rows (a corrected delivery is not a duplicate of itself), quarantining it removes them.
- A check reads every day's object (in parallel): cost grows with history at 16 bytes an id,
  measured in ``bench/ingest.py``; the hashes are compared with one vectorised ``isin``.
- A hash match is confirmed against the raw ids of the hour it names before a row is
  rejected, so a hash collision can never reject a genuine transaction.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudloop.core import cas, tables
from fraudloop.core.hours import hour_key, hour_start
from fraudloop.core.store import ObjectStore

INDEX_PREFIX = "index/transaction_ids/"
HASH_KEY = "fraudloop-ids-v1"  # 16 bytes: the siphash key of pandas' hash_array
_SCHEMA = pa.schema([("hash", pa.uint64()), ("tx_ns", pa.int64()), ("hour", pa.int32())])
_HOUR = pd.Timedelta(hours=1)
REJECTED = -1  # tx_ns of an id whose row was rejected at ingestion


def hour_number(partition_key: str) -> int:
    """Hours since the epoch of an hourly partition key (how the index stores hours)."""
    return int((hour_start(partition_key) - pd.Timestamp(0, tz="UTC")) // _HOUR)


def partition_of(number: int) -> str:
    return hour_key(pd.Timestamp(0, tz="UTC") + int(number) * _HOUR)


def id_hashes(ids: pd.Series) -> np.ndarray:
    """Keyed 64-bit hashes of ids (stable across processes and runs)."""
    values = ids.astype("string").fillna("").to_numpy(dtype=object)
    return pd.util.hash_array(values, hash_key=HASH_KEY, categorize=False)


def _segment_key(hour: str) -> str:
    return f"{INDEX_PREFIX}{hour[:10]}.parquet"


def _to_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame, schema=_SCHEMA, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    return sink.getvalue()


def _from_bytes(data: bytes) -> pd.DataFrame:
    return pq.read_table(pa.BufferReader(data)).to_pandas()


def _empty() -> pd.DataFrame:
    return _SCHEMA.empty_table().to_pandas()


def load(store: ObjectStore, *, max_workers: int = 16) -> pd.DataFrame:
    """Every indexed id of every hour: columns hash, tx_ns, hour (see :func:`hour_number`)."""
    keys = [i.key for i in store.list(INDEX_PREFIX) if i.key.endswith(".parquet")]
    if not keys:
        return _empty()
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        parts = list(pool.map(lambda k: _from_bytes(store.get_bytes(k)), keys))
    return pd.concat(parts, ignore_index=True)


def replace_hour(
    store: ObjectStore,
    hour: str,
    frame: pd.DataFrame | None,
    rejected_ids: pd.Series | None = None,
) -> None:
    """Make ``frame`` (transaction_id, tx_datetime) the indexed ids of ``hour``, and
    ``rejected_ids`` the ids of its rows rejected one by one (marked ``tx_ns = REJECTED``: not
    duplicates of anything, but a label for one is not a label of an unknown transaction);
    None forgets the hour (it was quarantined). Compare-and-swap on the day's object."""
    key, number = _segment_key(hour), hour_number(hour)
    parts = []
    if frame is not None and len(frame):
        parts.append(
            pd.DataFrame(
                {
                    "hash": id_hashes(frame["transaction_id"]),
                    "tx_ns": frame["tx_datetime"].astype("datetime64[ns, UTC]").astype("int64"),
                }
            )
        )
    if frame is not None and rejected_ids is not None:
        ids = rejected_ids.astype("string").dropna().drop_duplicates()
        parts.append(pd.DataFrame({"hash": id_hashes(ids), "tx_ns": REJECTED}))
    new = _empty()
    if parts:
        new = pd.concat(parts, ignore_index=True).assign(hour=np.int32(number))

    def build(data: bytes | None) -> bytes | None:
        current = _from_bytes(data) if data else _empty()
        others = current[current["hour"] != number]
        if len(others) == len(current) and new.empty:
            return None  # nothing of this hour was indexed, nothing to add
        merged = pd.concat([others, new], ignore_index=True) if len(new) else others
        # the same bytes for the same ids: a re-ingest writes nothing (cas.update compares)
        return _to_bytes(merged.sort_values(["hour", "hash"], kind="stable"))

    cas.update(store, key, build)


def _matching(index: pd.DataFrame, hashes: np.ndarray) -> pd.DataFrame:
    """The index rows whose hash is one of ``hashes``: a hash table of the few new hashes
    probed by every indexed one (linear, no sort of the history)."""
    return index[pd.Series(index["hash"].to_numpy()).isin(hashes).to_numpy()]


def ingested_elsewhere(
    store: ObjectStore, hour: str, ids: pd.Series, index: pd.DataFrame | None = None
) -> pd.Series:
    """Ids of ``ids`` that another hour already holds, mapped to that hour (confirmed against
    that hour's raw ids, so a hash collision rejects nothing)."""
    index = load(store) if index is None else index
    ids = ids.astype("string").dropna()
    if index.empty or ids.empty:
        return pd.Series(dtype="string")
    hashes = id_hashes(ids)
    found = _matching(index, hashes)
    found = found[(found["hour"] != hour_number(hour)) & (found["tx_ns"] != REJECTED)]
    if found.empty:
        return pd.Series(dtype="string")
    candidates = ids[np.isin(hashes, found["hash"].to_numpy())]
    confirmed: dict[str, str] = {}
    for other_hour in sorted(partition_of(n) for n in found["hour"].unique()):
        try:
            held = set(tables.read_partition(store, "transactions", other_hour)["transaction_id"])
        except tables.TableError:
            continue  # that hour is no longer readable: its ids are not a duplicate
        for tx_id in candidates[candidates.isin(held)]:
            confirmed.setdefault(str(tx_id), other_hour)
    return pd.Series(confirmed, dtype="string")


def transaction_times(store: ObjectStore, ids: pd.Series) -> pd.Series:
    """``tx_datetime`` of the indexed transactions among ``ids`` (for label checks)."""
    index = load(store)
    ids = ids.astype("string").dropna().drop_duplicates()
    if index.empty or ids.empty:
        return pd.Series(dtype="datetime64[ns, UTC]")
    hashes = id_hashes(ids)
    found = _matching(index, hashes)
    found = found[found["tx_ns"] != REJECTED]
    by_hash = found.drop_duplicates("hash").set_index("hash")["tx_ns"]
    tx_ns = pd.Series(hashes, index=ids.to_numpy()).map(by_hash).dropna()
    return pd.to_datetime(tx_ns.astype("int64"), unit="ns", utc=True)


def rejected_transactions(store: ObjectStore, ids: pd.Series) -> set[str]:
    """The ids among ``ids`` whose transaction row was rejected at ingestion (and not accepted
    in any hour since)."""
    index = load(store)
    ids = ids.astype("string").dropna().drop_duplicates()
    if index.empty or ids.empty:
        return set()
    hashes = id_hashes(ids)
    found = _matching(index, hashes)
    rejected = found.loc[found["tx_ns"] == REJECTED, "hash"].to_numpy()
    accepted = found.loc[found["tx_ns"] != REJECTED, "hash"].to_numpy()
    mask = np.isin(hashes, rejected) & ~np.isin(hashes, accepted)
    return set(ids[mask])


def describe(store: ObjectStore) -> dict:
    """Size of the index (for the bench and the docs)."""
    infos = store.list(INDEX_PREFIX)
    return {"objects": len(infos), "bytes": int(sum(i.size for i in infos))}
