"""The batch body parsed into columns gives what pydantic's ``BatchRequest`` gives: the same
values for every body the fast path takes, and for every other body the pydantic answer itself
(the same columns, or the same 422 naming each bad row and field), however deep in a big batch
the bad row is."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fraudloop.delivery.contract import BatchRequest
from fraudloop.serving import batch_body

GOOD = {
    "transaction_id": "tx-1",
    "tx_datetime": "2018-04-09T00:03:54+00:00",
    "customer_id": "C0000448",
    "terminal_id": "T0000741",
    "amount": 9.73,
}


def body(rows: list[dict]) -> bytes:
    return json.dumps({"transactions": rows}).encode()


def pydantic_columns(raw: bytes):
    """What the contract makes of ``raw``: columns, or the errors (loc, type) pydantic lists."""
    try:
        batch = BatchRequest.model_validate_json(raw)
    except ValidationError as error:
        return [(("body", *e["loc"]), e["type"]) for e in error.errors()]
    return batch_body.of_transactions(batch.transactions)


def parsed(raw: bytes):
    try:
        return batch_body.parse(raw)
    except RequestValidationError as error:
        return [(tuple(e["loc"]), e["type"]) for e in error.errors()]


def same(got, expected) -> None:
    if isinstance(expected, list):
        assert got == expected
        return
    assert got.ids == expected.ids and got.cids == expected.cids and got.tids == expected.tids
    assert got.amounts == expected.amounts
    assert [type(a) for a in got.amounts] == [float] * len(got)
    np.testing.assert_array_equal(got.t, expected.t)


def many(n: int) -> list[dict]:
    return [
        {
            **GOOD,
            "transaction_id": f"tx-{i}",
            "customer_id": f"C{i % 97}",
            "amount": round(1 + i * 0.37, 2),
            "tx_datetime": f"2018-04-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(7 * i) % 60:02d}"
            + ["", "Z", "+00:00", ".5", ".123456-03:30", "+05:45"][i % 6],
        }
        for i in range(n)
    ]


def test_a_big_valid_batch_takes_the_fast_path_with_the_contract_s_values():
    raw = body(many(10_000))
    fast = batch_body.fast(raw)
    assert fast is not None
    same(fast, pydantic_columns(raw))


DEEP = 9_876


@pytest.mark.parametrize(
    "field,value",
    [
        ("amount", "12.5x"),
        ("amount", 0),
        ("amount", 1_000_001),
        ("amount", None),
        ("customer_id", 12),
        ("customer_id", ""),
        ("customer_id", "x" * 65),
        ("terminal_id", "T 1"),
        ("terminal_id", ["T1"]),
        ("transaction_id", "é"),
        ("tx_datetime", "2018-02-29T00:00:00"),
        ("tx_datetime", "2018-04-01T24:00:00"),
        ("tx_datetime", "2018-04-01T00:00:00+24:00"),
        ("tx_datetime", "2018-04-01 00:00:00 oops"),
        ("tx_datetime", None),
        ("extra", 1),
    ],
)
def test_a_bad_row_deep_in_a_big_batch_is_named_by_its_index_and_field(field, value):
    rows = many(10_000)
    rows[DEEP] = {**rows[DEEP], field: value}
    raw = body(rows)
    assert batch_body.fast(raw) is None
    got = parsed(raw)
    assert got == pydantic_columns(raw)
    assert got[0][0] == ("body", "transactions", DEEP, field)


@pytest.mark.parametrize(
    "raw",
    [
        b"{nope",
        b"[]",
        b'{"transactions": []}',
        b'{"transactions": {"a": 1}}',
        b'{"transactions": [1, 2]}',
        b'{"transactions": null}',
        b'{"transactions": [], "more": 1}',
        b"\xff\xfe",
        body([GOOD] * 10_001),
        body([{k: v for k, v in GOOD.items() if k != "amount"}]),
    ],
    ids=lambda r: r[:30].decode(errors="replace"),
)
def test_bad_bodies_and_column_types_get_the_contract_s_422(raw):
    assert batch_body.fast(raw) is None
    got = parsed(raw)
    assert isinstance(got, list) and got == pydantic_columns(raw)
    assert all(loc[0] == "body" for loc, _ in got)


@pytest.mark.parametrize(
    "row",
    [
        {**GOOD, "customer_id": "  C1  "},  # stripped by the contract
        {**GOOD, "amount": "12.5"},  # a numeric string
        {**GOOD, "amount": True},  # pydantic's lax float
        {**GOOD, "tx_datetime": 1_523_232_000},  # a unix time
        {**GOOD, "tx_datetime": "2018-04-09t00:03:54z"},
        {**GOOD, "tx_datetime": "2018-04-09T00:03:54.1234567"},  # more than microseconds
        {**GOOD, "tx_datetime": "2018-04-09T00:03"},
        {**GOOD, "tx_datetime": "0999-04-09T00:03:54"},
    ],
)
def test_valid_rows_outside_the_fast_subset_get_the_contract_s_values(row):
    raw = body([GOOD, row])
    assert batch_body.fast(raw) is None
    same(parsed(raw), pydantic_columns(raw))


_time_parts = st.tuples(
    st.integers(1678, 2261) | st.integers(0, 9999),
    st.integers(1, 12) | st.integers(0, 13),
    st.integers(1, 28) | st.integers(0, 32),
    st.integers(0, 23) | st.integers(0, 25),
    st.integers(0, 59) | st.integers(0, 61),
    st.integers(0, 59) | st.integers(0, 61),
    st.sampled_from(["", ".", ".1", ".12", ".123456", ".1234567", ".x"]),
    st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:45", "-23:59", "+24:00", "+0100"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_time_parts, min_size=1, max_size=5), st.integers(0, 4))
def test_fast_times_are_pydantic_s_times(parts, mangle):
    times = [
        f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{f}{z}"
        for y, mo, d, h, mi, s, f, z in parts
    ]
    if mangle == 1:
        times[-1] = times[-1].replace("T", " ")
    elif mangle == 2:
        times[-1] = times[-1] + "\x00"
    rows = [{**GOOD, "transaction_id": f"t{i}", "tx_datetime": t} for i, t in enumerate(times)]
    raw = body(rows)
    fast = batch_body.fast(raw)
    expected = pydantic_columns(raw)
    if fast is not None:  # taken: exactly the contract's values
        same(fast, expected)
    same(parsed(raw), expected)


def test_times_are_utc_nanoseconds_at_microsecond_precision():
    got = batch_body.times_ns(["1970-01-01T00:00:00", "2018-04-09T00:03:54.5+02:00"])
    when = datetime(2018, 4, 8, 22, 3, 54, 500_000, tzinfo=UTC)
    assert got.tolist() == [0, int(when.timestamp()) * 10**9 + 500_000_000]
