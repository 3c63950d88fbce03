"""Both object-store backends keep the same contract: atomic writes, CAS, listing, not-found."""

from __future__ import annotations

import threading

import pytest

from fraudloop.core.store import (
    LocalObjectStore,
    ObjectNotFound,
    PreconditionFailed,
    sha256_hex,
)


def test_round_trip_head_and_list(store):
    store.put_bytes("raw/a/1.bin", b"one")
    store.put_bytes("raw/a/2.bin", b"two!")
    store.put_bytes("raw/b/1.bin", b"x")
    assert store.get_bytes("raw/a/2.bin") == b"two!"
    assert store.head("raw/a/2.bin").size == 4
    assert store.head("raw/a/missing") is None
    assert [i.key for i in store.list("raw/a/")] == ["raw/a/1.bin", "raw/a/2.bin"]
    assert [i.key for i in store.list("raw/")] == ["raw/a/1.bin", "raw/a/2.bin", "raw/b/1.bin"]
    assert [i.key for i in store.list("raw/a/1")] == ["raw/a/1.bin"]
    assert store.list("nothing/") == []


def test_missing_object_raises_not_found(store):
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no/such/key")


def test_create_if_absent_refuses_second_writer(store):
    store.put_bytes("models/m/versions/1/model.txt", b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("models/m/versions/1/model.txt", b"other", if_none_match=True)
    assert store.get_bytes("models/m/versions/1/model.txt") == b"v1"
    assert store.put_if_absent("models/m/versions/1/model.txt", b"again") is False


def test_update_if_match_detects_lost_update(store):
    store.put_bytes("models/m/aliases.json", b"{}")
    _, etag = store.get_with_etag("models/m/aliases.json")
    store.put_bytes("models/m/aliases.json", b'{"production": 1}', if_match=etag)
    # A second writer still holding the old etag must fail, not overwrite.
    with pytest.raises(PreconditionFailed):
        store.put_bytes("models/m/aliases.json", b'{"production": 2}', if_match=etag)
    assert store.get_bytes("models/m/aliases.json") == b'{"production": 1}'


def test_overwrite_changes_etag(store):
    first = store.put_bytes("landing/x.csv", b"a")
    second = store.put_bytes("landing/x.csv", b"bb")
    assert first != second
    assert store.head("landing/x.csv").etag == second


def test_invalid_keys_rejected(store):
    for key in ["/abs", "a/../b", "dir/", "", "a//b"]:
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")


def test_local_concurrent_cas_has_exactly_one_winner(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("aliases.json", b"0")
    _, etag = store.get_with_etag("aliases.json")
    wins, losses = [], []

    def writer(i):
        try:
            store.put_bytes("aliases.json", str(i).encode(), if_match=etag)
            wins.append(i)
        except PreconditionFailed:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 15
    assert store.get_bytes("aliases.json") == str(wins[0]).encode()


def test_local_write_leaves_no_temp_files_visible(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b.bin", b"data")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("a/b.bin", b"data2", if_none_match=True)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.bin"]
    assert [i.key for i in store.list("")] == ["a/b.bin"]


def test_sha256_hex():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
