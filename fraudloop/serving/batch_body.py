"""A batch request body straight to columns (:class:`~fraudloop.features.online_batch.Rows`).

Validating a 10,000-row body with pydantic (``BatchRequest``) builds a model, a ``datetime`` and
two validator calls per row: ~3 us a row, a tenth of the batch budget. Here msgspec decodes the
body into plain typed structs (types, required fields and unknown fields checked in C), and
every other rule of the contract is checked a column at a time: id lengths and characters over
the joined ids, amount bounds over a float array, and ``tx_datetime`` parsed from an
(rows x bytes) array with digit arithmetic.

The fast path accepts only a subset of what the contract accepts, with the same values: ids
that already match the pattern (nothing to strip), JSON numbers for amounts, and ISO 8601 times
``YYYY-MM-DDTHH:MM:SS[.f{1,6}][Z|+HH:MM|-HH:MM]`` in years 1678-2261 (int64 nanoseconds hold
them, whatever the offset). Anything else, valid or not (a string amount, a unix time, a
lower-case ``t``, padded ids, any error), goes through pydantic as before: the answer, or the
422 and its list of errors naming each row and field, is then exactly what it always was. A test
holds the two paths to the same columns.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from fraudloop.delivery.contract import MAX_AMOUNT, MAX_BATCH_ROWS, MAX_ID_LENGTH, BatchRequest
from fraudloop.features.online_batch import Rows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = datetime.resolution
#: the id pattern's characters, over the ids joined (no separator: lengths are checked apart)
_ID_CHARS = re.compile(r"[A-Za-z0-9._:-]*")
#: the longest time the fast path reads: 19 + 7 (fraction) + 6 (offset)
_WIDTH = 32
_DAY_NS = 86_400 * 10**9
#: int64 bounds: a time beyond them (pydantic takes years 1-9999) is clipped to them, where the
#: service's time check refuses it as too old or in the future
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class _Tx(msgspec.Struct, forbid_unknown_fields=True):
    transaction_id: str
    tx_datetime: str
    customer_id: str
    terminal_id: str
    amount: float


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    transactions: list[_Tx]


_DECODER = msgspec.json.Decoder(_Batch)


def parse(body: bytes) -> Rows:
    """The body's transactions as columns (input order), or the 422 FastAPI would give."""
    rows = fast(body)
    if rows is not None:
        return rows
    try:
        batch = BatchRequest.model_validate_json(body)
    except ValidationError as error:
        # the input of a JSON error is the raw body: not echoed back (bytes that are not UTF-8
        # could not even be encoded into the answer)
        errors = error.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    return of_transactions(batch.transactions)


def of_transactions(txs) -> Rows:
    """Columns of validated ``Transaction`` models (times clipped to int64 nanoseconds)."""
    times = [(t.tx_datetime - _EPOCH) // _US * 1000 for t in txs]
    return Rows(
        [t.transaction_id for t in txs],
        np.array([min(max(v, _I64_MIN), _I64_MAX) for v in times], dtype=np.int64),
        [t.customer_id for t in txs],
        [t.terminal_id for t in txs],
        [t.amount for t in txs],
    )


def fast(body: bytes) -> Rows | None:
    """The columns when every row is in the fast path's subset; None to let pydantic decide."""
    try:
        txs = _DECODER.decode(body).transactions
    except (msgspec.DecodeError, RecursionError):
        return None
    n = len(txs)
    if not 1 <= n <= MAX_BATCH_ROWS:
        return None
    ids = [x.transaction_id for x in txs]
    cids = [x.customer_id for x in txs]
    tids = [x.terminal_id for x in txs]
    if not (_ids_ok(ids) and _ids_ok(cids) and _ids_ok(tids)):
        return None
    amounts = [x.amount for x in txs]
    a = np.array(amounts, dtype=np.float64)
    if not ((a > 0) & (a <= MAX_AMOUNT)).all():  # NaN fails both: not finite
        return None
    t = times_ns([x.tx_datetime for x in txs])
    if t is None:
        return None
    return Rows(ids, t, cids, tids, amounts)


def _ids_ok(ids: list[str]) -> bool:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    if lengths.min() < 1 or lengths.max() > MAX_ID_LENGTH:
        return False
    return _ID_CHARS.fullmatch("".join(ids)) is not None


def times_ns(values: list[str]) -> np.ndarray | None:
    """ISO 8601 times (the fast path's subset) as int64 ns since the epoch in UTC, microsecond
    precision like pydantic's ``datetime``; None if any is outside the subset."""
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    if lengths.min() < 19 or lengths.max() > _WIDTH:
        return None
    try:
        raw = np.array(values, dtype=f"S{_WIDTH}")  # ASCII only (anything else raises)
    except UnicodeEncodeError:
        return None
    m = raw.view(np.uint8).reshape(n, _WIDTH).astype(np.int64)
    d = m - 48
    digit = (d >= 0) & (d <= 9)

    def number(*cols: int) -> np.ndarray:
        out = np.zeros(n, np.int64)
        for c in cols:
            out = out * 10 + d[:, c]
        return out

    head_digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
    ok = digit[:, head_digits].all(axis=1)
    for col, char in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")):
        ok &= m[:, col] == ord(char)
    # an optional fraction of 1 to 6 digits after position 19
    has_frac = m[:, 19] == ord(".")
    run = np.cumprod(digit[:, 20:27], axis=1).sum(axis=1)
    k = np.where(has_frac, run, 0)
    ok &= ~has_frac | ((k >= 1) & (k <= 6))
    frac = np.zeros(n, np.int64)
    for j in range(6):
        frac = frac * 10 + np.where(k > j, d[:, 20 + j], 0)
    # then nothing, Z, or +HH:MM / -HH:MM
    s = 19 + np.where(has_frac, 1 + k, 0)
    tail = m[np.arange(n)[:, None], np.minimum(s[:, None] + np.arange(6), _WIDTH - 1)]
    tail_d = tail - 48
    sign = np.where(tail[:, 0] == ord("+"), 1, np.where(tail[:, 0] == ord("-"), -1, 0))
    offset_form = (
        (sign != 0)
        & ((tail_d[:, [1, 2, 4, 5]] >= 0) & (tail_d[:, [1, 2, 4, 5]] <= 9)).all(axis=1)
        & (tail[:, 3] == ord(":"))
    )
    oh, om = tail_d[:, 1] * 10 + tail_d[:, 2], tail_d[:, 4] * 10 + tail_d[:, 5]
    expected = np.where(tail[:, 0] == 0, s, np.where(tail[:, 0] == ord("Z"), s + 1, s + 6))
    ok &= (tail[:, 0] == 0) | (tail[:, 0] == ord("Z")) | offset_form
    ok &= expected == lengths  # nothing after the form (and no NUL inside it)
    ok &= ~offset_form | ((oh <= 23) & (om <= 59))
    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hh, mi, ss = number(11, 12), number(14, 15), number(17, 18)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    dim = month_days[np.clip(month - 1, 0, 11)] + ((month == 2) & leap)
    ok &= (year >= 1678) & (year <= 2261) & (month >= 1) & (month <= 12)
    ok &= (day >= 1) & (day <= dim) & (hh <= 23) & (mi <= 59) & (ss <= 59)
    if not ok.all():
        return None
    seconds = hh * 3600 + mi * 60 + ss - np.where(offset_form, sign * (oh * 3600 + om * 60), 0)
    return _days(year, month, day) * _DAY_NS + seconds * 10**9 + frac * 1000


def _days(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (Howard Hinnant's days_from_civil)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
