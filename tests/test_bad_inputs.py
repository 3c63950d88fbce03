"""Every kind of broken feed file goes to quarantine with a reason that names the problem.

Each case runs the whole path (read -> normalise -> Great Expectations -> raw or quarantine)
through ``ingest_transactions_hour`` and checks: the status, the check name and a fragment of
the message, that the quarantined bytes are the input bytes, that no raw Parquet was written
and that the partition pointer says "quarantined".
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from fraudloop.core.hours import hour_start
from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.core.tables import PartitionQuarantined, read_partition, read_pointer
from fraudloop.data.ingest import ingest_transactions_hour
from fraudloop.data.quarantine import list_quarantine
from fraudloop.feeds.corruption import (
    CORRUPTION_KINDS,
    NEEDS_HISTORY,
    VALID_KINDS,
    corrupt_file,
    sample_transactions_csv,
)

KEY = "2018-04-01-05:00"
START = hour_start(KEY)
ROWS = 50
GOOD = sample_transactions_csv(START, rows=ROWS)

# kind -> (check, fragment of the message) of the problem that must be reported
EXPECTED: dict[str, tuple[str, str]] = {
    "empty": ("empty_file", "file is empty (0 bytes)"),
    "header_only": ("header_only", "no data rows"),
    "truncated_parquet": ("corrupt_parquet", "truncated or corrupt Parquet"),
    "wrong_delimiter": ("wrong_delimiter", "looks `;`-delimited; expected ','"),
    "missing_column": ("required_columns", "missing required column(s): amount"),
    "wrong_types": ("amount_type", "'twelve'"),
    "non_utf8": ("not_utf8", "byte 0xe9 at byte offset"),
    "null_ids": ("expect_column_values_to_not_be_null", "'transaction_id' is empty/null in 2"),
    "duplicate_ids": ("expect_column_values_to_be_unique", "duplicated value"),
    "negative_amount": ("expect_column_values_to_be_between", "-12.5"),
    "zero_amount": ("expect_column_values_to_be_between", "outside (0, 100000] in 1"),
    "nan_amount": ("expect_column_values_to_not_be_null", "'amount' is empty/null in 1"),
    "inf_amount": ("expect_column_values_to_be_between", "e.g. inf"),
    "outside_hour": ("expect_column_values_to_be_between", "2018-04-01T06:05:00Z"),
    "row_spike": ("expect_table_row_count_to_be_between", "has 500 rows"),
    "gzip_csv": ("gzip_named_csv", "gzip-compressed but named .csv"),
    "binary_junk": ("binary_content", "binary data"),
    "huge_line": ("line_too_long", "MiB long"),
}
EXPECTED_COLUMN = {
    "null_ids": "transaction_id",
    "duplicate_ids": "transaction_id",
    "negative_amount": "amount",
    "zero_amount": "amount",
    "nan_amount": "amount",
    "inf_amount": "amount",
    "outside_hour": "tx_datetime",
    "wrong_types": "amount",
}


def test_every_kind_has_an_expectation():
    assert set(EXPECTED) | VALID_KINDS == set(CORRUPTION_KINDS)


def _landing_key(name: str) -> str:
    return hour_landing_prefix(KEY) + name


def _assert_quarantined(store, outcome, files):
    assert outcome.status == "quarantined"
    assert outcome.sha256 is None
    # no canonical copy was written, and readers are refused
    versions = [i.key for i in store.list("raw/") if i.key.endswith(".parquet")]
    assert [k for k in versions if not k.rsplit("/", 1)[1].startswith("_")] == []
    pointer = read_pointer(store, "transactions", KEY)
    assert pointer["status"] == "quarantined"
    assert pointer["reason"] == outcome.reason_summary
    assert pointer["quarantine_keys"] == outcome.quarantine_keys
    with pytest.raises(PartitionQuarantined, match="quarantined"):
        read_partition(store, "transactions", KEY)
    # the quarantined bytes are the delivered bytes, with a reason next to them
    assert len(outcome.quarantine_keys) == len(files)
    for (source, data), qkey in zip(sorted(files), outcome.quarantine_keys, strict=True):
        assert qkey.startswith(f"quarantine/transactions/{KEY}/")
        assert store.get_bytes(qkey) == data
        reason = json.loads(store.get_bytes(qkey + ".reason.json"))
        assert reason["source_key"] == source
        assert reason["size"] == len(data)
        assert reason["table"] == "transactions" and reason["partition"] == KEY
        assert reason["summary"] == outcome.reason_summary
        assert reason["problems"] == [p.to_dict() for p in outcome.problems]


@pytest.mark.parametrize("kind", sorted(CORRUPTION_KINDS))
def test_corrupted_file_is_quarantined_with_a_specific_reason(local_store, kind):
    ext, data = corrupt_file(kind, GOOD, START)
    files = [(_landing_key(f"part-0001{ext}"), data)]
    history = [ROWS] * 7 if kind in NEEDS_HISTORY else []
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=history)

    if kind in VALID_KINDS:
        assert outcome.status == "valid", outcome.problems
        assert outcome.problems == []
        frame = read_partition(local_store, "transactions", KEY)
        assert len(frame) == ROWS
        if kind == "extra_column":
            assert list(frame.columns)[-1] == "channel"
            assert outcome.notes and "channel" in outcome.notes[0]
        return

    check, fragment = EXPECTED[kind]
    matching = [p for p in outcome.problems if p.check == check]
    assert matching, [p.to_dict() for p in outcome.problems]
    assert fragment in matching[0].message, matching[0].message
    # the one-line summary carries the first problem's sentence
    assert outcome.problems[0].message in outcome.reason_summary
    if kind != "wrong_types":  # wrong_types also reports its bad timestamp
        assert [p.check for p in outcome.problems] == [check]
    if kind in EXPECTED_COLUMN:
        assert matching[0].column == EXPECTED_COLUMN[kind]
    _assert_quarantined(local_store, outcome, files)
    assert json.dumps(outcome.to_dict(), allow_nan=False)  # metadata is JSON-clean


def test_wrong_types_reports_both_columns_with_examples(local_store):
    _, data = corrupt_file("wrong_types", GOOD, START)
    outcome = ingest_transactions_hour(local_store, KEY, [(_landing_key("a.csv"), data)], [])
    by_check = {p.check: p for p in outcome.problems}
    assert by_check["amount_type"].unexpected_count == 2
    assert by_check["amount_type"].examples == ["twelve", "12,50 EUR"]
    assert by_check["tx_datetime_type"].examples == ["yesterday"]
    assert all(p.source == _landing_key("a.csv") for p in outcome.problems)


def test_row_spike_passes_without_history_and_fails_with_it(local_store):
    _, data = corrupt_file("row_spike", GOOD, START)
    files = [(_landing_key("a.csv"), data)]
    assert ingest_transactions_hour(local_store, KEY, files, history_counts=[]).status == "valid"
    spiked = ingest_transactions_hour(local_store, KEY, files, history_counts=[45, 50, 55])
    assert spiked.status == "quarantined"
    assert "median 50 rows over 3 earlier partition(s)" in spiked.problems[0].message


@pytest.mark.parametrize(
    ("name", "check", "fragment"),
    [
        ("junk.parquet", "corrupt_parquet", "does not start with the PAR1 magic bytes"),
        ("junk.csv", "binary_content", "binary data, not CSV text"),
        ("junk.xlsx", "unsupported_file_type", "unsupported file type '.xlsx'"),
    ],
)
def test_random_binary_junk(local_store, name, check, fragment):
    junk = np.random.default_rng(7).bytes(5000)
    files = [(_landing_key(name), junk)]
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=[])
    assert outcome.problems[0].check == check
    assert fragment in outcome.problems[0].message
    _assert_quarantined(local_store, outcome, files)


def test_one_bad_file_quarantines_the_whole_hour_and_names_the_file(local_store):
    good_a = sample_transactions_csv(START, rows=20, seed=1)
    _, bad = corrupt_file("negative_amount", sample_transactions_csv(START, rows=20, seed=2), START)
    # sample ids are positional: give the second file its own ids
    bad = bad.replace(b"tx-2018040105-", b"tx-b-2018040105-")
    _, junk = corrupt_file("gzip_csv", GOOD, START)
    files = [
        (_landing_key("a.csv"), good_a),
        (_landing_key("b.csv"), bad),
        (_landing_key("c.csv"), junk),
    ]
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=[])
    # the read problem in c.csv stops the run before the expectations
    assert [p.check for p in outcome.problems] == ["gzip_named_csv"]
    assert outcome.problems[0].source == _landing_key("c.csv")
    assert "in c.csv" in outcome.reason_summary
    _assert_quarantined(local_store, outcome, files)
    record = json.loads(local_store.get_bytes(outcome.quarantine_keys[2] + ".reason.json"))
    assert record["problems_in_this_file"] == 1
    assert record["problem_scope"] == "this file"
    other = json.loads(local_store.get_bytes(outcome.quarantine_keys[0] + ".reason.json"))
    assert other["problem_scope"].startswith("another file")
    assert len(record["quarantined_with"]) == 2

    # without the junk file, the expectations run on both files together
    outcome = ingest_transactions_hour(local_store, KEY, files[:2], history_counts=[])
    assert [p.check for p in outcome.problems] == ["expect_column_values_to_be_between"]
    assert "-12.5" in outcome.reason_summary


def test_quarantine_is_listed(store):
    _, data = corrupt_file("empty", GOOD, START)
    outcome = ingest_transactions_hour(store, KEY, [(_landing_key("e.csv"), data)], [])
    records = list_quarantine(store, "transactions")
    assert [r["quarantine_key"] for r in records] == outcome.quarantine_keys
    assert records[0]["problems"][0]["check"] == "empty_file"
    assert records[0]["sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert list_quarantine(store, "labels") == []


def test_corrupt_file_is_deterministic():
    for kind in CORRUPTION_KINDS:
        if kind == "huge_line":
            continue
        assert corrupt_file(kind, GOOD, START) == corrupt_file(kind, GOOD, START), kind
    with pytest.raises(ValueError, match="unknown corruption kind"):
        corrupt_file("nope", GOOD, START)
    naive = corrupt_file("naive_timestamps", GOOD, START)[1].decode()
    assert "Z" not in naive and "+00:00" not in naive
    _, spike = corrupt_file("row_spike", GOOD, START)
    frame = pd.read_csv(io.BytesIO(spike), dtype=str)
    assert len(frame) == 10 * ROWS and frame["transaction_id"].is_unique
