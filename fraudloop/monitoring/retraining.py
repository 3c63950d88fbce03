"""When monitoring asks for a retraining: the decision shared by drift_sensor and accuracy_sensor.

A signal is a monitored partition (a day) whose drift or accuracy check failed. Retraining is
requested for the newest signal whose day a training run could learn from (inside the training
part of its dataset, not only in the holdout: see `_trainable`) unless one is already in flight
(a training run queued or running, or a canary rollout in progress: a new candidate would have
nowhere to go) or the last request was less than the cooldown ago, in *data* time (the
partition's time): a replayed or backfilled history then behaves exactly like live traffic, and
one drifting week does not start a retraining per day. The cooldown is shared by both sensors
through the tags of the runs they start, so drift and accuracy on the same event ask once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fraudloop.core import keyspace
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
    now would get (`DatasetSpec.end` of the default cutoff; None: no features stored yet) and
    its holdout's length, next to the same end for production's own training data and for the
    newest version registered (None: unknown)."""

    available_end: pd.Timestamp | None
    production_end: pd.Timestamp | None
    holdout_days: int = 0
    newest: tuple[int, pd.Timestamp] | None = None  # (version, the end of its data)

    @property
    def train_end(self) -> pd.Timestamp | None:
        """Where the training part of that data ends (the holdout follows it)."""
        if self.available_end is None:
            return None
        return self.available_end - pd.Timedelta(days=self.holdout_days)


def _data_end(registry, version: int) -> pd.Timestamp | None:
    """The end of a version's dataset, from its recorded lineage (None: not recorded)."""
    try:
        lineage = json.loads(registry.get_file(version, "lineage.json"))
        return pd.Timestamp(lineage["dataset"]["spec"]["end"])
    except (FraudloopError, KeyError, TypeError, ValueError):
        return None


def training_data(
    store: ObjectStore,
    registry,
    production: int | None,
    label_delay_days: int,
    holdout_days: int = 0,
) -> TrainingData:
    """What a training run started now would train on, next to what production and the newest
    version were trained on (from their recorded lineage; a version registered without one
    counts as unknown)."""
    try:
        cutoff = datasets.default_cutoff(store)
    except FraudloopError:
        available = None
    else:
        available = datasets.DatasetSpec(cutoff=cutoff, label_delay_days=label_delay_days).end
    production_end = None if production is None else _data_end(registry, production)
    numbers = registry.version_numbers()  # the sensors ask every tick: no manifest per version
    newest = None
    if numbers and (end := _data_end(registry, numbers[-1])) is not None:
        newest = (numbers[-1], end)
    return TrainingData(available, production_end, holdout_days, newest)


def _trainable(signals: list[Signal], data: TrainingData) -> tuple[Signal | None, str | None]:
    """The newest signal a training run now could learn from, or why there is none yet.

    A run's dataset ends where the stored features end (less the label delay), and its last
    `holdout_days` are the gate's holdout, not training data. A run whose training part ends
    before the failing day never sees what failed: its candidate is judged on that day and is
    held by the gate (seen in the demo: a candidate trained on the six days before the drift,
    AP 0.32 on the drifted holdout). Monitoring can fail a day before that day's features are
    in, and a run started then gets production's own dataset again, a bit-identical model
    (training is deterministic); so does a run on the data of the newest candidate, which the
    gate already held. Either way a wasted run on the loop's critical path: the signal waits
    for its data instead. Drift and accuracy alike: a drifted day's labels are a label delay
    away, and training needs them."""
    end = data.available_end
    if end is None:
        return None, "no features stored yet: nothing to train on"
    if data.production_end is not None and end <= data.production_end:
        return None, (
            f"a training run now would use data up to {end:%Y-%m-%d %H:%M}, as production's "
            "did: waiting for newer features"
        )
    if data.newest is not None and end <= data.newest[1]:
        version, _ = data.newest
        return None, (
            f"a training run now would use data up to {end:%Y-%m-%d %H:%M}, as v{version} "
            "did (the same model again): waiting for newer features"
        )
    ready = [s for s in signals if s.at <= data.train_end]
    if ready:
        return max(ready, key=lambda s: (s.at, s.partition)), None
    oldest = min(signals, key=lambda s: (s.at, s.partition))
    return None, (
        f"waiting for {oldest.partition} to be in the training data (a run now would train on "
        f"data up to {data.train_end:%Y-%m-%d %H:%M} and hold out the "
        f"{data.holdout_days} day(s) after it)"
    )


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
        signals = [s for s in signals if s.at >= ready]
    chosen = newest
    if data is not None:
        chosen, wait = _trainable(signals, data)
        if chosen is None:
            return Decision(
                False, f"not retraining for {newest.partition} yet: {wait}", newest, True
            )
    return Decision(True, f"{chosen.source} on {chosen.partition}: {chosen.reason}", chosen)


#: a claim whose request never became a run (the tick died between the claim and the run) no
#: longer blocks after this long: a sensor's request is a run within its tick, seconds
CLAIM_STALE_AFTER = pd.Timedelta(minutes=10)


def claim(
    store: ObjectStore, data: TrainingData, decision: Decision, generation: str
) -> str | None:
    """Claim the next retraining, once: None if this request got it, else the request that did.

    Why: drift_sensor and accuracy_sensor are evaluated in parallel threads of the daemon, and
    both can decide to retrain in the same tick, before either request is a run the other could
    see (`in_flight`, the cooldown). The demo started two retrainings on the same data (an
    identical model trained twice, given a second canary); once the claim was per data end, it
    started two whose data ends differed by the four feature hours a features run wrote between
    the two sensors' evaluations, 41 ms apart (the second candidate's release then failed on the
    first one's canary). So the claim is per `generation`: what the sensors saw before deciding
    (production's version and the number of training runs), which the winner's run changes; the
    other finds it taken and asks for nothing. An atomic create in the object store, which both
    sensors share; a claim older than :data:`CLAIM_STALE_AFTER` whose request never became a run
    gives way to the next attempt of the same generation."""
    body = {
        "request": decision.run_key,
        "generation": generation,
        "data_end": data.available_end.isoformat(),
        "reason": decision.reason,
        "claimed_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    attempt = 0
    while True:
        key = keyspace.retraining_claim_key(generation + (f"-{attempt}" if attempt else ""))
        if store.put_if_absent(key, json.dumps(body).encode()):
            return None
        try:
            held = json.loads(store.get_bytes(key))
            claimed_at = pd.Timestamp(held["claimed_at"])
        except (FraudloopError, ValueError, KeyError, TypeError):
            return "another request"
        if pd.Timestamp.now(tz="UTC") - claimed_at < CLAIM_STALE_AFTER:
            return str(held.get("request") or "another request")
        attempt += 1


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
