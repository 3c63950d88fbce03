"""The feature state stored as immutable pieces, so publishing an hour writes what changed.

:meth:`FeatureState.to_bytes` is one canonical blob of the whole state; at 100x (30 days, 504 k
customers) that is 656 MB, re-serialised and re-written after every hourly features run (latest
state, online store) and at every day checkpoint, although an hour changes ~1/720 of it. Here the
state is a small JSON *manifest* naming content-addressed pieces under ``features/blocks/``:

- one piece per unit of each aggregate table (:data:`~fraudloop.features.state.TABLES`): a block
  per complete UTC day and a chunk per hour of the current day, exactly the units the state keeps
  in memory. A unit never changes once built (the state only adds units and drops whole old
  ones), so its piece is written once: an hour writes its own small chunks, and the first hour
  of a day the previous day's block;
- the label records, one piece per transaction day (a new label batch touches a few days; the
  hourly trim touches the oldest).

Each piece is self-contained: its entity ids in sorted order and the rows recoded to them, so it
does not depend on the state's dictionary codes and any state holding the same unit names the
same piece. Pieces are zips of ``.npy`` arrays (``allow_pickle=False``) and are verified against
the sha256 in their key when read. Reading a manifest rebuilds the state (one factorize of every
piece's ids) equal to the state written: ``to_bytes`` gives the same canonical bytes.

A blob in the old layout (one ``to_bytes`` zip) is still read (:func:`state_from_blob`): a store
written before this change keeps working, and its next publish writes pieces.
"""

from __future__ import annotations

import json
import time
import weakref

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudloop.core.store import IntegrityError, ObjectNotFound, ObjectStore, sha256_hex
from fraudloop.features.state import (
    TABLES,
    FeatureState,
    Rows,
    _decode_strings,
    _Dictionary,
    _encode_strings,
    _string_array,
    empty_label_records,
    hour_key_of,
    pack_arrays,
    unpack_arrays,
)

BLOCKS_PREFIX = "features/blocks"
MANIFEST_FORMAT = "fraudloop.features.state.manifest"
PIECE_FORMAT = "fraudloop.features.state.piece"
VERSION = 1
_ENTITY = {"cust": "customers", "term": "terminals"}

#: unit rows -> the piece that holds them (written or read in this process): a unit is immutable,
#: so a state publishing the units it loaded or published before writes nothing for them
_KNOWN: weakref.WeakKeyDictionary[Rows, dict] = weakref.WeakKeyDictionary()


def is_manifest(data: bytes) -> bool:
    return data[:1] == b"{"


def piece_key(kind: str, sha: str) -> str:
    return f"{BLOCKS_PREFIX}/{kind}/{sha}.bin"


def _put_piece(store: ObjectStore, kind: str, meta: dict, arrays: dict) -> dict:
    data = pack_arrays({"format": PIECE_FORMAT, "version": VERSION, **meta}, arrays)
    sha = sha256_hex(data)
    key = piece_key(kind, sha)
    # a HEAD first: most label days are unchanged from one publish to the next, and a refused
    # conditional write still costs a written and fsynced temporary file
    written = not store.exists(key) and store.put_if_absent(key, data)
    return {"key": key, "sha256": sha, "bytes": len(data), "written": written}


def _get_piece(store: ObjectStore, entry: dict) -> tuple[dict, dict[str, np.ndarray]]:
    data = store.get_bytes(entry["key"])
    if sha256_hex(data) != entry["sha256"]:
        raise IntegrityError(f"{entry['key']}: sha256 does not match the state manifest")
    meta, arrays = unpack_arrays(data)
    if meta.get("format") != PIECE_FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{entry['key']} is not a feature state piece (version {VERSION})")
    return meta, arrays


def _local_ids(dictionary: _Dictionary, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted ids of `codes` and each code's position among them."""
    used, inverse = np.unique(codes, return_inverse=True)
    ids = np.array([dictionary.ids[c] for c in used.tolist()], dtype=object)
    order = np.argsort(ids, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return ids[order], rank[inverse]


def _unit_piece(store: ObjectStore, state: FeatureState, name: str, unit, rows: Rows) -> dict:
    codes, vals = TABLES[name]
    arrays: dict[str, np.ndarray] = {}
    cols = {"hour": rows.hour.astype(np.int64)}
    for col in codes:
        dictionary = state.customers if col == "cust" else state.terminals
        ids, local = _local_ids(dictionary, rows.cols[col].astype(np.int64))
        arrays[f"ids.{col}.blob"], arrays[f"ids.{col}.offsets"] = _encode_strings(ids)
        cols[col] = local
    for col in vals:
        cols[col] = rows.cols[col]
    # sorted by (entity, hour): a day block's order in memory (an hour chunk's too, its hour
    # being one); ids sorted in every piece and in the state read back keep that order
    perm = np.lexsort((cols["hour"], *(cols[c] for c in reversed(codes))))
    arrays.update({f"rows.{col}": np.ascontiguousarray(arr[perm]) for col, arr in cols.items()})
    entry = _put_piece(store, name, {"table": name, "first": unit[0], "last": unit[1]}, arrays)
    return {"first": unit[0], "last": unit[1], "rows": len(rows), **entry}


def _label_pieces(store: ObjectStore, state: FeatureState) -> list[dict]:
    lab = state.labels.sort_values(["transaction_id", "known_ns", "is_fraud"], kind="stable")
    out = []
    for day, part in lab.groupby(lab["tx_hour"].to_numpy() // 24, sort=True):
        ids, local = _local_ids(state.terminals, part["term"].to_numpy(dtype=np.int64))
        term_blob, term_offsets = _encode_strings(ids)
        tx_blob, tx_offsets = _encode_strings(part["transaction_id"].to_numpy(dtype=object))
        arrays = {
            "ids.term.blob": term_blob,
            "ids.term.offsets": term_offsets,
            "labels.ids_blob": tx_blob,
            "labels.ids_offsets": tx_offsets,
            "labels.term": local,
            "labels.tx_hour": part["tx_hour"].to_numpy(dtype=np.int64),
            "labels.known_ns": part["known_ns"].to_numpy(dtype=np.int64),
            "labels.is_fraud": part["is_fraud"].to_numpy(dtype=np.int8),
        }
        entry = _put_piece(store, "labels", {"table": "labels", "day": int(day)}, arrays)
        out.append({"day": int(day), "rows": len(part), **entry})
    return out


def write_state(store: ObjectStore, state: FeatureState) -> tuple[bytes, dict]:
    """Write the pieces `state` needs that are not stored yet; its manifest (the bytes to
    publish) and what was written (``pieces_written``, ``bytes_written``)."""
    tables: dict[str, list[dict]] = {}
    for name, units in state.tables.items():
        entries = []
        for unit in sorted(units):
            rows = units[unit]
            known = _KNOWN.get(rows)
            if known is None:
                known = _unit_piece(store, state, name, unit, rows)
                _KNOWN[rows] = {k: v for k, v in known.items() if k != "written"}
            entries.append(known)
        tables[name] = entries
    labels = _label_pieces(store, state)
    pieces = [e for entries in tables.values() for e in entries] + labels
    fresh = [e for e in pieces if e.pop("written", False)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": VERSION,
        "label_delay_hours": state.label_delay_hours,
        "hour": state.hour,
        "hour_key": state.hour_key,
        "customers": len(state.customers),
        "terminals": len(state.terminals),
        "tables": tables,
        "labels": labels,
    }
    written = {"pieces_written": len(fresh), "bytes_written": sum(e["bytes"] for e in fresh)}
    return json.dumps(manifest, sort_keys=True).encode(), written


def read_state(store: ObjectStore, manifest_bytes: bytes) -> FeatureState:
    """The state a manifest names, its pieces verified; equal to the state written."""
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"not a feature state manifest (version {VERSION})")
    loaded: list[tuple[str, dict, dict[str, np.ndarray]]] = []
    for name, entries in manifest["tables"].items():
        if name not in TABLES:
            raise ValueError(f"unknown feature state table {name!r} in the manifest")
        for entry in entries:
            loaded.append((name, entry, _get_piece(store, entry)[1]))
    for entry in manifest["labels"]:
        loaded.append(("labels", entry, _get_piece(store, entry)[1]))

    # one dictionary per entity kind over every piece's ids: codes in sorted id order (Arrow
    # sorts UTF-8 bytewise, which is code point order: Python's order of str)
    remap: dict[tuple[int, str], np.ndarray] = {}
    dictionaries = {}
    for col in _ENTITY:
        parts = [
            (i, _string_array(a[f"ids.{col}.blob"], a[f"ids.{col}.offsets"]))
            for i, (_, _, a) in enumerate(loaded)
            if f"ids.{col}.blob" in a
        ]
        everything = pa.chunked_array([ids for _, ids in parts], type=pa.large_string())
        uniques = pc.unique(everything)
        uniques = uniques.take(pc.array_sort_indices(uniques))
        codes = pc.index_in(everything, value_set=uniques).to_numpy().astype(np.int64)
        dictionaries[col] = _Dictionary(uniques.to_pylist())
        start = 0
        for i, ids in parts:
            remap[(i, col)] = codes[start : start + len(ids)]
            start += len(ids)

    state = FeatureState(
        label_delay_hours=int(manifest["label_delay_hours"]),
        hour=manifest["hour"],
        customers=dictionaries["cust"],
        terminals=dictionaries["term"],
    )
    label_frames = []
    for i, (name, entry, a) in enumerate(loaded):
        if name == "labels":
            label_frames.append(
                pd.DataFrame(
                    {
                        "transaction_id": _decode_strings(
                            a["labels.ids_blob"], a["labels.ids_offsets"]
                        ),
                        "term": remap[(i, "term")][a["labels.term"]],
                        "tx_hour": a["labels.tx_hour"],
                        "known_ns": a["labels.known_ns"],
                        "is_fraud": a["labels.is_fraud"],
                    }
                )
            )
            continue
        codes, vals = TABLES[name]
        cols = {c: remap[(i, c)][a[f"rows.{c}"]] for c in codes}
        cols.update({c: a[f"rows.{c}"] for c in vals})
        # local and global codes both follow sorted id order, so the rows stay sorted
        rows = Rows(a["rows.hour"], cols)
        unit = (int(entry["first"]), int(entry["last"]))
        state.tables[name][unit] = rows
        _KNOWN[rows] = {k: v for k, v in entry.items() if k != "written"}
    if label_frames:
        labels = pd.concat(label_frames, ignore_index=True)
        state.labels = labels.sort_values(
            ["transaction_id", "known_ns", "is_fraud"], kind="stable", ignore_index=True
        )
    else:
        state.labels = empty_label_records()
    state.tables = {name: dict(sorted(units.items())) for name, units in state.tables.items()}
    if state.hour is not None and manifest.get("hour_key") != hour_key_of(state.hour):
        raise ValueError("the state manifest's hour and hour_key disagree")
    return state


def state_from_blob(store: ObjectStore, data: bytes) -> FeatureState:
    """A published state in either layout: a manifest of pieces, or one ``to_bytes`` zip (the
    layout before pieces; read as it is, the next publish writes pieces)."""
    return read_state(store, data) if is_manifest(data) else FeatureState.from_bytes(data)


def sweep_pieces(
    store: ObjectStore, roots: tuple[str, ...], grace_seconds: float, now: float | None = None
) -> dict:
    """Delete the pieces no stored manifest under `roots` names, once older than `grace_seconds`.

    Pieces are written before the manifest that names them and are shared between manifests, so
    nothing deletes them when a manifest goes (an hour's chunks once its day block is in, a label
    day's piece once more labels arrived). Every manifest a reader may still follow is a stored
    ``.bin`` under `roots` (``publish_blob`` keeps the last two of each prefix; checkpoints are
    kept), so a piece none of them names is garbage, except one a writer has stored but not yet
    published: the grace period, far longer than any run, spares those.
    """
    now = time.time() if now is None else now
    referenced: set[str] = set()
    manifests = 0
    for root in roots:
        for info in store.list(f"{root}/"):
            if not info.key.endswith(".bin"):
                continue
            try:
                data = store.get_bytes(info.key)
            except ObjectNotFound:  # a blob removed by its prefix's publish since the listing
                continue
            if not is_manifest(data):
                continue  # a state in the old one-blob layout names no pieces
            manifest = json.loads(data)
            entries = [e for units in manifest["tables"].values() for e in units]
            referenced.update(e["key"] for e in entries + manifest["labels"])
            manifests += 1
    deleted = young = 0
    freed = 0
    for info in store.list(f"{BLOCKS_PREFIX}/"):
        if info.key in referenced:
            continue
        if now - info.modified < grace_seconds:
            young += 1
            continue
        store.delete(info.key)
        deleted += 1
        freed += info.size
    return {
        "manifests": manifests,
        "pieces_referenced": len(referenced),
        "pieces_deleted": deleted,
        "bytes_deleted": freed,
        "pieces_unreferenced_in_grace": young,
    }


def manifest_summary(data: bytes) -> dict:
    """Sizes a manifest records (for pointers and asset metadata) without reading its pieces."""
    manifest = json.loads(data)
    entries = [e for units in manifest["tables"].values() for e in units] + manifest["labels"]
    return {
        "customers": manifest["customers"],
        "terminals": manifest["terminals"],
        "pieces": len(entries),
        "state_bytes": sum(e["bytes"] for e in entries),
    }
