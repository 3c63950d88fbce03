"""The feature state as immutable pieces: equal to the state written, an hour writes its own
chunks only, pieces verified, and a store written in the old one-blob layout still read."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.store import (
    IntegrityError,
    LocalObjectStore,
    ObjectNotFound,
    load_blob,
    publish_blob,
)
from fraudloop.features import state_blocks
from fraudloop.features.compute import advance_hour, build_features
from fraudloop.features.feature_store import (
    FEATURESTORE_PREFIX,
    ONLINE_PREFIX,
    load_online,
    publish_online_from,
    publish_state,
)
from fraudloop.features.pipeline import (
    CHECKPOINT_PREFIX,
    LATEST_PREFIX,
    load_latest_state,
    sweep_state_pieces,
)
from fraudloop.features.state import (
    TABLES,
    FeatureState,
    attach_transactions,
    hour_key_of,
    to_utc_ns,
)
from fraudloop.features.state_blocks import read_state, state_from_blob, write_state
from tests.factories import load_bench_features

bench = load_bench_features()


@pytest.fixture(scope="module")
def data():
    """~7,000 transactions over 12 days, revised labels (a fraud label later revoked)."""
    tx, labels = bench.synthetic_data(
        n_customers=120, n_terminals=150, days=12, seed=5, revisions=5
    )
    return tx, labels, to_utc_ns(tx["tx_datetime"]) // HOUR_NS


def _state_at(data, hour: int) -> FeatureState:
    tx, labels, hours = data
    known = labels[labels["known_at"] <= pd.Timestamp((hour + 1) * HOUR_NS, tz="UTC")]
    return FeatureState.from_history(tx[hours <= hour], known, hour_key_of(hour))


def _advance(data, state: FeatureState, hour: int):
    """One hour on: its transactions, and at a day's first hour the labels known by then."""
    tx, labels, hours = data
    fed = None
    if hour % 24 == 0:
        start = pd.Timestamp(hour * HOUR_NS, tz="UTC")
        due = (labels["known_at"] > start - pd.Timedelta(days=1)) & (labels["known_at"] <= start)
        fed = attach_transactions(labels[due], tx)
    return advance_hour(state, tx[hours == hour], fed, hour_key_of(hour))


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts like a new process: no piece known from an earlier write or read."""
    state_blocks._KNOWN.clear()


def test_pieces_give_back_the_state_written(data, tmp_path):
    _, _, hours = data
    store = LocalObjectStore(tmp_path)
    mid_day = int(hours.max()) - 30  # a state with day blocks and hour chunks of today
    state = _state_at(data, mid_day)
    assert any(a == b for a, b in state.tables["cust"]), "no hour chunk to store"
    manifest, written = write_state(store, state)
    assert written["pieces_written"] > 0
    state_blocks._KNOWN.clear()
    back = read_state(store, manifest)
    assert back.to_bytes() == state.to_bytes()
    assert back.hour == state.hour and back.label_delay_hours == state.label_delay_hours
    for name, units in back.tables.items():  # read back in the order the windows search
        codes = TABLES[name][0]
        for rows in units.values():
            order = np.lexsort((rows.hour, *(rows.cols[c] for c in reversed(codes))))
            assert (order == np.arange(len(rows))).all(), name
    # what it computes next is what the original computes, across the day boundary
    a, b = state, back
    for hour in range(mid_day + 1, mid_day + 30):
        fa, a = _advance(data, a, hour)
        fb, b = _advance(data, b, hour)
        pd.testing.assert_frame_equal(fa, fb)
    assert a.to_bytes() == b.to_bytes()


def test_reloaded_state_continues_like_the_batch_features(data, tmp_path):
    """Offline parity through a write/read at every day boundary: rolling from pieces gives the
    features the batch computation gives."""
    tx, labels, hours = data
    store = LocalObjectStore(tmp_path)
    first = int(hours.min()) // 24 * 24 + 24 * 9
    state = _state_at(data, first - 1)
    enriched = attach_transactions(labels, tx)
    known = to_utc_ns(enriched["known_at"])
    fed = known <= first * HOUR_NS  # what _state_at fed
    outs = []
    for hour in range(first, int(hours.max()) + 1):
        if hour % 24 == 0:
            state = read_state(store, write_state(store, state)[0])
        due = ~fed & (known <= hour * HOUR_NS)
        fed |= due
        out, state = advance_hour(state, tx[hours == hour], enriched[due], hour_key_of(hour))
        outs.append(out)
    got = pd.concat(outs, ignore_index=True).set_index("transaction_id").sort_index()
    want = build_features(tx, labels).set_index("transaction_id").loc[got.index]
    for name in got.columns.drop(["tx_datetime", "customer_id", "terminal_id", "amount"]):
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=float), want[name].to_numpy(dtype=float), atol=1e-9
        )


def test_an_hour_writes_its_chunks_and_a_new_day_its_block(data, tmp_path):
    _, _, hours = data
    store = LocalObjectStore(tmp_path)
    hour = int(hours.max()) - 30
    hour -= hour % 24 - 5  # 05:00 of a day
    state = _state_at(data, hour)
    _, first = write_state(store, state)
    whole = sum(i.size for i in store.list(state_blocks.BLOCKS_PREFIX + "/"))
    assert first["bytes_written"] == whole

    _, state = _advance(data, state, hour + 1)
    _, one_hour = write_state(store, state)
    chunks = sum(1 for units in state.tables.values() if (hour + 1, hour + 1) in units)
    # the hour's chunk of each table, and at most the label days the hour's trim touched
    assert chunks <= one_hour["pieces_written"] <= chunks + 2
    assert one_hour["bytes_written"] < whole / 10

    for h in range(hour + 2, hour + 18):  # to 22:00
        _, state = _advance(data, state, h)
        write_state(store, state)
    before = {i.key for i in store.list(state_blocks.BLOCKS_PREFIX + "/cust/")}
    _, state = _advance(data, state, hour + 18)  # 23:00 completes the day: its block replaces
    assert (hour + 18) % 24 == 23  # the hour chunks in the state
    write_state(store, state)
    new = {i.key for i in store.list(state_blocks.BLOCKS_PREFIX + "/cust/")} - before
    day = hour + 18 - 23
    assert (day, day + 23) in state.tables["cust"]
    assert not any(a == b for a, b in state.tables["cust"])
    assert len(new) == 1, "the day's block, once"

    # a state read back publishes nothing new
    state_blocks._KNOWN.clear()
    manifest, _ = write_state(store, state)
    again = read_state(store, manifest)
    assert write_state(store, again)[1]["pieces_written"] == 0


def test_a_piece_that_changed_or_went_missing_is_refused(data, tmp_path):
    store = LocalObjectStore(tmp_path)
    manifest, _ = write_state(store, _state_at(data, int(data[2].max())))
    pieces = store.list(state_blocks.BLOCKS_PREFIX + "/term/")
    data_bytes = bytearray(store.get_bytes(pieces[0].key))
    data_bytes[-5] ^= 0xFF
    store.put_bytes(pieces[0].key, bytes(data_bytes))
    with pytest.raises(IntegrityError, match="sha256"):
        read_state(store, manifest)
    store.delete(pieces[0].key)
    with pytest.raises(ObjectNotFound):
        read_state(store, manifest)
    with pytest.raises(ValueError, match="manifest"):
        read_state(store, b'{"format": "something else"}')


def test_a_store_in_the_old_layout_is_read_and_migrated(data, tmp_path):
    """A latest state published before pieces (one to_bytes blob) is read as it is; publishing
    the online store from it writes pieces."""
    store = LocalObjectStore(tmp_path)
    state = _state_at(data, int(data[2].max()))
    old = state.to_bytes()
    publish_blob(store, LATEST_PREFIX, old, {"state_hour": state.hour_key})
    loaded, _ = load_latest_state(store)
    assert loaded.to_bytes() == old
    assert state_from_blob(store, old).to_bytes() == old

    pointer = publish_online_from(store, LATEST_PREFIX)
    assert pointer["layout"] == "pieces" and pointer["pieces_written"] > 0
    online_blob, _ = load_blob(store, ONLINE_PREFIX)
    assert state_blocks.is_manifest(online_blob)
    assert read_state(store, online_blob).to_bytes() == old
    _, manifest = load_online(store)
    assert manifest["state_hour"] == state.hour_key
    assert manifest["customers"] == len(state.customers)


def test_online_publish_reuses_the_latest_pieces(data, tmp_path):
    store = LocalObjectStore(tmp_path)
    state = _state_at(data, int(data[2].max()))
    latest = publish_state(store, LATEST_PREFIX, state, state.hour_key)
    assert latest["pieces_written"] > 0
    files = {i.key for i in store.list("")}
    online = publish_online_from(store, LATEST_PREFIX)
    assert online["sha256"] == latest["sha256"] and online["bytes_written"] == 0
    added = {i.key for i in store.list("")} - files
    assert all(k.startswith(ONLINE_PREFIX + "/") for k in added), added
    # an older state never replaces a newer one
    older = _state_at(data, int(data[2].max()) - 5)
    publish_state(store, LATEST_PREFIX + "-older", older, older.hour_key)
    assert publish_online_from(store, LATEST_PREFIX + "-older")["sha256"] == latest["sha256"]


def test_the_sweep_deletes_only_pieces_no_manifest_names_once_past_their_grace(data, tmp_path):
    """A day of hourly publishes leaves the day's hour chunks (replaced by its block) and old
    label pieces behind; the sweep removes those, never a piece the latest state, the online
    store, a checkpoint or the previous blob of a prefix still names, and none within grace."""
    store = LocalObjectStore(tmp_path)
    hour = int(data[2].max()) - 40
    hour -= hour % 24 - 5  # 05:00 of a day
    state = _state_at(data, hour)
    checkpoint = f"{CHECKPOINT_PREFIX}/2000-01-01"
    publish_state(store, checkpoint, state, state.hour_key)
    for h in range(hour + 1, hour + 22):  # to 02:00 of the next day
        _, state = _advance(data, state, h)
        publish_state(store, LATEST_PREFIX, state, state.hour_key)
        publish_online_from(store, LATEST_PREFIX)
    pieces = {i.key for i in store.list(state_blocks.BLOCKS_PREFIX + "/")}

    now = time.time()
    young = sweep_state_pieces(store, grace_hours=1)
    assert young["pieces_deleted"] == 0 and young["pieces_unreferenced_in_grace"] > 0
    assert {i.key for i in store.list(state_blocks.BLOCKS_PREFIX + "/")} == pieces

    swept = state_blocks.sweep_pieces(
        store, (CHECKPOINT_PREFIX, FEATURESTORE_PREFIX), 3600, now=now + 7200
    )
    assert swept["pieces_deleted"] == young["pieces_unreferenced_in_grace"] > 0
    assert swept["bytes_deleted"] > 0
    left = {i.key for i in store.list(state_blocks.BLOCKS_PREFIX + "/")}
    assert len(left) == len(pieces) - swept["pieces_deleted"] == swept["pieces_referenced"]
    # every manifest still stored reads whole: the current and previous of each prefix
    for prefix in (LATEST_PREFIX, ONLINE_PREFIX, checkpoint):
        for key in load_blob(store, prefix)[1]["history"]:
            read_state(store, store.get_bytes(key))
    assert load_latest_state(store)[0].to_bytes() == state.to_bytes()
    again = state_blocks.sweep_pieces(
        store, (CHECKPOINT_PREFIX, FEATURESTORE_PREFIX), 3600, now=now + 7200
    )
    assert again["pieces_deleted"] == 0
