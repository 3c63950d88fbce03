"""In-memory online feature store: one transaction's features in microseconds, for serving.

:meth:`OnlineFeatureStore.from_state` loads a :class:`~fraudloop.features.state.FeatureState` (the
state after hour H-1, plus the labels known at the start of hour H) into per-entity sorted Python
lists with per-entity prefix sums; a window sum is then two ``bisect`` calls and a subtraction.
Transactions scored afterwards are recorded with :meth:`OnlineFeatureStore.observe` in a small
overlay, so later transactions of the same hour (and of the next hours, until the store is reloaded
from a newer state) see them. :meth:`OnlineFeatureStore.features` never changes the store.

The definitions are those of :mod:`fraudloop.features` (``FEATURES``); the arithmetic below mirrors
``fraudloop.features.compute._assemble`` in scalar Python and a test holds the two to 1e-9.
Transactions must be observed in (``tx_datetime``, ``transaction_id``) order for the in-hour windows
to match the batch definition.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core.hours import DAY_NS, HOUR_NS, SECOND_NS
from fraudloop.features.compute import FEATURE_NAMES, ZSCORE_MIN_RELATIVE_STD
from fraudloop.features.state import (
    CUSTOMER_HORIZON_HOURS,
    CUSTOMER_WINDOW_HOURS,
    FRAUD_AGE_WINDOW_DAYS,
    NO_FIRST_FRAUD_HOUR,
    NO_FRAUD_AGE_HOURS,
    NO_LAST_FRAUD_HOUR,
    NO_PREV_TX_SECONDS,
    NO_TIME,
    SMALL_AMOUNT,
    TERMINAL_WINDOW_DAYS,
    FeatureState,
    delay_hours,
    group_cumsum,
)

_W1H = CUSTOMER_WINDOW_HOURS["1h"]
_W1D = CUSTOMER_WINDOW_HOURS["1d"]
_W7D = CUSTOMER_WINDOW_HOURS["7d"]
_W30D = CUSTOMER_WINDOW_HOURS["30d"]
_TW = tuple(24 * w for w in TERMINAL_WINDOW_DAYS)
_ZERO_FRAUDS = (0,) * len(TERMINAL_WINDOW_DAYS)
_AGE_W = 24 * FRAUD_AGE_WINDOW_DAYS
_FIRST_AGE = f"terminal_first_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"
_LAST_AGE = f"terminal_last_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"


def tx_time_ns(value: Any) -> int:
    """A transaction time as int nanoseconds since the epoch (naive means UTC)."""
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return int(value.value)
    if isinstance(value, datetime | np.datetime64 | str):
        return int(pd.Timestamp(value).value)
    raise TypeError(f"unsupported tx_datetime {value!r}")


class TooOld(ValueError):
    """The transaction is older than the state the store serves."""


class NotLoaded(RuntimeError):
    """No feature state is loaded (yet): the service is not ready."""


def identity(tx: dict[str, Any]) -> str:
    """Transaction id + digest of its content: what makes two requests the same transaction (a
    retry, counted once) rather than a reuse of the id with other content (both are recorded)."""
    content = f"{tx_time_ns(tx['tx_datetime'])}|{tx['customer_id']}|{tx['terminal_id']}|"
    content += repr(float(tx["amount"]))
    digest = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
    return f"{tx['transaction_id']}#{digest}"


def _sorted_table(state: FeatureState, name: str, code: str) -> dict[str, np.ndarray]:
    """One aggregate table of ``state`` sorted by (entity code, hour)."""
    rows = state.rows(name)
    table = {"hour": rows.hour.astype(np.int64), **rows.cols}
    perm = np.lexsort((table["hour"], table[code]))
    return {k: v[perm] for k, v in table.items()}


def _ranges(codes: np.ndarray, ids: list[str]) -> dict[str, tuple[int, int]]:
    """id -> (first row, end row) for rows sorted by code."""
    if len(codes) == 0:
        return {}
    bounds = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(codes)])).tolist()
    firsts = codes[starts].tolist()
    return {ids[c]: (a, b) for c, a, b in zip(firsts, starts, ends, strict=True)}


class OnlineFeatureStore:
    """Features of single transactions from a loaded state plus the transactions observed since."""

    def __init__(self, label_delay_hours: int, first_hour: int | None):
        self.label_delay_hours = label_delay_hours
        #: the earliest hour this store can score (the state's hour + 1)
        self.first_hour = first_hour
        self._c_range: dict[str, tuple[int, int]] = {}
        self._c_hours: list[int] = []
        self._c_n: list[int] = []
        self._c_s: list[float] = []
        self._c_ss: list[float] = []
        self._c_small: list[int] = []
        self._c_last: dict[str, int] = {}
        self._pairs: dict[str, dict[str, int]] = {}
        self._t_range: dict[str, tuple[int, int]] = {}
        self._t_hours: list[int] = []
        self._t_n: list[int] = []
        self._t_frauds: dict[str, list[tuple[int, int, int]]] = {}
        # overlay of observed transactions
        self._obs_c: dict[str, list[tuple[int, int, float, int]]] = {}
        self._obs_pairs: dict[tuple[str, str], int] = {}
        self._obs_pair_n: dict[tuple[str, str], int] = {}  # observations per pair (forget)
        self._obs_t: dict[str, dict[int, int]] = {}  # terminal -> hour -> observations
        self.observed = 0

    @classmethod
    def from_state(
        cls, state: FeatureState, label_delay: timedelta | None = None
    ) -> OnlineFeatureStore:
        """Load ``state`` (not modified). ``label_delay``, if given, must be the state's."""
        if label_delay is not None and delay_hours(label_delay) != state.label_delay_hours:
            raise ValueError(
                f"label_delay {label_delay} differs from the state's "
                f"{state.label_delay_hours} h; rebuild the state with that delay"
            )
        store = cls(state.label_delay_hours, None if state.hour is None else state.hour + 1)
        cids = state.customers.ids
        tids = state.terminals.ids

        c = _sorted_table(state, "cust", "cust")
        codes = c["cust"].astype(np.int64)
        store._c_range = _ranges(codes, cids)
        store._c_hours = c["hour"].tolist()
        n = c["n"].astype(np.int64)
        small = c["small"].astype(np.int64)
        store._c_n = _group_int_cumsum(n, codes).tolist()
        store._c_small = _group_int_cumsum(small, codes).tolist()
        store._c_s = group_cumsum(c["s"].astype(np.float64), codes).tolist()
        store._c_ss = group_cumsum(c["ss"].astype(np.float64), codes).tolist()
        last_ns = c["last_ns"].astype(np.int64).tolist()
        store._c_last = {cid: last_ns[hi - 1] for cid, (_, hi) in store._c_range.items()}

        p = _sorted_table(state, "pair", "cust")
        pairs: dict[str, dict[str, int]] = {}
        for cc, tt, hh in zip(
            p["cust"].astype(np.int64).tolist(),
            p["term"].astype(np.int64).tolist(),
            p["hour"].tolist(),
            strict=True,
        ):
            pairs.setdefault(cids[cc], {})[tids[tt]] = hh  # hours ascending: keeps the latest
        store._pairs = pairs

        t = _sorted_table(state, "term", "term")
        tcodes = t["term"].astype(np.int64)
        store._t_range = _ranges(tcodes, tids)
        store._t_hours = t["hour"].tolist()
        store._t_n = _group_int_cumsum(t["n"].astype(np.int64), tcodes).tolist()

        segs = state.segments
        frauds: dict[str, list[tuple[int, int, int]]] = {}
        for tt, th, kf, ku in zip(
            segs.term.tolist(),
            segs.tx_hour.tolist(),
            segs.known_from.tolist(),
            segs.known_until.tolist(),
            strict=True,
        ):
            frauds.setdefault(tids[tt], []).append((th, kf, ku))
        store._t_frauds = frauds
        return store

    def loaded_entities(self) -> Iterator[tuple[str, str, tuple, Any]]:
        """The loaded state, one entity at a time, in the form :func:`customer_sums` and
        :func:`terminal_counts` read (another store copies it: the Redis store):
        ``("c", customer, (hours, n, s, ss, small, last), {terminal: last pair hour})`` and
        ``("t", terminal, (hours, n), [(tx hour, known from, known until), ...])``."""
        for cid, (lo, hi) in self._c_range.items():
            rows = tuple(
                col[lo:hi]
                for col in (self._c_hours, self._c_n, self._c_s, self._c_ss, self._c_small)
            )
            yield "c", cid, (*rows, self._c_last[cid]), self._pairs.get(cid, {})
        for cid in self._pairs.keys() - self._c_range.keys():  # pairs only (not in practice)
            yield "c", cid, ([], [], [], [], [], NO_TIME), self._pairs[cid]
        for tid, (lo, hi) in self._t_range.items():
            yield "t", tid, (self._t_hours[lo:hi], self._t_n[lo:hi]), self._t_frauds.get(tid, [])
        for tid in self._t_frauds.keys() - self._t_range.keys():
            yield "t", tid, ([], []), self._t_frauds[tid]

    # ---- scoring ------------------------------------------------------------------------------

    def features(self, tx: dict[str, Any]) -> dict[str, float]:
        """Features of ``tx`` (keys ``transaction_id``, ``tx_datetime``, ``customer_id``,
        ``terminal_id``, ``amount``) as if it were the next transaction; the store is unchanged."""
        t = tx_time_ns(tx["tx_datetime"])
        hour = t // HOUR_NS
        if self.first_hour is not None and hour < self.first_hour:
            raise TooOld("transaction is older than the state this store was loaded from")
        amount = float(tx["amount"])
        cid = str(tx["customer_id"])
        tid = str(tx["terminal_id"])
        lo, hi = self._c_range.get(cid, (0, 0))
        sums = customer_sums(
            t,
            amount,
            (self._c_hours, self._c_n, self._c_s, self._c_ss, self._c_small, lo, hi),
            self._c_last.get(cid, NO_TIME),
            self._obs_c.get(cid),
        )
        seen_hour = self._obs_pairs.get((cid, tid))
        if seen_hour is None:
            known = self._pairs.get(cid)
            if known is not None:
                seen_hour = known.get(tid)
        tlo, thi = self._t_range.get(tid, (0, 0))
        tobs = self._obs_t.get(tid)
        counts, frauds, fraud_hours = terminal_counts(
            hour,
            self.label_delay_hours,
            (self._t_hours, self._t_n, tlo, thi),
            tobs.items() if tobs else None,
            self._t_frauds.get(tid),
        )
        return assemble(t, hour, amount, sums, seen_hour, counts, frauds, fraud_hours)

    def vector(self, tx: dict[str, Any]) -> list[float]:
        """:meth:`features` as a list in :data:`FEATURE_NAMES` order (model input)."""
        return list(self.features(tx).values())

    def observe(self, tx: dict[str, Any]) -> None:
        """Record a scored transaction so that later transactions see it."""
        t = tx_time_ns(tx["tx_datetime"])
        hour = t // HOUR_NS
        amount = float(tx["amount"])
        cid = str(tx["customer_id"])
        tid = str(tx["terminal_id"])
        self._obs_c.setdefault(cid, []).append((hour, t, amount, 1 if amount < SMALL_AMOUNT else 0))
        self._obs_pairs[(cid, tid)] = hour
        self._obs_pair_n[(cid, tid)] = self._obs_pair_n.get((cid, tid), 0) + 1
        counts = self._obs_t.setdefault(tid, {})
        counts[hour] = counts.get(hour, 0) + 1
        self.observed += 1

    def forget(self, tx: dict[str, Any]) -> None:
        """Drop the oldest observation of ``tx``'s card and terminal (``tx`` must be the oldest
        observed transaction): keeps the overlay bounded when no newer state is loaded."""
        cid = str(tx["customer_id"])
        tid = str(tx["terminal_id"])
        entries = self._obs_c.get(cid)
        if entries:
            entries.pop(0)
            if not entries:
                del self._obs_c[cid]
        counts = self._obs_t.get(tid)
        hour = tx_time_ns(tx["tx_datetime"]) // HOUR_NS
        if counts and hour in counts:
            counts[hour] -= 1
            if not counts[hour]:
                del counts[hour]
                if not counts:
                    del self._obs_t[tid]
        left = self._obs_pair_n.get((cid, tid), 1) - 1
        if left > 0:
            self._obs_pair_n[(cid, tid)] = left
        else:  # the pair's last observation: only the loaded state knows it now
            self._obs_pair_n.pop((cid, tid), None)
            self._obs_pairs.pop((cid, tid), None)
        self.observed -= 1

    def features_and_observe(self, tx: dict[str, Any]) -> dict[str, float]:
        out = self.features(tx)
        self.observe(tx)
        return out


def _group_int_cumsum(values: np.ndarray, sorted_codes: np.ndarray) -> np.ndarray:
    """Exact per-group inclusive cumulative sum of integers (rows sorted by group)."""
    if len(values) == 0:
        return values
    total = np.cumsum(values)
    new = np.ones(len(values), dtype=bool)
    new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = np.maximum.accumulate(np.where(new, np.arange(len(values)), 0))
    offset = np.where(starts > 0, total[starts - 1], 0)
    return total - offset


# ---- the arithmetic, shared by every online store ---------------------------------------------
# Each store gathers one entity's loaded rows (hours ascending with per-entity prefix sums) and
# its overlay, then calls these: the same Python float operations in the same order, so two
# stores holding the same data give bit-identical features (and so identical scores).

CustomerRows = tuple  # (hours, cum n, cum sum, cum sum of squares, cum small, lo, hi)
TerminalRows = tuple  # (hours, cum n, lo, hi)


def customer_sums(
    t: int,
    amount: float,
    rows: CustomerRows,
    last: int,
    obs: list[tuple[int, int, float, int]] | None,
) -> tuple:
    """(n1h, n1d, n7d, n30d, s1d, s7d, s30d, ss30, small1d, prev tx time) of a customer's
    windows at time ``t`` (ns), counting the transaction being scored; ``obs`` are (hour, time,
    amount, small). Observations later than ``t`` are not counted: a transaction that arrives
    after later ones of its card (another switch, a retried authorization) gets the features of
    its own time, as the offline features give it (at equal times, arrival order decides)."""
    hour = t // HOUR_NS
    hours, cn, cs, css, csm, lo, hi = rows
    n1h = n1d = n7d = n30d = 1
    s1d = s7d = s30d = amount
    ss30 = amount * amount
    sm1d = 1 if amount < SMALL_AMOUNT else 0
    prev = last
    if hi > lo:
        end = hi - 1
        j = bisect_left(hours, hour - _W30D, lo, hi)
        if j <= end:
            b = j - 1
            n30d += cn[end] - (cn[b] if j > lo else 0)
            s30d += cs[end] - (cs[b] if j > lo else 0.0)
            ss30 += css[end] - (css[b] if j > lo else 0.0)
            j = bisect_left(hours, hour - _W7D, j, hi)
            if j <= end:
                b = j - 1
                n7d += cn[end] - (cn[b] if j > lo else 0)
                s7d += cs[end] - (cs[b] if j > lo else 0.0)
                j = bisect_left(hours, hour - _W1D, j, hi)
                if j <= end:
                    b = j - 1
                    n1d += cn[end] - (cn[b] if j > lo else 0)
                    s1d += cs[end] - (cs[b] if j > lo else 0.0)
                    sm1d += csm[end] - (csm[b] if j > lo else 0)
                    j = bisect_left(hours, hour - _W1H, j, hi)
                    if j <= end:
                        n1h += cn[end] - (cn[j - 1] if j > lo else 0)
    if obs:
        for oh, ot, oa, osm in obs:
            if ot > t:
                continue
            if oh >= hour - _W30D:
                n30d += 1
                s30d += oa
                ss30 += oa * oa
                if oh >= hour - _W7D:
                    n7d += 1
                    s7d += oa
                    if oh >= hour - _W1D:
                        n1d += 1
                        s1d += oa
                        sm1d += osm
                        if oh >= hour - _W1H:
                            n1h += 1
            if ot > prev:
                prev = ot
    return n1h, n1d, n7d, n30d, s1d, s7d, s30d, ss30, sm1d, prev


def terminal_counts(
    hour: int,
    label_delay_hours: int,
    rows: TerminalRows,
    obs: Iterable[tuple[int, int]] | None,
    frauds: list[tuple[int, int, int]] | None,
) -> tuple[list[int], list[int], tuple[int, int]]:
    """Transactions and known frauds per terminal window (windows end ``label_delay_hours``
    before ``hour``), and the first and last transaction hour of the known frauds of the
    fraud-age window; ``obs`` are (hour, observations), ``frauds`` (tx hour, known from, known
    until) segments."""
    top = hour - label_delay_hours
    tcounts = [0] * len(_TW)
    th, tn, lo, hi = rows
    if hi > lo:
        j2 = bisect_left(th, top, lo, hi)
        upper = tn[j2 - 1] if j2 > lo else 0
        for k, w in enumerate(_TW):
            j1 = bisect_left(th, top - w, lo, j2)
            tcounts[k] = upper - (tn[j1 - 1] if j1 > lo else 0)
    if obs:
        for oh, count in obs:
            if oh < top:
                for k, w in enumerate(_TW):
                    if oh >= top - w:
                        tcounts[k] += count
    tfrauds = list(_ZERO_FRAUDS)
    first, last = NO_FIRST_FRAUD_HOUR, NO_LAST_FRAUD_HOUR
    if frauds:
        for tx_hour, known_from, known_until in frauds:
            if known_from <= hour < known_until and tx_hour < top:
                for k, w in enumerate(_TW):
                    if tx_hour >= top - w:
                        tfrauds[k] += 1
                if tx_hour >= top - _AGE_W:
                    first, last = min(first, tx_hour), max(last, tx_hour)
    return tcounts, tfrauds, (first, last)


def assemble(
    t: int,
    hour: int,
    amount: float,
    sums: tuple,
    seen_hour: int | None,
    tcounts: list[int],
    tfrauds: list[int],
    fraud_hours: tuple[int, int],
) -> dict[str, float]:
    """The feature dict (mirrors ``fraudloop.features.compute._assemble``)."""
    n1h, n1d, n7d, n30d, s1d, s7d, s30d, ss30, sm1d, prev = sums
    hour_of_day = hour % 24
    out = {
        "amount": amount,
        "tx_is_weekend": 1.0 if ((t // DAY_NS) + 3) % 7 >= 5 else 0.0,
        "tx_is_night": 1.0 if hour_of_day <= 6 else 0.0,
        "tx_hour": float(hour_of_day),
        "customer_nb_tx_1h": float(n1h),
    }
    for w, cnt, tot in (("1d", n1d, s1d), ("7d", n7d, s7d), ("30d", n30d, s30d)):
        avg = tot / cnt
        out[f"customer_nb_tx_{w}"] = float(cnt)
        out[f"customer_avg_amount_{w}"] = avg
        out[f"customer_amount_ratio_{w}"] = amount / avg if avg > 0 else 0.0
    mean = s30d / n30d
    var = max(ss30 / n30d - mean * mean, 0.0)
    std = math.sqrt(var)
    if n30d >= 2 and std > ZSCORE_MIN_RELATIVE_STD * max(abs(mean), 1.0):
        out["customer_amount_zscore_30d"] = (amount - mean) / std
    else:
        out["customer_amount_zscore_30d"] = 0.0
    if prev == NO_TIME:
        out["customer_secs_since_prev_tx"] = NO_PREV_TX_SECONDS
    else:
        out["customer_secs_since_prev_tx"] = min(float(t - prev) / SECOND_NS, NO_PREV_TX_SECONDS)
    out["customer_small_tx_share_1d"] = sm1d / n1d
    novelty = 0.0 if seen_hour is not None and seen_hour >= hour - CUSTOMER_HORIZON_HOURS else 1.0
    out["customer_terminal_novelty"] = novelty
    for k, w in enumerate(TERMINAL_WINDOW_DAYS):
        cnt = tcounts[k]
        out[f"terminal_nb_tx_{w}d"] = float(cnt)
        out[f"terminal_risk_{w}d"] = tfrauds[k] / cnt if cnt > 0 else 0.0
    first, last = fraud_hours
    known = last != NO_LAST_FRAUD_HOUR
    out[_FIRST_AGE] = float(hour - first) if known else NO_FRAUD_AGE_HOURS
    out[_LAST_AGE] = float(hour - last) if known else NO_FRAUD_AGE_HOURS
    return {name: out[name] for name in FEATURE_NAMES}
