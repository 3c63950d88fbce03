"""Online features of a whole batch at once, in numpy: what scoring its rows one by one gives.

Scoring a 10,000-row batch row by row costs ~9 us a row in Python (``customer_sums``,
``terminal_counts``, ``assemble`` of :mod:`fraudloop.features.online`); here each step is a few
array operations over the batch. The result is bit-identical to the row-by-row path, in time
order, each row observed before the next is read:

- a row's window sums over the loaded state are the same prefix-sum differences (``searchsorted``
  on keys ``segment * 2**32 + hour`` instead of ``bisect`` within the entity's range);
- its overlay is the entity's overlay before the batch followed by the batch's earlier *fresh*
  rows of the same card (a repeated transaction identity is not observed twice); the float sums
  add these one at a time in that order (``np.add.at`` is sequential, and ``+ 0.0`` for an entry
  outside the window is exact), so the rounding is that of the scalar loop;
- integer counts and latest times do not depend on the order: ``bincount`` and
  ``maximum.at``; a terminal's in-batch observations are counted by ``searchsorted`` (an
  observation counts only if its hour is before the row's label-delayed window end, so it is
  always an earlier row);
- the arithmetic of ``assemble`` is repeated with numpy operations that round as Python's do
  (IEEE double, one operation at a time).

A batch comes as :class:`Rows` (columns, no dict per row). Stores gather the per-entity inputs
in their own way (the in-process one in :func:`gather`, the Redis one from one script reply) and
both build them with :meth:`BatchInputs.from_rows`. A test holds this module to the row-by-row
path on both stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudloop.core.hours import DAY_NS, HOUR_NS, SECOND_NS
from fraudloop.features.compute import FEATURE_NAMES, ZSCORE_MIN_RELATIVE_STD
from fraudloop.features.online import tx_time_ns
from fraudloop.features.state import (
    CUSTOMER_HORIZON_HOURS,
    CUSTOMER_WINDOW_HOURS,
    FRAUD_AGE_WINDOW_DAYS,
    NO_FIRST_FRAUD_HOUR,
    NO_LAST_FRAUD_HOUR,
    NO_PREV_TX_SECONDS,
    NO_TIME,
    SMALL_AMOUNT,
    TERMINAL_WINDOW_DAYS,
    fraud_ages,
)

#: key = segment * SEGMENT + hour + HOUR_OFFSET: sorted by (segment, hour) like the flat rows
SEGMENT = 1 << 32
HOUR_OFFSET = 1 << 31
#: a batch whose card overlays would make more (row, observation) pairs is split in two
MAX_PAIRS = 4_000_000
_I8 = np.int64
_F8 = np.float64


@dataclass(frozen=True)
class Rows:
    """Transactions as columns: what a batch is on its way through the service (parsed from the
    request body into these, never into a dict per row). ``t`` is int64 nanoseconds; ``amounts``
    are the Python floats a row's dict would hold (identities are formatted from them)."""

    ids: list[str]
    t: np.ndarray
    cids: list[str]
    tids: list[str]
    amounts: list[float]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, txs: Sequence[dict[str, Any]]) -> Rows:
        """Columns of transaction dicts (``transaction_id``, ``tx_datetime``, ...)."""
        return cls(
            [str(tx["transaction_id"]) for tx in txs],
            np.array([tx_time_ns(tx["tx_datetime"]) for tx in txs], dtype=_I8),
            [str(tx["customer_id"]) for tx in txs],
            [str(tx["terminal_id"]) for tx in txs],
            [float(tx["amount"]) for tx in txs],
        )

    def take(self, idx: np.ndarray) -> Rows:
        at = idx.tolist()
        return Rows(
            [self.ids[i] for i in at],
            self.t[idx],
            [self.cids[i] for i in at],
            [self.tids[i] for i in at],
            [self.amounts[i] for i in at],
        )

    def part(self, start: int, stop: int) -> Rows:
        return Rows(
            self.ids[start:stop],
            self.t[start:stop],
            self.cids[start:stop],
            self.tids[start:stop],
            self.amounts[start:stop],
        )

    def dicts(self, at: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Rows as the dicts the row-by-row paths take (all, or those at ``at``)."""
        times = self.t.tolist()
        return [
            {
                "transaction_id": self.ids[i],
                "tx_datetime": times[i],
                "customer_id": self.cids[i],
                "terminal_id": self.tids[i],
                "amount": self.amounts[i],
            }
            for i in (range(len(self.ids)) if at is None else at)
        ]

    def identities(self) -> list[str]:
        """:func:`~fraudloop.features.online.identity` of each row."""
        return identities(self.ids, self.t.tolist(), self.cids, self.tids, self.amounts)


def as_rows(txs: Rows | Sequence[dict[str, Any]]) -> Rows:
    return txs if isinstance(txs, Rows) else Rows.of(txs)


@dataclass(frozen=True)
class Entities:
    """A batch's cards, terminals and (card, terminal) pairs, each row coded by its index among
    the unique ones (first-seen order)."""

    cu: np.ndarray
    cards: list[str]
    tu: np.ndarray
    terms: list[str]
    pu: np.ndarray
    pairs: list[tuple[int, int]]  # (card index, terminal index) of each unique pair

    @classmethod
    def of(cls, cids: list[str], tids: list[str]) -> Entities:
        import pandas as pd

        cu, cards = pd.factorize(np.asarray(cids, dtype=object))
        tu, terms = pd.factorize(np.asarray(tids, dtype=object))
        cu, tu = cu.astype(_I8), tu.astype(_I8)
        nt = len(terms)
        pu, codes = pd.factorize(cu * nt + tu)
        codes = np.asarray(codes, dtype=_I8)
        div = max(nt, 1)
        pairs = list(zip((codes // div).tolist(), (codes % div).tolist(), strict=True))
        return cls(cu, cards.tolist(), tu, terms.tolist(), pu.astype(_I8), pairs)


@dataclass
class Flat:
    """One entity kind's loaded rows, flat, sorted by (segment, hour), with per-segment
    inclusive prefix sums; ``keys`` are ``segment * SEGMENT + hour + HOUR_OFFSET``."""

    keys: np.ndarray
    cols: tuple[np.ndarray, ...]


@dataclass
class BatchInputs:
    """A batch (rows in time order) and what the store held for its entities before it.

    Per row: ``t`` (ns), ``amount``, ``cu``/``tu``/``pu`` (index of its card / terminal / (card,
    terminal) pair among the batch's unique ones), ``fresh`` (its identity was not observed
    before: it is recorded). Per unique card: ``c_seg``, ``c_lo``, ``c_hi`` (its segment in
    ``cards``; ``c_hi == c_lo`` for none), ``c_last`` (latest loaded time), ``c_obs`` (start of
    its overlay in ``co``, ``c_obs_n`` entries); ``co`` = (hour, time, amount, small) arrays.
    Per unique terminal likewise with ``to`` = (terminal index, hour, count) and ``tf`` =
    (terminal index, tx hour, known from, known until). Per unique pair: ``p_seen`` (the hour it
    was last seen, ``NO_TIME`` for never)."""

    t: np.ndarray
    amount: np.ndarray
    cu: np.ndarray
    tu: np.ndarray
    pu: np.ndarray
    fresh: np.ndarray
    cards: Flat
    c_seg: np.ndarray
    c_lo: np.ndarray
    c_hi: np.ndarray
    c_last: np.ndarray
    c_obs: np.ndarray
    c_obs_n: np.ndarray
    co: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    terminals: Flat
    t_seg: np.ndarray
    t_lo: np.ndarray
    t_hi: np.ndarray
    to: tuple[np.ndarray, np.ndarray, np.ndarray]
    tf: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    p_seen: np.ndarray
    label_delay_hours: int

    @classmethod
    def from_rows(
        cls,
        rows: Rows,
        entities: Entities,
        fresh: np.ndarray,
        *,
        cards: Flat,
        c_lo: np.ndarray,
        c_hi: np.ndarray,
        c_last: np.ndarray,
        c_obs: np.ndarray,
        c_obs_n: np.ndarray,
        co: list,
        terminals: Flat,
        t_lo: np.ndarray,
        t_hi: np.ndarray,
        to: list,
        tf: list,
        p_seen: np.ndarray,
        label_delay_hours: int,
    ) -> BatchInputs:
        """The inputs of a batch from what a store gathered: per unique card its loaded rows'
        bounds in ``cards`` (a card's segment is its first row), latest loaded time and overlay
        entries (``co``: (hour, time, amount, small) per entry, any numeric or bytes type); per
        unique terminal likewise with ``to`` (terminal index, hour, count) and ``tf``
        (terminal index, tx hour, known from, known until); per unique pair ``p_seen``."""
        co_cols = _columns(co, (_I8, _I8, _F8, _I8))
        return cls(
            t=rows.t,
            amount=np.asarray(rows.amounts, _F8),
            cu=entities.cu,
            tu=entities.tu,
            pu=entities.pu,
            fresh=np.asarray(fresh, bool),
            cards=cards,
            c_seg=c_lo,
            c_lo=c_lo,
            c_hi=c_hi,
            c_last=c_last,
            c_obs=c_obs,
            c_obs_n=c_obs_n,
            co=co_cols,
            terminals=terminals,
            t_seg=t_lo,
            t_lo=t_lo,
            t_hi=t_hi,
            to=_columns(to, (_I8,) * 3),
            tf=_columns(tf, (_I8,) * 4),
            p_seen=p_seen,
            label_delay_hours=int(label_delay_hours),
        )


def _columns(entries: list, dtypes: tuple) -> tuple[np.ndarray, ...]:
    """Columns of a list of equal-length entries, each column as its dtype."""
    if not entries:
        return tuple(np.zeros(0, dt) for dt in dtypes)
    if all(dt is _I8 for dt in dtypes):
        table = np.array(entries, _I8).reshape(-1, len(dtypes))
        return tuple(table[:, k] for k in range(len(dtypes)))
    table = np.array(entries, dtype=object).reshape(-1, len(dtypes))
    return tuple(table[:, k].astype(dt) for k, dt in enumerate(dtypes))


def flat(segment_starts: np.ndarray, lengths: np.ndarray, hours: np.ndarray, *cols) -> Flat:
    """A :class:`Flat` whose segments are identified by their start position."""
    seg = np.repeat(np.asarray(segment_starts, _I8), np.asarray(lengths, _I8))
    keys = seg * SEGMENT + np.asarray(hours, _I8) + HOUR_OFFSET
    return Flat(keys, tuple(cols))


def pair_count(cu: np.ndarray, fresh: np.ndarray, c_obs_n: np.ndarray) -> int:
    """(row, overlay entry) pairs of the card overlays: what :func:`features` allocates."""
    order = np.argsort(cu, kind="stable")
    before = _exclusive_group_cumsum(fresh[order].astype(_I8), cu[order])
    return int(c_obs_n[cu].sum() + before.sum())


def _exclusive_group_cumsum(values: np.ndarray, sorted_groups: np.ndarray) -> np.ndarray:
    total = np.cumsum(values) - values
    if len(values) == 0:
        return total
    new = np.ones(len(values), dtype=bool)
    new[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(len(values)), 0))
    return total - total[start]


def lower_bound(keys: np.ndarray, targets: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Per row, the first position in ``keys[lo:hi]`` whose key is >= its target (``hi`` if
    none): ``np.searchsorted(keys, targets)`` where each answer is known to lie in its row's
    entity segment. A bisection of all rows at once inside their segments (tens of entries)
    instead of a search of the whole state (millions, cache misses mostly). This and
    :func:`gather`'s one read per entity took the online features of a batch of new
    transactions at 100x from 24.9 to 11.7 us a row (`bench/serve.py --only-batch`, its stage
    profile)."""
    lo = np.asarray(lo, _I8).copy()
    hi = np.asarray(hi, _I8).copy()
    active = np.flatnonzero(lo < hi)
    while len(active):
        a_lo, a_hi = lo[active], hi[active]
        mid = (a_lo + a_hi) >> 1
        below = keys[mid] < targets[active]
        lo[active] = np.where(below, mid + 1, a_lo)
        hi[active] = np.where(below, a_hi, mid)
        active = active[lo[active] < hi[active]]
    return lo


def _window(flat_rows: Flat, base: np.ndarray, lo: np.ndarray, hi: np.ndarray, start: np.ndarray):
    """For each row, the first loaded row at or after hour ``start``: (any, after first, j-1).
    Rows without a loaded segment (``lo == hi``) get ``lo``: none valid."""
    j = lower_bound(flat_rows.keys, base + start, lo, hi)
    valid = j < hi
    return valid, j > lo, np.maximum(j - 1, 0)


def _cdiff(col: np.ndarray, end: np.ndarray, after: np.ndarray, jm1: np.ndarray, zero):
    return col[end] - np.where(after, col[jm1], zero)


def features(x: BatchInputs) -> np.ndarray:
    """The (rows x :data:`FEATURE_NAMES`) feature matrix of the batch."""
    n = len(x.t)
    t, amount = x.t, x.amount
    hour = t // HOUR_NS
    small = (amount < SMALL_AMOUNT).astype(_I8)
    w1h, w1d, w7d, w30d = (CUSTOMER_WINDOW_HOURS[k] for k in ("1h", "1d", "7d", "30d"))

    # ---- customers: the loaded state
    n1h = np.ones(n, _I8)
    n1d, n7d, n30d = n1h.copy(), n1h.copy(), n1h.copy()
    s1d, s7d, s30d = amount.copy(), amount.copy(), amount.copy()
    ss30 = amount * amount
    sm1d = small.copy()
    lo, hi = x.c_lo[x.cu], x.c_hi[x.cu]
    has = hi > lo
    if len(x.cards.keys) and has.any():
        cn, cs, css, csm = x.cards.cols
        base = x.c_seg[x.cu] * SEGMENT + HOUR_OFFSET
        end = np.maximum(hi - 1, 0)
        valid, after, jm1 = _window(x.cards, base, lo, hi, hour - w30d)
        valid &= has
        n30d += np.where(valid, _cdiff(cn, end, after, jm1, 0), 0)
        s30d = np.where(valid, s30d + _cdiff(cs, end, after, jm1, 0.0), s30d)
        ss30 = np.where(valid, ss30 + _cdiff(css, end, after, jm1, 0.0), ss30)
        valid, after, jm1 = _window(x.cards, base, lo, hi, hour - w7d)
        valid &= has
        n7d += np.where(valid, _cdiff(cn, end, after, jm1, 0), 0)
        s7d = np.where(valid, s7d + _cdiff(cs, end, after, jm1, 0.0), s7d)
        valid, after, jm1 = _window(x.cards, base, lo, hi, hour - w1d)
        valid &= has
        n1d += np.where(valid, _cdiff(cn, end, after, jm1, 0), 0)
        s1d = np.where(valid, s1d + _cdiff(cs, end, after, jm1, 0.0), s1d)
        sm1d += np.where(valid, _cdiff(csm, end, after, jm1, 0), 0)
        valid, after, jm1 = _window(x.cards, base, lo, hi, hour - w1h)
        valid &= has
        n1h += np.where(valid, _cdiff(cn, end, after, jm1, 0), 0)
    prev = x.c_last[x.cu].copy()

    # ---- customers: the overlay before the batch, then the batch's earlier fresh rows
    l_pre = x.c_obs_n[x.cu]
    order = np.argsort(x.cu, kind="stable")
    fresh_sorted = x.fresh[order]
    l_in = np.empty(n, _I8)
    l_in[order] = _exclusive_group_cumsum(fresh_sorted.astype(_I8), x.cu[order])
    lengths = l_pre + l_in
    total = int(lengths.sum())
    if total:
        prow = np.repeat(np.arange(n), lengths)
        rank = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pre_n = l_pre[prow]
        is_pre = rank < pre_n
        fresh_rows = order[fresh_sorted]  # grouped by card, in batch order
        fresh_start = np.searchsorted(x.cu[fresh_rows], np.arange(len(x.c_obs_n)), "left")
        pcu = x.cu[prow]
        n_pre = len(x.co[0])
        in_pos = np.where(is_pre, 0, fresh_start[pcu] + rank - pre_n)
        pre_pos = np.where(is_pre, x.c_obs[pcu] + rank, 0)
        in_row = fresh_rows[np.clip(in_pos, 0, len(fresh_rows) - 1)] if len(fresh_rows) else 0
        entry = np.where(is_pre, pre_pos, n_pre + in_row)
        oh = np.concatenate((x.co[0], hour))[entry]
        ot = np.concatenate((x.co[1], t))[entry]
        oa = np.concatenate((x.co[2], amount))[entry]
        osm = np.concatenate((x.co[3], small))[entry]
        ph = hour[prow]
        # an entry later than its row is not counted (a late arrival: `online.customer_sums`)
        before = ot <= t[prow]
        m30 = before & (oh >= ph - w30d)
        m7, m1, mh = m30 & (oh >= ph - w7d), m30 & (oh >= ph - w1d), m30 & (oh >= ph - w1h)
        for counts, mask in ((n30d, m30), (n7d, m7), (n1d, m1), (n1h, mh)):
            counts += np.bincount(prow, weights=mask, minlength=n).astype(_I8)
        sm1d += np.bincount(prow, weights=np.where(m1, osm, 0), minlength=n).astype(_I8)
        np.add.at(s30d, prow, np.where(m30, oa, 0.0))  # sequential: the scalar rounding
        np.add.at(ss30, prow, np.where(m30, oa * oa, 0.0))
        np.add.at(s7d, prow, np.where(m7, oa, 0.0))
        np.add.at(s1d, prow, np.where(m1, oa, 0.0))
        np.maximum.at(prev, prow, np.where(before, ot, NO_TIME))

    # ---- terminals
    top = hour - x.label_delay_hours
    windows = [24 * w for w in TERMINAL_WINDOW_DAYS]
    tcounts = [np.zeros(n, _I8) for _ in windows]
    tlo, thi = x.t_lo[x.tu], x.t_hi[x.tu]
    thas = thi > tlo
    if len(x.terminals.keys) and thas.any():
        (tn,) = x.terminals.cols
        tbase = x.t_seg[x.tu] * SEGMENT + HOUR_OFFSET
        j2 = lower_bound(x.terminals.keys, tbase + top, tlo, thi)
        upper = np.where(j2 > tlo, tn[np.maximum(j2 - 1, 0)], 0)
        for k, w in enumerate(windows):
            j1 = lower_bound(x.terminals.keys, tbase + top - w, tlo, thi)
            below = np.where(j1 > tlo, tn[np.maximum(j1 - 1, 0)], 0)
            tcounts[k] += np.where(thas, upper - below, 0)
    # the overlay before the batch and the batch's fresh rows, counted by hour
    ou = np.concatenate((x.to[0], x.tu[x.fresh]))
    ohour = np.concatenate((x.to[1], hour[x.fresh]))
    ocount = np.concatenate((x.to[2], np.ones(int(x.fresh.sum()), _I8)))
    if len(ou):
        okeys = ou * SEGMENT + ohour + HOUR_OFFSET
        sort = np.argsort(okeys, kind="stable")
        okeys = okeys[sort]
        cum = np.concatenate(([0], np.cumsum(ocount[sort])))
        qbase = x.tu * SEGMENT + HOUR_OFFSET
        upper = cum[np.searchsorted(okeys, qbase + top, "left")]
        for k, w in enumerate(windows):
            tcounts[k] += upper - cum[np.searchsorted(okeys, qbase + top - w, "left")]
    tfrauds = [np.zeros(n, _I8) for _ in windows]
    first = np.full(n, NO_FIRST_FRAUD_HOUR, _I8)
    last = np.full(n, NO_LAST_FRAUD_HOUR, _I8)
    fu, fh, ff, fut = x.tf
    if len(fu):
        fsort = np.argsort(fu, kind="stable")
        fu, fh, ff, fut = fu[fsort], fh[fsort], ff[fsort], fut[fsort]
        fstart = np.searchsorted(fu, np.arange(len(x.t_lo)), "left")
        fend = np.searchsorted(fu, np.arange(len(x.t_lo)), "right")
        flen = (fend - fstart)[x.tu]
        ftotal = int(flen.sum())
        if ftotal:
            frow = np.repeat(np.arange(n), flen)
            fpos = fstart[x.tu][frow] + np.arange(ftotal) - np.repeat(np.cumsum(flen) - flen, flen)
            fhour, ftop = hour[frow], top[frow]
            known = (ff[fpos] <= fhour) & (fhour < fut[fpos]) & (fh[fpos] < ftop)
            for k, w in enumerate(windows):
                hit = known & (fh[fpos] >= ftop - w)
                tfrauds[k] += np.bincount(frow, weights=hit, minlength=n).astype(_I8)
            aged = known & (fh[fpos] >= ftop - 24 * FRAUD_AGE_WINDOW_DAYS)
            np.minimum.at(first, frow[aged], fh[fpos][aged])
            np.maximum.at(last, frow[aged], fh[fpos][aged])

    # ---- (card, terminal) novelty: the last earlier fresh row of the pair, else the store's
    seen = x.p_seen[x.pu].copy()
    porder = np.argsort(x.pu, kind="stable")
    pos = np.arange(n)
    marks = np.where(x.fresh[porder], pos, -1)
    last_before = np.concatenate(([-1], np.maximum.accumulate(marks)[:-1])) if n else marks
    newgroup = np.ones(n, dtype=bool)
    newgroup[1:] = x.pu[porder][1:] != x.pu[porder][:-1]
    gstart = np.maximum.accumulate(np.where(newgroup, pos, 0))
    inside = last_before >= gstart
    seen[porder] = np.where(inside, hour[porder][np.maximum(last_before, 0)], seen[porder])

    return _assemble(
        t,
        hour,
        amount,
        (n1h, n1d, n7d, n30d, s1d, s7d, s30d, ss30, sm1d, prev),
        seen,
        tcounts,
        tfrauds,
        (first, last),
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(len(num), _F8)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _assemble(t, hour, amount, sums, seen, tcounts, tfrauds, fraud_hours) -> np.ndarray:
    """``fraudloop.features.online.assemble`` over arrays (same operations, same order)."""
    n1h, n1d, n7d, n30d, s1d, s7d, s30d, ss30, sm1d, prev = sums
    hod = hour % 24
    out = {
        "amount": amount,
        "tx_is_weekend": (((t // DAY_NS) + 3) % 7 >= 5).astype(_F8),
        "tx_is_night": (hod <= 6).astype(_F8),
        "tx_hour": hod.astype(_F8),
        "customer_nb_tx_1h": n1h.astype(_F8),
    }
    for w, cnt, tot in (("1d", n1d, s1d), ("7d", n7d, s7d), ("30d", n30d, s30d)):
        avg = tot / cnt
        out[f"customer_nb_tx_{w}"] = cnt.astype(_F8)
        out[f"customer_avg_amount_{w}"] = avg
        out[f"customer_amount_ratio_{w}"] = _ratio(amount, avg)
    mean = s30d / n30d
    std = np.sqrt(np.maximum(ss30 / n30d - mean * mean, 0.0))
    spread = (n30d >= 2) & (std > ZSCORE_MIN_RELATIVE_STD * np.maximum(np.abs(mean), 1.0))
    z = np.zeros(len(t), _F8)
    np.divide(amount - mean, std, out=z, where=spread)
    out["customer_amount_zscore_30d"] = z
    none = prev == NO_TIME
    gap = (t - np.where(none, t, prev)).astype(_F8) / SECOND_NS
    out["customer_secs_since_prev_tx"] = np.where(
        none, NO_PREV_TX_SECONDS, np.minimum(gap, NO_PREV_TX_SECONDS)
    )
    out["customer_small_tx_share_1d"] = sm1d / n1d
    out["customer_terminal_novelty"] = np.where(seen >= hour - CUSTOMER_HORIZON_HOURS, 0.0, 1.0)
    for k, w in enumerate(TERMINAL_WINDOW_DAYS):
        cnt = tcounts[k]
        out[f"terminal_nb_tx_{w}d"] = cnt.astype(_F8)
        out[f"terminal_risk_{w}d"] = _ratio(tfrauds[k].astype(_F8), cnt.astype(_F8))
    first, last = fraud_ages(hour, *fraud_hours)
    out[f"terminal_first_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"] = first
    out[f"terminal_last_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"] = last
    return np.ascontiguousarray(np.column_stack([out[name] for name in FEATURE_NAMES]), _F8)


# ---- the in-process store's inputs


class StoreArrays:
    """The loaded state of an :class:`~fraudloop.features.online.OnlineFeatureStore` as flat
    arrays (built once per loaded state, off the request path)."""

    def __init__(self, online) -> None:
        self.online = online
        c_range, t_range = online._c_range, online._t_range
        self.cards = self._flat(
            c_range, online._c_hours, online._c_n, online._c_s, online._c_ss, online._c_small
        )
        self.terminals = self._flat(t_range, online._t_hours, online._t_n)
        #: a card's latest loaded time at its segment's last row (``_c_last``, one read less
        #: per card of a batch)
        self.card_last = np.full(len(self.cards.keys), NO_TIME, _I8)
        if c_range:
            ends = np.array([hi for _, hi in c_range.values()], _I8) - 1
            self.card_last[ends] = np.array([online._c_last[c] for c in c_range], _I8)

    @staticmethod
    def _flat(ranges: dict, hours: list, *cols: list) -> Flat:
        bounds = np.array(list(ranges.values()), _I8).reshape(-1, 2)
        order = np.argsort(bounds[:, 0], kind="stable")
        bounds = bounds[order]
        dtypes = [_I8 if isinstance(c[0] if c else 0, int) else _F8 for c in cols]
        arrays = [np.asarray(c, dt) for c, dt in zip(cols, dtypes, strict=True)]
        return flat(bounds[:, 0], bounds[:, 1] - bounds[:, 0], np.asarray(hours, _I8), *arrays)


def identities(ids: list[str], t: list[int], cids: list[str], tids: list[str], amounts) -> list:
    """:func:`fraudloop.features.online.identity` of each row (same strings), without a dict
    lookup and a time conversion per row."""
    blake = hashlib.blake2b
    return [
        f"{i}#" + blake(f"{ti}|{c}|{te}|{a!r}".encode(), digest_size=12).hexdigest()
        for i, ti, c, te, a in zip(ids, t, cids, tids, amounts, strict=True)
    ]


def observe(online, rows: Rows, at: np.ndarray) -> None:
    """``OnlineFeatureStore.observe`` of the batch's rows ``at`` (in order), without a call,
    a dict lookup of the transaction and a time conversion per row."""
    t, amounts, cids, tids = rows.t, rows.amounts, rows.cids, rows.tids
    obs_c, obs_pairs, obs_pair_n, obs_t = (
        online._obs_c,
        online._obs_pairs,
        online._obs_pair_n,
        online._obs_t,
    )
    hours = (t // HOUR_NS).tolist()
    times = t.tolist()
    for i in at.tolist():
        cid, tid, hour, amount = cids[i], tids[i], hours[i], amounts[i]
        entry = (hour, times[i], amount, 1 if amount < SMALL_AMOUNT else 0)
        entries = obs_c.get(cid)
        if entries is None:
            obs_c[cid] = [entry]
        else:
            entries.append(entry)
        pair = (cid, tid)
        obs_pairs[pair] = hour
        obs_pair_n[pair] = obs_pair_n.get(pair, 0) + 1
        counts = obs_t.get(tid)
        if counts is None:
            obs_t[tid] = {hour: 1}
        else:
            counts[hour] = counts.get(hour, 0) + 1
    online.observed += len(at)


def _overlay_entries(obs_c: dict, cards: list[str]):
    """Per unique card, the start and length of its overlay entries in the returned columns
    (hour, time, amount, small)."""
    nc = len(cards)
    if not obs_c:
        return np.zeros(nc, _I8), np.zeros(nc, _I8), []
    found = [obs_c.get(cid) for cid in cards]
    lengths = np.array([len(e) if e else 0 for e in found], _I8)
    starts = np.cumsum(lengths) - lengths
    return starts, lengths, [entry for e in found if e for entry in e]


def gather(arrays: StoreArrays, rows: Rows, entities: Entities, fresh) -> BatchInputs:
    """The batch's inputs from the in-process store (its overlay as it is now). One dict read
    per unique card, terminal and pair and store, in comprehensions (a batch of new cards at
    100x: ~10 reads a row, most of its cost)."""
    online = arrays.online
    cards, terms = entities.cards, entities.terms
    none = (0, 0)
    c_get = online._c_range.get
    bounds = np.array([c_get(cid, none) for cid in cards], _I8).reshape(-1, 2)
    c_lo, c_hi = bounds[:, 0].copy(), bounds[:, 1].copy()
    c_last_a = np.full(len(cards), NO_TIME, _I8)
    loaded = c_hi > c_lo
    c_last_a[loaded] = arrays.card_last[c_hi[loaded] - 1]
    c_obs, c_obs_n, co = _overlay_entries(online._obs_c, cards)

    t_get = online._t_range.get
    tbounds = np.array([t_get(tid, none) for tid in terms], _I8).reshape(-1, 2)
    t_lo, t_hi = tbounds[:, 0].copy(), tbounds[:, 1].copy()
    to: list = []
    obs_t = online._obs_t
    if obs_t:
        for u, counts in enumerate([obs_t.get(tid) for tid in terms]):
            if counts:
                to.extend((u, h, c) for h, c in counts.items())
    tf: list = []
    t_frauds = online._t_frauds
    for u, segs in enumerate([t_frauds.get(tid) for tid in terms]):
        if segs:
            tf.extend((u, *seg) for seg in segs)

    known_get, empty = online._pairs.get, {}
    known = [known_get(cid, empty) for cid in cards]
    seen = [known[cu].get(terms[tu], NO_TIME) for cu, tu in entities.pairs]
    obs_pairs = online._obs_pairs
    if obs_pairs:  # the overlay's hour, where it has one, is the later
        observed = [obs_pairs.get((cards[cu], terms[tu])) for cu, tu in entities.pairs]
        seen = [s if h is None else h for s, h in zip(seen, observed, strict=True)]
    p_seen = np.array(seen, _I8)
    return BatchInputs.from_rows(
        rows,
        entities,
        fresh,
        cards=arrays.cards,
        c_lo=c_lo,
        c_hi=c_hi,
        c_last=c_last_a,
        c_obs=c_obs,
        c_obs_n=c_obs_n,
        co=co,
        terminals=arrays.terminals,
        t_lo=t_lo,
        t_hi=t_hi,
        to=to,
        tf=tf,
        p_seen=p_seen,
        label_delay_hours=online.label_delay_hours,
    )
