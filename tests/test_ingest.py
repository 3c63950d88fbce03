"""Reading, normalising and ingesting feed files (the happy paths and their edges)."""

from __future__ import annotations

import gzip
import io
import re
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudloop.core.hours import hour_start
from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.tables import known_transaction_ids, read_partition, read_pointer
from fraudloop.data import id_index
from fraudloop.data.expectations import warm_up
from fraudloop.data.ingest import (
    ingest_labels_day,
    ingest_transactions_hour,
    ingest_transactions_hours,
    landed_files,
    reason_markdown,
)
from fraudloop.data.normalise import normalise_labels, normalise_transactions
from fraudloop.data.policy import MIB, IngestPolicy
from fraudloop.data.read import read_landed_file
from fraudloop.feeds.corruption import sample_transactions_csv

KEY = "2018-04-01-05:00"
START = hour_start(KEY)
PREFIX = hour_landing_prefix(KEY)
GOOD = sample_transactions_csv(START, rows=60)


def _csv(text: str) -> bytes:
    return text.encode()


def _read_ok(name: str, data: bytes) -> pd.DataFrame:
    result = read_landed_file(name, data)
    assert result.problems == [], [p.to_dict() for p in result.problems]
    return result.frame


# --- read_landed_file ------------------------------------------------------------------------


def test_csv_is_read_as_strings_with_missing_tokens():
    frame = _read_ok("a.csv", _csv("a,b,c\n007,1.50,\nNULL,x,NaN\n"))
    assert frame["a"].tolist()[0] == "007"  # leading zeros survive: every column is a string
    assert frame["b"].tolist() == ["1.50", "x"]
    assert frame.isna().sum().to_dict() == {"a": 1, "b": 0, "c": 2}


def test_utf8_bom_is_accepted():
    frame = _read_ok("a.csv", b"\xef\xbb\xbf" + GOOD)
    assert frame.columns[0] == "transaction_id"


@pytest.mark.parametrize(
    ("name", "data", "check", "fragment"),
    [
        ("a.csv", b"", "empty_file", "0 bytes"),
        ("a.csv", gzip.compress(b"a,b\n1,2\n", mtime=0), "gzip_named_csv", "gzip-compressed"),
        ("a.csv", b"PAR1....PAR1", "parquet_named_csv", "named .csv"),
        ("a.parquet", b"a,b\n1,2\n3,4\n5,6\n", "corrupt_parquet", "does not start with the PAR1"),
        ("a.parquet", b"PAR1", "corrupt_parquet", "too short"),
        ("a.parquet", b"PAR1" + b"\0" * 20 + b"PAR1", "corrupt_parquet", "truncated or corrupt"),
        ("a.txt", b"a,b\n", "unsupported_file_type", "'.txt'"),
        ("noext", b"a,b\n", "unsupported_file_type", "(no extension)"),
        ("a.csv", b"a|b|c\n1|2|3\n", "wrong_delimiter", "looks `|`-delimited"),
        ("a.csv", b"a\tb\n1\t2\n", "wrong_delimiter", "looks tab-delimited"),
        ("a.csv", b"a,b\n1,2\n1,2,3\n", "malformed_csv", "Expected 2 fields in line 3"),
        ("a.csv", b"a,b,A\n1,2,3\n", "duplicate_columns", "repeats column name(s) a"),
        ("a.csv", b"\n\n", "missing_header", "header"),
        ("a.csv", b"a,b\n" + b"\xff\xfe\n", "not_utf8", "byte offset 4 (line 2)"),
    ],
)
def test_read_problems(name, data, check, fragment):
    result = read_landed_file(name, data)
    assert result.frame is None
    assert [p.check for p in result.problems] == [check]
    assert fragment in result.problems[0].message
    assert result.problems[0].stage == "read"
    assert result.problems[0].source == name


def test_size_and_line_limits_are_enforced_quickly():
    limits = IngestPolicy(max_file_mb=1000 / MIB, max_line_bytes=100)
    big = read_landed_file("a.csv", b"a,b\n" + b"1,2\n" * 500, limits)
    assert big.problems[0].check == "file_too_large"
    long_line = read_landed_file("a.csv", b"a,b\n1," + b"x" * 200 + b"\n", limits)
    assert long_line.problems[0].check == "line_too_long"
    assert "line 2" in long_line.problems[0].message

    huge = b"a,b\n" + b"x" * 50_000_000
    started = time.perf_counter()
    result = read_landed_file("a.csv", huge)
    assert result.problems[0].check == "line_too_long"
    assert time.perf_counter() - started < 2.0


def test_read_never_raises_on_random_bytes():
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(200):
        data = rng.bytes(int(rng.integers(0, 300)))
        for name in ("x.csv", "x.parquet"):
            result = read_landed_file(name, data)
            assert result.frame is None or isinstance(result.frame, pd.DataFrame), i
    # text that is valid UTF-8 but not valid CSV is a problem too, not an exception
    unterminated = read_landed_file("x.csv", b'a,b\n"unterminated,1\n')
    assert [p.check for p in unterminated.problems] == ["malformed_csv"]


def test_parquet_is_read_as_stored():
    table = pa.table({"transaction_id": [1, 2], "amount": [1.5, 2.5]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    frame = _read_ok("a.parquet", sink.getvalue())
    assert frame["transaction_id"].tolist() == [1, 2]


# --- normalise -------------------------------------------------------------------------------


def test_headers_are_matched_case_insensitively_and_extras_kept():
    raw = pd.DataFrame(
        {
            " Transaction_ID ": ["b", "a"],
            "TX_DATETIME": ["2018-04-01T05:30:00Z", "2018-04-01T05:10:00Z"],
            "customer_id": ["c1", "c2"],
            "Terminal_Id": ["t1", "t2"],
            "amount ": ["10.5", " 3 "],
            "zeta": [1, 2],
            " Channel": ["pos", None],
        }
    )
    notes: list[str] = []
    frame, problems = normalise_transactions(raw, KEY, source="f.csv", notes=notes)
    assert problems == []
    assert list(frame.columns) == [*TRANSACTION_COLUMNS, "Channel", "zeta"]
    assert {c: str(frame[c].dtype) for c in TRANSACTION_COLUMNS} == TRANSACTION_COLUMNS
    assert str(frame["zeta"].dtype) == "string" and frame["zeta"].tolist() == ["2", "1"]
    assert frame["transaction_id"].tolist() == ["a", "b"]  # sorted by time
    assert frame["amount"].tolist() == [3.0, 10.5]
    assert notes == ["f.csv: kept 2 extra column(s) after the canonical ones: zeta, Channel"]


def test_missing_column_lists_missing_and_present():
    raw = pd.DataFrame({"transaction_id": ["a"], "tx_datetime": ["2018-04-01T05:00:00Z"]})
    frame, problems = normalise_transactions(raw, KEY)
    assert frame is None
    assert problems[0].check == "required_columns"
    assert problems[0].message == (
        "missing required column(s): customer_id, terminal_id, amount; "
        "the file has columns: transaction_id, tx_datetime"
    )
    assert problems[0].examples == ["customer_id", "terminal_id", "amount"]


def test_headerless_file_gets_a_hint():
    frame = _read_ok("a.csv", GOOD.split(b"\n", 1)[1])
    _, problems = normalise_transactions(frame, KEY)
    assert "is the header row missing?" in problems[0].message


def _tx(times, ids=None, amounts=None):
    n = len(times)
    return pd.DataFrame(
        {
            "transaction_id": ids or [f"t{i}" for i in range(n)],
            "tx_datetime": times,
            "customer_id": ["c"] * n,
            "terminal_id": ["x"] * n,
            "amount": amounts or ["1.0"] * n,
        }
    )


def test_timestamp_rule_offsets_z_and_naive_are_utc():
    frame, problems = normalise_transactions(
        _tx(["2018-04-01T07:10:00+02:00", "2018-04-01T05:20:00Z", "2018-04-01 05:30:00.5"]), KEY
    )
    assert problems == []
    assert frame["tx_datetime"].tolist() == [
        pd.Timestamp("2018-04-01 05:10:00", tz="UTC"),
        pd.Timestamp("2018-04-01 05:20:00", tz="UTC"),
        pd.Timestamp("2018-04-01 05:30:00.5", tz="UTC"),
    ]
    assert str(frame["tx_datetime"].dtype) == "datetime64[ns, UTC]"


def test_epoch_numbers_are_rejected():
    frame, problems = normalise_transactions(_tx(["1522559400", "2018-04-01T05:20:00Z"]), KEY)
    assert frame is None
    assert problems[0].check == "tx_datetime_type"
    assert "epoch numbers are not accepted" in problems[0].message
    assert problems[0].examples == ["1522559400"]
    parquet_like = _tx([1522559400, 1522559500])
    _, problems = normalise_transactions(parquet_like, KEY)
    assert "epoch numbers are not accepted" in problems[0].message


def test_typed_parquet_columns_are_normalised():
    raw = pd.DataFrame(
        {
            "transaction_id": [12, 7],
            "tx_datetime": pd.to_datetime(["2018-04-01 05:30", "2018-04-01 05:10"]),  # naive
            "customer_id": [1.0, 2.0],
            "terminal_id": ["t1", "t2"],
            "amount": [10, 20],
        }
    )
    frame, problems = normalise_transactions(raw, KEY)
    assert problems == []
    assert frame["transaction_id"].tolist() == ["7", "12"]
    assert frame["customer_id"].tolist() == ["2", "1"]
    assert frame["amount"].dtype == "float64"
    assert frame["tx_datetime"].iloc[0] == pd.Timestamp("2018-04-01 05:10", tz="UTC")


def test_normalise_labels_accepts_flags():
    raw = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d"],
            "is_fraud": ["1", "0", "TRUE", " false "],
            "known_at": ["2018-04-08T01:00:00Z"] * 4,
        }
    )
    frame, problems = normalise_labels(raw, "2018-04-08")
    assert problems == []
    assert frame["is_fraud"].tolist() == [1, 0, 1, 0]
    assert {c: str(frame[c].dtype) for c in LABEL_COLUMNS} == LABEL_COLUMNS
    bad, problems = normalise_labels(raw.assign(is_fraud=["yes", "1", "0.5", "0"]), "2018-04-08")
    assert bad is None
    assert problems[0].check == "is_fraud_type"
    assert problems[0].examples == ["yes", "0.5"]  # every value that is not a flag


# --- ingest end to end -----------------------------------------------------------------------


def _split(csv: bytes, parts: int) -> list[bytes]:
    header, *lines = csv.decode().strip().split("\n")
    chunks = [lines[i::parts] for i in range(parts)]
    return [("\n".join([header, *chunk]) + "\n").encode() for chunk in chunks]


def test_same_content_in_any_file_order_gives_the_same_version(store):
    a, b, c = _split(GOOD, 3)
    first = ingest_transactions_hour(
        store, KEY, [(PREFIX + "1.csv", a), (PREFIX + "2.csv", b), (PREFIX + "3.csv", c)], []
    )
    assert first.status == "valid" and first.created and first.rows == 60
    pointer = read_pointer(store, "transactions", KEY)

    # same rows, other files, other order: same bytes
    again = ingest_transactions_hour(
        store,
        KEY,
        [(PREFIX + "z.csv", c + b"".join(b.split(b"\n", 1)[1:])), (PREFIX + "y.csv", a)],
        [],
    )
    assert again.sha256 == first.sha256 and again.key == first.key
    assert not again.created
    moved = read_pointer(store, "transactions", KEY)
    # the version stands (same object, same history); the pointer names what it was rebuilt from
    unchanged = ("key", "sha256", "previous", "rows", "delivered_at", "status")
    assert {k: moved[k] for k in unchanged} == {k: pointer[k] for k in unchanged}
    assert [s["key"] for s in moved["sources"]] == [PREFIX + "y.csv", PREFIX + "z.csv"]

    repeat = ingest_transactions_hour(
        store,
        KEY,
        [(PREFIX + "z.csv", c + b"".join(b.split(b"\n", 1)[1:])), (PREFIX + "y.csv", a)],
        [],
    )
    assert not repeat.created
    assert read_pointer(store, "transactions", KEY) == moved  # a true repeat is a no-op

    whole = ingest_transactions_hour(store, KEY, [(PREFIX + "all.csv", GOOD)], [])
    assert whole.sha256 == first.sha256
    assert sum(1 for i in store.list("raw/") if i.key.endswith(".parquet")) == 1


def test_reingesting_the_same_files_is_a_noop(local_store):
    files = [(PREFIX + "part.csv", GOOD)]
    first = ingest_transactions_hour(local_store, KEY, files, [])
    pointer = read_pointer(local_store, "transactions", KEY)
    second = ingest_transactions_hour(local_store, KEY, files, [])
    assert (second.sha256, second.key, second.created) == (first.sha256, first.key, False)
    assert read_pointer(local_store, "transactions", KEY) == pointer
    assert pointer["sources"] == [
        {"key": PREFIX + "part.csv", "sha256": first.sources[0]["sha256"], "size": len(GOOD)}
    ]


def test_corrected_redelivery_after_quarantine_becomes_current(store):
    bad = GOOD.replace(b",", b";")
    files = [(PREFIX + "part.csv", bad)]
    assert ingest_transactions_hour(store, KEY, files, []).status == "quarantined"
    assert read_pointer(store, "transactions", KEY)["status"] == "quarantined"

    fixed = ingest_transactions_hour(store, KEY, [(PREFIX + "part.csv", GOOD)], [])
    assert fixed.status == "valid" and fixed.created
    pointer = read_pointer(store, "transactions", KEY)
    assert pointer["status"] == "valid" and pointer["sha256"] == fixed.sha256
    assert pointer["previous"] is None
    assert len(read_partition(store, "transactions", KEY)) == 60
    # the quarantined bytes are still there
    assert store.get_bytes(f"quarantine/transactions/{KEY}/part.csv") == bad


def test_corrected_redelivery_of_a_valid_hour_moves_the_pointer(local_store):
    v1 = ingest_transactions_hour(local_store, KEY, [(PREFIX + "part.csv", GOOD)], [])
    frame = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    frame.loc[0, "amount"] = "99.99"
    corrected = frame.to_csv(index=False, lineterminator="\n").encode()
    v2 = ingest_transactions_hour(local_store, KEY, [(PREFIX + "part.csv", corrected)], [])
    assert v2.status == "valid" and v2.sha256 != v1.sha256 and v2.created
    pointer = read_pointer(local_store, "transactions", KEY)
    assert pointer["sha256"] == v2.sha256 and pointer["previous"] == v1.sha256
    assert local_store.exists(v1.key)  # old versions are immutable and kept
    first_id = frame.loc[0, "transaction_id"]
    raw = read_partition(local_store, "transactions", KEY).set_index("transaction_id")
    assert raw.loc[first_id, "amount"] == 99.99


def test_no_files_is_missing_and_writes_nothing(local_store):
    outcome = ingest_transactions_hour(local_store, KEY, [], [])
    assert outcome.status == "missing"
    assert local_store.list() == []


def test_history_is_read_from_raw_when_not_given(local_store):
    for day in range(1, 8):
        key = f"2018-04-0{day}-05:00"
        start = hour_start(key)
        data = sample_transactions_csv(start, rows=30, seed=day)
        assert ingest_transactions_hour(local_store, key, [("x/a.csv", data)]).status == "valid"
    big = sample_transactions_csv(hour_start("2018-04-08-05:00"), rows=400, seed=8)
    outcome = ingest_transactions_hour(local_store, "2018-04-08-05:00", [("x/a.csv", big)])
    assert outcome.status == "quarantined"
    assert outcome.problems[0].check == "expect_table_row_count_to_be_between"
    assert "over 7 earlier partition(s)" in outcome.problems[0].message


@pytest.mark.parametrize("many", [False, True], ids=["one hour", "hours of a day"])
def test_each_earlier_pointer_is_read_once_for_the_row_bounds_and_the_amount_profiles(
    local_store, many
):
    """The row-count bounds and the amount profiles come from the same pointers (the same hour
    on earlier days): read once each, not once per check (on S3 each read is a request: a day
    of the demo's ingestion made 408 GETs, 336 of them these pointers twice over)."""
    for day in range(1, 8):
        key = f"2018-04-0{day}-05:00"
        data = sample_transactions_csv(hour_start(key), rows=30, seed=day)
        assert ingest_transactions_hour(local_store, key, [("x/a.csv", data)]).status == "valid"
    reads: dict[str, int] = {}
    get_bytes = local_store.get_bytes

    def counted(key: str) -> bytes:
        reads[key] = reads.get(key, 0) + 1
        return get_bytes(key)

    local_store.get_bytes = counted
    key = "2018-04-08-05:00"
    files = [("x/a.csv", sample_transactions_csv(hour_start(key), rows=30, seed=8))]
    if many:
        (outcome,) = ingest_transactions_hours(local_store, [(key, files)])
    else:
        outcome = ingest_transactions_hour(local_store, key, files)
    assert outcome.status == "valid"
    earlier = {k: n for k, n in reads.items() if re.search(r"2018-04-0[1-7]-05:00/_current", k)}
    assert len(earlier) == 7 and set(earlier.values()) == {1}, earlier


def test_every_validation_publishes_its_data_docs_page(store):
    """Great Expectations' own Data Docs page of each validated partition, passed or failed,
    named by the inputs it validated: the same delivery rewrites its page, another one adds its
    own (an older materialization's link keeps showing what was validated then)."""
    good = ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    assert good.status == "valid" and good.data_docs_key
    assert good.data_docs_key.startswith(f"reports/validations/transactions/{KEY}/")
    page = store.get_bytes(good.data_docs_key).decode()
    assert "Data documentation compiled by Great Expectations" in page
    assert "transaction_id" in page and "amount" in page  # the expectations, per column
    again = ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    assert again.data_docs_key == good.data_docs_key
    page = store.get_bytes(good.data_docs_key).decode()

    # failed at the expectations stage (row count far past the history's bounds): the page
    # shows the failed expectation and its observed value
    big = sample_transactions_csv(START, rows=400, seed=8)
    bad = ingest_transactions_hour(store, KEY, [(PREFIX + "b.csv", big)], [30] * 7)
    assert bad.status == "quarantined" and bad.data_docs_key not in (None, good.data_docs_key)
    failed = store.get_bytes(bad.data_docs_key).decode()
    text = " ".join(re.sub(r"<[^>]+>", " ", failed).split())  # what a reader sees
    assert "Status: Failed" in text and "Unsuccessful Expectations 1" in text
    assert "less than or equal to 140 rows. 400" in text  # the bound, then the observed value
    assert store.get_bytes(good.data_docs_key).decode() == page  # the older page stands


def test_a_partition_not_read_as_a_table_has_no_data_docs(store):
    outcome = ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", b"\x00\x01garbage")], [])
    assert outcome.status == "quarantined" and outcome.data_docs_key is None
    assert store.list("reports/") == []


def test_landed_files_lists_only_feed_files(store):
    for name in ("b.csv", "a.parquet", ".hidden.csv", "_SUCCESS", "a.csv.reason.json"):
        store.put_bytes(PREFIX + name, b"x")
    store.put_bytes(PREFIX + "nested/c.csv", b"x")
    store.put_bytes(hour_landing_prefix("2018-04-01-06:00") + "other.csv", b"x")
    store.put_bytes("landing/labels/2018-04-08/labels.csv", b"y")
    assert [k for k, _ in landed_files(store, "transactions", KEY)] == [
        PREFIX + "a.parquet",
        PREFIX + "b.csv",
    ]
    assert landed_files(store, "labels", "2018-04-08") == [
        ("landing/labels/2018-04-08/labels.csv", b"y")
    ]


def test_parquet_feed_file_is_ingested(local_store):
    frame = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    frame["amount"] = frame["amount"].astype(float)
    frame["tx_datetime"] = pd.to_datetime(frame["tx_datetime"], utc=True)
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    from_parquet = ingest_transactions_hour(local_store, KEY, [("a.parquet", sink.getvalue())], [])
    from_csv = ingest_transactions_hour(local_store, KEY, [("a.csv", GOOD)], [])
    assert from_parquet.status == from_csv.status == "valid"
    assert from_parquet.sha256 == from_csv.sha256


def test_labels_day_end_to_end(local_store):
    ids = pd.read_csv(io.BytesIO(GOOD), dtype=str)["transaction_id"].tolist()
    labels = "transaction_id,is_fraud,known_at\n" + "".join(
        f"{tx},{i % 2},2018-04-08T{i % 24:02d}:00:00Z\n" for i, tx in enumerate(ids)
    )
    files = [("landing/labels/2018-04-08/labels.csv", labels.encode())]
    good = ingest_labels_day(local_store, "2018-04-08", files, known_transaction_ids=set(ids))
    assert good.status == "valid", good.problems
    frame = read_partition(local_store, "labels", "2018-04-08")
    assert {c: str(frame[c].dtype) for c in LABEL_COLUMNS} == LABEL_COLUMNS
    assert len(frame) == len(ids)

    bad = ingest_labels_day(local_store, "2018-04-08", files, known_transaction_ids=ids[:-3])
    assert bad.status == "quarantined"
    assert bad.problems[0].column == "transaction_id"
    assert bad.problems[0].unexpected_count == 3
    assert "never ingested" in bad.reason_summary
    assert local_store.exists("quarantine/labels/2018-04-08/labels.csv.reason.json")


def test_timing_of_one_busy_hour(local_store):
    """42,000 rows: read + normalise + validate + write. A print, not an assertion."""
    data = sample_transactions_csv(START, rows=42_000, seed=3)
    was_imported = "great_expectations" in sys.modules
    started = time.perf_counter()
    warm_up()
    cold = time.perf_counter() - started
    outcome = ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", data)], [40_000] * 7)
    assert outcome.status == "valid" and outcome.rows == 42_000
    print(
        f"\n42,000 rows ({len(data) / 1e6:.1f} MB CSV): GE import+context "
        f"{'already warm' if was_imported else f'{cold:.2f} s (once per process)'}; "
        f"ingest {outcome.timings}"
    )


def test_outcome_carries_what_the_asset_metadata_needs(local_store):
    outcome = ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", GOOD)], [60] * 3)
    assert outcome.ok and outcome.reason is None and outcome.seconds > 0
    assert outcome.bytes == local_store.head(outcome.key).size
    assert outcome.min_timestamp.startswith("2018-04-01T05:")
    pointer = read_pointer(local_store, "transactions", KEY)
    assert pointer["expectations_evaluated"] == 14
    assert pointer["validation"]["unsuccessful_expectations"] == 0
    assert reason_markdown(outcome).startswith("**transactions `2018-04-01-05:00`: valid**")

    bad = ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", b"")], [])
    text = reason_markdown(bad)
    assert "`empty_file` (file `a.csv`): file is empty (0 bytes)" in text
    assert f"- `quarantine/transactions/{KEY}/a.csv`" in text
    missing = ingest_transactions_hour(local_store, KEY, [], [])
    assert "no files landed" in reason_markdown(missing)


def test_labels_against_ids_from_raw(store):
    frame = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    known = known_transaction_ids(store, "2018-04-08", lookback_days=7)
    assert sorted(known) == sorted(frame["transaction_id"])
    assert len(known_transaction_ids(store, "2018-04-09", lookback_days=7)) == 0
    labels = "transaction_id,is_fraud,known_at\n" + "".join(
        f"{tx},0,2018-04-08T10:00:00Z\n" for tx in [*frame["transaction_id"][:9], "ghost"]
    )
    files = [("landing/labels/2018-04-08/l.csv", labels.encode())]
    strict = ingest_labels_day(store, "2018-04-08", files, known)
    assert strict.status == "quarantined"
    lenient = ingest_labels_day(store, "2018-04-08", files, known, mostly=0.9)
    assert lenient.status == "valid"


# --- ids unique across hours; labels not known before their transaction ----------------------

H6 = "2018-04-01-06:00"


def _hour_csv(key: str, rows: int, seed: int, reuse: list[str] | None = None) -> bytes:
    """A valid hour whose first ids are replaced by ``reuse`` (ids of another hour)."""
    frame = pd.read_csv(io.BytesIO(sample_transactions_csv(hour_start(key), rows, seed)), dtype=str)
    for i, tx in enumerate(reuse or []):
        frame.loc[i, "transaction_id"] = tx
    return frame.to_csv(index=False, lineterminator="\n").encode()


def test_an_id_already_ingested_in_another_hour_is_rejected(store):
    first = ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    ids = read_partition(store, "transactions", KEY)["transaction_id"].tolist()
    data = _hour_csv(H6, rows=60, seed=4, reuse=ids[:2])
    later = ingest_transactions_hour(store, H6, [(hour_landing_prefix(H6) + "b.csv", data)], [])
    assert later.status == "valid" and later.rows == 58 and later.rows_rejected == 2
    reason = f"transaction_id already ingested in hour {KEY}"
    assert later.files[0]["rejected_by_reason"] == {reason: 2}
    # re-ingesting an hour is not a duplicate of itself
    again = ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    assert again.status == "valid" and again.rows_rejected == 0
    assert again.sha256 == first.sha256
    # a whole hour delivered again under another hour is a wrong file: quarantined
    replay = _hour_csv(H6, rows=60, seed=4, reuse=ids)
    wrong = ingest_transactions_hour(store, H6, [(hour_landing_prefix(H6) + "b.csv", replay)], [])
    assert wrong.status == "quarantined" and reason in wrong.reason_summary
    # ... and its ids left the index with it: the earlier hour is still unique
    assert id_index.ingested_elsewhere(store, KEY, pd.Series(ids)).empty


def test_a_hash_match_is_confirmed_against_the_raw_ids_before_rejecting(local_store):
    """The index stores 64-bit hashes; a match whose hour does not hold the id (what a hash
    collision looks like) rejects nothing."""
    tx = pd.read_csv(io.BytesIO(GOOD), dtype=str).head(3)
    tx["tx_datetime"] = pd.to_datetime(tx["tx_datetime"], utc=True)
    id_index.replace_hour(local_store, "2018-03-30-01:00", tx)  # no raw partition there
    outcome = ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    assert outcome.status == "valid" and outcome.rows_rejected == 0


def test_index_is_replaced_per_hour_and_forgotten_on_quarantine(local_store):
    ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    data = _hour_csv(H6, rows=30, seed=2)
    ingest_transactions_hour(local_store, H6, [(hour_landing_prefix(H6) + "b.csv", data)], [])
    index = id_index.load(local_store)
    counts = index["hour"].map(id_index.partition_of).value_counts().to_dict()
    assert counts == {KEY: 60, H6: 30}
    ingest_transactions_hour(local_store, H6, [(hour_landing_prefix(H6) + "b.csv", b"")], [])
    hours = id_index.load(local_store)["hour"].unique().tolist()
    assert hours == [id_index.hour_number(KEY)]


def test_a_label_known_before_its_transaction_is_rejected(local_store):
    """Same day, known_at five minutes before tx_datetime: the day-range check cannot see it."""
    ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    tx = read_partition(local_store, "transactions", KEY)
    known_at = tx["tx_datetime"] + pd.Timedelta(minutes=1)
    known_at.iloc[0] = tx["tx_datetime"].iloc[0] - pd.Timedelta(minutes=5)
    labels = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "is_fraud": 0,
            "known_at": known_at.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    files = [("landing/labels/2018-04-01/l.csv", labels.to_csv(index=False).encode())]
    outcome = ingest_labels_day(local_store, "2018-04-01", files, tx["transaction_id"])
    assert outcome.status == "valid" and outcome.rows == 59 and outcome.rows_rejected == 1
    assert outcome.files[0]["rejected_by_reason"] == {
        "known_at is before the transaction's tx_datetime": 1
    }


def test_hours_of_one_day_indexed_concurrently_lose_nothing(store):
    """Each day of the index is one object replaced with compare-and-swap: eight hours of the
    same day written at once all end up in it."""
    from concurrent.futures import ThreadPoolExecutor

    def index_hour(h: int) -> None:
        key = f"2018-04-01-{h:02d}:00"
        frame = pd.read_csv(io.BytesIO(sample_transactions_csv(hour_start(key), 20, h)), dtype=str)
        frame["tx_datetime"] = pd.to_datetime(frame["tx_datetime"], utc=True)
        id_index.replace_hour(store, key, frame)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(index_hour, range(8)))
    counts = id_index.load(store)["hour"].value_counts()
    assert len(counts) == 8 and set(counts) == {20}


def test_a_label_of_a_rejected_transaction_is_rejected_not_the_label_day(local_store):
    """The demo's case: one transaction row is rejected, its label arrives a week later; the
    label day must not fail for that ("refers to a transaction never ingested"), and the label
    cannot be used: it is rejected with its reason."""
    frame = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    frame.loc[4, "amount"] = "-3.00"
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    tx = ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", data)], [])
    assert tx.rows_rejected == 1
    labels = pd.DataFrame(
        {"transaction_id": frame["transaction_id"], "is_fraud": 0, "known_at": "2018-04-08T10:00Z"}
    )
    files = [("landing/labels/2018-04-08/l.csv", labels.to_csv(index=False).encode())]
    known = known_transaction_ids(local_store, "2018-04-08", lookback_days=7)
    outcome = ingest_labels_day(local_store, "2018-04-08", files, known)
    assert outcome.status == "valid" and outcome.rows == 59
    assert outcome.files[0]["rejected_by_reason"] == {
        "its transaction was rejected at ingestion": 1
    }
    # a corrected re-delivery of the hour makes the id a transaction again
    ingest_transactions_hour(local_store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    assert id_index.rejected_transactions(local_store, frame["transaction_id"]) == set()


# --- labels of a transactions hour that could not be read ------------------------------------

JUNK = b"\x00\x9c\xff\x10 not a table \xfe\n\x00"  # not UTF-8: the hour is quarantined whole


def _labels_for(*frames: pd.DataFrame, day: str = "2018-04-08") -> list[tuple[str, bytes]]:
    ids = pd.concat([f["transaction_id"] for f in frames], ignore_index=True)
    labels = pd.DataFrame({"transaction_id": ids, "is_fraud": 0, "known_at": f"{day}T10:00Z"})
    labels.loc[::7, "is_fraud"] = 1
    return [(f"landing/labels/{day}/l.csv", labels.to_csv(index=False).encode())]


def _ingest_label_day(store, files, day: str = "2018-04-08"):
    """As the raw_labels asset calls it: known ids and unreadable hours of the lookback."""
    from fraudloop.core.tables import unreadable_hours

    known = known_transaction_ids(store, day, lookback_days=7)
    unread = unreadable_hours(store, day, lookback_days=7)
    return ingest_labels_day(store, day, files, known, unreadable_hours=unread)


def _labels_waiting_for_h6(store, h6_file: bytes | None):
    """A good hour ingested, hour H6 landed (`h6_file`: its file ingested as delivered; None: not
    ingested at all), and a label day for both hours: its labels of H6 are held (60 accepted,
    30 held, 0 rejected). Returns (H6's landing key, its good bytes, the label files, the day)."""
    from fraudloop.core.tables import unreadable_hours

    ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    h6_key = hour_landing_prefix(H6) + "b.csv"
    h6 = _hour_csv(H6, rows=30, seed=2)
    if h6_file is None:
        store.put_bytes(h6_key, h6)  # landed, its ingestion not run yet
    else:
        assert ingest_transactions_hour(store, H6, [(h6_key, h6_file)], []).status == "quarantined"
    assert unreadable_hours(store, "2018-04-08", lookback_days=7) == [H6]

    good, late = pd.read_csv(io.BytesIO(GOOD), dtype=str), pd.read_csv(io.BytesIO(h6), dtype=str)
    files = _labels_for(good, late)
    day = _ingest_label_day(store, files)
    assert day.status == "valid", day.reason_summary
    assert (day.rows, day.rows_held, day.rows_rejected) == (60, 30, 0)
    return h6_key, h6, files, day


def test_labels_of_an_unreadable_hour_are_held_and_let_in_by_its_corrected_redelivery(store):
    """The limit the README used to list: an hour whose file cannot be read has unknown ids, so
    its labels failed the known-ids check and took the whole label day with them. Now only
    those labels wait, named by the hour; the corrected hour lets them in."""
    import json

    from fraudloop.data import held_labels
    from fraudloop.data.rows import held_reason

    h6_key, h6, files, day = _labels_waiting_for_h6(store, JUNK)
    good, late = pd.read_csv(io.BytesIO(GOOD), dtype=str), pd.read_csv(io.BytesIO(h6), dtype=str)
    (file,) = day.files
    assert file["held_by_reason"] == {held_reason([H6]): 30}
    assert H6 in held_reason([H6]) and file["rows_accepted"] == 60
    assert set(read_partition(store, "labels", "2018-04-08")["transaction_id"]) == set(
        good["transaction_id"]
    )
    record = json.loads(store.get_bytes(day.held_key))
    assert record["waiting_for"] == [H6] and record["rows_held"] == 30
    (held_file,) = record["files"]
    assert held_file["key"] == files[0][0]
    assert [row["raw"].split(",")[0] for row in held_file["rows"]] == list(late["transaction_id"])
    assert held_file["rows"][0]["line"] == 62  # header + 60 rows before it
    assert f"30 row(s) of l.csv held until transactions hour {H6}" in reason_markdown(day)
    assert held_labels.released(store) == []  # the hour is still unreadable

    # a re-delivery that is still junk releases nothing; the corrected one does
    ingest_transactions_hour(store, H6, [(h6_key, JUNK + b"again")], [])
    assert held_labels.released(store) == []
    assert ingest_transactions_hour(store, H6, [(h6_key, h6)], []).status == "valid"
    (released,) = held_labels.released(store)
    assert released[0] == "2018-04-08"

    again = _ingest_label_day(store, files)
    assert again.status == "valid" and (again.rows, again.rows_held) == (90, 0)
    assert again.held_key is None and not store.exists(day.held_key)
    assert held_labels.released(store) == []


def test_held_labels_are_bounded_by_what_the_hour_could_hold(store):
    """Unknown ids beyond what the unreadable hour can have delivered (its same hour on earlier
    days, times the row-count ratio) are not its labels: nothing is held, and the known-ids check
    judges the day as before."""
    earlier = "2018-03-31-06:00"
    small = _hour_csv(earlier, rows=5, seed=1)
    ingest_transactions_hour(store, earlier, [(hour_landing_prefix(earlier) + "c.csv", small)], [])
    ingest_transactions_hour(store, KEY, [(PREFIX + "a.csv", GOOD)], [])
    ingest_transactions_hour(store, H6, [(hour_landing_prefix(H6) + "b.csv", JUNK)], [])
    strangers = pd.DataFrame({"transaction_id": [f"x-{i}" for i in range(41)]})  # limit 5*4+20
    good = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    day = _ingest_label_day(store, _labels_for(good, strangers))
    assert day.status == "quarantined" and day.rows_held == 0
    assert "never ingested" in day.reason_summary
    within = _ingest_label_day(store, _labels_for(good, strangers.head(40)))
    assert within.status == "valid" and within.rows_held == 40


def test_a_label_day_whose_every_label_waits_is_valid_and_empty(store):
    """Every label of the day belongs to the unreadable hour: the day is ingested with no rows
    (nothing in it is wrong), not quarantined, and fills in once the hour is corrected."""
    h6_key = hour_landing_prefix(H6) + "b.csv"
    h6 = _hour_csv(H6, rows=30, seed=2)
    ingest_transactions_hour(store, H6, [(h6_key, JUNK)], [])
    files = _labels_for(pd.read_csv(io.BytesIO(h6), dtype=str))
    day = _ingest_label_day(store, files)
    assert day.status == "valid" and (day.rows, day.rows_held) == (0, 30)
    assert len(read_partition(store, "labels", "2018-04-08")) == 0
    ingest_transactions_hour(store, H6, [(h6_key, h6)], [])
    assert _ingest_label_day(store, files).rows == 30


# --- an amount column that holds ids ---------------------------------------------------------


def _integer_id_hour(key: str, seed: int, rows: int = 200) -> pd.DataFrame:
    """An hour of a feed whose customer and terminal ids are integers (the handbook's data):
    amounts with cents around $50."""
    rng = np.random.default_rng(seed)
    start = hour_start(key)
    return pd.DataFrame(
        {
            "transaction_id": [f"{start:%Y%m%d%H}{i:05d}" for i in range(rows)],
            "tx_datetime": [
                (start + pd.Timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ")
                for s in np.sort(rng.integers(0, 3600, rows))
            ],
            "customer_id": [str(c) for c in rng.integers(0, 5000, rows)],
            "terminal_id": [str(t) for t in rng.integers(0, 10000, rows)],
            "amount": [f"{a:.2f}" for a in rng.gamma(2.0, 27.0, rows)],
        }
    )


def _ingest_frame(store, key: str, frame: pd.DataFrame):
    data = frame.to_csv(index=False, lineterminator="\n").encode()
    return ingest_transactions_hour(store, key, [(hour_landing_prefix(key) + "part.csv", data)])


def _with_history(store, key: str, days: int = 3, whole: bool = False) -> None:
    """The same hour on `days` earlier days, ingested (so their amount profiles are kept)."""
    for back in range(days, 0, -1):
        earlier = (hour_start(key) - pd.Timedelta(days=back)).strftime("%Y-%m-%d-%H:00")
        frame = _integer_id_hour(earlier, seed=back)
        if whole:
            frame["amount"] = frame["amount"].astype(float).round().astype(int).astype(str)
        assert _ingest_frame(store, earlier, frame).status == "valid"


def test_an_amount_column_holding_integer_customer_ids_is_caught(local_store):
    """The mislabelled header of issue 16 on a feed with integer ids: customer_id holds the
    terminal ids, terminal_id the customer ids, amount the customer ids again. Every row passes
    the row checks (integers are valid ids and plausible amounts); the amount column as a whole
    does not look like the amounts of this hour on earlier days."""
    key = "2018-04-08-14:00"
    _with_history(local_store, key)
    good = _integer_id_hour(key, seed=9)
    shifted = good.assign(
        customer_id=good["terminal_id"], terminal_id=good["customer_id"], amount=good["customer_id"]
    )
    outcome = _ingest_frame(local_store, key, shifted)
    assert outcome.status == "quarantined" and outcome.rows_rejected == 0
    (problem,) = outcome.problems
    assert problem.check == "amount_looks_like_ids" and problem.column == "amount"
    assert "100% of 200 values are whole numbers" in problem.message
    assert "same hour on 3 earlier day(s)" in problem.message
    assert outcome.files[0]["status"] == "quarantined"
    assert read_pointer(local_store, "transactions", key)["status"] == "quarantined"
    # the same file unshifted is fine
    assert _ingest_frame(local_store, key, good).status == "valid"


def test_genuine_round_dollar_amounts_are_not_taken_for_ids(local_store):
    """No false positives: amounts rounded to whole dollars keep the median of genuine amounts,
    whether the feed always sent them or switches to them today, and the first hours of a feed
    (no history) are not judged."""
    key = "2018-04-08-14:00"
    rounded = _integer_id_hour(key, seed=9)
    rounded["amount"] = rounded["amount"].astype(float).round().astype(int).astype(str)
    assert _ingest_frame(local_store, key, rounded).status == "valid"  # no history yet
    _with_history(local_store, key)  # a feed with cents, switching to round dollars today
    assert _ingest_frame(local_store, key, rounded).status == "valid"
    other = "2018-04-08-15:00"
    _with_history(local_store, other, whole=True)  # a feed that always sent round dollars
    whole = _integer_id_hour(other, seed=11)
    whole["amount"] = whole["amount"].astype(float).round().astype(int).astype(str)
    assert _ingest_frame(local_store, other, whole).status == "valid"
    # ... and so do a few large round amounts among them (a busy hour of a car dealer)
    whole.loc[:20, "amount"] = "12000"
    assert _ingest_frame(local_store, other, whole).status == "valid"


def test_labels_of_an_hour_landed_but_not_ingested_yet_wait_for_it(store):
    """A label day ingested before the hours it labels (their run queued, or between a killed
    container and its retry: found by the Docker stack's test) used to be rejected whole as
    labels of transactions never ingested, and nothing ever ran it again. The landed hour's
    labels now wait for it like an unreadable hour's; an hour that never landed is not waited
    for."""
    from fraudloop.data import held_labels

    h6_key, h6, files, _ = _labels_waiting_for_h6(store, None)
    assert held_labels.released(store) == []  # the hour is not ingested yet

    assert ingest_transactions_hour(store, H6, [(h6_key, h6)], []).status == "valid"
    (released,) = held_labels.released(store)
    assert released[0] == "2018-04-08"
    again = _ingest_label_day(store, files)
    assert again.status == "valid" and (again.rows, again.rows_held) == (90, 0)

    # labels of transactions whose hour never landed are judged as before
    strangers = pd.DataFrame({"transaction_id": [f"x-{i}" for i in range(40)]})
    good = pd.read_csv(io.BytesIO(GOOD), dtype=str)
    other_day = _labels_for(good, strangers, day="2018-04-09")
    other = _ingest_label_day(store, other_day, day="2018-04-09")
    assert other.status == "quarantined" and other.rows_held == 0
    assert "never ingested" in other.reason_summary


# --- several hours of a day, one validation ---------------------------------------------------

DAY = "2018-04-02"


def _key(hour: int, day: str = DAY) -> str:
    return f"{day}-{hour:02d}:00"


def _file(key: str, data: bytes, name: str = "a.csv") -> list[tuple[str, bytes]]:
    return [(hour_landing_prefix(key) + name, data)]


def _ids(key: str, numbers) -> list[str]:
    return [f"tx-{hour_start(key):%Y%m%d%H}-{n:06d}" for n in numbers]


def _day_before(store) -> None:
    """What the store holds before the day is ingested: the hours of the day before (the row
    count bounds of the day's hours) and earlier versions of two of the day's hours."""
    for hour in range(4, 11):
        key = _key(hour, "2018-04-01")
        ingest_transactions_hour(store, key, _file(key, _hour_csv(key, 60, seed=hour)), [])
    for hour in (6, 9):  # 30 rows each; their new deliveries drop some ids
        key = _key(hour)
        ingest_transactions_hour(store, key, _file(key, _hour_csv(key, 30, seed=hour)), [])


def _the_day(oversized: bool) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """One day of deliveries with what makes hours depend on each other: ids that an earlier
    hour of the day accepts, ids that an earlier hour no longer holds (a re-delivery without
    them, a quarantined re-delivery), an hour with nothing landed."""
    h = {n: _key(n) for n in range(4, 11)}
    day = {
        h[4]: _file(h[4], _hour_csv(h[4], 300 if oversized else 50, seed=40)),
        # two ids of hour 4: rejected (accepted there first); when hour 4 is quarantined they
        # are new
        h[5]: _file(h[5], _hour_csv(h[5], 50, seed=50, reuse=_ids(h[4], [1, 2]))),
        h[6]: _file(h[6], b""),  # unreadable: quarantined, its earlier ids leave the index
        h[7]: _file(h[7], _hour_csv(h[7], 50, seed=70, reuse=_ids(h[6], [3]))),
        # h[8]: nothing landed
        h[9]: _file(h[9], _hour_csv(h[9], 20, seed=9)),  # its earlier version held 30 ids
        h[10]: _file(h[10], _hour_csv(h[10], 50, seed=100, reuse=_ids(h[9], [25]))),
    }
    return [(key, day.get(key, [])) for key in h.values()]


def _verdicts(outcomes) -> list[tuple]:
    return [
        (
            o.partition_key,
            o.status,
            o.rows,
            o.rows_rejected,
            o.sha256,
            [f.get("rejected_by_reason") for f in o.files],
            [p.check for p in o.problems],
        )
        for o in outcomes
    ]


def _index(store) -> list[tuple]:
    index = id_index.load(store)
    return sorted(map(tuple, index[["hash", "tx_ns", "hour"]].to_numpy().tolist()))


@pytest.mark.parametrize("oversized", [False, True], ids=["one-validation", "fallback"])
def test_a_day_ingested_at_once_gets_the_verdicts_of_hour_by_hour(tmp_path, oversized):
    """`ingest_transactions_hours` against the same deliveries ingested hour by hour into a
    second store: the same statuses, rows, rejections, versions and id index. With `oversized`
    hour 4 breaks its row-count bounds (a failure only Great Expectations sees), so the hours'
    shared validation fails and every hour is judged on its own; hour 5's reuse of hour 4's ids
    is then no duplicate."""
    from fraudloop.core.store import LocalObjectStore

    one_by_one, at_once = LocalObjectStore(tmp_path / "a"), LocalObjectStore(tmp_path / "b")
    for store in (one_by_one, at_once):
        _day_before(store)
    expected = [ingest_transactions_hour(one_by_one, k, f) for k, f in _the_day(oversized)]
    outcomes = ingest_transactions_hours(at_once, _the_day(oversized))
    assert _verdicts(outcomes) == _verdicts(expected)
    assert _index(at_once) == _index(one_by_one)
    by_hour = {o.partition_key: o for o in outcomes}
    assert by_hour[_key(6)].status == "quarantined" and by_hour[_key(8)].status == "missing"
    assert by_hour[_key(7)].rows_rejected == 0 and by_hour[_key(10)].rows_rejected == 0
    validated = [o for o in outcomes if o.validation is not None]
    pages = {o.data_docs_key for o in validated}
    if oversized:
        assert by_hour[_key(4)].status == "quarantined"
        assert "expect_table_row_count_to_be_between" in [
            p.check for p in by_hour[_key(4)].problems
        ]
        assert by_hour[_key(5)].rows_rejected == 0
        assert len(pages) == len(validated)  # each hour validated on its own
    else:
        assert by_hour[_key(5)].rows_rejected == 2
        assert len(validated) == 5 and len(pages) == 1  # one validation, one Data Docs page
        assert at_once.exists(pages.pop())


def test_hours_of_two_days_are_refused(local_store):
    from fraudloop.data.ingest import ingest_transactions_hours

    with pytest.raises(ValueError, match="one day"):
        ingest_transactions_hours(local_store, [(_key(4), []), (_key(4, "2018-04-03"), [])])


def test_the_several_hours_suite_fails_where_one_hour_s_own_suite_fails():
    """What the shared suite must see: a row outside its own hour (inside another one's), an
    hour's row count out of its bounds, an id in two hours; and nothing when all is well."""
    from fraudloop.data.validation import (
        TransactionSuiteParams,
        validate_transactions,
        validate_transactions_hours,
    )

    keys = [_key(4), _key(5)]
    frames = [
        normalise_transactions(_read_ok("a.csv", _hour_csv(k, 40, seed=i)), k)[0]
        for i, k in enumerate(keys)
    ]
    params = [TransactionSuiteParams(hour_start=hour_start(k), row_bounds=(10, 100)) for k in keys]
    assert validate_transactions_hours(list(zip(frames, params, strict=True))).passed

    late = frames[0].copy()
    late.loc[0, "tx_datetime"] = hour_start(keys[1]) + pd.Timedelta(minutes=5)
    narrow = TransactionSuiteParams(hour_start=hour_start(keys[1]), row_bounds=(50, 100))
    shared = frames[1].copy()
    shared.loc[0, "transaction_id"] = frames[0].loc[0, "transaction_id"]
    for hours in (
        [(late, params[0]), (frames[1], params[1])],
        [(frames[0], params[0]), (frames[1], narrow)],
        [(frames[0], params[0]), (shared, params[1])],
    ):
        assert not validate_transactions_hours(hours).passed
    # the first two fail each hour's own suite as well; the shared id, only the shared one
    assert not validate_transactions(late, params=params[0]).passed
    assert not validate_transactions(frames[1], params=narrow).passed
    assert validate_transactions(shared, params=params[1]).passed
    with pytest.raises(ValueError, match="empty hour"):
        validate_transactions_hours([(frames[0].head(0), params[0])])
