"""Model registry: immutable versions, verified loads, atomic aliases and a complete audit log.

Most tests run on both backends (`store` fixture: a local directory and moto's S3 server over
HTTP), because the scoring service and the rollout sensor rely on identical behaviour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config

from fraudloop.core.store import LocalObjectStore, S3ObjectStore
from fraudloop.model.registry import (
    AliasError,
    ConcurrentUpdateError,
    IntegrityError,
    ModelRegistry,
    NoPreviousVersionError,
    UnknownAliasError,
    UnknownVersionError,
)
from tests.s3_faults import FaultyS3Proxy


def _files(i: int) -> dict[str, bytes]:
    return {"model.txt": f"tree {i}\n".encode(), "lineage.json": json.dumps({"seed": i}).encode()}


def _register(reg: ModelRegistry, i: int, **metrics):
    return reg.register(
        _files(i),
        {"params": {"num_leaves": 31 + i}, "metrics": {"ap": 0.7, **metrics}},
        actor="trainer",
        reason=f"train {i}",
    )


def _with_versions(store, n: int) -> ModelRegistry:
    reg = ModelRegistry(store)
    for i in range(1, n + 1):
        _register(reg, i)
    return reg


def test_register_load_round_trip(store):
    reg = ModelRegistry(store)
    v = _register(reg, 1)
    assert v.version == 1
    assert v.files["model.txt"]["size"] == len(b"tree 1\n")
    loaded = reg.load(1)
    assert loaded.files == _files(1)
    assert loaded.metadata["params"] == {"num_leaves": 32}
    assert reg.load("1").files == _files(1)
    assert reg.get_file(1, "model.txt") == b"tree 1\n"
    assert store.exists("models/fraud/versions/1/manifest.json")
    assert reg.show(1).actor == "trainer"


def test_versions_numbered_and_immutable(store):
    reg = _with_versions(store, 3)
    assert [v.version for v in reg.list_versions()] == [1, 2, 3]
    # No API overwrites a version, and the store itself refuses to recreate the manifest.
    assert not hasattr(reg, "overwrite")
    assert not store.put_if_absent("models/fraud/versions/2/manifest.json", b"{}")
    assert reg.load(2).files == _files(2)
    # A crashed writer's claim (no manifest) leaves a gap, never a half version.
    store.put_bytes("models/fraud/versions/4/_claim.json", b"{}")
    assert [v.version for v in reg.list_versions()] == [1, 2, 3]
    assert _register(reg, 5).version == 5
    with pytest.raises(UnknownVersionError, match="no version 4"):
        reg.load(4)


def test_unknown_version_and_bad_inputs(store):
    reg = _with_versions(store, 1)
    with pytest.raises(UnknownVersionError, match="has no version 9"):
        reg.show(9)
    with pytest.raises(UnknownVersionError):
        reg.promote(9, actor="me", reason="x")
    with pytest.raises(ValueError, match="reserved"):
        reg.register({"manifest.json": b"x"}, {}, actor="me", reason="x")
    with pytest.raises(ValueError, match="invalid file name"):
        reg.register({"../escape": b"x"}, {}, actor="me", reason="x")
    with pytest.raises(ValueError, match="JSON"):
        reg.register({"m": b"x"}, {"bad": object()}, actor="me", reason="x")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_tampered_and_missing_artifacts_refused(backend, request):
    store = request.getfixturevalue(f"{backend}_store")
    reg = _with_versions(store, 2)
    store.put_bytes("models/fraud/versions/1/model.txt", b"tree 9\n")  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"'model\.txt'.*version 1.*sha256"):
        reg.load(1)
    with pytest.raises(IntegrityError, match=r"model\.txt"):
        reg.get_file(1, "model.txt")
    store.delete("models/fraud/versions/2/lineage.json")
    with pytest.raises(IntegrityError, match=r"'lineage\.json'.*version 2.*missing"):
        reg.load(2)
    assert reg.get_file(2, "model.txt") == b"tree 2\n"  # untouched file still loads
    with pytest.raises(LookupError, match="no file 'nope'"):
        reg.get_file(2, "nope")


def test_promote_moves_production_to_previous_and_rollback_swaps(store):
    reg = _with_versions(store, 3)
    assert reg.promote(1, actor="alice", reason="first") == {"production": 1}
    assert reg.promote(2, actor="bob", reason="better") == {"production": 2, "previous": 1}
    assert reg.load("production").version == 2
    assert reg.load("production").alias == "production"
    assert reg.rollback(actor="carol", reason="alerts") == {"production": 1, "previous": 2}
    assert reg.rollback(actor="carol", reason="undo") == {"production": 2, "previous": 1}
    reg.set_alias("canary", 3, actor="sensor", reason="rollout start")
    out = reg.promote(3, actor="sensor", reason="rollout done", clear=("canary",))
    assert out == {"production": 3, "previous": 2}
    # Promoting what is already production is a no-op: no write, no audit entry.
    before = len(reg.history())
    assert reg.promote(3, actor="x", reason="again") == out
    assert len(reg.history()) == before


def test_alias_errors(store):
    reg = _with_versions(store, 1)
    with pytest.raises(NoPreviousVersionError, match="no previous version"):
        reg.rollback(actor="a", reason="r")
    reg.promote(1, actor="a", reason="r")
    with pytest.raises(NoPreviousVersionError):
        reg.rollback(actor="a", reason="r")
    with pytest.raises(UnknownAliasError, match="'canary' of model 'fraud' is not set"):
        reg.load("canary")
    with pytest.raises(AliasError, match="invalid alias name 'Prod!'"):
        reg.set_alias("Prod!", 1, actor="a", reason="r")
    with pytest.raises(AliasError):
        reg.promote(1, to="previous", actor="a", reason="r")
    with pytest.raises(ValueError, match="actor is required"):
        reg.set_alias("shadow", 1, actor="", reason="r")
    reg.set_alias("shadow", 1, actor="a", reason="r")
    reg.remove_alias("shadow", actor="a", reason="done")
    assert reg.aliases() == {"production": 1}
    with pytest.raises(UnknownAliasError):
        reg.remove_alias("shadow", actor="a", reason="again")


def test_audit_log_records_every_change_in_order(store):
    reg = _with_versions(store, 2)
    reg.promote(1, actor="alice", reason="baseline", evidence={"ap": 0.71})
    reg.set_alias("canary", 2, actor="sensor", reason="start", evidence={"share": 0.05})
    reg.promote(2, actor="sensor", reason="canary passed", evidence={"error_rate": 0.0})
    reg.rollback(actor="oncall", reason="alert storm", evidence={"alerts": 40})
    hist = reg.history()
    assert [e["action"] for e in hist] == [
        "register",
        "register",
        "promote",
        "set_alias",
        "promote",
        "rollback",
    ]
    assert [e["actor"] for e in hist[2:]] == ["alice", "sensor", "sensor", "oncall"]
    assert [e["reason"] for e in hist[2:]] == ["baseline", "start", "canary passed", "alert storm"]
    assert [e["evidence"] for e in hist[2:]] == [
        {"ap": 0.71},
        {"share": 0.05},
        {"error_rate": 0.0},
        {"alerts": 40},
    ]
    promote2 = hist[4]
    assert (promote2["alias"], promote2["from_version"], promote2["to_version"]) == (
        "production",
        1,
        2,
    )
    assert promote2["changes"]["previous"] == {"from": None, "to": 1}
    assert all(e["timestamp"].endswith("+00:00") for e in hist)
    assert [e["to_version"] for e in reg.history("previous")] == [2, 1]
    assert [e["changes"]["previous"]["to"] for e in reg.history("previous")] == [1, 2]
    assert [e["action"] for e in reg.history("canary")] == ["set_alias"]
    # The raw object is JSON lines, one entry each.
    lines = store.get_bytes("models/fraud/audit.log").decode().splitlines()
    assert len(lines) == len(hist)


def test_history_repairs_a_change_whose_audit_append_crashed(store, monkeypatch):
    reg = _with_versions(store, 2)
    reg.promote(1, actor="a", reason="one")
    monkeypatch.setattr(reg, "_append_audit", lambda entries: None)  # "crash" after the CAS
    reg.promote(2, actor="a", reason="two")
    monkeypatch.undo()
    assert [e.get("to_version") for e in reg.history("production")] == [1, 2]
    reg.set_alias("shadow", 1, actor="b", reason="three")  # next writer repairs the log
    logged = [json.loads(x) for x in store.get_bytes("models/fraud/audit.log").splitlines()]
    assert [e["revision"] for e in logged if "revision" in e] == [1, 2, 3]


def test_stale_expected_etag_refused(store):
    reg = _with_versions(store, 3)
    reg.promote(1, actor="a", reason="r")
    current, etag = reg.aliases_with_etag()
    assert current == {"production": 1}
    reg.promote(2, actor="b", reason="someone else")
    with pytest.raises(ConcurrentUpdateError, match="changed since they were read"):
        reg.promote(3, actor="a", reason="stale decision", expected_etag=etag)
    with pytest.raises(ConcurrentUpdateError, match="expected production=1"):
        reg.promote(3, actor="a", reason="stale decision", expect={"production": 1})
    assert reg.aliases() == {"production": 2, "previous": 1}
    _, etag = reg.aliases_with_etag()
    reg.promote(3, actor="a", reason="fresh decision", expected_etag=etag)
    assert reg.aliases()["production"] == 3
    assert [e["to_version"] for e in reg.history("production")] == [1, 2, 3]


def _replay(history: list[dict]) -> dict[str, int]:
    state: dict[str, int] = {}
    for entry in history:
        for alias, change in (entry.get("changes") or {}).items():
            assert state.get(alias) == change["from"], f"broken chain at {entry}"
            if change["to"] is None:
                state.pop(alias)
            else:
                state[alias] = change["to"]
    return state


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_promotions_never_lose_an_update(backend, request):
    store = request.getfixturevalue(f"{backend}_store")
    n = 8
    reg = _with_versions(store, n + 1)
    reg.promote(1, actor="setup", reason="baseline")
    _, etag = reg.aliases_with_etag()
    racers = list(range(2, n + 2))
    barrier = threading.Barrier(n)
    landed, refused, other = [], [], []

    def writer(v: int) -> None:
        # Even writers pinned the state they decided on; odd writers re-apply on conflict.
        pin = etag if v % 2 == 0 else None
        barrier.wait()
        try:
            reg.promote(v, actor=f"w{v}", reason="race", expected_etag=pin, evidence={"v": v})
            landed.append(v)
        except ConcurrentUpdateError:
            refused.append(v)
        except Exception as error:
            other.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not other
    assert sorted(landed + refused) == racers  # every write landed or was refused
    assert {v for v in racers if v % 2} <= set(landed)  # re-applying writers always land
    assert len([v for v in landed if v % 2 == 0]) <= 1  # at most one pinned writer wins
    final = reg.aliases()
    assert final["production"] in landed
    promotions = [e for e in reg.history() if e["action"] == "promote"]
    assert len(promotions) == 1 + len(landed)  # exactly one entry per successful change
    assert sorted(e["to_version"] for e in promotions[1:]) == sorted(landed)
    assert [e["evidence"]["v"] for e in promotions[1:]] == [e["to_version"] for e in promotions[1:]]
    assert [e["revision"] for e in promotions] == list(range(1, len(promotions) + 1))
    assert promotions[-1]["to_version"] == final["production"]
    assert final["previous"] == promotions[-1]["from_version"]
    assert _replay(reg.history()) == final  # the chain of from -> to is unbroken


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_registrations_get_distinct_numbers(backend, request):
    store = request.getfixturevalue(f"{backend}_store")
    reg = ModelRegistry(store)
    n = 6
    barrier = threading.Barrier(n)
    results, errors = [], []

    def writer(i: int) -> None:
        barrier.wait()
        try:
            results.append((i, _register(reg, i)))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    numbers = sorted(v.version for _, v in results)
    assert len(set(numbers)) == n
    for i, v in results:  # nobody's artifacts were overwritten by a racer
        assert reg.load(v.version).files == _files(i)
    assert sorted(e["to_version"] for e in reg.history() if e["action"] == "register") == numbers


def test_diff(store):
    reg = ModelRegistry(store)
    _register(reg, 1)
    reg.register(
        {"model.txt": b"tree 1\n", "lineage.json": b"{}"},
        {"params": {"num_leaves": 32}, "metrics": {"ap": 0.75}},
        actor="trainer",
        reason="retrain",
    )
    d = reg.diff(1, 2)
    assert d["metadata"] == {"metrics.ap": {"a": 0.7, "b": 0.75}}
    assert list(d["files"]) == ["lineage.json"]
    reg.promote(2, actor="a", reason="r")
    assert reg.diff(1, "production")["b"] == 2


def test_registry_does_not_import_dagster():
    code = "import sys, fraudloop.model.registry; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_sweeps_temp_files_of_a_killed_writer(tmp_path):
    store = LocalObjectStore(tmp_path, temp_max_age_seconds=60)
    reg = _with_versions(store, 1)
    leftover = tmp_path / "models/fraud/versions/2/.tmp-0123456789abcdef"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"x" * 4096)
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    _register(reg, 2)
    assert not leftover.exists()
    assert not [p for p in tmp_path.rglob(".tmp-*")]


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_alias_never_swaps_from_a_good_production_to_a_bad_version(backend, request):
    store = request.getfixturevalue(f"{backend}_store")
    reg = _with_versions(store, 3)
    reg.promote(1, actor="alice", reason="good")
    reg.set_alias("previous", 2, actor="alice", reason="rollback target")
    store.put_bytes("models/fraud/versions/2/model.txt", b"tree 9\n")  # tampered, same size
    store.delete("models/fraud/versions/3/lineage.json")  # half-copied
    store.put_bytes("models/fraud/versions/4/_claim.json", b"{}")  # claimed, never committed
    before, log = reg.aliases_with_etag(), store.get_bytes("models/fraud/audit.log")
    for bad in (2, 3):
        with pytest.raises(IntegrityError):
            reg.promote(bad, actor="mallory", reason="bad")
        with pytest.raises(IntegrityError):
            reg.set_alias("canary", bad, actor="mallory", reason="bad")
    with pytest.raises(UnknownVersionError):
        reg.promote(4, actor="mallory", reason="never committed")
    with pytest.raises(IntegrityError):
        reg.rollback(actor="mallory", reason="back to the tampered v2")
    assert reg.aliases_with_etag() == before
    assert store.get_bytes("models/fraud/audit.log") == log  # nothing logged either
    assert reg.load("production").version == 1


def test_alias_change_sweeps_temp_files_a_killed_alias_writer_left(tmp_path):
    store = LocalObjectStore(tmp_path, temp_max_age_seconds=60)
    reg = _with_versions(store, 2)
    leftover = tmp_path / "models/fraud/.tmp-aliases0123456789"
    leftover.write_bytes(b'{"aliases": ')
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    reg.promote(2, actor="ops", reason="after a crash")
    assert not leftover.exists()


def _store_through(proxy: FaultyS3Proxy, bucket: str) -> S3ObjectStore:
    """An S3 store reaching moto through the proxy; two attempts per request so an outage is
    seen in seconds (the deployed client retries five times)."""
    client = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": 2, "mode": "standard"},
            request_checksum_calculation="when_required",
            connect_timeout=2,
            read_timeout=5,
        ),
    )
    return S3ObjectStore(bucket, prefix="fl", endpoint_url=proxy.url, client=client)


@pytest.mark.parametrize("mode", ["503", "drop"])
@pytest.mark.parametrize("after", [0, 2, 4])
def test_s3_outage_mid_registration_fails_cleanly_and_recovers(s3_endpoint, s3_bucket, mode, after):
    """The endpoint fails after `after` requests of a registration (claim, files, manifest):
    the call raises, no reader sees a half version, and the same call succeeds once it is back."""
    with FaultyS3Proxy(s3_endpoint) as proxy:
        store = _store_through(proxy, s3_bucket)
        reg = _with_versions(store, 1)
        reg.promote(1, actor="ops", reason="good")
        before = (reg.aliases_with_etag(), [v.version for v in reg.list_versions()])
        log = store.get_bytes("models/fraud/audit.log")
        proxy.fail(mode, after=after)
        with pytest.raises(Exception) as raised:
            _register(reg, 2)
        assert not isinstance(raised.value, AssertionError)
        assert proxy.refused > 0
        proxy.recover()
        assert (reg.aliases_with_etag(), [v.version for v in reg.list_versions()]) == before
        assert store.get_bytes("models/fraud/audit.log") == log
        assert reg.load(1).version == 1
        version = _register(reg, 2).version  # after the outage the same call succeeds
        assert reg.load(version).files == _files(2)
        assert [e["action"] for e in reg.history()][-1] == "register"


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_s3_outage_during_an_alias_swap_leaves_the_old_aliases(s3_endpoint, s3_bucket, mode):
    with FaultyS3Proxy(s3_endpoint) as proxy:
        store = _store_through(proxy, s3_bucket)
        reg = _with_versions(store, 2)
        reg.promote(1, actor="ops", reason="good")
        before = reg.aliases_with_etag()
        # the reads (aliases, version check) pass; the conditional PUT meets the outage
        proxy.fail(mode, after=6)
        with pytest.raises(Exception) as raised:
            reg.promote(2, actor="ops", reason="during an outage")
        assert not isinstance(raised.value, AssertionError)
        assert proxy.refused > 0
        proxy.recover()
        assert reg.aliases_with_etag() == before
        assert reg.promote(2, actor="ops", reason="after it")["production"] == 2
        assert [e["revision"] for e in reg.history() if "revision" in e] == [1, 2]
