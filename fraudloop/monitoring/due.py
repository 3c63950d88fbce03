"""What monitoring is due: which hours need a health record and which days a drift or accuracy
record, given what was served, ingested, featurized and labelled (the policy behind
`monitoring_sensor`).

- health: every ingested hour from the first served one, again when more predictions of it
  arrive (an hour is judged once its transactions are ingested: then it is complete, and an hour
  with transactions but no predictions is a finding, the service was down, not a race);
- drift: a served day once all its hours have features, again when more predictions arrive;
- accuracy: a served day once its labels matured (the label delay passed), re-judged while it is
  still short of the completeness it needs and newer labels land.

Drift and accuracy days are kept apart: one daily run covers the days due for either, and each
asset judges only its own (`assets.monitoring.JudgedDays`), since the two are rarely due on the
same days and a day's Evidently report is the run's main cost.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

import pandas as pd

from fraudloop.core import tables
from fraudloop.core.hours import day_start, hours_of_day
from fraudloop.core.store import ObjectInfo, ObjectStore
from fraudloop.delivery.prediction_log import PREFIX as PREDICTIONS
from fraudloop.monitoring.records import list_records, read_record


@dataclass(frozen=True)
class Due:
    health: list[str]  # hours
    drift: list[str] = field(default_factory=list)  # days
    accuracy: list[str] = field(default_factory=list)  # days

    @property
    def daily(self) -> list[str]:
        """The days of the daily run (drift and accuracy run together): a day due for either."""
        return sorted({*self.drift, *self.accuracy})

    def without(self, kind: str, ranges: Iterable[tuple[str, str]]) -> Due:
        """Minus what in-flight runs already cover (their records are on the way); `daily`
        is both drift and accuracy, the two assets of one job."""

        def keep(keys: list[str]) -> list[str]:
            return [k for k in keys if not any(a <= k <= b for a, b in ranges)]

        kinds = ("drift", "accuracy") if kind == "daily" else (kind,)
        return replace(self, **{k: keep(getattr(self, k)) for k in kinds})


def _latest_modified(infos: Iterable[ObjectInfo], base: str) -> dict[str, float]:
    """partition -> newest write time of the objects under `base`/<partition>/..."""
    out: dict[str, float] = {}
    for info in infos:
        part = info.key[len(base) :].split("/", 1)[0]
        out[part] = max(out.get(part, 0.0), info.modified)
    return out


def due(
    store: ObjectStore,
    *,
    ingested_hours: Collection[str],
    featured_hours: Collection[str],
    label_days: Collection[str],
    label_delay_days: int,
    min_completeness: float,
) -> Due:
    base = f"{PREDICTIONS}/"
    predictions = _latest_modified(store.list(base), base)
    if not predictions:
        return Due([])
    first_served = min(predictions)
    health = list_records(store, "health")
    hours = sorted(
        h
        for h in ingested_hours
        if h >= first_served and (h not in health or predictions.get(h, 0.0) > health[h])
    )
    featured = set(featured_hours)
    newest_labels = max(label_days, default=None)
    drift, accuracy = list_records(store, "drift"), list_records(store, "accuracy")
    drift_days, accuracy_days = set(), set()
    for day in sorted({h[:10] for h in predictions}):
        day_hours = hours_of_day(day)
        served = max(predictions.get(h, 0.0) for h in day_hours)
        if all(h in featured for h in day_hours) and (day not in drift or served > drift[day]):
            drift_days.add(day)
        matured = (day_start(day) + pd.Timedelta(days=label_delay_days)).strftime("%Y-%m-%d")
        if newest_labels is None or newest_labels < matured:
            continue
        if day not in accuracy:
            accuracy_days.add(day)
            continue
        record = read_record(store, "accuracy", day) or {}
        complete = (record.get("production") or {}).get("completeness", 0.0)
        labels_pointer = store.head(tables.pointer_key("labels", newest_labels))
        newer = labels_pointer is not None and labels_pointer.modified > accuracy[day]
        if complete < min_completeness and newer:
            accuracy_days.add(day)
    return Due(hours, sorted(drift_days), sorted(accuracy_days))
