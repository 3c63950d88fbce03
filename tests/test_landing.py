"""The landing watcher: each file version is reported once; late and re-delivered files count."""

from __future__ import annotations

from fraudloop.core.store import ObjectInfo
from fraudloop.data.landing import (
    LandedFile,
    WatchCursor,
    defer,
    detect_changes,
    group_into_runs,
)


def info(key, etag="e1", modified=1000.0):
    return ObjectInfo(key, 10, etag, modified)


TX = "landing/transactions/2018-04-01/05/part-0000.csv"


def test_first_look_reports_every_feed_file_and_ignores_others():
    listing = [
        info(TX),
        info("landing/labels/2018-04-08/labels.csv"),
        info("landing/transactions/2018-04-01/notanhour/x.csv"),
        info("landing/README.txt"),
    ]
    files, cursor = detect_changes(listing, WatchCursor())
    assert [(f.table, f.partition_key) for f in files] == [
        ("labels", "2018-04-08"),
        ("transactions", "2018-04-01-05:00"),
    ]
    assert cursor.watermark == 1000.0


def test_same_listing_twice_reports_nothing():
    listing = [info(TX)]
    _, cursor = detect_changes(listing, WatchCursor())
    files, cursor2 = detect_changes(listing, WatchCursor.from_json(cursor.to_json()))
    assert files == []
    assert cursor2 == cursor


def test_overwritten_file_is_reported_again():
    _, cursor = detect_changes([info(TX, "e1", 1000.0)], WatchCursor())
    files, _ = detect_changes([info(TX, "e2", 1005.0)], cursor)
    assert [f.etag for f in files] == ["e2"]


def test_late_file_for_an_old_hour_is_reported():
    _, cursor = detect_changes([info(TX, modified=1000.0)], WatchCursor())
    late = "landing/transactions/2018-03-01/02/late.csv"
    files, cursor = detect_changes([info(TX, modified=1000.0), info(late, modified=5000.0)], cursor)
    assert [f.partition_key for f in files] == ["2018-03-01-02:00"]
    # old entries fall out of the cursor once they are older than the lag
    assert TX not in cursor.recent


def test_file_visible_late_with_an_older_timestamp_within_lag_is_reported():
    _, cursor = detect_changes([info(TX, modified=1000.0)], WatchCursor(), lag_seconds=600)
    slow = "landing/transactions/2018-04-01/06/slow.csv"
    files, _ = detect_changes(
        [info(TX, modified=1000.0), info(slow, modified=950.0)], cursor, lag_seconds=600
    )
    assert [f.key for f in files] == [slow]


def _landed(key, table, pk):
    return LandedFile(key, table, pk, "e")


def test_contiguous_partitions_become_one_range_run_and_gaps_split():
    versions = [
        (_landed("a", "transactions", "2018-04-01-05:00"), "s1"),
        (_landed("b", "transactions", "2018-04-01-06:00"), "s2"),
        (_landed("c", "transactions", "2018-04-01-07:00"), "s3"),
        (_landed("d", "transactions", "2018-04-01-10:00"), "s4"),
        (_landed("e", "labels", "2018-04-08"), "s5"),
        (_landed("f", "labels", "2018-04-09"), "s6"),
    ]
    runs = group_into_runs(versions)
    assert [(r.table, r.start, r.end) for r in runs] == [
        ("labels", "2018-04-08", "2018-04-09"),
        ("transactions", "2018-04-01-05:00", "2018-04-01-07:00"),
        ("transactions", "2018-04-01-10:00", "2018-04-01-10:00"),
    ]
    assert runs[2].run_key == "d@s4"  # a single file version: its key and content hash
    assert len({r.run_key for r in runs}) == 3


def test_run_key_changes_with_content():
    one = group_into_runs([(_landed("a", "transactions", "2018-04-01-05:00"), "s1")])
    two = group_into_runs([(_landed("a", "transactions", "2018-04-01-05:00"), "s2")])
    assert one[0].run_key != two[0].run_key


def test_deferred_files_come_back_until_handled_however_old():
    labels = "landing/labels/2018-04-08/labels.csv"
    files, cursor = detect_changes([info(TX), info(labels)], WatchCursor(), lag_seconds=10)
    deferred = [f for f in files if f.table == "labels"]
    cursor = defer(cursor, deferred)
    later = [info(TX), info(labels), info("landing/transactions/2018-04-01/09/x.csv", modified=9e9)]
    files, cursor = detect_changes(later, WatchCursor.from_json(cursor.to_json()), lag_seconds=10)
    assert labels in [f.key for f in files]  # still reported, although far behind the watermark
    files, _ = detect_changes(later, cursor, lag_seconds=10)
    assert files == []  # handled (not deferred again): gone
