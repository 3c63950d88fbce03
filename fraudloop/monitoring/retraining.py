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

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fraudloop.core.errors import FraudloopError
from fraudloop.core.hours import day_start
from fraudloop.core.store import ObjectStore
from fraudloop.model import datasets
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
    #: the signal stands but the data to act on it is not in yet: ask again later rather than
    #: dropping it (the sensor keeps its cursor)
    waiting: bool = False

    @property
    def run_key(self) -> str | None:
        return f"retrain:{self.signal.source}:{self.signal.partition}" if self.fire else None


@dataclass(frozen=True)
class TrainingData:
    """How far the data a training run would use reaches: the end of the holdout a run started
    now would get (`DatasetSpec.end` of the default cutoff; None: no features stored yet), and
    the same end for production's own training data (None: unknown)."""

    available_end: pd.Timestamp | None
    production_end: pd.Timestamp | None


def training_data(
    store: ObjectStore, registry, production: int | None, label_delay_days: int
) -> TrainingData:
    """What a training run started now would train on, next to what production was trained
    on (from its recorded lineage; a version registered without one counts as unknown)."""
    try:
        cutoff = datasets.default_cutoff(store)
    except FraudloopError:
        available = None
    else:
        available = datasets.DatasetSpec(cutoff=cutoff, label_delay_days=label_delay_days).end
    production_end = None
    if production is not None:
        try:
            lineage = json.loads(registry.get_file(production, "lineage.json"))
            production_end = pd.Timestamp(lineage["dataset"]["spec"]["end"])
        except (FraudloopError, KeyError, TypeError, ValueError):
            production_end = None
    return TrainingData(available, production_end)


def _data_wait(signal: Signal, data: TrainingData) -> str | None:
    """Why a retraining now would learn nothing from the signal, if it would.

    A run's dataset ends where the stored features end (less the label delay). Monitoring can
    fail a day before that day's features are in, and a run started then gets production's own
    dataset again: an identical model, held by the gate, a wasted run on the loop's critical
    path (seen in the demo: v2 bit-identical to v1). An accuracy failure is judged on matured
    labels, so its day can be in the data as soon as its features are: wait for that. A drift
    failure's labels may be a whole label delay away; it only needs data newer than
    production's."""
    end = data.available_end
    if end is None:
        return "no features stored yet: nothing to train on"
    if data.production_end is not None and end <= data.production_end:
        return (
            f"a training run now would use data up to {end:%Y-%m-%d %H:%M}, as production's "
            "did: waiting for newer features"
        )
    if signal.source == "accuracy" and end < signal.at:
        return (
            f"waiting for {signal.partition} to be in the training data (it reaches "
            f"{end:%Y-%m-%d %H:%M}; its features are not all in yet)"
        )
    return None


def decide(
    signals: list[Signal],
    *,
    last_trigger_at: pd.Timestamp | None,
    cooldown_hours: float,
    in_flight: str | None,
    data: TrainingData | None = None,
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
    if data is not None and (wait := _data_wait(newest, data)):
        return Decision(False, f"not retraining for {newest.partition} yet: {wait}", newest, True)
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
