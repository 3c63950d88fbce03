"""Hourly feature partitions from raw partitions, incrementally, with daily state checkpoints.

The feature state (per-entity hourly aggregates, `fraudloop.features.state`) is carried from hour
to hour. A checkpoint of it is kept per day (``features/state/<day>``: the state after the last
hour of the previous day, before that day's labels), so computing any hour costs at most one
checkpoint load plus the hours of its own day, and a range backfill is one sequential pass.
Checkpoints and the latest state are manifests of immutable pieces
(`fraudloop.features.state_blocks`): a day's checkpoint writes only the day block that is new.

Labels are fed per day: the bi-temporal ``fraud_labels`` of day D (labels whose ``known_at`` is in
D) are added at D's first hour; the features use a label only from the first hour starting at or
after its ``known_at``, so feeding early is leak-free.

A transactions hour that is quarantined or missing is treated as having no transactions (the
chain goes on), and its own feature partition is marked blocked with the upstream reason; when the
feed is fixed, the raw partition gets a new version and a backfill from that hour recomputes
everything downstream of it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from fraudloop.core import tables
from fraudloop.core.errors import FeatureError
from fraudloop.core.hours import DAY_KEY_FORMAT, HOUR_KEY_FORMAT, hour_start
from fraudloop.core.schema import TRANSACTION_COLUMNS
from fraudloop.core.store import (
    ObjectNotFound,
    ObjectStore,
    load_blob,
    load_pointer,
    publish_blob,
    sha256_hex,
)
from fraudloop.features.compute import FEATURE_NAMES, advance_hour, build_features
from fraudloop.features.feature_store import FEATURESTORE_PREFIX, publish_state
from fraudloop.features.state import FeatureState
from fraudloop.features.state_blocks import state_from_blob, sweep_pieces, write_state

CHECKPOINT_PREFIX = "features/state"
TX_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]


@dataclass
class HourResult:
    hour: str
    status: str  # "valid" | "blocked"
    rows: int = 0
    sha256: str | None = None
    key: str | None = None
    reason: str | None = None
    sources: list[dict] = field(default_factory=list)
    # per-feature mean/std/min/max and null count of the written rows, so callers can report
    # them without reading the partition back
    summary: pd.DataFrame | None = None
    null_values: int = 0


@dataclass
class FeatureRun:
    hours: list[HourResult]
    state: FeatureState
    state_hour: str
    seconds: float
    checkpoints_written: list[str] = field(default_factory=list)


LATEST_PREFIX = f"{CHECKPOINT_PREFIX}/latest"


def publish_latest_state(store: ObjectStore, state: FeatureState, state_hour: str) -> dict:
    """Keep the newest state computed so far (the online store is published from it)."""
    return publish_state(store, LATEST_PREFIX, state, state_hour)


def sweep_state_pieces(store: ObjectStore, grace_hours: float) -> dict:
    """Delete the state pieces that neither a checkpoint, the latest state, the online store nor a
    staging test's state names any more (see :func:`sweep_pieces`)."""
    return sweep_pieces(store, (CHECKPOINT_PREFIX, FEATURESTORE_PREFIX), grace_hours * 3600)


def load_latest_state(store: ObjectStore) -> tuple[FeatureState, dict]:
    found = load_blob(store, LATEST_PREFIX)
    if found is None:
        raise LookupError("no feature state yet: materialize transaction_features first")
    return state_from_blob(store, found[0]), found[1]


def checkpoint_prefix(day: str) -> str:
    return f"{CHECKPOINT_PREFIX}/{day}"


def save_checkpoint(store: ObjectStore, day: str, state: FeatureState) -> dict:
    """Store the state as of the start of `day`. If that changes an existing checkpoint (late
    data was recomputed), every later checkpoint is now wrong and is dropped, so the next run
    past it rebuilds from history instead of continuing from a stale state."""
    before = load_pointer(store, checkpoint_prefix(day))
    manifest, written = write_state(store, state)
    pointer = publish_blob(
        store,
        checkpoint_prefix(day),
        manifest,
        {"day": day, "state_hour": state.hour, "layout": "pieces", **written},
    )
    if before is not None and before.get("sha256") != pointer["sha256"]:
        for info in store.list(f"{CHECKPOINT_PREFIX}/"):
            later = info.key[len(CHECKPOINT_PREFIX) + 1 :].split("/", 1)[0]
            if later != "latest" and later > day:
                store.delete(info.key)
    return pointer


def load_checkpoint(store: ObjectStore, day: str) -> tuple[FeatureState, dict] | None:
    found = load_blob(store, checkpoint_prefix(day))
    return None if found is None else (state_from_blob(store, found[0]), found[1])


def _nohour_transactions() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TRANSACTION_COLUMNS.items()})


def _day(ts: pd.Timestamp) -> str:
    return ts.strftime(DAY_KEY_FORMAT)


def _hours(first: pd.Timestamp, last: pd.Timestamp) -> list[pd.Timestamp]:
    return list(pd.date_range(first, last, freq="h"))


def hour_transactions(store: ObjectStore, hour: str) -> tuple[pd.DataFrame | None, dict]:
    """The hour's valid transactions (canonical columns) and a source record, or None + reason."""
    try:
        frame = tables.read_partition(store, "transactions", hour)
    except tables.PartitionQuarantined as error:
        return None, {
            "table": "transactions",
            "partition": hour,
            "status": "quarantined",
            "reason": error.reason,
        }
    except tables.PartitionMissing:
        return None, {
            "table": "transactions",
            "partition": hour,
            "status": "missing",
            "reason": "nothing was ingested for this hour",
        }
    pointer = tables.read_pointer(store, "transactions", hour)
    return frame[TX_COLUMNS], {
        "table": "transactions",
        "partition": hour,
        "sha256": pointer["sha256"],
    }


def _labels_of_day(store: ObjectStore, day: str) -> tuple[pd.DataFrame | None, dict]:
    try:
        frame = tables.read_partition(store, "fraud_labels", day)
    except tables.TableError as error:
        return None, {
            "table": "fraud_labels",
            "partition": day,
            "status": "unavailable",
            "reason": str(error),
        }
    pointer = tables.read_pointer(store, "fraud_labels", day)
    return frame, {"table": "fraud_labels", "partition": day, "sha256": pointer["sha256"]}


def rebuild_state(
    store: ObjectStore, day: str, label_delay: timedelta, history_start: str
) -> FeatureState:
    """The state as of the start of `day` from raw history, in one vectorised pass.

    Used when no checkpoint exists (a first run, or checkpoints were pruned); equal to rolling
    hour by hour from `history_start` (`FeatureState.from_history` guarantees byte equality).
    """
    start = pd.Timestamp(day, tz="UTC")
    if start <= pd.Timestamp(history_start, tz="UTC"):
        return FeatureState.empty(label_delay)
    horizon = FeatureState.empty(label_delay).terminal_horizon_hours
    first = max(start - timedelta(hours=horizon), pd.Timestamp(history_start, tz="UTC"))
    frames = []
    for ts in _hours(first, start - timedelta(hours=1)):
        frame, _ = hour_transactions(store, ts.strftime(HOUR_KEY_FORMAT))
        if frame is not None:
            frames.append(frame)
    label_frames = []
    for ts in pd.date_range(first.floor("D"), start - timedelta(days=1), freq="D"):
        labels, _ = _labels_of_day(store, _day(ts))
        if labels is not None:
            label_frames.append(labels[["transaction_id", "is_fraud", "known_at"]])
    transactions = pd.concat(frames, ignore_index=True) if frames else _nohour_transactions()
    labels = (
        pd.concat(label_frames, ignore_index=True)
        if label_frames
        else pd.DataFrame(columns=["transaction_id", "is_fraud", "known_at"])
    )
    last_hour = (start - timedelta(hours=1)).strftime(HOUR_KEY_FORMAT)
    return FeatureState.from_history(transactions, labels, last_hour, label_delay=label_delay)


def _day_start_state(
    store: ObjectStore, day: str, label_delay: timedelta, history_start: str
) -> tuple[FeatureState, str, list[str]]:
    """The checkpoint of `day` (rebuilt from raw history and saved if missing): (state, its
    sha256, checkpoints written)."""
    loaded = load_checkpoint(store, day)
    if loaded is not None:
        return loaded[0], loaded[1]["sha256"], []
    state = rebuild_state(store, day, label_delay, history_start)
    return state, save_checkpoint(store, day, state)["sha256"], [day]


def state_before(
    store: ObjectStore,
    hour_key: str,
    *,
    label_delay: timedelta = timedelta(days=7),
    history_start: str = "2018-04-01",
) -> FeatureState:
    """The feature state as of the start of hour `hour_key`, built from exactly the checkpoint
    the stored feature partition of that hour was computed from (its `feature_state` source),
    advanced over the hours before it: what the online store held when that hour's transactions
    arrived. Staging tests replay the hour against it and compare with the stored features.

    Pinning the checkpoint by sha256 matters: a features run recomputing the day (late labels)
    replaces the checkpoint, and a state from the new one would not match the partition written
    from the old one. `StaleCheckpoint` if that checkpoint is no longer kept.
    """
    start = hour_start(hour_key)
    day = _day(start.floor("D"))
    pointer = tables.read_pointer(store, "transaction_features", hour_key) or {}
    sources = pointer.get("sources", [])
    pinned = next((s["sha256"] for s in sources if s.get("table") == "feature_state"), None)
    if pinned is None:
        state = _day_start_state(store, day, label_delay, history_start)[0]
    else:
        key = f"{checkpoint_prefix(day)}/{pinned}.bin"
        try:
            data = store.get_bytes(key)
        except ObjectNotFound:
            raise StaleCheckpoint(
                f"the checkpoint {key} that {hour_key}'s features were computed from is gone "
                "(the day was recomputed since): pick another hour or retry"
            ) from None
        if sha256_hex(data) != pinned:
            raise StaleCheckpoint(f"{key} does not match its sha256")
        state = state_from_blob(store, data)
    for ts in _hours(start.floor("D"), start - timedelta(hours=1)):
        key = ts.strftime(HOUR_KEY_FORMAT)
        transactions, _ = hour_transactions(store, key)
        labels = _labels_of_day(store, _day(ts))[0] if ts.hour == 0 else None
        _, state = advance_hour(
            state, transactions if transactions is not None else _nohour_transactions(), labels, key
        )
    return state


def column_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std, min and max of each float column, NaN skipped (what
    ``describe().T[["mean", "std", "min", "max"]]`` gives) without the quantiles describe also
    computes and callers drop (under cProfile, 27.8 of the 51 s that computing the 864 hours of
    `tests/test_training_dagster.py`'s history took)."""
    x = frame.to_numpy(dtype="float64")
    index = frame.columns
    if not len(x):
        return pd.DataFrame(np.nan, index=index, columns=["mean", "std", "min", "max"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, one row: NaN
        stats = {
            "mean": np.nanmean(x, axis=0),
            "std": np.nanstd(x, axis=0, ddof=1),
            "min": np.nanmin(x, axis=0),
            "max": np.nanmax(x, axis=0),
        }
    return pd.DataFrame(stats, index=index)


class StaleCheckpoint(FeatureError, RuntimeError):
    """The checkpoint a stored feature partition was computed from has been replaced."""


def compute_feature_hours(
    store: ObjectStore,
    hour_keys: Sequence[str],
    *,
    label_delay: timedelta = timedelta(days=7),
    history_start: str = "2018-04-01",
) -> FeatureRun:
    """Write the feature partitions of `hour_keys` (and the checkpoints passed on the way).

    Walks every hour from the start of the first requested hour's day to the last requested
    hour, because each hour's state needs all hours before it; hours not requested are
    computed but not written.
    """
    started = time.perf_counter()
    wanted = set(hour_keys)
    first = hour_start(min(hour_keys)).floor("D")
    last = hour_start(max(hour_keys))
    state, checkpoint_sha, written = _day_start_state(
        store, _day(first), label_delay, history_start
    )
    results, labels, label_source = [], None, {}
    for ts in _hours(first, last):
        key = ts.strftime(HOUR_KEY_FORMAT)
        if ts.hour == 0:
            if ts != first:
                checkpoint_sha = save_checkpoint(store, _day(ts), state)["sha256"]
                written.append(_day(ts))
            labels, label_source = _labels_of_day(store, _day(ts))
        transactions, tx_source = hour_transactions(store, key)
        feed = labels if ts.hour == 0 else None
        features, state = advance_hour(
            state, transactions if transactions is not None else _nohour_transactions(), feed, key
        )
        if key in wanted:
            sources = [
                tx_source,
                label_source,
                {"table": "feature_state", "partition": _day(ts), "sha256": checkpoint_sha},
            ]
            if transactions is None:
                reason = f"upstream transactions {key} {tx_source['status']}: {tx_source['reason']}"
                tables.mark_quarantined(store, "transaction_features", key, reason)
                results.append(HourResult(key, "blocked", reason=reason, sources=sources))
            else:
                version = tables.write_partition(
                    store, "transaction_features", key, features, sources
                )
                values = features[list(FEATURE_NAMES)]
                results.append(
                    HourResult(
                        key,
                        "valid",
                        version.rows,
                        version.sha256,
                        version.key,
                        sources=sources,
                        summary=column_summary(values),
                        null_values=int(values.isna().sum().sum()),
                    )
                )
    if last.hour == 23:
        next_day = _day(last + timedelta(hours=1))
        save_checkpoint(store, next_day, state)
        written.append(next_day)
    return FeatureRun(
        results, state, last.strftime(HOUR_KEY_FORMAT), time.perf_counter() - started, written
    )


def rebuild_features(
    store: ObjectStore, hour_keys: Sequence[str], label_delay: timedelta = timedelta(days=7)
) -> pd.DataFrame:
    """The full-rebuild path over the same raw data (for the equality test and audits)."""
    frames = [f for f in (hour_transactions(store, k)[0] for k in hour_keys) if f is not None]
    days = sorted({hour_start(k).strftime(DAY_KEY_FORMAT) for k in hour_keys})
    labels = [f for f in (_labels_of_day(store, d)[0] for d in days) if f is not None]
    transactions = pd.concat(frames, ignore_index=True)
    label_frame = (
        pd.concat(labels, ignore_index=True)[["transaction_id", "is_fraud", "known_at"]]
        if labels
        else pd.DataFrame(columns=["transaction_id", "is_fraud", "known_at"])
    )
    return build_features(transactions, label_frame, label_delay=label_delay)


def recompute_range(
    changed_hours: Iterable[str], changed_label_days: Iterable[str], newest_hour: str | None
) -> tuple[str, str] | None:
    """The hours whose features must be recomputed after new or changed raw transaction hours
    and fraud-label days: from the earliest affected hour (a label of day D can change terminal
    risk from D's first hour on) to the newest ingested hour, as one range."""
    starts = sorted(changed_hours) + [f"{day}-00:00" for day in sorted(changed_label_days)]
    if not starts or newest_hour is None or min(starts) > newest_hour:
        return None
    return min(starts), newest_hour


def features_current(store: ObjectStore, last_hour: str, label_days: Iterable[str]) -> bool:
    """Are the features up to `last_hour` computed, and computed after the fraud labels of every
    one of `label_days`? (A recomputation runs from the earliest affected hour to the newest, so
    the newest hour's features being newer than every day's labels means all of them are.) A
    training run started before that would learn terminal risk without those labels."""
    features = tables.read_pointer(store, "transaction_features", last_hour)
    if not features or features.get("status") != "valid":
        return False
    written = []
    for day in label_days:
        labels = tables.read_pointer(store, "fraud_labels", day)
        if not labels or labels.get("status") != "valid":
            return False
        written.append(labels["written_at"])
    return all(features["written_at"] >= at for at in written)
