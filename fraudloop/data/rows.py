"""Row-level checks: which rows of a delivery are invalid, and why, one reason per check.

Ingestion rejects an invalid row on its own instead of the whole file it came in (one $0.00
account verification must not cost an hour of transactions); the file-level backstop in
:mod:`fraudloop.data.ingest` still quarantines a file whose rejected share passes the policy's
threshold, because then the file itself is wrong (shifted columns, a wrong unit, a broken
export), not a few of its rows.

Every check is vectorised over the frame (a delivery is up to millions of rows) and yields a
boolean mask; :class:`RowVerdict` keeps the masks by reason so the quarantine record can say
how many rows each check rejected and, for each rejected row, every reason it failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraudloop.core.hours import hour_start

ID_COLUMNS = ("transaction_id", "customer_id", "terminal_id")
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
# an id that reads as a decimal amount ("66.96"): the columns of the file are shifted
AMOUNT_LIKE = r"[+-]?\d*\.\d+"


@dataclass
class RowVerdict:
    """The rows of one frame that are rejected, by reason (masks aligned with the frame)."""

    rows: int
    by_reason: dict[str, np.ndarray] = field(default_factory=dict)
    #: rows neither accepted nor rejected: they wait for something outside the file (a label
    #: whose transaction hour could not be read); a rejection of the same row wins
    held_by_reason: dict[str, np.ndarray] = field(default_factory=dict)

    def reject(self, mask, reason: str) -> None:
        self._add(self.by_reason, mask, reason)

    def hold(self, mask, reason: str) -> None:
        self._add(self.held_by_reason, mask, reason)

    def _add(self, masks: dict[str, np.ndarray], mask, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            masks[reason] = masks.get(reason, np.zeros(self.rows, bool)) | mask

    @property
    def rejected(self) -> np.ndarray:
        return self._any(self.by_reason)

    @property
    def held(self) -> np.ndarray:
        return self._any(self.held_by_reason) & ~self.rejected

    def _any(self, masks: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(self.rows, dtype=bool)
        for mask in masks.values():
            out |= mask
        return out

    def reasons_of(self, row: int) -> list[str]:
        masks = self.by_reason if self.rejected[row] else self.held_by_reason
        return [reason for reason, mask in masks.items() if mask[row]]

    def counts(self, within: np.ndarray | None = None) -> dict[str, int]:
        """Rejected rows per reason (restricted to the rows of ``within``), largest first."""
        return self._counts(self.by_reason, within)

    def held_counts(self, within: np.ndarray | None = None) -> dict[str, int]:
        """Held (not rejected) rows per reason, like :meth:`counts`."""
        held = self.held
        return self._counts({r: m & held for r, m in self.held_by_reason.items()}, within)

    @staticmethod
    def _counts(masks: dict[str, np.ndarray], within: np.ndarray | None) -> dict[str, int]:
        counts = {
            reason: int((mask & within).sum() if within is not None else mask.sum())
            for reason, mask in masks.items()
        }
        return dict(sorted(((r, c) for r, c in counts.items() if c), key=lambda rc: -rc[1]))


def _mask(series: pd.Series) -> np.ndarray:
    return series.fillna(False).to_numpy(dtype=bool)


def check_ids(frame: pd.DataFrame, verdict: RowVerdict, columns, id_pattern: str) -> None:
    """Ids are present, free of control characters (an embedded line break in a quoted CSV
    field is one), match the declared id pattern, and do not read like an amount."""
    for column in columns:
        values = frame[column].astype("string")
        missing = values.isna().to_numpy()
        verdict.reject(missing, f"{column} is empty")
        control = _mask(values.str.contains(CONTROL_CHARACTERS, regex=True))
        verdict.reject(control, f"{column} contains a control character (line break, tab, NUL)")
        amount_like = _mask(values.str.fullmatch(AMOUNT_LIKE))
        verdict.reject(amount_like, f"{column} looks like an amount, not an id (shifted columns?)")
        malformed = ~missing & ~control & ~amount_like & ~_mask(values.str.fullmatch(id_pattern))
        verdict.reject(malformed, f"{column} does not match the id pattern {id_pattern}")


def check_unique_in_partition(frame: pd.DataFrame, verdict: RowVerdict) -> None:
    """Every occurrence of a repeated id is rejected: which one is the real transaction cannot
    be known, and keeping one would pick at random."""
    ids = frame["transaction_id"].astype("string")
    repeated = ids.notna().to_numpy() & ids.duplicated(keep=False).to_numpy()
    verdict.reject(repeated, "transaction_id appears more than once in the partition")


def check_amounts(amounts: pd.Series, verdict: RowVerdict, amount_max: float) -> None:
    """Zero is a valid amount (account verifications); negative, non-finite and absurd ones
    are not."""
    values = amounts.to_numpy(dtype="float64", na_value=np.nan)
    verdict.reject(np.isnan(values), "amount is empty or not a number")
    verdict.reject(np.isinf(values), "amount is not finite")
    verdict.reject(values < 0, "amount is negative")
    verdict.reject(np.isfinite(values) & (values > amount_max), f"amount is over {amount_max:g}")


def check_times(
    times: pd.Series, verdict: RowVerdict, column: str, start: pd.Timestamp, end: pd.Timestamp
) -> None:
    missing = times.isna().to_numpy()
    verdict.reject(missing, f"{column} is empty or not an ISO 8601 timestamp")
    outside = ~missing & _mask((times < start) | (times >= end))
    label = f"[{start:%Y-%m-%dT%H:%M}Z, {end:%Y-%m-%dT%H:%M}Z)"
    verdict.reject(outside, f"{column} is outside the partition {label}")


def transaction_verdict(
    frame: pd.DataFrame,
    *,
    hour_start: pd.Timestamp,
    amount_max: float,
    id_pattern: str,
    ingested_elsewhere: pd.Series | None = None,
) -> RowVerdict:
    """The rejected rows of an hour of canonical transactions (in any row order).

    ``ingested_elsewhere`` maps a transaction id to the other hour that already holds it
    (from :mod:`fraudloop.data.id_index`); such a row is a re-delivery of another hour's
    transaction, not a new one.
    """
    verdict = RowVerdict(len(frame))
    check_ids(frame, verdict, ID_COLUMNS, id_pattern)
    check_unique_in_partition(frame, verdict)
    check_amounts(frame["amount"], verdict, amount_max)
    check_times(
        frame["tx_datetime"], verdict, "tx_datetime", hour_start, hour_start + pd.Timedelta(hours=1)
    )
    if ingested_elsewhere is not None and len(ingested_elsewhere):
        hours = frame["transaction_id"].astype("string").map(ingested_elsewhere)
        for hour in sorted(hours.dropna().unique()):
            verdict.reject(_mask(hours == hour), f"transaction_id already ingested in hour {hour}")
    return verdict


def label_verdict(
    frame: pd.DataFrame,
    *,
    day_start: pd.Timestamp,
    id_pattern: str,
    transaction_times: pd.Series | None = None,
    rejected_transactions: set[str] | None = None,
    known_ids: pd.Index | None = None,
    unreadable_hours: Sequence[str] = (),
    hold_limit: int | None = None,
) -> RowVerdict:
    """The rejected (and held) rows of a day of canonical labels.

    ``transaction_times`` maps a transaction id to its ``tx_datetime``: a label cannot be known
    before its transaction happened (``known_at < tx_datetime`` is rejected, whatever the day).
    A label of a transaction whose row was rejected (``rejected_transactions``) is rejected with
    it: it cannot be used, and the label day must not fail for the transactions' fault.

    A label whose id is not among ``known_ids`` while an hour of ``unreadable_hours`` (quarantined
    whole, its ids unknown) started before the label was known may be a label of that hour: it
    is held, not rejected, and the reason names the hour(s) it waits for
    (:func:`hold_for_unreadable_hours`).
    """
    verdict = RowVerdict(len(frame))
    check_ids(frame, verdict, ("transaction_id",), id_pattern)
    check_unique_in_partition(frame, verdict)
    flags = frame["is_fraud"]
    verdict.reject(flags.isna().to_numpy(), "is_fraud is empty or not 0, 1, true or false")
    verdict.reject(_mask(flags.notna() & ~flags.isin([0, 1])), "is_fraud is not 0 or 1")
    check_times(frame["known_at"], verdict, "known_at", day_start, day_start + pd.Timedelta(days=1))
    if transaction_times is not None and len(transaction_times):
        tx_time = frame["transaction_id"].astype("string").map(transaction_times)
        early = _mask(tx_time.notna() & (frame["known_at"] < tx_time))
        verdict.reject(early, "known_at is before the transaction's tx_datetime")
    if rejected_transactions:
        orphan = _mask(frame["transaction_id"].astype("string").isin(rejected_transactions))
        verdict.reject(orphan, "its transaction was rejected at ingestion")
    if known_ids is not None and unreadable_hours:
        hold_for_unreadable_hours(frame, verdict, known_ids, unreadable_hours, hold_limit)
    return verdict


def held_reason(hours: Sequence[str]) -> str:
    """Why a label is held, naming the hour(s) it waits for (one reason per set of hours)."""
    which = f"hour {hours[0]}" if len(hours) == 1 else f"one of the hours {', '.join(hours)}"
    return (
        f"held until transactions {which} is ingested (its transaction ids cannot be read: "
        "quarantined whole, or landed and not ingested yet)"
    )


def hold_for_unreadable_hours(
    frame: pd.DataFrame,
    verdict: RowVerdict,
    known_ids: pd.Index,
    unreadable_hours: Sequence[str],
    hold_limit: int | None = None,
) -> None:
    """Hold the labels of unknown transactions that may belong to an unreadable hour.

    Which hour a label belongs to cannot be told (labels carry no ``tx_datetime``): a label
    waits for every unreadable hour that began before it was known. More waiting labels than
    ``hold_limit`` (what those hours could have held, from the same hours on earlier days) are
    not that hour's labels: nothing is held, and the known-ids check judges them as usual.
    """
    ids = frame["transaction_id"].astype("string")
    unknown = _mask(ids.notna() & ~ids.isin(known_ids)) & ~verdict.rejected
    if not unknown.any():
        return
    starts = pd.DatetimeIndex([hour_start(h) for h in unreadable_hours]).as_unit("ns")
    known_at = pd.DatetimeIndex(frame["known_at"]).as_unit("ns")
    # per row, how many of the (sorted) hours began at or before its known_at
    order = np.argsort(starts.asi8)
    hours = [unreadable_hours[i] for i in order]
    begun = np.searchsorted(starts.asi8[order], known_at.asi8, side="right")
    begun[known_at.isna()] = 0
    waiting = unknown & (begun > 0)
    if hold_limit is not None and waiting.sum() > hold_limit:
        return
    for count in np.unique(begun[waiting]):
        verdict.hold(waiting & (begun == count), held_reason(hours[:count]))
