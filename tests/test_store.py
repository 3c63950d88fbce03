"""Both object-store backends keep the same contract: atomic writes, CAS, listing, not-found."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from fraudloop.core.settings import store_env
from fraudloop.core.store import (
    TEMP_PREFIX,
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

    # values 1..16, none equal to the "0" read: the etag is the content, so rewriting the very
    # bytes that were read is no change and would not make the holder's etag stale
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 17)]
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


# ----------------------------------------------------------------- local durability (issue 13)


def _spy_commits(monkeypatch):
    """Records renames/links and every fsync of a directory, in the order they happen."""
    events = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            events.append(("fsync-dir", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        events.append(("commit", str(Path(dst).parent)))

    def link(src, dst, **kw):
        real_link(src, dst, **kw)
        events.append(("commit", str(Path(dst).parent)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    return events


@pytest.mark.parametrize("mode", ["plain", "create", "swap"])
def test_local_commit_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch, mode):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("models/m/aliases.json", b"{}")
    etag = store.head("models/m/aliases.json").etag
    events = _spy_commits(monkeypatch)
    if mode == "plain":
        store.put_bytes("models/m/aliases.json", b"[]")
    elif mode == "create":
        store.put_bytes("models/m/versions/1/manifest.json", b"{}", if_none_match=True)
    else:
        store.put_bytes("models/m/aliases.json", b'{"production": 1}', if_match=etag)
    commits = [i for i, e in enumerate(events) if e[0] == "commit"]
    assert len(commits) == 1, events
    directory = events[commits[0]][1]
    assert ("fsync-dir", directory) in events[commits[0] + 1 :], events


def test_local_new_directories_are_fsynced_into_their_parents(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path)
    events = _spy_commits(monkeypatch)
    store.put_bytes("models/m/versions/7/manifest.json", b"{}", if_none_match=True)
    synced = {path for kind, path in events if kind == "fsync-dir"}
    for parent in ("", "models", "models/m", "models/m/versions"):
        assert str((tmp_path / parent).resolve()) in synced, (parent, events)


def test_local_delete_fsyncs_the_directory(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b.bin", b"x")
    events = _spy_commits(monkeypatch)
    store.delete("a/b.bin")
    assert events == [("fsync-dir", str((tmp_path / "a").resolve()))]


def test_local_stale_cas_fails_even_when_the_clock_is_coarse(tmp_path):
    """Same inode, same size, same mtime (a coarse clock and an inode reused at once): the
    stat identity cannot tell the versions apart, the etag must. (Edited in place, behind the
    store's back: the swap hashes what it replaces, whatever digest the file carries.)"""
    store = LocalObjectStore(tmp_path)
    store.put_bytes("models/m/aliases.json", b'{"production": 1}')
    _, stale = store.get_with_etag("models/m/aliases.json")
    path = tmp_path / "models/m/aliases.json"
    before = path.stat()
    with open(path, "r+b") as handle:  # another writer's version, same length
        handle.write(b'{"production": 2}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert store.get_with_etag("models/m/aliases.json")[1] != stale
    with pytest.raises(PreconditionFailed):
        store.put_bytes("models/m/aliases.json", b'{"production": 3}', if_match=stale)
    assert store.get_bytes("models/m/aliases.json") == b'{"production": 2}'


def test_local_etag_is_the_same_from_put_head_list_and_get(tmp_path):
    store = LocalObjectStore(tmp_path)
    put = store.put_bytes("a/b.bin", b"payload")
    assert store.head("a/b.bin").etag == put
    assert store.list("a/")[0].etag == put
    assert store.get_with_etag("a/b.bin") == (b"payload", put)


def _temp_file(directory: Path, age_seconds: float, data: bytes = b"half") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    path.write_bytes(data)
    old = time.time() - age_seconds
    os.utime(path, (old, old))
    return path


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "ab")
fcntl.flock(handle, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_sweep_removes_abandoned_temp_files_but_not_a_live_writers(tmp_path):
    store = LocalObjectStore(tmp_path, temp_max_age_seconds=60)
    store.put_bytes("models/m/versions/1/model.txt", b"model")
    abandoned = _temp_file(tmp_path / "models/m/versions/1", age_seconds=3600)
    fresh = _temp_file(tmp_path / "models/m/versions/1", age_seconds=0)
    elsewhere = _temp_file(tmp_path / "raw/x", age_seconds=3600)
    live = _temp_file(tmp_path / "models/m/versions/2", age_seconds=3600)
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(live)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "locked"
        assert store.sweep_temp_files("models/m/") == 1
        assert not abandoned.exists()
        assert fresh.exists() and live.exists() and elsewhere.exists()
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    # its writer is dead now: the lock is gone with it
    assert store.sweep_temp_files("models/m/") == 1
    assert not live.exists()
    assert store.sweep_temp_files() == 1 and not elsewhere.exists()
    assert store.get_bytes("models/m/versions/1/model.txt") == b"model"


def test_temp_files_are_never_listed_or_readable(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b.bin", b"data")
    temp = _temp_file(tmp_path / "a", age_seconds=0)
    assert [i.key for i in store.list("")] == ["a/b.bin"]
    assert [i.key for i in store.list("a/")] == ["a/b.bin"]
    for read in (store.get_bytes, store.head, store.get_with_etag):
        with pytest.raises(ValueError):
            read(f"a/{temp.name}")


def test_sweep_temp_files_is_a_no_op_on_s3(s3_store):
    s3_store.put_bytes("a/b.bin", b"data")
    assert s3_store.sweep_temp_files("a/") == 0
    assert [i.key for i in s3_store.list("")] == ["a/b.bin"]


CAS_WRITER = """
import os, sys, time
from fraudloop.core.settings import Settings
from fraudloop.core.store import PreconditionFailed
store = Settings.from_env().open_store()
key, etag, me, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
time.sleep(max(0.0, start_at - time.time()))
try:
    store.put_bytes(key, me.encode(), if_match=etag)
    print("won")
except PreconditionFailed:
    print("lost")
"""


def test_cross_process_cas_has_exactly_one_winner(store):
    """Separate processes (not threads): the local lock and S3's conditional PUT both hold."""
    key = "models/m/aliases.json"
    store.put_bytes(key, b"start")
    _, etag = store.get_with_etag(key)
    env = {**os.environ, **store_env(store)}
    start_at = time.time() + 3.0  # every process imported and ready, then all at once
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CAS_WRITER, key, etag, f"writer-{i}", str(start_at)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outcomes = {}
    for i, proc in enumerate(writers):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        outcomes[f"writer-{i}"] = out.strip()
    winners = [name for name, result in outcomes.items() if result == "won"]
    assert len(winners) == 1, outcomes
    assert sorted(outcomes.values()).count("lost") == 5
    assert store.get_bytes(key) == winners[0].encode()


def test_conditional_writes_on_the_s3_stand_in_are_atomic_even_when_it_is_slow(
    s3_store, monkeypatch
):
    """The test above relies on S3's conditional PUT being atomic. moto checks the precondition
    and stores the object as two steps, so a write that is slow to store let a second writer
    through (CI: two winners); the fixture's server takes writes one at a time, as S3 and MinIO
    keep them. A store that is slow to write makes the race certain without the fixture's lock."""
    from moto.s3 import models as moto_s3

    store_object = moto_s3.S3Backend.put_object

    def slow_put_object(self, *args, **kwargs):
        time.sleep(0.02)
        return store_object(self, *args, **kwargs)

    monkeypatch.setattr(moto_s3.S3Backend, "put_object", slow_put_object)
    key = "models/m/aliases.json"
    s3_store.put_bytes(key, b"start")
    _, etag = s3_store.get_with_etag(key)
    barrier = threading.Barrier(6)
    winners = []

    def write(name: str) -> None:
        barrier.wait()
        try:
            s3_store.put_bytes(key, name.encode(), if_match=etag)
            winners.append(name)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=write, args=(f"writer-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1, winners
    assert s3_store.get_bytes(key) == winners[0].encode()


def test_listing_reads_the_recorded_digest_and_hashes_a_file_without_one(tmp_path):
    store = LocalObjectStore(tmp_path)
    etag = store.put_bytes("landing/a.csv", b"written by the store")
    assert os.getxattr(tmp_path / "landing/a.csv", "user.fraudloop.sha256") == etag[7:].encode()
    (tmp_path / "landing/b.csv").write_bytes(b"dropped in by a feed")  # no recorded digest
    assert {i.key: i.etag for i in store.list("landing/")} == {
        "landing/a.csv": f"sha256:{sha256_hex(b'written by the store')}",
        "landing/b.csv": f"sha256:{sha256_hex(b'dropped in by a feed')}",
    }
