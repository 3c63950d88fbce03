"""When monitoring asks for a retraining: the decision shared by drift_sensor and accuracy_sensor.

A signal is a monitored partition (a day) whose drift or accuracy check failed. Retraining is
requested for the newest signal unless one is already in flight (a training run queued or
running, or a canary rollout in progress: a new candidate would have nowhere to go) or the last
request was less than the cooldown ago, in *data* time (the partition's time): a replayed or
backfilled history then behaves exactly like live traffic, and one drifting week does not start
a retraining per day. The cooldown is shared by both sensors through the tags of the runs they
start, so drift and accuracy on the same event ask once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fraudloop.core.hours import day_start
from fraudloop.core.store import ObjectStore
from fraudloop.monitoring.records import judged_version, list_records, read_record

RETRAIN_TAG = "fraudloop/retrain"  # value: drift | accuracy
DATA_TIME_TAG = "fraudloop/data_time"  # ISO time of the signal that started the run


@dataclass(frozen=True)
class Signal:
    source: str  # drift | accuracy
    partition: str
    at: pd.Timestamp  # data time: the end of the partition
    reason: str


@dataclass(frozen=True)
class Decision:
    fire: bool
    reason: str
    signal: Signal | None = None

    @property
    def run_key(self) -> str | None:
        return f"retrain:{self.signal.source}:{self.signal.partition}" if self.fire else None


def decide(
    signals: list[Signal],
    *,
    last_trigger_at: pd.Timestamp | None,
    cooldown_hours: float,
    in_flight: str | None,
) -> Decision:
    if not signals:
        return Decision(False, "no failed drift/accuracy check")
    newest = max(signals, key=lambda s: (s.at, s.partition))
    if in_flight:
        return Decision(False, f"not retraining for {newest.partition}: {in_flight}", newest)
    if last_trigger_at is not None:
        ready = last_trigger_at + pd.Timedelta(hours=cooldown_hours)
        if newest.at < ready:
            return Decision(
                False,
                f"cooling down: last retraining asked at {last_trigger_at:%Y-%m-%d %H:%M}, "
                f"next possible for data after {ready:%Y-%m-%d %H:%M}",
                newest,
            )
    return Decision(True, f"{newest.source} on {newest.partition}: {newest.reason}", newest)


def failing_signals(
    store: ObjectStore,
    view: str,
    since: str | None,
    problems_of: Callable[[dict], list[str]],
    production: int | None,
) -> tuple[list[Signal], str | None]:
    """Records of `view` written after the cursor (ISO time) whose check fails for the version
    that is production now, and the new cursor. A failure of a version already replaced (the
    days before the new one took over) asks for nothing."""
    signals, newest = [], since
    for partition in sorted(list_records(store, view)):
        record = read_record(store, view, partition)
        computed = record.get("computed_at", "")
        if since is not None and computed <= since:
            continue
        newest = max(newest or "", computed)
        if judged_version(record) != production:
            continue
        problems = problems_of(record)
        if problems:
            end = day_start(partition) + pd.Timedelta(days=1)
            signals.append(Signal(view, partition, end, "; ".join(problems)))
    return signals, newest
