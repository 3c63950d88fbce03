"""Bi-temporal fraud labels: the labels that became known on a day, joined with what the feature
state needs of their transaction (time, customer, terminal). Written as the ``fraud_labels``
table, which feeds terminal risk only from the hour after each label's ``known_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.core.store import ObjectStore
from fraudloop.features.pipeline import hour_transactions


class TransactionLookup:
    """Reads the (id, time, customer, terminal) of hourly raw partitions once per process run,
    so a range of label days does not re-read the same hours for every day."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self._cache: dict[str, pd.DataFrame | None] = {}

    def hour(self, key: str) -> pd.DataFrame | None:
        if key not in self._cache:
            frame, _ = hour_transactions(self.store, key)
            self._cache[key] = (
                None
                if frame is None
                else frame[["transaction_id", "tx_datetime", "customer_id", "terminal_id"]]
            )
        return self._cache[key]

    def window(self, day: str, lookback_days: int) -> pd.DataFrame:
        end = pd.Timestamp(day, tz="UTC") + timedelta(days=1)
        frames = [
            f
            for f in (
                self.hour(ts.strftime(HOUR_KEY_FORMAT))
                for ts in pd.date_range(
                    end - timedelta(days=lookback_days + 1), end - timedelta(hours=1), freq="h"
                )
            )
            if f is not None
        ]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(
                columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id"]
            )
        )


@dataclass
class LabelResult:
    day: str
    rows: int
    frauds: int
    unplaced: int  # labels whose transaction is not in a valid raw partition (yet)
    sha256: str
    key: str
    created: bool = True  # False when the same version was already current


def build_fraud_labels(
    store: ObjectStore, day: str, lookback_days: int, lookup: TransactionLookup | None = None
) -> LabelResult:
    """Bi-temporal labels of `day` joined with their transaction's time, customer and terminal.

    Raises `tables.PartitionQuarantined` / `tables.PartitionMissing` when the day's raw labels
    cannot be used. Labels of transactions that are not (or not yet) in a valid raw hour are
    counted as `unplaced`: they cannot feed terminal risk until that hour is ingested.
    """
    labels = tables.read_partition(store, "labels", day)
    lookup = lookup or TransactionLookup(store)
    transactions = lookup.window(day, lookback_days)
    joined = labels[["transaction_id", "is_fraud", "known_at"]].merge(
        transactions, on="transaction_id", how="inner"
    )
    pointer = tables.read_pointer(store, "labels", day)
    version = tables.write_partition(
        store,
        "fraud_labels",
        day,
        joined,
        [{"key": pointer["key"], "sha256": pointer["sha256"], "size": pointer.get("bytes")}],
    )
    return LabelResult(
        day,
        version.rows,
        int(joined["is_fraud"].sum()),
        len(labels) - len(joined),
        version.sha256,
        version.key,
        version.created,
    )
