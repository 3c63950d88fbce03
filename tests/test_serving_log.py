"""The prediction log's spool and flushes, without a service: a killed writer loses no committed
row, a flush that fails half-way is retried without duplicates, ids are pseudonymised and old
hours are deleted."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from fraudloop.core.errors import ConfigError
from fraudloop.core.hours import HOUR_NS
from fraudloop.core.store import LocalObjectStore
from fraudloop.delivery.prediction_log import (
    Block,
    PredictionLog,
    Pseudonyms,
    Row,
    read_predictions,
)
from fraudloop.serving.spool import Spool, claim_spool

T0 = 1_523_000_000 * 10**9 // HOUR_NS * HOUR_NS  # an hour boundary in April 2018


def rows(n: int, hours: int = 2, first: int = 0) -> list[Row]:
    return [
        Row(
            "req",
            f"T{first + i}",
            f"C{i % 7}",
            f"M{i % 5}",
            T0 + (i % hours) * HOUR_NS + i,
            10.0 + i,
            T0,
            1,
            "production",
            0.25,
            "approve",
            0.5,
            1.0,
            0.5,
            "h",
            "ok",
        )
        for i in range(n)
    ]


class FailingStore(LocalObjectStore):
    """A real local store whose ``fail_on``-th put (counting from 1) raises once."""

    def __init__(self, root, fail_on: int):
        super().__init__(root)
        self.fail_on = fail_on
        self.puts = 0

    def put_bytes(self, key, data, **kwargs):
        self.puts += 1
        if self.puts == self.fail_on:
            raise OSError("simulated store failure on this put")
        return super().put_bytes(key, data, **kwargs)


def stored_rows(store) -> int:
    """Rows in every prediction file, without the reader's deduplication."""
    return sum(
        pq.read_metadata(store.root / info.key).num_rows for info in store.list("predictions/")
    )


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_a_flush_failing_on_its_second_file_is_retried_without_duplicates(tmp_path, spooled):
    store = FailingStore(tmp_path / "home", fail_on=2)
    spool = Spool(tmp_path / "spool", "inst-1") if spooled else None
    plog = PredictionLog(store, "inst-1", spool=spool)
    pending = plog.extend(rows(10, hours=2))
    if spooled:
        pending.result(timeout=10)
    with pytest.raises(OSError, match="simulated"):
        plog.flush()
    assert stored_rows(store) == 5  # the first hour's file was written, the second was not
    assert plog.flush() == 10  # the retry rewrites the first file under the same key
    assert stored_rows(store) == 10
    assert len(store.list("predictions/")) == 2
    assert sorted(read_predictions(store)["transaction_id"]) == sorted(f"T{i}" for i in range(10))
    plog.close()


def test_readers_count_a_decision_once(tmp_path):
    store = LocalObjectStore(tmp_path / "home")
    for instance in ("a", "b"):  # the same decisions under two keys (an old duplicate)
        plog = PredictionLog(store, instance)
        plog.extend(rows(6))
        plog.close()
    assert stored_rows(store) == 12
    assert len(read_predictions(store)) == 6


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from tests.test_serving_log import rows
    from fraudloop.delivery.prediction_log import Block
    from fraudloop.serving.spool import Spool, claim_spool

    spool = Spool(sys.argv[1], "dead-1")
    for start in range(0, 300, 30):
        part = rows(30, first=start)
        if sys.argv[3] == "blocks" and start % 60:  # a batch request: one record
            committed = spool.append_record(Block.of_rows(part).encode(), len(part))
        else:
            committed = spool.append(part)
        committed.result(timeout=10)  # committed: "answered"
    with open(sys.argv[2], "w") as done:
        done.write("300")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("records", ["rows", "blocks"])
def test_spooled_rows_survive_kill_9_and_are_drained_by_the_next_process(tmp_path, records):
    marker = tmp_path / "committed"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path / "spool"), str(marker), records],
        cwd=os.getcwd(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert marker.read_text() == "300"
    leftovers = list((tmp_path / "spool").glob("*.open"))
    assert len(leftovers) == 1  # the killed process's segment, never closed
    # a torn last line (the kill hit mid-write; that request was never answered) is skipped
    torn = Block.of_rows(rows(5, first=900)).encode()[:-40]
    with leftovers[0].open("ab") as segment:
        segment.write(b'["req","T-torn"' if records == "rows" else torn)
    store = LocalObjectStore(tmp_path / "home")
    plog = PredictionLog(store, "next-1", spool=Spool(tmp_path / "spool", "next-1"))
    assert plog.flush() == 300
    log = read_predictions(store)
    assert sorted(log["transaction_id"]) == sorted(f"T{i}" for i in range(300))
    assert set(log["instance"]) == {"dead-1"}  # keys and rows name the process that spooled
    assert not list((tmp_path / "spool").glob("*.done"))
    plog.close()


def test_a_spool_directory_has_one_owner_and_a_restart_takes_the_free_slot(tmp_path):
    first = Spool(tmp_path / "spool", "one")
    with pytest.raises(ConfigError, match="in use by another process"):
        Spool(tmp_path / "spool", "two")
    first.close()
    first.release()
    Spool(tmp_path / "spool", "three").release()

    a = claim_spool(tmp_path / "root", "a")
    b = claim_spool(tmp_path / "root", "b")  # a second process beside the first
    assert (a.directory.name, b.directory.name) == ("slot-0", "slot-1")
    a.append(rows(3)).result(timeout=10)
    a.close()
    a.release()  # as a kill would
    again = claim_spool(tmp_path / "root", "c")
    assert again.directory.name == "slot-0" and len(again.rotate()) == 1  # a's rows, to drain
    for spool in (b, again):
        spool.close()
        spool.release()


def test_a_block_record_holds_its_rows_exactly():
    odd = rows(4)
    odd[1] = odd[1]._replace(transaction_id="has space", score=0.1 + 0.2, amount=1e-300)
    odd[2] = odd[2]._replace(feature_hash="", tx_ns=-(2**62))
    block = Block.of_rows(odd)
    shared = block._replace(request_id="one", model_version=3, role="canary", status="ok")
    for b in (block, shared):
        decoded = Block.decode(json.loads(b.encode()))
        assert decoded.rows() == b.rows()
        assert [type(v) for v in decoded.rows()[1]] == [type(v) for v in b.rows()[1]]
    assert shared.take([3, 0]).rows() == [shared.rows()[3], shared.rows()[0]]


def test_a_segment_of_rows_and_blocks_is_drained_in_order_once(tmp_path):
    store = LocalObjectStore(tmp_path / "home")
    spool = Spool(tmp_path / "spool", "mix-1")
    plog = PredictionLog(store, "mix-1", spool=spool)
    plog.extend(rows(3)).result(timeout=10)
    plog.extend(Block.of_rows(rows(7, first=3))).result(timeout=10)
    spool.append(rows(2, first=10)).result(timeout=10)
    assert plog.buffered == 12
    assert plog.flush() == 12 and plog.buffered == 0
    log = read_predictions(store, dedupe=False)
    assert sorted(log["transaction_id"]) == sorted(f"T{i}" for i in range(12))
    expected = rows(3) + rows(7, first=3) + rows(2, first=10)
    by_id = {r.transaction_id: r for r in expected}
    for got in log.to_dict("records"):
        want = by_id[got["transaction_id"]]
        assert (got["amount"], got["tx_datetime"].value) == (want.amount, want.tx_ns)
    plog.close()


def test_pseudonyms_are_keyed_and_stable():
    one, other = Pseudonyms(b"k1"), Pseudonyms(b"k2")
    assert one("C42") == one("C42") != one("C43")
    assert one("C42") != other("C42")
    assert "C42" not in one("C42")
    # HMAC-SHA256, first 64 bits in hex, for keys shorter and longer than SHA-256's block
    for key in (b"", b"k1", b"k" * 64, b"k" * 65, bytes(range(200))):
        for value in ("C42", "", "terminal-\u00e9-7"):
            hexdigest = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
            assert Pseudonyms(key)(value) == "p" + hexdigest[:16]


def test_retention_deletes_hours_older_than_the_newest_minus_the_setting(tmp_path):
    store = LocalObjectStore(tmp_path / "home")
    plog = PredictionLog(store, "r", retention_hours=2)
    plog.extend(rows(8, hours=4))  # hours 0..3: newest 3, keep 1..3
    plog.flush()
    hours = sorted({info.key.split("/")[1] for info in store.list("predictions/")})
    assert len(hours) == 3 and plog.hours_deleted == 1
    plog.extend(rows(2, hours=1))  # an older hour again: not the newest, nothing more deleted
    plog.flush()
    assert plog.hours_deleted == 1
