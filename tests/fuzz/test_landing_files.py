"""Property tests of the landed-file path: reading, normalising, row checks, raw and quarantine.

Three properties, each over generated files:

- **right values**: a valid hour of transactions, written the many ways a feed may write it
  (header case and spacing, column order, extra columns, BOM, CRLF, quoting, offsets and
  naive times, exponent amounts, CSV or Parquet), is ingested with exactly its values;
- **nothing lost, no garbage**: the same files broken at random (bytes overwritten, cut
  short, re-encoded, other delimiters, headers renamed, lines inserted, pure noise) never
  raise; every file is ingested, has rows rejected or is quarantined, and then its bytes are
  in quarantine unchanged beside a reason; every row is accepted or rejected (none
  vanishes); every raw row obeys the contract and is, value for value, a record of the
  delivered file as Python's own csv module reads it;
- **the reader never raises**: arbitrary bytes under any name give a frame or a problem that
  says what is wrong.

The same for a day of labels (right values and broken files).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from dataclasses import dataclass, replace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudloop.core.hours import day_start, hour_start
from fraudloop.core.keyspace import day_landing_prefix, hour_landing_prefix
from fraudloop.core.store import LocalObjectStore
from fraudloop.core.tables import read_partition, read_pointer
from fraudloop.data.expectations import warm_up
from fraudloop.data.ingest import ingest_labels_day, ingest_transactions_hour
from fraudloop.data.policy import IngestPolicy
from fraudloop.data.quarantine import REASON_SUFFIX, REJECTED_SUFFIX
from fraudloop.data.read import NA_TOKENS, read_landed_file
from tests.fuzz.budget import TALLY, fuzz_settings, seeded

pytestmark = pytest.mark.slow  # in make test, not test-fast

KEY = "2018-04-01-05:00"
START = hour_start(KEY)
DAY = "2018-04-02"
DAY_START = day_start(DAY)
POLICY = IngestPolicy()
ID_RE = re.compile(POLICY.id_pattern)
AMOUNT_LIKE = re.compile(r"[+-]?\d*\.\d+")
TX_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]
LABEL_COLUMNS = ["transaction_id", "is_fraud", "known_at"]


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up()  # Great Expectations' first context costs seconds: not inside an example


# ---- generated valid data ------------------------------------------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,24}", fullmatch=True).filter(
    lambda s: not AMOUNT_LIKE.fullmatch(s) and s not in NA_TOKENS
)
AMOUNTS = st.one_of(
    st.integers(0, 100_000).map(float),
    st.decimals(0, 100_000, places=2).map(float),
    st.floats(0, 100_000, allow_nan=False, allow_infinity=False),
)
#: microseconds into the partition (hour or day)
OFFSETS_US = st.integers(0, 3600 * 10**6 - 1)


@dataclass
class Style:
    """How a feed writes its file."""

    fmt: str
    order: list[int]
    header_case: list[str]
    pad: list[bool]
    extras: list[str]
    bom: bool
    crlf: bool
    quote_all: bool
    time_style: str
    offset_hours: int
    amount_style: str


def styles(columns: int) -> st.SearchStrategy[Style]:
    return st.builds(
        Style,
        fmt=st.sampled_from(["csv", "csv", "csv", "parquet"]),
        order=st.permutations(range(columns)),
        header_case=st.lists(
            st.sampled_from(["lower", "upper", "title"]), min_size=columns, max_size=columns
        ),
        pad=st.lists(st.booleans(), min_size=columns, max_size=columns),
        extras=st.lists(st.from_regex(r"x_[a-z]{1,6}", fullmatch=True), max_size=2, unique=True),
        bom=st.booleans(),
        crlf=st.booleans(),
        quote_all=st.booleans(),
        time_style=st.sampled_from([*TIME_STYLES, "mixed", "mixed"]),
        offset_hours=st.integers(-12, 14),
        amount_style=st.sampled_from(["repr", "exponent", "padded"]),
    )


EXTRA_VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8
)


TIME_STYLES = ["Z", "+00:00", "naive", "space", "offset"]


def _when(instant: pd.Timestamp, style: Style, row: int = 0) -> str:
    if style.time_style == "mixed":  # every row its own way, offsets differing
        mixed = TIME_STYLES[(row + style.offset_hours) % len(TIME_STYLES)]
        offset = (style.offset_hours + 7 * row) % 27 - 12
        return _when(instant, replace(style, time_style=mixed, offset_hours=offset))
    if style.time_style == "Z":
        return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if style.time_style == "+00:00":
        return instant.isoformat()
    if style.time_style == "naive":
        return instant.tz_localize(None).isoformat()
    if style.time_style == "space":
        return instant.tz_localize(None).isoformat(sep=" ")
    return instant.tz_convert(f"Etc/GMT{-style.offset_hours:+d}").isoformat()


def _amount(value: float, style: Style) -> str:
    if style.amount_style == "exponent":
        return f"{value:.17e}"
    if style.amount_style == "padded":
        return f"  {value!r}  "
    return repr(value)


def _header(name: str, style: Style, i: int) -> str:
    name = {"lower": name, "upper": name.upper(), "title": name.title()}[style.header_case[i]]
    return f" {name} " if style.pad[i] else name


def render(columns: list[str], records: list[dict], extras: list[list[str]], style: Style):
    """The file's bytes as the feed writes them, with a name of the right extension."""
    order = [columns[i] for i in style.order]
    headers = [_header(c, style, columns.index(c)) for c in order] + style.extras
    if style.fmt == "parquet":
        data = {h: [str(r[c]) for r in records] for h, c in zip(headers, order, strict=False)}
        for j, name in enumerate(style.extras):
            data[name] = [e[j] for e in extras]
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(data), buffer)
        return "feed.parquet", buffer.getvalue().to_pybytes()
    out = io.StringIO()
    writer = csv.writer(
        out,
        lineterminator="\r\n" if style.crlf else "\n",
        quoting=csv.QUOTE_ALL if style.quote_all else csv.QUOTE_MINIMAL,
    )
    writer.writerow(headers)
    for record, extra in zip(records, extras, strict=True):
        writer.writerow([record[c] for c in order] + extra)
    data = out.getvalue().encode("utf-8")
    return "feed.csv", (b"\xef\xbb\xbf" + data) if style.bom else data


@st.composite
def hours_of_transactions(draw, min_rows: int = 1):
    """(expected canonical rows, style, extra values per row)."""
    n = draw(st.integers(min_rows, 30))
    ids = draw(st.lists(IDS, min_size=n, max_size=n, unique=True))
    rows = [
        {
            "transaction_id": ids[i],
            "tx_datetime": START + pd.Timedelta(microseconds=draw(OFFSETS_US)),
            "customer_id": draw(IDS),
            "terminal_id": draw(IDS),
            "amount": draw(AMOUNTS),
        }
        for i in range(n)
    ]
    style = draw(styles(len(TX_COLUMNS)))
    extras = [
        draw(st.lists(EXTRA_VALUES, min_size=len(style.extras), max_size=len(style.extras)))
        for _ in range(n)
    ]
    return rows, style, extras


def transactions_file(rows, style, extras, overrides=()):
    """The file of ``rows``; ``overrides`` are (row, column, text) written instead."""
    records = [
        {
            **r,
            "tx_datetime": _when(r["tx_datetime"], style, i),
            "amount": _amount(r["amount"], style),
        }
        for i, r in enumerate(rows)
    ]
    for i, column, text in overrides:
        records[i % len(records)][column] = text
    return render(TX_COLUMNS, records, extras, style)


def _expected_extra(value: str, fmt: str):
    """Missing-value tokens are CSV's (the field as delivered); Parquet strings are kept."""
    if fmt == "csv" and value in NA_TOKENS:
        return None
    value = value.strip(" ")
    return None if value == "" else value


def _new_store() -> tuple[tempfile.TemporaryDirectory, LocalObjectStore]:
    folder = tempfile.TemporaryDirectory(prefix="fuzz-landing-")
    return folder, LocalObjectStore(folder.name)


# ---- right values --------------------------------------------------------------------------


@seeded
@fuzz_settings(40)
@given(hour=hours_of_transactions())
def test_a_valid_hour_written_any_way_is_ingested_with_its_values(hour):
    rows, style, extras = hour
    name, data = transactions_file(rows, style, extras)
    TALLY["landing files: valid transactions"] += 1
    folder, store = _new_store()
    with folder:
        outcome = ingest_transactions_hour(
            store, KEY, [(hour_landing_prefix(KEY) + name, data)], history_counts=[]
        )
        assert outcome.status == "valid", outcome.reason_summary
        assert outcome.rows_rejected == 0 and outcome.rows == len(rows)
        raw = read_partition(store, "transactions", KEY)
    expected = pd.DataFrame(rows).sort_values(["tx_datetime", "transaction_id"])
    got = raw.sort_values(["tx_datetime", "transaction_id"])
    for column in ("transaction_id", "customer_id", "terminal_id", "amount"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert [t.value for t in got["tx_datetime"]] == [t.value for t in expected["tx_datetime"]]
    for j, column in enumerate(style.extras):
        by_id = dict(
            zip(
                expected["transaction_id"],
                [_expected_extra(extras[i][j], style.fmt) for i in expected.index],
                strict=True,
            )
        )
        values = [None if pd.isna(v) else v for v in got[column]]
        assert values == [by_id[t] for t in got["transaction_id"]], column


@st.composite
def days_of_labels(draw):
    n = draw(st.integers(1, 30))
    ids = draw(st.lists(IDS, min_size=n, max_size=n, unique=True))
    day_us = st.integers(0, 24 * 3600 * 10**6 - 1)
    rows = [
        {
            "transaction_id": ids[i],
            "is_fraud": draw(st.sampled_from([0, 1])),
            "known_at": DAY_START + pd.Timedelta(microseconds=draw(day_us)),
        }
        for i in range(n)
    ]
    flags = draw(st.sampled_from(["digit", "word", "WORD"]))
    return rows, draw(styles(len(LABEL_COLUMNS))), flags


def _flag(value: int, spelling: str) -> str:
    if spelling == "digit":
        return str(value)
    word = "true" if value else "false"
    return word.upper() if spelling == "WORD" else word


def label_records(rows, style, spelling) -> list[dict]:
    return [
        {
            **r,
            "is_fraud": _flag(r["is_fraud"], spelling),
            "known_at": _when(r["known_at"], style, i),
        }
        for i, r in enumerate(rows)
    ]


@seeded
@fuzz_settings(20)
@given(day=days_of_labels())
def test_a_valid_day_of_labels_written_any_way_is_ingested_with_its_values(day):
    rows, style, spelling = day
    records = label_records(rows, style, spelling)
    extras = [["e"] * len(style.extras) for _ in rows]
    name, data = render(LABEL_COLUMNS, records, extras, style)
    TALLY["landing files: valid labels"] += 1
    folder, store = _new_store()
    with folder:
        outcome = ingest_labels_day(store, DAY, [(day_landing_prefix(DAY) + name, data)])
        assert outcome.status == "valid", outcome.reason_summary
        raw = read_partition(store, "labels", DAY)
    by_id = {r["transaction_id"]: r for r in rows}
    assert sorted(raw["transaction_id"]) == sorted(by_id)
    for tid, flag, known in zip(
        raw["transaction_id"], raw["is_fraud"], raw["known_at"], strict=True
    ):
        assert int(flag) == by_id[tid]["is_fraud"]
        assert known.value == by_id[tid]["known_at"].value


# ---- broken files: nothing lost, no garbage ------------------------------------------------


def _overwrite(data: bytes, at: int, junk: bytes) -> bytes:
    at = at % max(len(data), 1)
    return data[:at] + junk + data[at + len(junk) :]


MUTATIONS = {
    "overwrite": lambda d, at, junk: _overwrite(d, at, junk),
    "insert": lambda d, at, junk: d[: at % max(len(d), 1)] + junk + d[at % max(len(d), 1) :],
    "truncate": lambda d, at, junk: d[: at % max(len(d), 1)],
    "latin1": lambda d, at, junk: d.decode("utf-8").encode("latin-1", "replace"),
    "utf16": lambda d, at, junk: d.decode("utf-8").encode("utf-16"),
    "semicolons": lambda d, at, junk: d.replace(b",", b";"),
    "tabs": lambda d, at, junk: d.replace(b",", b"\t"),
    "header_renamed": lambda d, at, junk: d.replace(b"amount", junk or b"amt", 1),
    "line_inserted": lambda d, at, junk: d.replace(b"\n", b"\n" + junk + b"\n", 1),
    "row_duplicated": lambda d, at, junk: d + d.split(b"\n", 1)[-1],
    "noise": lambda d, at, junk: junk,
}
JUNK = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"\x00",
            b",,,,",
            b'"',
            b"\r",
            b"NaN",
            b"-1",
            b"inf",
            b"1e400",
            b"9999-99-99T99:99:99",
            b"\xff\xfe",
            b"\n\n\n",
        ]
    ),
)


#: values a feed gets wrong in a row or two (the row checks reject those rows alone)
BAD_VALUES = st.lists(
    st.tuples(
        st.integers(0, 29),
        st.sampled_from(TX_COLUMNS),
        st.one_of(
            JUNK.map(lambda b: b.decode("utf-8", "replace")),
            st.sampled_from(
                [
                    "",
                    "-1.5",
                    "nan",
                    "inf",
                    "1e400",
                    "12,5",
                    "2018-04-01T07:00:00Z",
                    "2018-04-01T05:30:00+25:00",
                    "1522559400",
                    "tx 1",
                    "66.96",
                    "None",
                ]
            ),
        ),
    ),
    max_size=2,
)


@st.composite
def broken_hours(draw):
    """1-3 files of one hour, some of them broken: [(name, bytes, mutation or None)]."""
    files = []
    for n in range(draw(st.integers(1, 3))):
        rows, style, extras = draw(hours_of_transactions(min_rows=1))
        name, data = transactions_file(rows, style, extras, draw(BAD_VALUES))
        mutation = draw(st.sampled_from([None, None, *MUTATIONS]))
        if mutation is not None:
            at, junk = draw(st.integers(0, 1 << 16)), draw(JUNK)
            try:
                data = MUTATIONS[mutation](data, at, junk)
            except UnicodeDecodeError:  # a Parquet file cannot be re-encoded: noise instead
                data = junk
        files.append((f"{n}-{name}", data, mutation))
    return files


def _records(data: bytes) -> list[dict[str, str]] | None:
    """The file's records as Python's csv module reads them: an oracle independent of the
    pandas reader (None when the bytes are not UTF-8 text)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    return [dict(zip(header, r, strict=False)) for r in rows[1:]]


def _parquet_records(data: bytes) -> list[dict[str, str]]:
    table = pq.read_table(pa.BufferReader(data)).to_pandas()
    table.columns = [str(c).strip().lower() for c in table.columns]
    return [{k: str(v) for k, v in r.items()} for r in table.to_dict("records")]


def _is_record_of(row, records: list[dict[str, str]]) -> bool:
    """The raw row is, value for value, one of the delivered records."""
    for record in records:
        if record.get("transaction_id", "").strip(" ") != row["transaction_id"]:
            continue
        try:
            amount = float(record["amount"])
            when = pd.Timestamp(record["tx_datetime"].strip())
        except (KeyError, ValueError):
            continue
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        if (
            amount == row["amount"]
            and when.value == row["tx_datetime"].value
            and record["customer_id"].strip(" ") == row["customer_id"]
            and record["terminal_id"].strip(" ") == row["terminal_id"]
        ):
            return True
    return False


def _assert_kept_with_a_reason(store, key: str, data: bytes) -> dict:
    assert store.get_bytes(key) == data  # byte-identical
    reason = json.loads(store.get_bytes(key + REASON_SUFFIX))
    assert reason["sha256"] and reason["size"] == len(data) and reason["summary"]
    return reason


def _assert_raw_obeys_the_contract(raw: pd.DataFrame) -> None:
    assert raw["transaction_id"].is_unique
    for column in ("transaction_id", "customer_id", "terminal_id"):
        assert raw[column].notna().all()
        assert all(ID_RE.fullmatch(v) for v in raw[column]), column
    amounts = raw["amount"].to_numpy()
    assert all(math.isfinite(a) and 0 <= a <= POLICY.max_amount for a in amounts)
    assert ((raw["tx_datetime"] >= START) & (raw["tx_datetime"] < START + pd.Timedelta("1h"))).all()


@seeded
@fuzz_settings(60)
@given(files=broken_hours())
def test_a_broken_hour_is_never_lost_and_never_garbage_in_raw(files):
    TALLY["landing files: broken transactions"] += 1
    landed = [(hour_landing_prefix(KEY) + name, data) for name, data, _ in files]
    folder, store = _new_store()
    with folder:
        outcome = ingest_transactions_hour(store, KEY, landed, history_counts=[])
        assert outcome.status in ("valid", "quarantined")
        TALLY[f"landing files: broken transactions -> {outcome.status}"] += 1
        by_key = {f["key"]: f for f in outcome.files}
        assert set(by_key) == {key for key, _ in landed}
        if outcome.status == "quarantined":
            assert outcome.reason_summary and outcome.problems
            assert read_pointer(store, "transactions", KEY)["status"] == "quarantined"
            for key, data in landed:
                _assert_kept_with_a_reason(store, by_key[key]["quarantine_key"], data)
            return
        raw = read_partition(store, "transactions", KEY)
        _assert_raw_obeys_the_contract(raw)
        accepted = 0
        for key, data in landed:
            result = by_key[key]
            assert result["rows_accepted"] + result["rows_rejected"] == result["rows"]
            accepted += result["rows_accepted"]
            if result["rows_rejected"]:
                reason = _assert_kept_with_a_reason(store, result["quarantine_key"], data)
                listed = store.get_bytes(result["quarantine_key"] + REJECTED_SUFFIX)
                assert len(listed.splitlines()) == result["rows_rejected"]
                assert reason["rows_rejected"] == result["rows_rejected"]
        assert accepted == len(raw) == outcome.rows
        records = [
            r
            for _, data in landed
            for r in (_parquet_records(data) if data[:4] == b"PAR1" else _records(data) or [])
        ]
        garbage = [r for r in raw.to_dict("records") if not _is_record_of(r, records)]
        assert not garbage, garbage[:3]


@seeded
@fuzz_settings(25)
@given(
    day=days_of_labels(),
    mutation=st.sampled_from(list(MUTATIONS)),
    at=st.integers(0, 4096),
    junk=JUNK,
)
def test_a_broken_day_of_labels_is_never_lost(day, mutation, at, junk):
    rows, style, spelling = day
    records = label_records(rows, style, spelling)
    name, data = render(LABEL_COLUMNS, records, [["e"] * len(style.extras) for _ in rows], style)
    try:
        data = MUTATIONS[mutation](data, at, junk)
    except UnicodeDecodeError:
        data = junk
    TALLY["landing files: broken labels"] += 1
    key = day_landing_prefix(DAY) + name
    folder, store = _new_store()
    with folder:
        outcome = ingest_labels_day(store, DAY, [(key, data)])
        assert outcome.status in ("valid", "quarantined")
        result = outcome.files[0]
        if outcome.status == "quarantined" or result.get("rows_rejected"):
            _assert_kept_with_a_reason(store, result["quarantine_key"], data)
        if outcome.status == "valid":
            raw = read_partition(store, "labels", DAY)
            assert raw["transaction_id"].is_unique and raw["is_fraud"].isin([0, 1]).all()
            assert (
                (raw["known_at"] >= DAY_START) & (raw["known_at"] < DAY_START + pd.Timedelta("1D"))
            ).all()
            assert result["rows_accepted"] + result["rows_rejected"] == result["rows"]
            assert len(raw) == result["rows_accepted"]


# ---- the reader on arbitrary bytes ---------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["a.csv", "a.CSV", "a.parquet", "a.csv.gz", "a", ".csv", "a.txt", "a.json"]),
    st.text(max_size=20),
)


@seeded
@fuzz_settings(300)
@given(name=NAMES, data=st.one_of(st.binary(max_size=2048), JUNK))
def test_the_reader_never_raises_and_every_refusal_says_why(name, data):
    TALLY["landing files: arbitrary bytes (reader)"] += 1
    result = read_landed_file(name, data, POLICY)
    if result.frame is None:
        assert result.problems, (name, data)
        for problem in result.problems:
            assert problem.stage == "read" and problem.check and problem.message
            assert problem.source == name
    else:
        assert result.problems == [] and result.format in ("csv", "parquet")


# ---- what the fuzzing found, pinned as plain examples


def test_a_time_without_an_offset_after_one_with_an_offset_is_still_utc():
    """Found by the importer's property (the same parser is ingestion's): pandas parsed a
    value without an offset in the offset of the value before it, so this valid hour lost
    its second row (moved two hours back, outside the hour) and was quarantined."""
    data = (
        b"transaction_id,tx_datetime,customer_id,terminal_id,amount\n"
        b"a1,2018-04-01T07:10:00+02:00,c1,t1,1.5\n"
        b"a2,2018-04-01 05:20:00,c2,t2,2.5\n"
    )
    folder, store = _new_store()
    with folder:
        outcome = ingest_transactions_hour(
            store, KEY, [(hour_landing_prefix(KEY) + "a.csv", data)], history_counts=[]
        )
        assert outcome.status == "valid" and outcome.rows_rejected == 0
        raw = read_partition(store, "transactions", KEY)
    assert [t.strftime("%H:%M") for t in raw["tx_datetime"]] == ["05:10", "05:20"]


def test_a_long_mantissa_is_read_correctly_rounded():
    """Found by the valid-hour property: 8.45499999999999972e+01 is 84.55 (pandas' fast
    parser gave 84.54999999999998)."""
    data = (
        b"transaction_id,tx_datetime,customer_id,terminal_id,amount\n"
        b"a1,2018-04-01T05:10:00Z,c1,t1,8.45499999999999972e+01\n"
    )
    folder, store = _new_store()
    with folder:
        ingest_transactions_hour(
            store, KEY, [(hour_landing_prefix(KEY) + "a.csv", data)], history_counts=[]
        )
        assert read_partition(store, "transactions", KEY)["amount"].tolist() == [84.55]
