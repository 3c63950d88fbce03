"""Compact per-entity state behind the incremental and the online feature paths.

:class:`FeatureState` holds exactly what the feature windows of :mod:`fraudloop.features` need to
compute the features of the *next* hour, as hourly aggregates rather than transactions:

- customer buckets, one row per (customer, hour) for the last 720 hours: transaction count, sum of
  amounts, sum of squared amounts, count of small amounts (``amount < SMALL_AMOUNT``) and the time
  of the customer's last transaction in that hour;
- customer-terminal pairs, one row per (customer, terminal, hour) for the last 720 hours (the
  ``customer_terminal_novelty`` feature);
- terminal buckets, one row per (terminal, hour) for the last ``24 * (D + 30)`` hours, D the label
  delay in days: transaction count;
- label records of fraud-labelled transactions (``transaction_id``, terminal, transaction hour,
  ``known_at``, ``is_fraud``) whose transaction is still inside the terminal windows. A label record
  with ``is_fraud = 0`` is kept only for a transaction that also has a fraud record (a revocation);
  a transaction without a fraud record is legitimate by default, so its records carry no
  information. Records are stored whatever their ``known_at``: the bi-temporal filter
  ``known_at <= start of the hour being scored`` is applied when features are computed, so a state
  that already holds a "future" label never leaks it.

Layout: each aggregate table is kept as *units*, one per hour of the current UTC day plus one block
per complete day sorted by entity, so one hour's work follows the rows of the entities it queries
(``searchsorted`` in ~38 day blocks) rather than the size of the state. Entities are integer codes
inside; the ids live in append-only dictionaries shared along a linear history (a state that
branches off an older one forks its own copy). The state is treated as immutable:
:func:`fraudloop.features.compute.advance_hour` returns a new state that shares the unchanged
arrays.

Serialisation (:meth:`FeatureState.to_bytes`) is a zip of ``.npy`` arrays written with
``allow_pickle=False`` plus a JSON header, in a canonical form (entities recoded in sorted id order,
rows sorted, fixed zip timestamps), so equal states give byte-identical blobs whatever history
produced them, and :meth:`FeatureState.from_bytes` never unpickles anything. That blob is what
equality tests compare; the store keeps states as pieces, one per unit
(:mod:`fraudloop.features.state_blocks`), so that publishing an hour writes that hour.

This module also holds the time helpers and constants shared by the three feature modules.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudloop.core.hours import HOUR_KEY_FORMAT, HOUR_NS, hour_start

#: Customer windows, in whole UTC hours before the transaction's own hour.
CUSTOMER_WINDOW_HOURS: dict[str, int] = {"1h": 1, "1d": 24, "7d": 168, "30d": 720}
#: Terminal windows in days; each ends ``label_delay`` before the transaction's hour.
TERMINAL_WINDOW_DAYS: tuple[int, ...] = (1, 7, 30)
CUSTOMER_HORIZON_HOURS = max(CUSTOMER_WINDOW_HOURS.values())
#: ``customer_secs_since_prev_tx`` is capped here; also its value when no previous tx is known.
NO_PREV_TX_SECONDS = 30 * 86_400.0
#: The terminal window (days) whose known frauds date a compromise (``terminal_*_fraud_age_*``).
FRAUD_AGE_WINDOW_DAYS = max(TERMINAL_WINDOW_DAYS)
#: ``terminal_*_fraud_age_*`` of a terminal with no known fraud in that window: beyond any age a
#: window can hold, so "none known" sorts with "long ago" rather than with "just now".
NO_FRAUD_AGE_HOURS = 24 * 365.0
#: Running min / max of fraud transaction hours before any fraud is seen (no fraud known).
NO_FIRST_FRAUD_HOUR = np.iinfo(np.int64).max // 4
NO_LAST_FRAUD_HOUR = -1
#: An amount strictly below this is "small" (card-testing pattern).
SMALL_AMOUNT = 5.0
DEFAULT_LABEL_DELAY = timedelta(days=7)
#: "No time" marker in int64 nanosecond arrays.
NO_TIME = np.iinfo(np.int64).min
#: "Never" in hour-index arrays (a label not superseded by a later one).
NEVER_HOUR = np.iinfo(np.int64).max // 4
FORMAT_VERSION = 1

TRANSACTION_INPUT = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount")
LABEL_INPUT = ("transaction_id", "is_fraud", "known_at")


# --------------------------------------------------------------------------------------------
# Small helpers shared by features.py and online.py
# --------------------------------------------------------------------------------------------


def delay_hours(label_delay: timedelta | pd.Timedelta | int) -> int:
    """Label delay as whole hours (an int is taken as hours already)."""
    if isinstance(label_delay, int | np.integer):
        hours = int(label_delay)
    else:
        ns = pd.Timedelta(label_delay).value
        if ns % HOUR_NS:
            raise ValueError(f"label_delay must be a whole number of hours, got {label_delay}")
        hours = ns // HOUR_NS
    if hours < 0:
        raise ValueError("label_delay must not be negative")
    return hours


def fraud_ages(
    hour: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hours from ``hour`` back to the first and the last known fraud (their transaction hours),
    :data:`NO_FRAUD_AGE_HOURS` where none is known (``last`` is :data:`NO_LAST_FRAUD_HOUR`)."""
    known = last != NO_LAST_FRAUD_HOUR
    return (
        np.where(known, hour - first, NO_FRAUD_AGE_HOURS).astype(np.float64),
        np.where(known, hour - last, NO_FRAUD_AGE_HOURS).astype(np.float64),
    )


def hour_index(key: str) -> int:
    """Hours since the epoch of an hourly partition key (``2018-04-01-05:00``)."""
    return hour_start(key).value // HOUR_NS


def hour_key_of(index: int) -> str:
    return pd.Timestamp(index * HOUR_NS, tz="UTC").strftime(HOUR_KEY_FORMAT)


def to_utc_ns(values) -> np.ndarray:
    """Timestamps (tz-aware or naive = UTC) as int64 nanoseconds since the epoch."""
    ts = pd.to_datetime(
        pd.Series(values) if not isinstance(values, pd.Series) else values, utc=True
    )
    return ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").view(np.int64)


def ceil_hour(ns: np.ndarray) -> np.ndarray:
    """Index of the first hour whose start is >= ``ns``: ``known_at <= start(H)`` iff this <= H."""
    return -((-ns) // HOUR_NS)


def str_array(values) -> np.ndarray:
    """An object array of Python str (what the id comparisons and dictionaries use)."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.StringDtype) and not series.hasnans:
        return series.to_numpy(dtype=object)
    return series.astype(object).astype(str).to_numpy(dtype=object)


def order_rows(keys: Sequence[np.ndarray], t_ns: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (*keys, t_ns, transaction_id); ids only break exact ties."""
    perm = np.lexsort((t_ns, *reversed(keys)))
    if len(perm) < 2:
        return perm
    same = t_ns[perm][1:] == t_ns[perm][:-1]
    for k in keys:
        same &= k[perm][1:] == k[perm][:-1]
    if not same.any():
        return perm
    tied = np.zeros(len(perm), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    rows = perm[tied]
    rank = np.zeros(len(perm), dtype=np.int64)
    rank[rows[np.argsort(ids[rows], kind="stable")]] = np.arange(1, len(rows) + 1)
    return np.lexsort((rank, t_ns, *reversed(keys)))


def group_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """For rows sorted by code: the index of the first row of each row's group."""
    n = len(sorted_codes)
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0)) if n else np.zeros(0, np.int64)


def group_cumsum(values: np.ndarray, sorted_codes: np.ndarray) -> np.ndarray:
    """Cumulative sum that restarts at each group (sequential float summation per group)."""
    if len(values) == 0:
        return values.astype(np.float64)
    return pd.Series(values).groupby(sorted_codes, sort=False).cumsum().to_numpy()


def _encode_strings(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strings as (their UTF-8 bytes end to end, int64 offsets from 0): Arrow's large-string
    layout, built by Arrow in C (a Python loop over ~20 M ids took most of a state's write)."""
    array = pa.array(np.asarray(values, dtype=object), type=pa.large_string())
    if array.null_count:
        raise ValueError("an entity id is missing (None) in the feature state")
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[: len(array) + 1]
    start, stop = (int(offsets[0]), int(offsets[-1])) if len(array) else (0, 0)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[start:stop] if stop else np.zeros(0, np.uint8)
    return data.copy(), offsets - start


def _string_array(blob: np.ndarray, offsets: np.ndarray) -> pa.LargeStringArray:
    """The inverse of :func:`_encode_strings` as an Arrow array, checked: offsets in order and
    inside the blob, valid UTF-8 (else ValueError)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    blob = np.ascontiguousarray(blob, dtype=np.uint8)
    array = pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(blob)
    )
    array.validate(full=True)
    return array


def _decode_strings(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_encode_strings`, as an object array of ``str``."""
    return _string_array(blob, offsets).to_numpy(zero_copy_only=False).astype(object, copy=False)


# --------------------------------------------------------------------------------------------
# Hourly aggregate tables, stored as units: one block per complete UTC day + one chunk per hour
# --------------------------------------------------------------------------------------------

#: The three aggregate tables: name -> (entity code columns, value columns).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # one row per (customer, hour): count, sum, sum of squares, small count, last tx time
    "cust": (("cust",), ("n", "s", "ss", "small", "last_ns")),
    # one row per (customer, terminal, hour) used
    "pair": (("cust", "term"), ()),
    # one row per (terminal, hour): transaction count
    "term": (("term",), ("n",)),
}
_FLOAT_COLUMNS = ("s", "ss")


@dataclass(frozen=True, eq=False)
class Rows:
    """Rows of one aggregate table, sorted by (hour, entity codes); never mutated."""

    hour: np.ndarray
    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.hour)

    def take(self, index) -> Rows:
        return Rows(self.hour[index], {k: v[index] for k, v in self.cols.items()})

    @staticmethod
    def concat(parts: Sequence[Rows], names: Sequence[str]) -> Rows:
        if not parts:
            return Rows(
                np.zeros(0, np.int64),
                {k: np.zeros(0, np.float64 if k in _FLOAT_COLUMNS else np.int64) for k in names},
            )
        return Rows(
            np.concatenate([p.hour for p in parts]),
            {k: np.concatenate([p.cols[k] for p in parts]) for k in names},
        )


Units = dict[tuple[int, int], Rows]  # (first hour, last hour) -> rows


def _as_block(rows: Rows, codes: Sequence[str]) -> Rows:
    """Day blocks are sorted by (entity codes, hour): a queried entity's rows are contiguous."""
    return rows.take(np.lexsort((rows.hour, *(rows.cols[c] for c in reversed(codes)))))


def units_from_rows(rows: Rows, state_hour: int, codes: Sequence[str]) -> Units:
    """Split rows sorted by hour into a block per complete day and a chunk per later hour."""
    units: Units = {}
    if len(rows) == 0:
        return units
    complete_until = (state_hour + 1) // 24 * 24  # hours before this form complete days
    key = np.where(rows.hour < complete_until, rows.hour // 24 * 24, rows.hour)
    bounds = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(rows)]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        first = int(key[a])
        if first < complete_until:
            units[(first, first + 23)] = _as_block(rows.take(slice(a, b)), codes)
        else:
            units[(first, first)] = rows.take(slice(a, b))
    return units


def consolidate_units(units: Units, state_hour: int, codes: Sequence[str], names) -> Units:
    """Merge the hour chunks of days completed by ``state_hour`` into day blocks."""
    complete_until = (state_hour + 1) // 24 * 24
    loose = sorted(k for k in units if k[0] == k[1] and k[0] < complete_until)
    if not loose:
        return units
    out = {k: v for k, v in units.items() if k not in set(loose)}
    days: dict[int, list[Rows]] = {}
    for k in loose:
        days.setdefault(k[0] // 24, []).append(units[k])
    for day, parts in days.items():
        key = (day * 24, day * 24 + 23)
        if key in out:  # a block can only gain hours if it was built before its day ended
            parts = [out.pop(key), *parts]
        out[key] = _as_block(Rows.concat(parts, names), codes)
    return dict(sorted(out.items()))


def flatten_units(units: Units, names: Sequence[str], min_hour: int | None = None) -> Rows:
    """All rows of the units (in no particular order), optionally only hours >= ``min_hour``."""
    rows = Rows.concat([units[k] for k in sorted(units)], names)
    if min_hour is not None and len(rows) and rows.hour.min() < min_hour:
        rows = rows.take(rows.hour >= min_hour)
    return rows


@dataclass(frozen=True, eq=False)
class FraudSegments:
    """Periods during which a transaction is known as fraud.

    Row i: the transaction at ``term[i]`` in hour ``tx_hour[i]`` counts as fraud for a feature hour
    H iff ``known_from[i] <= H < known_until[i]`` (``known_from`` = first hour starting at or after
    the label's ``known_at``; ``known_until`` = same for the next label record of the transaction,
    ``NEVER_HOUR`` if none).
    """

    tx_id: np.ndarray
    term: np.ndarray
    tx_hour: np.ndarray
    known_from: np.ndarray
    known_until: np.ndarray

    def __len__(self) -> int:
        return len(self.term)

    def take(self, index) -> FraudSegments:
        return FraudSegments(
            self.tx_id[index],
            self.term[index],
            self.tx_hour[index],
            self.known_from[index],
            self.known_until[index],
        )

    @staticmethod
    def concat(parts: Sequence[FraudSegments]) -> FraudSegments:
        return FraudSegments(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _SEGMENT_FIELDS)
        )


_SEGMENT_FIELDS = ("tx_id", "term", "tx_hour", "known_from", "known_until")


def build_tables(
    hours: np.ndarray,
    cust: np.ndarray,
    term: np.ndarray,
    amount: np.ndarray,
    t_ns: np.ndarray,
    ids: np.ndarray,
) -> dict[str, Rows]:
    """The three aggregate tables of a set of transactions (any number of hours)."""
    if len(hours) == 0:
        return {name: Rows.concat([], (*codes, *vals)) for name, (codes, vals) in TABLES.items()}
    perm = order_rows([hours, cust], t_ns, ids)
    h, c, tm, a, t = hours[perm], cust[perm], term[perm], amount[perm], t_ns[perm]
    n = len(h)
    start = np.ones(n, dtype=bool)
    start[1:] = (h[1:] != h[:-1]) | (c[1:] != c[:-1])
    first = np.flatnonzero(start)
    last = np.append(first[1:], n) - 1
    cust_rows = Rows(
        h[first],
        {
            "cust": c[first],
            "n": last - first + 1,
            "s": np.add.reduceat(a, first),
            "ss": np.add.reduceat(a * a, first),
            "small": np.add.reduceat((a < SMALL_AMOUNT).astype(np.int64), first),
            "last_ns": t[last],
        },
    )

    pp = np.lexsort((tm, c, h))
    ph, pc, pt = h[pp], c[pp], tm[pp]
    keep = np.ones(n, dtype=bool)
    keep[1:] = (ph[1:] != ph[:-1]) | (pc[1:] != pc[:-1]) | (pt[1:] != pt[:-1])
    pair_rows = Rows(ph[keep], {"cust": pc[keep], "term": pt[keep]})

    tp = np.lexsort((tm, h))
    th, tt = h[tp], tm[tp]
    tstart = np.ones(n, dtype=bool)
    tstart[1:] = (th[1:] != th[:-1]) | (tt[1:] != tt[:-1])
    tfirst = np.flatnonzero(tstart)
    term_rows = Rows(th[tfirst], {"term": tt[tfirst], "n": np.diff(np.append(tfirst, n))})
    return {"cust": cust_rows, "pair": pair_rows, "term": term_rows}


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def empty_label_records() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([], dtype=object),
            "term": pd.Series([], dtype=np.int64),
            "tx_hour": pd.Series([], dtype=np.int64),
            "known_ns": pd.Series([], dtype=np.int64),
            "is_fraud": pd.Series([], dtype=np.int8),
        }
    )


def relevant_label_records(records: pd.DataFrame) -> pd.DataFrame:
    """The records that can change a feature, without duplicates.

    Per transaction, in (``known_at``, ``is_fraud``) order, a legitimate record matters only after
    a fraud record (a revocation): a transaction without a fraud record is legitimate whatever its
    records say, and a legitimate record known no later than the first fraud record is
    superseded by it. Those are dropped, as are exact duplicates, so what remains does not depend
    on how the labels were batched.
    """
    r = records.drop_duplicates(["transaction_id", "known_ns", "is_fraud"])
    r = r.sort_values(["transaction_id", "known_ns", "is_fraud"], kind="stable")
    fraud = (r["is_fraud"].to_numpy() == 1).astype(np.int64)
    seen = pd.Series(fraud, index=r.index).groupby(r["transaction_id"].to_numpy()).cumsum()
    return r.loc[(fraud == 1) | (seen.to_numpy() > 0)].reset_index(drop=True)


def fraud_segments(records: pd.DataFrame) -> FraudSegments:
    """Periods during which each transaction's latest known label says fraud.

    As of an hour start T, a transaction's label is its record with the greatest ``known_at <= T``
    (on equal ``known_at``, fraud wins). Records are sorted per transaction by
    (``known_at``, ``is_fraud``); record i is in force from ``ceil_hour(known_at_i)`` until
    ``ceil_hour(known_at_{i+1})``.
    """
    if len(records) == 0:
        z = np.zeros(0, dtype=np.int64)
        return FraudSegments(np.zeros(0, dtype=object), z, z, z, z)
    r = records.sort_values(["transaction_id", "known_ns", "is_fraud"], kind="stable")
    ids = r["transaction_id"].to_numpy()
    known = ceil_hour(r["known_ns"].to_numpy(dtype=np.int64))
    until = np.full(len(r), NEVER_HOUR, dtype=np.int64)
    same_next = ids[1:] == ids[:-1]
    until[:-1] = np.where(same_next, known[1:], NEVER_HOUR)
    keep = (r["is_fraud"].to_numpy() == 1) & (known < until)
    return FraudSegments(
        ids[keep],
        r["term"].to_numpy(dtype=np.int64)[keep],
        r["tx_hour"].to_numpy(dtype=np.int64)[keep],
        known[keep],
        until[keep],
    )


def attach_transactions(labels: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Labels with the ``terminal_id`` and ``tx_datetime`` of their transaction.

    The incremental path needs them (the state does not keep every transaction id). Labels whose
    transaction is not in ``transactions`` are dropped; only fraud-relevant labels (see
    :func:`relevant_label_records`) are worth joining, so the others are dropped first.
    """
    lab = labels.loc[:, list(LABEL_INPUT)]
    fraud_ids = lab.loc[lab["is_fraud"].astype(int) == 1, "transaction_id"].unique()
    lab = lab[lab["transaction_id"].isin(fraud_ids)]
    tx = transactions.loc[
        transactions["transaction_id"].isin(fraud_ids),
        ["transaction_id", "terminal_id", "tx_datetime"],
    ]
    return lab.merge(tx, on="transaction_id", how="inner")


# --------------------------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------------------------


class _Dictionary:
    """Append-only id -> code mapping, shared by a state and the states advanced from it.

    Each state sees the first ``size`` codes. Appending in place is safe while this view is the
    longest one (the usual linear history); a state that branches off an older view forks a
    private copy first, so no state ever sees another branch's codes.
    """

    __slots__ = ("_codes", "_ids", "size")

    def __init__(self, ids: list[str] | None = None):
        self._ids: list[str] = list(ids or [])
        self._codes: dict[str, int] = {s: i for i, s in enumerate(self._ids)}
        self.size = len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Ids by code (index only codes below ``size``)."""
        return self._ids

    def copy(self) -> _Dictionary:
        new = _Dictionary.__new__(_Dictionary)
        new._ids, new._codes, new.size = self._ids, self._codes, self.size
        return new

    def _fork(self) -> None:
        self._ids = self._ids[: self.size]
        self._codes = {s: i for i, s in enumerate(self._ids)}

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of ``values``, adding unknown ids (mutates this view: call on a copy)."""
        inverse, uniq = pd.factorize(values)
        out = np.empty(len(uniq), dtype=np.int64)
        for i, v in enumerate(uniq.tolist()):
            code = self._codes.get(v)
            if code is None or code >= self.size:
                if self.size != len(self._ids):
                    self._fork()
                code = self.size
                self._codes[v] = code
                self._ids.append(v)
                self.size += 1
            out[i] = code
        return out[inverse]

    def __len__(self) -> int:
        return self.size


@dataclass(eq=False)
class FeatureState:
    """Everything the features of the next hour need, as compact hourly aggregates.

    ``hour`` is the index (hours since the epoch) of the last hour whose transactions were added;
    the state serves features for ``hour + 1`` and later. ``None`` for an empty state.
    ``tables[name]`` holds the rows of one aggregate table (see :data:`TABLES`) as units: one block
    per complete UTC day and one chunk per hour of the current day, so that the per-hour work
    touches ~55 arrays instead of 720.
    """

    label_delay_hours: int
    hour: int | None = None
    customers: _Dictionary = field(default_factory=_Dictionary)
    terminals: _Dictionary = field(default_factory=_Dictionary)
    tables: dict[str, Units] = field(default_factory=lambda: {name: {} for name in TABLES})
    labels: pd.DataFrame = field(default_factory=empty_label_records)
    _segments: FraudSegments | None = field(default=None, repr=False)

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def empty(cls, label_delay: timedelta | int = DEFAULT_LABEL_DELAY) -> FeatureState:
        return cls(label_delay_hours=delay_hours(label_delay))

    @classmethod
    def from_history(
        cls,
        transactions: pd.DataFrame,
        labels: pd.DataFrame,
        hour_key: str,
        *,
        label_delay: timedelta | int = DEFAULT_LABEL_DELAY,
    ) -> FeatureState:
        """The state after the hour ``hour_key``, built in one vectorised pass.

        Uses the transactions up to the end of that hour and every label passed (pass only the
        labels known so far if the state is to be stored; features filter on ``known_at`` anyway).
        Equal to rolling :func:`fraudloop.features.compute.advance_hour` hour by hour
        (byte-identical ``to_bytes``) when the same labels were fed.
        """
        last = hour_index(hour_key)
        state = cls.empty(label_delay)
        t_ns = to_utc_ns(transactions["tx_datetime"])
        hours = t_ns // HOUR_NS
        keep = (hours <= last) & (hours >= last + 1 - state.terminal_horizon_hours)
        tx = transactions.loc[keep]
        tables = build_tables(
            hours[keep],
            state.customers.encode(str_array(tx["customer_id"])),
            state.terminals.encode(str_array(tx["terminal_id"])),
            tx["amount"].to_numpy(dtype=np.float64),
            t_ns[keep],
            str_array(tx["transaction_id"]),
        )
        state.tables = {
            name: units_from_rows(rows, last, TABLES[name][0]) for name, rows in tables.items()
        }
        state.hour = last
        if len(labels):
            state = state.with_labels(attach_transactions(labels, transactions))
        state._trim()
        return state

    def copy(self) -> FeatureState:
        """A shallow copy with its own dictionaries and unit maps (arrays are shared)."""
        return FeatureState(
            label_delay_hours=self.label_delay_hours,
            hour=self.hour,
            customers=self.customers.copy(),
            terminals=self.terminals.copy(),
            tables={name: dict(units) for name, units in self.tables.items()},
            labels=self.labels,
            _segments=self._segments,
        )

    def add_hour(self, hour: int, tables: dict[str, Rows]) -> None:
        """Append the aggregate rows of ``hour`` and trim (mutates: call on a copy)."""
        for name, rows in tables.items():
            if len(rows):
                self.tables[name][(hour, hour)] = rows
        self.hour = hour
        self._trim()

    def rows(self, name: str) -> Rows:
        """All rows of one aggregate table, sorted by hour (what the windows can still use)."""
        codes, vals = TABLES[name]
        horizon = self.terminal_horizon_hours if name == "term" else CUSTOMER_HORIZON_HOURS
        min_hour = None if self.hour is None else self.hour + 1 - horizon
        return flatten_units(self.tables[name], (*codes, *vals), min_hour)

    # ---- labels -----------------------------------------------------------------------------

    def with_labels(self, labels: pd.DataFrame) -> FeatureState:
        """A new state that also knows ``labels`` (idempotent: a label fed twice counts once).

        ``labels`` need ``transaction_id``, ``is_fraud``, ``known_at`` and the transaction's
        ``terminal_id`` and ``tx_datetime`` (see :func:`attach_transactions`). Labels must reach
        the state in ``known_at`` order per transaction (a revocation after its fraud label).
        """
        missing = {*LABEL_INPUT, "terminal_id", "tx_datetime"} - set(labels.columns)
        if missing:
            raise ValueError(
                f"labels lack {sorted(missing)}; join them with attach_transactions() first"
            )
        new = self.copy()
        if len(labels) == 0:
            return new
        ids = str_array(labels["transaction_id"])
        is_fraud = labels["is_fraud"].to_numpy().astype(np.int8)
        old = self.labels
        keep = is_fraud == 1
        if len(old):
            keep |= pd.Series(ids).isin(old["transaction_id"]).to_numpy()
        fraud_ids = set(ids[is_fraud == 1].tolist())
        keep |= np.fromiter((i in fraud_ids for i in ids), dtype=bool, count=len(ids))
        if not keep.any():
            return new
        lab = labels.loc[keep]
        records = pd.DataFrame(
            {
                "transaction_id": ids[keep],
                "term": new.terminals.encode(str_array(lab["terminal_id"])),
                "tx_hour": to_utc_ns(lab["tx_datetime"]) // HOUR_NS,
                "known_ns": to_utc_ns(lab["known_at"]),
                "is_fraud": is_fraud[keep],
            }
        )
        # only the transactions named in this batch can change: recompute just those
        hit = old["transaction_id"].isin(records["transaction_id"]).to_numpy()
        touched = relevant_label_records(pd.concat([old.loc[hit], records], ignore_index=True))
        new.labels = pd.concat([old.loc[~hit], touched], ignore_index=True)
        if self._segments is not None:
            stale = pd.Series(self._segments.tx_id).isin(records["transaction_id"]).to_numpy()
            new._segments = FraudSegments.concat(
                [self._segments.take(~stale), fraud_segments(touched)]
            )
        if new.hour is not None:
            new._trim_labels(new.hour + 1)
        return new

    @property
    def segments(self) -> FraudSegments:
        if self._segments is None:
            self._segments = fraud_segments(self.labels)
        return self._segments

    # ---- horizons ---------------------------------------------------------------------------

    @property
    def terminal_horizon_hours(self) -> int:
        """Hours of terminal history the next hour needs (label delay + 30 days)."""
        return self.label_delay_hours + 24 * max(TERMINAL_WINDOW_DAYS)

    def _trim_labels(self, next_hour: int) -> None:
        lab = self.labels
        if len(lab):
            min_hour = next_hour - self.terminal_horizon_hours
            keep = lab["tx_hour"].to_numpy() >= min_hour
            if not keep.all():
                self.labels = lab.loc[keep].reset_index(drop=True)
                if self._segments is not None:
                    self._segments = self._segments.take(self._segments.tx_hour >= min_hour)

    def _trim(self) -> None:
        """Drop what no hour after ``self.hour`` can use; build day blocks (mutates)."""
        nxt = self.hour + 1
        for name, units in self.tables.items():
            codes, vals = TABLES[name]
            horizon = self.terminal_horizon_hours if name == "term" else CUSTOMER_HORIZON_HOURS
            kept = {k: v for k, v in units.items() if k[1] >= nxt - horizon}
            self.tables[name] = consolidate_units(kept, self.hour, codes, (*codes, *vals))
        self._trim_labels(nxt)

    # ---- serialisation ----------------------------------------------------------------------

    def _canonical_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        flat = {name: self.rows(name) for name in TABLES}
        used_c = [flat["cust"].cols["cust"], flat["pair"].cols["cust"]]
        used_t = [
            flat["pair"].cols["term"],
            flat["term"].cols["term"],
            self.labels["term"].to_numpy(dtype=np.int64),
        ]
        c_ids, c_map = _canonical_dictionary(self.customers, used_c)
        t_ids, t_map = _canonical_dictionary(self.terminals, used_t)
        maps = {"cust": c_map, "term": t_map}
        arrays: dict[str, np.ndarray] = {}
        for name, (codes, vals) in TABLES.items():
            rows = flat[name]
            cols = {"hour": rows.hour.astype(np.int64)}
            for col in codes:
                cols[col] = maps[col][rows.cols[col].astype(np.int64)]
            for col in vals:
                cols[col] = rows.cols[col].astype(np.float64 if col in _FLOAT_COLUMNS else np.int64)
            perm = np.lexsort(tuple(cols[c] for c in reversed(("hour", *codes))))
            for col, arr in cols.items():
                arrays[f"{name}.{col}"] = arr[perm]
        lab = self.labels.assign(
            term=t_map[self.labels["term"].to_numpy(dtype=np.int64)] if len(self.labels) else []
        ).sort_values(["transaction_id", "known_ns", "is_fraud"], kind="stable")
        arrays["customers.blob"], arrays["customers.offsets"] = _encode_strings(c_ids)
        arrays["terminals.blob"], arrays["terminals.offsets"] = _encode_strings(t_ids)
        lab_ids = lab["transaction_id"].to_numpy(dtype=object)
        arrays["labels.ids_blob"], arrays["labels.ids_offsets"] = _encode_strings(lab_ids)
        arrays["labels.term"] = lab["term"].to_numpy(dtype=np.int64)
        arrays["labels.tx_hour"] = lab["tx_hour"].to_numpy(dtype=np.int64)
        arrays["labels.known_ns"] = lab["known_ns"].to_numpy(dtype=np.int64)
        arrays["labels.is_fraud"] = lab["is_fraud"].to_numpy(dtype=np.int8)
        meta = {
            "format": "fraudloop.features.state",
            "version": FORMAT_VERSION,
            "label_delay_hours": self.label_delay_hours,
            "hour": self.hour,
            "hour_key": None if self.hour is None else hour_key_of(self.hour),
        }
        return meta, arrays

    def to_bytes(self) -> bytes:
        """Canonical, deterministic, pickle-free serialisation (zip of .npy + meta.json)."""
        return pack_arrays(*self._canonical_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
        meta, a = unpack_arrays(data)
        if meta.get("format") != "fraudloop.features.state" or meta.get("version") != (
            FORMAT_VERSION
        ):
            raise ValueError(f"not a fraudloop feature state (version {FORMAT_VERSION})")
        state = cls(label_delay_hours=int(meta["label_delay_hours"]), hour=meta["hour"])
        state.customers = _Dictionary(
            list(_decode_strings(a["customers.blob"], a["customers.offsets"]))
        )
        state.terminals = _Dictionary(
            list(_decode_strings(a["terminals.blob"], a["terminals.offsets"]))
        )
        if state.hour is not None:
            for name, (codes, vals) in TABLES.items():
                rows = Rows(a[f"{name}.hour"], {c: a[f"{name}.{c}"] for c in (*codes, *vals)})
                state.tables[name] = units_from_rows(rows, state.hour, codes)
        state.labels = pd.DataFrame(
            {
                "transaction_id": _decode_strings(a["labels.ids_blob"], a["labels.ids_offsets"]),
                "term": a["labels.term"],
                "tx_hour": a["labels.tx_hour"],
                "known_ns": a["labels.known_ns"],
                "is_fraud": a["labels.is_fraud"],
            }
        )
        return state

    # ---- information ------------------------------------------------------------------------

    @property
    def hour_key(self) -> str | None:
        return None if self.hour is None else hour_key_of(self.hour)

    def summary(self) -> dict[str, int | str | None]:
        """Sizes, for asset metadata."""
        return {
            "hour": self.hour_key,
            "label_delay_hours": self.label_delay_hours,
            "customer_buckets": len(self.rows("cust")),
            "pair_rows": len(self.rows("pair")),
            "terminal_buckets": len(self.rows("term")),
            "label_records": len(self.labels),
        }


def _canonical_dictionary(
    dictionary: _Dictionary, used: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ids of the used codes, and old code -> new code."""
    codes = np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)
    codes = codes.astype(np.int64)
    ids = np.array([dictionary.ids[c] for c in codes], dtype=object)
    order = np.argsort(ids, kind="stable") if len(ids) else np.zeros(0, np.int64)
    mapping = np.full(len(dictionary), -1, dtype=np.int64)
    mapping[codes[order]] = np.arange(len(codes))
    return ids[order], mapping


def pack_arrays(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic zip of ``meta.json`` and one ``.npy`` per array (no pickles)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_write(zf, "meta.json", json.dumps(meta, sort_keys=True).encode())
        for name in sorted(arrays):
            out = io.BytesIO()
            np.lib.format.write_array(out, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            _zip_write(zf, f"{name}.npy", out.getvalue())
    return buf.getvalue()


def unpack_arrays(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """What :func:`pack_arrays` wrote: (meta, arrays); never unpickles."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta = json.loads(zf.read("meta.json"))
        arrays = {
            name[: -len(".npy")]: np.lib.format.read_array(
                io.BytesIO(zf.read(name)), allow_pickle=False
            )
            for name in zf.namelist()
            if name.endswith(".npy")
        }
    return meta, arrays


def _zip_write(zf: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, payload, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
