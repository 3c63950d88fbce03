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
from fraudloop.data.policy import IngestPolicy
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

# kind -> (check, fragment of the message) of the problem that quarantines the whole file
EXPECTED: dict[str, tuple[str, str]] = {
    "empty": ("empty_file", "file is empty (0 bytes)"),
    "header_only": ("header_only", "no data rows"),
    "truncated_parquet": ("corrupt_parquet", "truncated or corrupt Parquet"),
    "wrong_delimiter": ("wrong_delimiter", "looks `;`-delimited; expected ','"),
    "missing_column": ("required_columns", "missing required column(s): amount"),
    "wrong_types": ("amount_type", "'twelve'"),  # 3 bad rows of 50: over the 5 % backstop
    "non_utf8": ("not_utf8", "byte 0xe9 at byte offset"),
    "row_spike": ("expect_table_row_count_to_be_between", "has 500 rows"),
    "gzip_csv": ("gzip_named_csv", "gzip-compressed but named .csv"),
    "binary_junk": ("binary_content", "binary data"),
    "huge_line": ("line_too_long", "MiB long"),
}
# kind -> (reason, rows): bad rows rejected one by one, the rest of the file ingested
ROW_LEVEL: dict[str, tuple[str, int]] = {
    "null_ids": ("transaction_id is empty", 2),
    "duplicate_ids": ("transaction_id appears more than once in the partition", 2),
    "negative_amount": ("amount is negative", 1),
    "nan_amount": ("amount is empty or not a number", 1),
    "inf_amount": ("amount is not finite", 1),
    "outside_hour": (
        "tx_datetime is outside the partition [2018-04-01T05:00Z, 2018-04-01T06:00Z)",
        1,
    ),
}
# zero is a genuine amount (account verifications)
ACCEPTED = VALID_KINDS | {"zero_amount"}
EXPECTED_COLUMN = {"wrong_types": "amount"}


def test_every_kind_has_an_expectation():
    assert set(EXPECTED) | set(ROW_LEVEL) | ACCEPTED == set(CORRUPTION_KINDS)
    assert not set(EXPECTED) & set(ROW_LEVEL)


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

    if kind in ACCEPTED:
        assert outcome.status == "valid", outcome.problems
        assert outcome.problems == [] and outcome.rows_rejected == 0
        frame = read_partition(local_store, "transactions", KEY)
        assert len(frame) == ROWS
        if kind == "extra_column":
            assert list(frame.columns)[-1] == "channel"
            assert outcome.notes and "channel" in outcome.notes[0]
        if kind == "zero_amount":
            assert (frame["amount"] == 0).sum() == 1
        return
    if kind in ROW_LEVEL:
        reason, count = ROW_LEVEL[kind]
        _assert_rows_rejected(local_store, outcome, files, reason, count)
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


def _assert_rows_rejected(store, outcome, files, reason, count):
    """The hour holds every other row; the file's bytes wait in quarantine with a record that
    names each rejected row by number and line, with its reasons and original text."""
    ((source, data),) = files
    assert outcome.status == "valid", outcome.problems
    assert outcome.rows == ROWS - count and outcome.rows_rejected == count
    assert len(read_partition(store, "transactions", KEY)) == ROWS - count
    (qkey,) = outcome.quarantine_keys
    assert store.get_bytes(qkey) == data
    record = json.loads(store.get_bytes(qkey + ".reason.json"))
    assert record["source_key"] == source and record["rows_rejected"] == count
    assert record["rows_accepted"] == ROWS - count
    assert reason in record["rejected_by_reason"], record["rejected_by_reason"]
    assert reason in record["summary"]
    lines = data.decode().split("\n")
    rows = [json.loads(line) for line in store.get_bytes(record["rejected_rows_key"]).splitlines()]
    assert len(rows) == count
    for row in rows:
        assert reason in row["reasons"]
        assert row["raw"] == lines[row["line"] - 1] + "\n"  # the line as delivered
        assert row["line"] == row["row"] + 1  # one header line, no line break in a field
    (file,) = outcome.files
    assert file["status"] == "rows_rejected" and file["quarantine_key"] == qkey


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


def test_one_broken_file_holds_the_hour_and_one_bad_row_costs_only_itself(local_store):
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
    # the read problem in c.csv stops the run before the row checks
    assert [p.check for p in outcome.problems] == ["gzip_named_csv"]
    assert outcome.problems[0].source == _landing_key("c.csv")
    assert "in c.csv" in outcome.reason_summary
    _assert_quarantined(local_store, outcome, files)
    assert [f["status"] for f in outcome.files] == ["held_back", "held_back", "quarantined"]
    record = json.loads(local_store.get_bytes(outcome.quarantine_keys[2] + ".reason.json"))
    assert record["problems_in_this_file"] == 1
    assert record["problem_scope"] == "this file"
    other = json.loads(local_store.get_bytes(outcome.quarantine_keys[0] + ".reason.json"))
    assert other["problem_scope"].startswith("another file")
    assert len(record["quarantined_with"]) == 2

    # without the junk file, b.csv's one negative amount (1 of 20 rows) costs that row alone
    outcome = ingest_transactions_hour(local_store, KEY, files[:2], history_counts=[])
    assert outcome.status == "valid" and outcome.problems == []
    assert outcome.rows == 39 and outcome.rows_rejected == 1
    assert [f["status"] for f in outcome.files] == ["ingested", "rows_rejected"]
    assert outcome.quarantine_keys == [f"quarantine/transactions/{KEY}/b.csv"]
    assert "1 of 20 rows of b.csv rejected (amount is negative: 1)" in outcome.files[1]["summary"]


def _with_bad_rows(share: float, rows: int = 200) -> bytes:
    frame = pd.read_csv(io.BytesIO(sample_transactions_csv(START, rows=rows)), dtype=str)
    bad = round(rows * share)
    frame.loc[: bad - 1, "amount"] = "-1.00"
    return frame.to_csv(index=False, lineterminator="\n").encode()


def test_rejected_share_over_the_threshold_quarantines_the_file_with_every_row_listed(
    local_store,
):
    data = _with_bad_rows(0.10)
    files = [(_landing_key("a.csv"), data)]
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=[])
    assert [p.check for p in outcome.problems] == ["rejected_share"]
    assert "20 of 200 rows (10.0%) are invalid, over the limit of 5.0%" in outcome.reason_summary
    assert "amount is negative: 20" in outcome.reason_summary
    _assert_quarantined(local_store, outcome, files)
    listed = local_store.get_bytes(outcome.quarantine_keys[0] + ".rejected.jsonl").splitlines()
    assert len(listed) == 20

    # a file quarantined whole keeps its bytes: only its first 1,000 bad rows are listed
    files = [(_landing_key("b.csv"), _with_bad_rows(0.8, rows=1500))]
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=[])
    assert "1,200 of 1,500 rows (80.0%)" in outcome.reason_summary
    listed = local_store.get_bytes(outcome.quarantine_keys[0] + ".rejected.jsonl").splitlines()
    assert len(listed) == 1000

    # the threshold is a setting
    files = [(_landing_key("a.csv"), data)]
    relaxed = IngestPolicy(max_rejected_share=0.2)
    outcome = ingest_transactions_hour(local_store, KEY, files, history_counts=[], limits=relaxed)
    assert outcome.status == "valid" and outcome.rows == 180 and outcome.rows_rejected == 20


def test_embedded_line_break_and_control_characters_in_ids_are_rejected(local_store):
    good = sample_transactions_csv(START, rows=60).decode()
    lines = good.split("\n")
    # a quoted id with a line break inside: one record over lines 3 and 4 of the file
    lines[2] = '"' + lines[2].replace(",", '\n",', 1)
    lines[5] = lines[5].replace(",c", ",c\t", 1)  # a tab inside a customer id
    data = "\n".join(lines).encode()
    outcome = ingest_transactions_hour(local_store, KEY, [(_landing_key("a.csv"), data)], [])
    assert outcome.status == "valid" and outcome.rows_rejected == 2
    rows = [
        json.loads(line)
        for line in local_store.get_bytes(
            outcome.quarantine_keys[0] + ".rejected.jsonl"
        ).splitlines()
    ]
    broken, tabbed = rows
    assert broken["row"] == 2 and broken["line"] == 3 and broken["raw"].count("\n") == 2
    assert broken["reasons"] == [
        "transaction_id contains a control character (line break, tab, NUL)"
    ]
    assert tabbed["row"] == 5 and tabbed["line"] == 7 and "\t" in tabbed["raw"]
    assert tabbed["reasons"][0].startswith("customer_id contains a control character")


def test_mislabelled_header_with_shifted_columns_quarantines_the_file(local_store):
    """customer_id holds terminal ids, terminal_id holds amounts, amount holds customer ids."""
    frame = pd.read_csv(io.BytesIO(sample_transactions_csv(START, rows=50)), dtype=str)
    frame["customer_id"] = frame["customer_id"].str[1:]  # numeric customer ids, as in real data
    shifted = frame.rename(
        columns={"customer_id": "amount", "terminal_id": "customer_id", "amount": "terminal_id"}
    )[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]]
    data = shifted.to_csv(index=False, lineterminator="\n").encode()
    outcome = ingest_transactions_hour(local_store, KEY, [(_landing_key("a.csv"), data)], [])
    assert outcome.status == "quarantined"
    assert outcome.problems[0].check == "rejected_share"
    assert "terminal_id looks like an amount, not an id (shifted columns?): 50" in (
        outcome.reason_summary
    )


def test_ids_must_match_the_declared_pattern(local_store):
    frame = pd.read_csv(io.BytesIO(sample_transactions_csv(START, rows=50)), dtype=str)
    frame.loc[3, "terminal_id"] = "t 12"
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    files = [(_landing_key("a.csv"), data)]
    outcome = ingest_transactions_hour(local_store, KEY, files, [])
    assert outcome.rows_rejected == 1
    assert "terminal_id does not match the id pattern" in outcome.files[0]["summary"]
    strict = IngestPolicy(id_pattern=r"tx-\d+-\d+")  # customer and terminal ids fail it
    outcome = ingest_transactions_hour(local_store, KEY, files, [], limits=strict)
    assert outcome.status == "quarantined"
    assert "customer_id does not match the id pattern" in outcome.reason_summary


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
