"""The partition store of every table (`fraudloop.core.tables`) and the quarantine writer, on both
backends."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import hour_start
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.store import LocalObjectStore, sha256_hex
from fraudloop.core.tables import (
    IntegrityError,
    PartitionMissing,
    PartitionQuarantined,
    history_counts,
    mark_quarantined,
    parquet_bytes,
    pointer_key,
    read_partition,
    read_pointer,
    write_partition,
)
from fraudloop.data.expectations import Problem
from fraudloop.data.quarantine import list_quarantine, quarantine_files

KEY = "2018-04-01-05:00"
START = hour_start(KEY)
SOURCES = [{"key": "landing/transactions/2018-04-01/05/a.csv", "sha256": "ab" * 32, "size": 10}]


def canonical(n: int = 25, seed: int = 0, start: pd.Timestamp = START) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "transaction_id": pd.array([f"t{seed}-{i}" for i in range(n)], dtype="string"),
            "tx_datetime": start + pd.to_timedelta(np.sort(rng.integers(0, 3600, n)), unit="s"),
            "customer_id": pd.array([f"c{i % 4}" for i in range(n)], dtype="string"),
            "terminal_id": pd.array([f"x{i % 3}" for i in range(n)], dtype="string"),
            "amount": rng.uniform(1, 100, n).round(2),
        }
    ).sort_values(["tx_datetime", "transaction_id"], ignore_index=True)


def test_write_and_read_round_trip(store):
    frame = canonical().assign(channel=pd.array(["pos"] * 25, dtype="string"))
    version = write_partition(store, "transactions", KEY, frame, SOURCES)
    assert version.created and version.rows == 25
    assert version.key == f"raw/transactions/{KEY}/{version.sha256}.parquet"
    assert sha256_hex(store.get_bytes(version.key)) == version.sha256

    pointer = read_pointer(store, "transactions", KEY)
    assert pointer["status"] == "valid"
    assert pointer["sha256"] == version.sha256 and pointer["key"] == version.key
    assert pointer["rows"] == 25 and pointer["bytes"] == version.bytes
    assert pointer["sources"] == SOURCES
    assert pointer["columns"] == [*TRANSACTION_COLUMNS, "channel"]
    assert pointer["min_timestamp"] == frame["tx_datetime"].min().isoformat()
    assert pointer["max_timestamp"] == frame["tx_datetime"].max().isoformat()
    assert pointer["written_at"].endswith("Z")

    back = read_partition(store, "transactions", KEY)
    pd.testing.assert_frame_equal(back, frame)
    assert {c: str(back[c].dtype) for c in TRANSACTION_COLUMNS} == TRANSACTION_COLUMNS


def test_bytes_are_deterministic_and_row_order_free():
    frame = canonical()
    shuffled = frame.sample(frac=1.0, random_state=1)
    reordered_columns = shuffled[list(reversed(frame.columns))]
    assert parquet_bytes("transactions", frame) == parquet_bytes("transactions", reordered_columns)
    data = parquet_bytes("transactions", frame)
    assert data[:4] == b"PAR1"
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.metadata is None or b"pandas" not in meta.metadata  # no pandas index/metadata


def test_same_content_is_a_noop_and_new_content_moves_the_pointer(store):
    v1 = write_partition(store, "transactions", KEY, canonical(), SOURCES)
    pointer = read_pointer(store, "transactions", KEY)
    again = write_partition(store, "transactions", KEY, canonical(), SOURCES)
    assert (again.sha256, again.key, again.created) == (v1.sha256, v1.key, False)
    assert read_pointer(store, "transactions", KEY) == pointer

    v2 = write_partition(store, "transactions", KEY, canonical(seed=1), SOURCES)
    assert v2.created and v2.sha256 != v1.sha256
    assert read_pointer(store, "transactions", KEY)["previous"] == v1.sha256
    assert store.exists(v1.key) and store.exists(v2.key)
    assert read_partition(store, "transactions", KEY)["transaction_id"].iloc[0].startswith("t1-")


def test_missing_partition(store):
    with pytest.raises(PartitionMissing, match="has not been ingested"):
        read_partition(store, "transactions", KEY)
    assert read_pointer(store, "transactions", KEY) is None


def test_quarantined_partition_is_refused_and_remembers_the_last_good_version(store):
    v1 = write_partition(store, "transactions", KEY, canonical(), SOURCES)
    mark_quarantined(store, "transactions", KEY, "amount out of range", ["quarantine/x.csv"])
    pointer = read_pointer(store, "transactions", KEY)
    assert pointer["status"] == "quarantined"
    assert pointer["previous"] == v1.sha256
    assert pointer["quarantine_keys"] == ["quarantine/x.csv"]
    with pytest.raises(PartitionQuarantined) as err:
        read_partition(store, "transactions", KEY)
    assert err.value.reason == "amount out of range"
    assert "amount out of range" in str(err.value)
    # quarantined twice: previous still names the last valid version
    mark_quarantined(store, "transactions", KEY, "again")
    assert read_pointer(store, "transactions", KEY)["previous"] == v1.sha256
    # a good delivery makes it readable again
    write_partition(store, "transactions", KEY, canonical(), SOURCES)
    assert len(read_partition(store, "transactions", KEY)) == 25


def test_tampered_or_vanished_bytes_are_refused(store):
    version = write_partition(store, "transactions", KEY, canonical(), SOURCES)
    other = parquet_bytes("transactions", canonical(seed=9))
    store.put_bytes(version.key, other)  # someone overwrote the immutable object
    with pytest.raises(IntegrityError, match="modified after it was written"):
        read_partition(store, "transactions", KEY)
    store.delete(version.key)
    with pytest.raises(IntegrityError, match="does not exist"):
        read_partition(store, "transactions", KEY)


def test_pointer_update_is_compare_and_swap(local_store):
    write_partition(local_store, "transactions", KEY, canonical(), SOURCES)
    data, etag = local_store.get_with_etag(pointer_key("transactions", KEY))
    # a concurrent writer moves the pointer after "our" read ...
    write_partition(local_store, "transactions", KEY, canonical(seed=2), SOURCES)
    from fraudloop.core.store import PreconditionFailed

    with pytest.raises(PreconditionFailed):  # ... so a blind stale write would be refused
        local_store.put_bytes(pointer_key("transactions", KEY), data, if_match=etag)


def test_history_counts_use_same_hour_valid_partitions_only(local_store):
    for day, rows in [(1, 10), (2, 12), (4, 14), (5, 99)]:
        key = f"2018-04-0{day}-05:00"
        write_partition(
            local_store, "transactions", key, canonical(rows, start=hour_start(key)), SOURCES
        )
    mark_quarantined(local_store, "transactions", "2018-04-05-05:00", "bad")
    write_partition(  # another hour of day: ignored
        local_store,
        "transactions",
        "2018-04-03-06:00",
        canonical(50, start=hour_start("2018-04-03-06:00")),
        SOURCES,
    )
    assert history_counts(local_store, "transactions", "2018-04-06-05:00", 14) == [10, 12, 14]
    assert history_counts(local_store, "transactions", "2018-04-06-05:00", 3) == [14]
    assert history_counts(local_store, "transactions", "2018-04-01-05:00", 14) == []


def test_labels_table(store):
    labels = pd.DataFrame(
        {
            "transaction_id": pd.array(["b", "a"], dtype="string"),
            "is_fraud": np.array([1, 0], dtype="int8"),
            "known_at": pd.to_datetime(["2018-04-08 01:00", "2018-04-08 01:00"], utc=True),
        }
    )
    write_partition(store, "labels", "2018-04-08", labels, [])
    back = read_partition(store, "labels", "2018-04-08")
    assert back["transaction_id"].tolist() == ["a", "b"]
    assert {c: str(back[c].dtype) for c in LABEL_COLUMNS} == LABEL_COLUMNS
    write_partition(store, "labels", "2018-04-09", labels.iloc[:1], [])
    assert history_counts(store, "labels", "2018-04-10", 3) == [2, 1]
    with pytest.raises(ValueError, match="unknown table"):
        read_partition(store, "nope", "2018-04-08")


def test_write_refuses_a_non_canonical_frame(local_store):
    with pytest.raises(ValueError, match="lacks canonical column"):
        write_partition(
            local_store, "transactions", KEY, canonical().drop(columns="amount"), SOURCES
        )


# --- quarantine ------------------------------------------------------------------------------

PROBLEMS = [Problem("read", "empty_file", "file is empty (0 bytes)", source="landing/x/a.csv")]


def test_quarantine_never_overwrites_different_bytes(store):
    first = quarantine_files(
        store, "transactions", KEY, [("landing/x/a.csv", b"one")], PROBLEMS, reason_summary="s1"
    )
    assert first == [f"quarantine/transactions/{KEY}/a.csv"]
    same = quarantine_files(
        store, "transactions", KEY, [("landing/x/a.csv", b"one")], PROBLEMS, reason_summary="s2"
    )
    assert same == first  # same bytes: same key, reason refreshed
    assert json.loads(store.get_bytes(first[0] + ".reason.json"))["summary"] == "s2"

    second = quarantine_files(
        store, "transactions", KEY, [("landing/x/a.csv", b"two")], PROBLEMS, reason_summary="s3"
    )
    sha = sha256_hex(b"two")
    assert second == [f"quarantine/transactions/{KEY}/a.{sha[:12]}.csv"]
    assert store.get_bytes(first[0]) == b"one"  # the earlier evidence is intact
    assert store.get_bytes(second[0]) == b"two"

    reason = json.loads(store.get_bytes(second[0] + ".reason.json"))
    assert reason["sha256"] == sha and reason["size"] == 3
    assert reason["source_key"] == "landing/x/a.csv"
    assert reason["problems"] == [PROBLEMS[0].to_dict()]
    assert reason["problems_in_this_file"] == 1
    assert {r["quarantine_key"] for r in list_quarantine(store)} == {first[0], second[0]}


def test_same_values_give_the_same_bytes_however_the_frame_was_built():
    import pandas as pd

    from fraudloop.core.tables import parquet_bytes

    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "tx_datetime": pd.to_datetime(["2018-04-01T05:00:00Z"] * 3, utc=True),
            "customer_id": ["c1", "c2", "c1"],
            "terminal_id": ["t1", "t1", "t2"],
            "amount": [1.0, 2.5, 3.25],
        }
    )
    pieces = pd.concat(
        [frame.iloc[:1].astype({"transaction_id": "string[pyarrow]"}), frame.iloc[1:]],
        ignore_index=True,
    )
    assert parquet_bytes("transactions", pieces) == parquet_bytes("transactions", frame)


def test_feature_columns_keep_the_order_they_were_written_in(local_store):
    """The feature table's value columns are float64 in the order the stage wrote them (raw
    tables sort extra feed columns by name instead)."""
    frame = pd.DataFrame(
        {
            "transaction_id": pd.array(["a"], dtype="string"),
            "tx_datetime": pd.to_datetime(["2018-04-01 05:10"], utc=True),
            "customer_id": pd.array(["c"], dtype="string"),
            "terminal_id": pd.array(["t"], dtype="string"),
            "zeta": [1],
            "alpha": [2.5],
        }
    )
    version = write_partition(local_store, "transaction_features", "2018-04-01-05:00", frame, [])
    assert version.pointer["columns"][-2:] == ["zeta", "alpha"]
    back = read_partition(local_store, "transaction_features", "2018-04-01-05:00")
    assert list(back.columns)[-2:] == ["zeta", "alpha"] and str(back["zeta"].dtype) == "float64"


def _features_of_hour_23() -> pd.DataFrame:
    """One feature row of 2018-04-02 23:00 (card c, terminal t)."""
    return pd.DataFrame(
        {
            "transaction_id": pd.array(["b"], dtype="string"),
            "tx_datetime": pd.to_datetime(["2018-04-02 23:10"], utc=True),
            "customer_id": pd.array(["c"], dtype="string"),
            "terminal_id": pd.array(["t"], dtype="string"),
            "amount": [1.0],
        }
    )


def _labels_known_on_the_2nd() -> pd.DataFrame:
    """One fraud label known on 2018-04-02 for a transaction of the 1st (card c, terminal t)."""
    return pd.DataFrame(
        {
            "transaction_id": pd.array(["a"], dtype="string"),
            "is_fraud": np.array([1], dtype="int8"),
            "known_at": pd.to_datetime(["2018-04-02 10:00"], utc=True),
            "tx_datetime": pd.to_datetime(["2018-04-01 10:00"], utc=True),
            "customer_id": pd.array(["c"], dtype="string"),
            "terminal_id": pd.array(["t"], dtype="string"),
        }
    )


def test_features_are_current_only_once_computed_after_every_label_day(local_store):
    from fraudloop.features.pipeline import features_current

    hour, day = "2018-04-02-23:00", "2018-04-02"
    labels = _labels_known_on_the_2nd()
    features = _features_of_hour_23()
    assert not features_current(local_store, hour, [day])  # nothing computed yet
    write_partition(local_store, "transaction_features", hour, features, [])
    assert not features_current(local_store, hour, [day])  # the day's labels are not in
    write_partition(local_store, "fraud_labels", day, labels, [])
    assert not features_current(local_store, hour, [day])  # features older than the labels
    write_partition(local_store, "transaction_features", hour, features.assign(amount=2.0), [])
    assert features_current(local_store, hour, [day])


def test_a_recompute_from_new_inputs_with_the_same_bytes_records_its_inputs(local_store):
    """New labels that do not move an hour's features still make them computed after those
    labels: the pointer keeps the content and records the new sources and time (the closed
    loop waited forever on features whose recompute was identical)."""
    from fraudloop.features.pipeline import features_current

    hour, day = "2018-04-02-23:00", "2018-04-02"
    features = _features_of_hour_23()
    labels = _labels_known_on_the_2nd()
    first = write_partition(local_store, "transaction_features", hour, features, [])
    label_version = write_partition(local_store, "fraud_labels", day, labels, [])
    assert not features_current(local_store, hour, [day])
    source = {"key": label_version.key, "sha256": label_version.sha256}
    again = write_partition(local_store, "transaction_features", hour, features, [source])
    assert not again.created and again.sha256 == first.sha256
    assert again.pointer["previous"] == first.pointer["previous"]
    assert again.pointer["sources"][0]["key"] == label_version.key
    assert features_current(local_store, hour, [day])
    repeat = write_partition(local_store, "transaction_features", hour, features, [source])
    assert repeat.pointer["written_at"] == again.pointer["written_at"]  # a true no-op


def test_write_sweeps_temp_files_a_killed_writer_left_in_the_partition(tmp_path):
    store = LocalObjectStore(tmp_path, temp_max_age_seconds=60)
    directory = tmp_path / f"raw/transactions/{KEY}"
    directory.mkdir(parents=True)
    leftover = directory / ".tmp-feedfacefeedface"
    leftover.write_bytes(b"half a parquet file")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    version = write_partition(store, "transactions", KEY, canonical(), SOURCES)
    assert not leftover.exists()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{version.sha256}.parquet", "_current.json"]
    )


def test_an_older_delivery_finishing_last_does_not_replace_a_newer_one(store):
    """Two runs of the same hour: the one that ingested the older landed file finishes last."""
    landed = []
    for name in ("first.csv", "second.csv", "third.csv"):
        key = f"landing/transactions/2018-04-01/05/{name}"
        store.put_bytes(key, name.encode())
        landed.append([{"key": key, "sha256": sha256_hex(name.encode()), "size": len(name)}])
        time.sleep(1.1)  # S3's LastModified has one-second resolution
    older, newer, newest = (canonical(seed=s) for s in (1, 2, 3))

    current = write_partition(store, "transactions", KEY, newer, landed[1])
    assert current.created and not current.superseded
    stale = write_partition(store, "transactions", KEY, older, landed[0])
    assert stale.superseded and not stale.created
    assert stale.sha256 == current.sha256  # it describes what stayed current
    pointer = read_pointer(store, "transactions", KEY)
    assert pointer["sha256"] == current.sha256 and pointer["sources"] == landed[1]
    assert pointer["delivered_at"] == store.head(landed[1][0]["key"]).modified
    pd.testing.assert_frame_equal(read_partition(store, "transactions", KEY), newer)

    latest = write_partition(store, "transactions", KEY, newest, landed[2])
    assert latest.created and not latest.superseded
    assert read_pointer(store, "transactions", KEY)["previous"] == current.sha256
