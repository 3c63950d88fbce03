"""Point-in-time fraud features: one definition, a batch path (training) and an incremental path.

Every feature is documented once, in :data:`FEATURES`; :data:`FEATURE_NAMES` is the column order of
every feature table and of the model input. Three implementations compute them and are tested to
agree to 1e-9:

- :func:`build_features`: full rebuild over a whole history, vectorised (sort by entity and time,
  per-entity cumulative sums, ``np.searchsorted`` for window starts on hour boundaries);
- :func:`advance_hour`: one hour at a time from a compact :class:`FeatureState` (hourly aggregates);
- :class:`fraudloop.features.online.OnlineFeatureStore`: one transaction at a time, for serving.

Time granularity. Windows are made of whole UTC hours. For a transaction at time t in hour H (H = t
floored to the hour):

- customer windows of W hours cover the customer's transactions in hours [H - W, H) plus those of
  hour H that come before the transaction or are the transaction itself, ordered by
  (``tx_datetime``, ``transaction_id``). The transaction is always counted, so a count is >= 1.
- terminal windows of W days end ``label_delay`` (D, default 7 days) before the transaction's hour:
  hours [H - 24(D + W), H - 24D). A transaction there counts as fraud only if, at the START of hour
  H, its latest known label (``known_at <= start(H)``) says fraud. The start of the hour rather than
  t makes the feature strictly leak-free and identical for every transaction of the hour, so the
  online store and the hourly batch agree without a per-transaction label lookup.

Labels are bi-temporal: a transaction may have several label records; as of time T its label is the
record with the greatest ``known_at <= T`` (fraud wins a tie). Labels of transactions absent from
the transactions passed are ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from fraudloop.core.hours import DAY_NS, HOUR_NS, SECOND_NS
from fraudloop.core.schema import TRANSACTION_KEY_COLUMNS
from fraudloop.features.state import (
    CUSTOMER_HORIZON_HOURS,
    CUSTOMER_WINDOW_HOURS,
    DEFAULT_LABEL_DELAY,
    FRAUD_AGE_WINDOW_DAYS,
    LABEL_INPUT,
    NO_FIRST_FRAUD_HOUR,
    NO_FRAUD_AGE_HOURS,
    NO_LAST_FRAUD_HOUR,
    NO_PREV_TX_SECONDS,
    NO_TIME,
    SMALL_AMOUNT,
    TERMINAL_WINDOW_DAYS,
    TRANSACTION_INPUT,
    FeatureState,
    build_tables,
    delay_hours,
    fraud_ages,
    fraud_segments,
    group_cumsum,
    group_starts,
    hour_index,
    order_rows,
    relevant_label_records,
    str_array,
    to_utc_ns,
)

#: std of the 30-day amounts below this share of |mean| (or of 1.0) counts as zero for the z-score.
ZSCORE_MIN_RELATIVE_STD = 1e-6


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    description: str
    window: str
    sees: str


_CUST_SEES = "the customer's transactions up to and including this one (ties: transaction_id)"
_TERM_SEES = (
    "this terminal's transactions in the window and the labels with known_at <= start of the "
    "transaction's hour"
)


def _customer_specs() -> list[FeatureSpec]:
    specs = [
        FeatureSpec(
            "customer_nb_tx_1h",
            "number of the customer's transactions in the previous UTC hour and in the current "
            "hour so far, this one included (velocity; card-testing bursts)",
            "previous whole hour + current hour so far",
            _CUST_SEES,
        )
    ]
    for w in ("1d", "7d", "30d"):
        span = f"[H - {CUSTOMER_WINDOW_HOURS[w]} h, H) + current hour so far"
        specs += [
            FeatureSpec(
                f"customer_nb_tx_{w}",
                f"number of the customer's transactions over {w}, this one included",
                span,
                _CUST_SEES,
            ),
            FeatureSpec(
                f"customer_avg_amount_{w}",
                f"mean amount of the customer's transactions over {w}, this one included",
                span,
                _CUST_SEES,
            ),
            FeatureSpec(
                f"customer_amount_ratio_{w}",
                f"amount / customer_avg_amount_{w} (0 if that mean is not positive)",
                span,
                _CUST_SEES,
            ),
        ]
    return specs


def _terminal_specs() -> list[FeatureSpec]:
    specs = []
    for w in TERMINAL_WINDOW_DAYS:
        span = f"[H - 24(D + {w}) h, H - 24D h), D = label delay"
        specs += [
            FeatureSpec(
                f"terminal_nb_tx_{w}d",
                f"number of the terminal's transactions in a {w}-day window ending one label "
                "delay before the transaction's hour",
                span,
                "this terminal's transactions in the window",
            ),
            FeatureSpec(
                f"terminal_risk_{w}d",
                f"share of terminal_nb_tx_{w}d known as fraud at the start of the transaction's "
                "hour (0 when the count is 0)",
                span,
                _TERM_SEES,
            ),
        ]
    return specs


def _fraud_age_specs() -> list[FeatureSpec]:
    w = FRAUD_AGE_WINDOW_DAYS
    span = f"[H - 24(D + {w}) h, H - 24D h), D = label delay"
    none = f"{NO_FRAUD_AGE_HOURS:.0f} when none is known"
    return [
        FeatureSpec(
            f"terminal_first_fraud_age_{w}d",
            "hours from the start of the transaction's hour back to the hour of the terminal's "
            f"earliest transaction of the {w}-day window known as fraud at that start (how long "
            f"a compromise has been running); {none}",
            span,
            _TERM_SEES,
        ),
        FeatureSpec(
            f"terminal_last_fraud_age_{w}d",
            "the same for the terminal's latest known fraud of the window (a compromise that "
            f"went quiet); {none}",
            span,
            _TERM_SEES,
        ),
    ]


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("amount", "transaction amount", "the transaction", "the transaction"),
    FeatureSpec(
        "tx_is_weekend",
        "1 if the transaction is on a Saturday or Sunday (UTC), else 0",
        "the transaction",
        "the transaction",
    ),
    FeatureSpec(
        "tx_is_night",
        "1 if the UTC hour of day is <= 6, else 0",
        "the transaction",
        "the transaction",
    ),
    FeatureSpec("tx_hour", "UTC hour of day, 0-23", "the transaction", "the transaction"),
    *_customer_specs(),
    FeatureSpec(
        "customer_amount_zscore_30d",
        "(amount - mean) / std of the customer's 30-day amounts (population std, this one "
        "included); 0 with fewer than 2 transactions or a std ~ 0 "
        f"(< {ZSCORE_MIN_RELATIVE_STD:g} x max(abs(mean), 1))",
        f"[H - {CUSTOMER_WINDOW_HOURS['30d']} h, H) + current hour so far",
        _CUST_SEES,
    ),
    FeatureSpec(
        "customer_secs_since_prev_tx",
        "seconds since the customer's previous transaction, capped at 30 days "
        f"({NO_PREV_TX_SECONDS:.0f} s, also the value when none is known); 0 for an equal "
        "timestamp",
        "the customer's previous transaction within 30 days",
        _CUST_SEES,
    ),
    FeatureSpec(
        "customer_small_tx_share_1d",
        f"share of the customer's 1-day transactions with amount < {SMALL_AMOUNT:g} (card testing)",
        "[H - 24 h, H) + current hour so far",
        _CUST_SEES,
    ),
    FeatureSpec(
        "customer_terminal_novelty",
        "1 if the customer has not used this terminal in the last 30 days (whole hours "
        "[H - 720 h, H) and earlier in hour H), else 0",
        "[H - 720 h, H) + current hour before this transaction",
        "this customer's (customer, terminal) pairs in the window",
    ),
    *_terminal_specs(),
    *_fraud_age_specs(),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
ID_COLUMNS = TRANSACTION_KEY_COLUMNS

_FEATURE_MODULES = ("state.py", "compute.py", "online.py")


def feature_code_hash() -> str:
    """sha256 of the source of the feature modules (model lineage: same hash, same features)."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _FEATURE_MODULES:
        path = here / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def feature_table_markdown() -> str:
    """The :data:`FEATURES` registry as a Markdown table (for the README)."""
    rows = ["| feature | description | window | may see |", "| --- | --- | --- | --- |"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows += [
        f"| `{f.name}` | {cell(f.description)} | {cell(f.window)} | {cell(f.sees)} |"
        for f in FEATURES
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Shared final step: raw window aggregates -> features
# --------------------------------------------------------------------------------------------


def _assemble(amount: np.ndarray, t_ns: np.ndarray, agg: dict[str, np.ndarray]) -> np.ndarray:
    """Feature matrix (rows x FEATURE_NAMES) from the per-transaction window aggregates."""
    n = len(amount)
    cols: dict[str, np.ndarray] = {}
    hour_of_day = (t_ns // HOUR_NS) % 24
    cols["amount"] = amount
    cols["tx_is_weekend"] = (((t_ns // DAY_NS) + 3) % 7 >= 5).astype(np.float64)
    cols["tx_is_night"] = (hour_of_day <= 6).astype(np.float64)
    cols["tx_hour"] = hour_of_day.astype(np.float64)
    cols["customer_nb_tx_1h"] = agg["cn_1h"].astype(np.float64)
    for w in ("1d", "7d", "30d"):
        cnt = agg[f"cn_{w}"].astype(np.float64)
        avg = agg[f"cs_{w}"] / cnt
        cols[f"customer_nb_tx_{w}"] = cnt
        cols[f"customer_avg_amount_{w}"] = avg
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[f"customer_amount_ratio_{w}"] = np.where(avg > 0, amount / avg, 0.0)
    cnt30 = agg["cn_30d"].astype(np.float64)
    mean = agg["cs_30d"] / cnt30
    var = np.maximum(agg["css_30d"] / cnt30 - mean * mean, 0.0)
    std = np.sqrt(var)
    ok = (cnt30 >= 2) & (std > ZSCORE_MIN_RELATIVE_STD * np.maximum(np.abs(mean), 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["customer_amount_zscore_30d"] = np.where(ok, (amount - mean) / std, 0.0)
    prev = agg["prev_ns"]
    known = prev != NO_TIME
    gap = np.where(known, t_ns - np.where(known, prev, 0), 0) / SECOND_NS
    cols["customer_secs_since_prev_tx"] = np.where(
        known, np.minimum(gap, NO_PREV_TX_SECONDS), NO_PREV_TX_SECONDS
    )
    cols["customer_small_tx_share_1d"] = agg["csmall_1d"] / agg["cn_1d"].astype(np.float64)
    cols["customer_terminal_novelty"] = np.where(agg["pair_seen"], 0.0, 1.0)
    for w in TERMINAL_WINDOW_DAYS:
        tn = agg[f"tn_{w}d"].astype(np.float64)
        cols[f"terminal_nb_tx_{w}d"] = tn
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[f"terminal_risk_{w}d"] = np.where(tn > 0, agg[f"tf_{w}d"] / tn, 0.0)
    first, last = fraud_ages(t_ns // HOUR_NS, agg["tfirst"], agg["tlast"])
    cols[f"terminal_first_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"] = first
    cols[f"terminal_last_fraud_age_{FRAUD_AGE_WINDOW_DAYS}d"] = last
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    for j, name in enumerate(FEATURE_NAMES):
        out[:, j] = cols[name]
    return out


def _frame(
    ids: np.ndarray,
    t_ns: np.ndarray,
    customers: np.ndarray,
    terminals: np.ndarray,
    matrix: np.ndarray,
) -> pd.DataFrame:
    df = pd.DataFrame(matrix, columns=list(FEATURE_NAMES))
    df.insert(0, "terminal_id", pd.array(terminals, dtype="string"))
    df.insert(0, "customer_id", pd.array(customers, dtype="string"))
    df.insert(0, "tx_datetime", pd.to_datetime(t_ns, utc=True))
    df.insert(0, "transaction_id", pd.array(ids, dtype="string"))
    return df


def empty_features() -> pd.DataFrame:
    none = np.zeros(0, dtype=object)
    matrix = np.zeros((0, len(FEATURE_NAMES)))
    return _frame(none, np.zeros(0, dtype=np.int64), none, none, matrix)


def _check_columns(df: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = set(required) - set(df.columns)
    if missing:
        raise ValueError(f"{what} lack columns {sorted(missing)}")


# --------------------------------------------------------------------------------------------
# Batch: full rebuild
# --------------------------------------------------------------------------------------------


def build_features(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    label_delay: timedelta = DEFAULT_LABEL_DELAY,
) -> pd.DataFrame:
    """Features of every transaction, one row each, in the order of ``transactions``.

    Columns: ``transaction_id``, ``tx_datetime``, ``customer_id``, ``terminal_id``, then
    :data:`FEATURE_NAMES` (float64, never NaN or inf). ``transaction_id`` must be unique.
    """
    _check_columns(transactions, TRANSACTION_INPUT, "transactions")
    _check_columns(labels, LABEL_INPUT, "labels")
    d = delay_hours(label_delay)
    n = len(transactions)
    if n == 0:
        return empty_features()
    ids = str_array(transactions["transaction_id"])
    customers = str_array(transactions["customer_id"])
    terminals = str_array(transactions["terminal_id"])
    cust, _ = pd.factorize(customers)
    term, term_uniques = pd.factorize(terminals)
    cust = cust.astype(np.int64)
    term = term.astype(np.int64)
    t_ns = to_utc_ns(transactions["tx_datetime"])
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    hours = t_ns // HOUR_NS
    h0 = int(hours.min())
    span = int(hours.max()) - h0 + 2  # offsets 0..span-2 are real hours, span-1 means "later"

    agg: dict[str, np.ndarray] = {}

    # ---- customer windows, in (customer, time, id) order ----
    perm = order_rows([cust], t_ns, ids)
    c, h, a, t = cust[perm], hours[perm], amount[perm], t_ns[perm]
    idx = np.arange(n)
    gs = group_starts(c)
    key = c * span + (h - h0)
    cum_s = group_cumsum(a, c)
    cum_ss = group_cumsum(a * a, c)
    cum_small = np.cumsum(a < SMALL_AMOUNT)
    sorted_agg: dict[str, np.ndarray] = {}
    for w, w_hours in CUSTOMER_WINDOW_HOURS.items():
        start = np.searchsorted(key, c * span + np.maximum(h - h0 - w_hours, 0), side="left")
        before = start > gs
        sorted_agg[f"cn_{w}"] = idx - start + 1
        if w != "1h":
            sorted_agg[f"cs_{w}"] = cum_s - np.where(before, cum_s[start - 1], 0.0)
        if w == "30d":
            sorted_agg["css_30d"] = cum_ss - np.where(before, cum_ss[start - 1], 0.0)
        if w == "1d":
            sorted_agg["csmall_1d"] = cum_small - np.where(start > 0, cum_small[start - 1], 0)
    sorted_agg["prev_ns"] = np.where(idx > gs, t[idx - 1], NO_TIME)
    # pairs: stable sort of the (customer, time, id) order by terminal within customer
    tm = term[perm]
    p2 = np.argsort(c * (len(term_uniques) + 1) + tm, kind="stable")
    pc, pt, ph = c[p2], tm[p2], h[p2]
    seen = np.zeros(n, dtype=bool)
    seen[1:] = (
        (pc[1:] == pc[:-1]) & (pt[1:] == pt[:-1]) & (ph[:-1] >= ph[1:] - CUSTOMER_HORIZON_HOURS)
    )
    pair_seen = np.empty(n, dtype=bool)
    pair_seen[p2] = seen
    sorted_agg["pair_seen"] = pair_seen
    for k, v in sorted_agg.items():
        out = np.empty(n, dtype=v.dtype)
        out[perm] = v
        agg[k] = out

    # ---- terminal windows, in (terminal, hour) order ----
    tkey = term * span + (hours - h0)
    tp = np.argsort(tkey, kind="stable")
    skey = tkey[tp]
    tq, hq = term[tp], hours[tp]
    base = tq * span
    segs = _batch_segments(transactions, labels, ids, term, hours)
    for w in TERMINAL_WINDOW_DAYS:
        lo = np.clip(hq - d - 24 * w - h0, 0, span - 1)
        hi = np.clip(hq - d - h0, 0, span - 1)
        tn = np.searchsorted(skey, base + hi) - np.searchsorted(skey, base + lo)
        # a fraud segment counts for hours [seg_lo, seg_hi] (see FraudSegments)
        seg_lo = np.maximum(segs.tx_hour + d + 1, segs.known_from)
        seg_hi = np.minimum(segs.tx_hour + d + 24 * w, segs.known_until - 1)
        ok = seg_lo <= seg_hi
        lkeys = np.sort(segs.term[ok] * span + np.clip(seg_lo[ok] - h0, 0, span - 1))
        ukeys = np.sort(segs.term[ok] * span + np.clip(seg_hi[ok] - h0, 0, span - 1))
        q = base + (hq - h0)
        started = np.searchsorted(lkeys, q, side="right") - np.searchsorted(lkeys, base)
        ended = np.searchsorted(ukeys, q, side="left") - np.searchsorted(ukeys, base)
        tn_out = np.empty(n, dtype=np.int64)
        tf_out = np.empty(n, dtype=np.int64)
        tn_out[tp] = tn
        tf_out[tp] = started - ended
        agg[f"tn_{w}d"] = tn_out
        agg[f"tf_{w}d"] = tf_out
        if w == FRAUD_AGE_WINDOW_DAYS:
            first, last = _first_last_fraud(skey, segs, seg_lo, seg_hi, ok, h0, span)
            agg["tfirst"], agg["tlast"] = np.empty(n, np.int64), np.empty(n, np.int64)
            agg["tfirst"][tp], agg["tlast"][tp] = first, last

    matrix = _assemble(amount, t_ns, agg)
    return _frame(ids, t_ns, customers, terminals, matrix)


def _first_last_fraud(skey, segs, seg_lo, seg_hi, ok, h0: int, span: int):
    """Per query (``skey``, in (terminal, hour) order): the earliest and the latest transaction
    hour of the fraud segments in force for it. Each segment is in force over the hours
    [seg_lo, seg_hi]; the queries of its terminal in that range are found by ``searchsorted``,
    and a segment reaches only the few tens of queries of its terminal inside the window."""
    first = np.full(len(skey), NO_FIRST_FRAUD_HOUR, dtype=np.int64)
    last = np.full(len(skey), NO_LAST_FRAUD_HOUR, dtype=np.int64)
    term, tx_hour = segs.term[ok], segs.tx_hour[ok]
    start = np.searchsorted(skey, term * span + np.clip(seg_lo[ok] - h0, 0, span), "left")
    stop = np.searchsorted(skey, term * span + np.clip(seg_hi[ok] - h0, -1, span - 1), "right")
    reach = np.maximum(stop - start, 0)
    total = int(reach.sum())
    if total:
        seg = np.repeat(np.arange(len(reach)), reach)
        rows = start[seg] + np.arange(total) - np.repeat(np.cumsum(reach) - reach, reach)
        np.minimum.at(first, rows, tx_hour[seg])
        np.maximum.at(last, rows, tx_hour[seg])
    return first, last


def _batch_segments(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    ids: np.ndarray,
    term: np.ndarray,
    hours: np.ndarray,
):
    lab = labels.loc[:, list(LABEL_INPUT)]
    is_fraud = lab["is_fraud"].to_numpy().astype(np.int8)
    fraud_ids = pd.unique(str_array(lab["transaction_id"].to_numpy()[is_fraud == 1]))
    lab = lab[lab["transaction_id"].isin(fraud_ids)]
    where = np.flatnonzero(pd.Series(ids).isin(fraud_ids).to_numpy())
    pos = pd.Index(ids[where]).get_indexer(str_array(lab["transaction_id"]))
    found = pos >= 0
    lab = lab.loc[found]
    tx_rows = where[pos[found]]
    records = pd.DataFrame(
        {
            "transaction_id": str_array(lab["transaction_id"]),
            "term": term[tx_rows],
            "tx_hour": hours[tx_rows],
            "known_ns": to_utc_ns(lab["known_at"]),
            "is_fraud": lab["is_fraud"].to_numpy().astype(np.int8),
        }
    )
    return fraud_segments(relevant_label_records(records))


# --------------------------------------------------------------------------------------------
# Incremental: one hour from a FeatureState
# --------------------------------------------------------------------------------------------


def advance_hour(
    state: FeatureState,
    transactions: pd.DataFrame,
    labels: pd.DataFrame | None,
    hour_key: str,
) -> tuple[pd.DataFrame, FeatureState]:
    """Features of the transactions of hour ``hour_key``, and the state after that hour.

    ``labels``: the labels that became known since the last update (feeding one twice is
    harmless), joined with their transaction's ``terminal_id`` and ``tx_datetime``
    (:func:`fraudloop.features.state.attach_transactions`). They are added BEFORE the features are
    computed; each counts only for hours starting at or after its ``known_at``. Every transaction
    must lie in the hour; hours must advance (gaps allowed). ``state`` is not modified.
    """
    _check_columns(transactions, TRANSACTION_INPUT, "transactions")
    hour = hour_index(hour_key)
    if state.hour is not None and hour <= state.hour:
        raise ValueError(f"state is already at {state.hour_key}; cannot advance to {hour_key}")
    new = state.with_labels(labels) if labels is not None and len(labels) else state.copy()
    ids = str_array(transactions["transaction_id"])
    customers = str_array(transactions["customer_id"])
    terminals = str_array(transactions["terminal_id"])
    t_ns = to_utc_ns(transactions["tx_datetime"])
    if len(t_ns) and ((t_ns // HOUR_NS) != hour).any():
        raise ValueError(f"transactions outside hour {hour_key}")
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    cust = new.customers.encode(customers)
    term = new.terminals.encode(terminals)
    if len(ids):
        matrix = hour_feature_matrix(new, hour, cust, term, amount, t_ns, ids)
        features = _frame(ids, t_ns, customers, terminals, matrix)
    else:
        features = empty_features()
    hours = np.full(len(ids), hour, dtype=np.int64)
    new.add_hour(hour, build_tables(hours, cust, term, amount, t_ns, ids))
    return features, new


def _gather(
    units: dict,
    hour: int,
    back_min: int,
    back_max: int,
    queried: np.ndarray,
    pos: np.ndarray,
    code: str,
    cols: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rows of hours ``hour - back_max .. hour - back_min`` whose entity is queried.

    ``queried``: the sorted entity codes asked for; ``pos[queried] == arange``. Hour chunks are
    scanned; day blocks (sorted by entity) are cut with ``searchsorted``, so the work follows the
    rows of the queried entities, not the size of the state. Returns (query position, hours back,
    {column: values}); for each entity its rows come in ascending hour order (a fixed summation
    order, whatever the unit layout).
    """
    lo_h, hi_h = hour - back_max, hour - back_min
    pos_parts, back_parts = [], []
    col_parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    for (first, last), rows in sorted(units.items()):
        if last < lo_h or first > hi_h:
            continue
        if first == last:  # one hour: scan
            p = pos[rows.cols[code]]
            idx = np.flatnonzero(p >= 0)
            p = p[idx]
        else:  # a day block sorted by entity: contiguous ranges
            keys = rows.cols[code]
            lo = np.searchsorted(keys, queried, side="left")
            cnt = np.searchsorted(keys, queried, side="right") - lo
            total = int(cnt.sum())
            if total == 0:
                continue
            p = np.repeat(np.arange(len(queried)), cnt)
            idx = np.arange(total) + np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
            if first < lo_h or last > hi_h:
                h = rows.hour[idx]
                m = (h >= lo_h) & (h <= hi_h)
                idx, p = idx[m], p[m]
        if len(idx) == 0:
            continue
        pos_parts.append(p)
        back_parts.append(hour - rows.hour[idx])
        for c in cols:
            col_parts[c].append(rows.cols[c][idx])
    if not pos_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, {c: empty for c in cols}
    return (
        np.concatenate(pos_parts),
        np.concatenate(back_parts),
        {c: np.concatenate(v) for c, v in col_parts.items()},
    )


def _band_sums(pos, band, values, n_bands: int, n_pos: int) -> np.ndarray:
    """(n_bands, n_pos) sums of ``values`` (rows added in their order)."""
    slot = band * n_pos + pos
    return np.bincount(slot, weights=values, minlength=n_bands * n_pos).reshape(n_bands, n_pos)


def hour_feature_matrix(
    state: FeatureState,
    hour: int,
    cust: np.ndarray,
    term: np.ndarray,
    amount: np.ndarray,
    t_ns: np.ndarray,
    ids: np.ndarray,
) -> np.ndarray:
    """Feature matrix of transactions of one hour (rows in input order) from ``state``.

    ``state`` must hold the hours before ``hour`` and the labels; ``cust``/``term`` are its codes.
    """
    n = len(ids)
    d = state.label_delay_hours
    perm = order_rows([cust], t_ns, ids)
    c, tm, a, t = cust[perm], term[perm], amount[perm], t_ns[perm]
    idx = np.arange(n)
    gs = group_starts(c)
    in_n = idx - gs + 1
    in_s = group_cumsum(a, c)
    in_ss = group_cumsum(a * a, c)
    cum_small = np.cumsum(a < SMALL_AMOUNT)
    in_small = cum_small - np.where(gs > 0, cum_small[gs - 1], 0)
    prev_in = np.where(idx > gs, t[idx - 1], NO_TIME)

    # ---- customer buckets of earlier hours ----
    uq = np.unique(c)
    qn = len(uq)
    qpos = np.full(len(state.customers), -1, dtype=np.int64)
    qpos[uq] = np.arange(qn)
    cbounds = np.array([0, *CUSTOMER_WINDOW_HOURS.values()])  # bands 1h, ..1d, ..7d, ..30d
    nb = len(cbounds) - 1
    cols = ("n", "s", "ss", "small", "last_ns")
    p, back, v = _gather(state.tables["cust"], hour, 1, cbounds[-1], uq, qpos, "cust", cols)
    band = np.searchsorted(cbounds, back, side="left") - 1
    bn, bs, bss, bsmall = (_band_sums(p, band, v[x], nb, qn) for x in ("n", "s", "ss", "small"))
    last = np.full(qn, NO_TIME, dtype=np.int64)
    np.maximum.at(last, p, v["last_ns"].astype(np.int64))
    q = qpos[c]
    agg: dict[str, np.ndarray] = {}
    for b, w in enumerate(CUSTOMER_WINDOW_HOURS):
        agg[f"cn_{w}"] = bn[: b + 1].sum(axis=0).astype(np.int64)[q] + in_n
        if w != "1h":
            agg[f"cs_{w}"] = _band_total(bs, b)[q] + in_s
    agg["css_30d"] = _band_total(bss, nb - 1)[q] + in_ss
    agg["csmall_1d"] = bsmall[:2].sum(axis=0).astype(np.int64)[q] + in_small
    agg["prev_ns"] = np.where(prev_in != NO_TIME, prev_in, last[q])

    # ---- customer-terminal pairs ----
    nt = len(state.terminals) + 1
    qkeys = c * nt + tm
    _, _, v = _gather(
        state.tables["pair"], hour, 1, CUSTOMER_HORIZON_HOURS, uq, qpos, "cust", ("cust", "term")
    )
    ut = np.unique(tm)
    tn_q = len(ut)
    tpos = np.full(len(state.terminals), -1, dtype=np.int64)
    tpos[ut] = np.arange(tn_q)
    both = tpos[v["term"]] >= 0  # only pairs whose terminal is queried too can match
    seen_before = np.isin(qkeys, v["cust"][both] * nt + v["term"][both])
    p2 = np.argsort(qkeys, kind="stable")
    k2 = qkeys[p2]
    dup = np.zeros(n, dtype=bool)
    dup[1:] = k2[1:] == k2[:-1]
    seen_in = np.empty(n, dtype=bool)
    seen_in[p2] = dup
    agg["pair_seen"] = seen_before | seen_in

    # ---- terminal buckets and fraud labels ----
    tbounds = np.array([d] + [d + 24 * w for w in TERMINAL_WINDOW_DAYS])
    ntb = len(tbounds) - 1
    p, back, v = _gather(
        state.tables["term"], hour, d + 1, int(tbounds[-1]), ut, tpos, "term", ("n",)
    )
    band = np.searchsorted(tbounds, back, side="left") - 1
    tb = _band_sums(p, band, v["n"], ntb, tn_q)
    segs = state.segments
    live = (segs.known_from <= hour) & (hour < segs.known_until) & (tpos[segs.term] >= 0)
    tq = tpos[tm]
    for b, w in enumerate(TERMINAL_WINDOW_DAYS):
        agg[f"tn_{w}d"] = tb[: b + 1].sum(axis=0).astype(np.int64)[tq]
        inside = live & (segs.tx_hour >= hour - d - 24 * w) & (segs.tx_hour < hour - d)
        at = tpos[segs.term[inside]]
        agg[f"tf_{w}d"] = np.bincount(at, minlength=tn_q)[tq]
        if w == FRAUD_AGE_WINDOW_DAYS:
            first = np.full(tn_q, NO_FIRST_FRAUD_HOUR, dtype=np.int64)
            last = np.full(tn_q, NO_LAST_FRAUD_HOUR, dtype=np.int64)
            np.minimum.at(first, at, segs.tx_hour[inside])
            np.maximum.at(last, at, segs.tx_hour[inside])
            agg["tfirst"], agg["tlast"] = first[tq], last[tq]

    matrix = _assemble(a, t, agg)
    out = np.empty_like(matrix)
    out[perm] = matrix
    return out


def _band_total(band_values: np.ndarray, last_band: int) -> np.ndarray:
    total = band_values[0].copy()
    for b in range(1, last_band + 1):
        total = total + band_values[b]
    return total
