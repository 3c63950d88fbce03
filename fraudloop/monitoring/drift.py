"""Feature and prediction drift of one batch of scored transactions against a reference, with
Evidently's ``DataDriftPreset`` (Evidently 0.7, the ``evidently.Report`` API).

Why Evidently rather than our own tests: the statistical choices (which test for which column,
its threshold, the dataset-level verdict) and the HTML report that an on-call engineer opens come
from one maintained library, and the numbers we alert on are the numbers shown in that report.

What Evidently does with the defaults used here (``evidently.legacy.calculations.stattests``,
``_get_default_stattest``), per numerical column, after dropping NaN and +/-inf values:

- reference of more than 1,000 rows (the usual case, the reference being a training window):
  normed Wasserstein distance (Wasserstein-1 / std of the reference, floored at 0.001) when the
  column has more than 5 distinct values over both frames, else Jensen-Shannon distance over the
  value frequencies (binary flags, nearly constant columns); both are DISTANCES, drift when
  score >= 0.1;
- reference of 1,000 rows or fewer: Kolmogorov-Smirnov (more than 5 distinct values), chi-square
  (3 to 5) or a proportions Z-test (2 or fewer); these are P-VALUES, drift when score < 0.05
  (<= for K-S).

So a score is only comparable with scores of the same method: :attr:`DriftResult.feature_methods`
names it per column, as Evidently reports it (e.g. ``"Wasserstein distance (normed)"``).

Evidently is imported inside :func:`drift_report` only: importing it takes seconds, and the
modules that import this one (Dagster definitions, the CLI) should not pay for it.

:func:`day_drift` is what monitoring runs per day: the features of the transactions production
scored (from the offline feature store: identical to what was served, by the staging test's
parity) plus the scores, against the reference registered with that version at training time
(``drift_reference.parquet``: a sample of its training rows with its own scores).
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core.hours import hours_of_day
from fraudloop.core.store import ObjectStore
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.feature_store import read_offline
from fraudloop.model.registry import UnknownFileError
from fraudloop.model.training import DRIFT_REFERENCE_FILE
from fraudloop.monitoring.policy import MonitoringPolicy
from fraudloop.monitoring.records import record_key

#: Evidently's type tags (``config.type`` of a metric in ``Snapshot.dict()``) that we read.
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class DriftResult:
    """The numbers of one drift report.

    Scores are what Evidently computed for each column: a distance (normed Wasserstein,
    Jensen-Shannon; higher = more drift) or a p-value (KS, chi-square, Z-test; lower = more
    drift) depending on the method it picked, named in :attr:`feature_methods`. :attr:`drifted`
    is Evidently's own verdict per column, so callers need not know which way a method points.

    ``feature_*`` and :attr:`drifted` cover the feature columns only; the prediction column has
    its own fields. :attr:`drifted_share` and :attr:`dataset_drift` are Evidently's dataset-level
    figures over every column it tested, the prediction column included when one was given.
    """

    feature_scores: dict[str, float]
    feature_methods: dict[str, str]
    drifted: dict[str, bool]
    drifted_share: float
    dataset_drift: bool
    prediction_drift_score: float | None
    prediction_drifted: bool | None
    #: rows compared, each side after sampling down to its bound (``max_reference_rows``,
    #: ``max_current_rows``)
    rows_reference: int
    rows_current: int
    #: wall time of ``Report.run`` and reading its result. Evidently builds the report's plots
    #: inside ``run``, so this includes most of the HTML's cost.
    seconds: float
    #: wall time of serialising the report to its HTML page (not included in :attr:`seconds`)
    html_seconds: float = 0.0
    #: the prediction column's method, as :attr:`feature_methods` for the features
    prediction_method: str | None = None
    #: rows of the current frame before sampling (what the day held)
    rows_current_total: int | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [name for name, flag in self.drifted.items() if flag]

    def to_dict(self) -> dict:
        """A JSON-ready dict; a non-finite score becomes None (``json.dumps(allow_nan=False)``)."""
        out = asdict(self)
        out["feature_scores"] = {k: _finite_or_none(v) for k, v in self.feature_scores.items()}
        out["prediction_drift_score"] = _finite_or_none(self.prediction_drift_score)
        return out


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    prediction: str | None = "score",
    *,
    drift_share: float = 0.5,
    max_reference_rows: int = 50_000,
    max_current_rows: int = 50_000,
    seed: int = 0,
) -> tuple[DriftResult, str]:
    """Evidently DataDriftPreset over `features` (+ the prediction column as a numerical column
    when given) of `current` against `reference`; returns the parsed result and the HTML report.

    The reference is sampled down to `max_reference_rows` (without replacement, by `seed`, kept in
    its original order) because the report's cost grows with it while a 50 k-row sample already
    pins a distribution far more tightly than one hour of traffic does. The current frame is
    sampled the same way to `max_current_rows` (by `seed` + 1): a day at 100x scale is ~1 M rows,
    and the report's time and memory must not grow with traffic (at these sizes Evidently uses
    normed Wasserstein distances, which do not grow more sensitive with more rows). Every column is
    cast to float64 and declared numerical, so Evidently never guesses a type from the values (left
    to itself it reads a bool column, or an int column with few distinct values, as categorical).
    NaN and +/-inf values are dropped per column by Evidently; a column with no finite value in
    either frame cannot be tested and raises ValueError. `drift_share` is Evidently's dataset-level
    threshold: dataset drift when drifted columns / columns >= drift_share.

    The HTML is Evidently's standalone page (its JavaScript inlined; no network needed to open it).
    """
    columns = _columns(features, prediction)
    if len(current) == 0:
        raise ValueError("no current rows")
    if len(reference) == 0:
        raise ValueError("no reference rows")
    ref = _numeric_frame(_sample(reference, max_reference_rows, seed), columns, "reference")
    cur = _numeric_frame(_sample(current, max_current_rows, seed + 1), columns, "current")

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=list(columns))
    # include_tests: the per-column and dataset-level verdicts are Evidently's tests; without them
    # the snapshot holds the scores only.
    report = Report(
        [DataDriftPreset(columns=list(columns), drift_share=drift_share)], include_tests=True
    )
    with warnings.catch_warnings():
        # constant columns make numpy's correlation (used by the report's widgets) divide by a zero
        # std; the drift tests themselves handle them, so the warning is noise here.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
    parsed = parse_drift_snapshot(snapshot.dict())
    seconds = time.perf_counter() - started

    started = time.perf_counter()
    html = _titled(snapshot.get_html_str(as_iframe=False), len(cur), len(ref))
    html_seconds = time.perf_counter() - started

    missing = [c for c in columns if c not in parsed.columns]
    if missing:
        raise RuntimeError(f"Evidently reported no drift for column(s) {missing}")
    feature_names = [c for c in columns if c != prediction]
    result = DriftResult(
        feature_scores={c: parsed.columns[c].score for c in feature_names},
        feature_methods={c: parsed.columns[c].method for c in feature_names},
        drifted={c: parsed.columns[c].drifted for c in feature_names},
        drifted_share=parsed.drifted_share,
        dataset_drift=parsed.dataset_drift,
        prediction_drift_score=parsed.columns[prediction].score if prediction else None,
        prediction_drifted=parsed.columns[prediction].drifted if prediction else None,
        prediction_method=parsed.columns[prediction].method if prediction else None,
        rows_reference=len(ref),
        rows_current=len(cur),
        rows_current_total=len(current),
        seconds=seconds,
        html_seconds=html_seconds,
    )
    return result, html


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _columns(features: Sequence[str], prediction: str | None) -> list[str]:
    if isinstance(features, str):  # a bare string is a Sequence of letters: never what is meant
        raise TypeError("features must be a sequence of column names, not a string")
    columns = list(dict.fromkeys(features))
    if prediction is not None:
        if prediction in columns:
            raise ValueError(f"prediction column {prediction!r} is also listed as a feature")
        columns.append(prediction)
    if not columns:
        raise ValueError("no columns to compare: features is empty and no prediction column")
    return columns


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, chosen by `seed` alone (same input, same sample), in frame order."""
    if max_rows < 1:
        raise ValueError(f"a drift sample bound must be >= 1 row, got {max_rows}")
    if len(frame) <= max_rows:
        return frame
    keep = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
    return frame.iloc[np.sort(keep)]


def _numeric_frame(frame: pd.DataFrame, columns: Sequence[str], which: str) -> pd.DataFrame:
    """Just `columns`, as float64, with a fresh index; a clear error for what cannot be tested."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"column(s) missing from the {which} frame: {', '.join(absent)}")
    out = {}
    for name in columns:
        try:
            values = pd.to_numeric(frame[name], errors="raise").astype("float64").to_numpy()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r} of the {which} frame is not numeric: {exc}") from exc
        if not np.isfinite(values).any():
            raise ValueError(f"column {name!r} has no finite value in the {which} frame")
        out[name] = values
    return pd.DataFrame(out)


def _titled(html: str, rows_current: int, rows_reference: int) -> str:
    """Evidently's page has no <title>; give it one, so a saved report says what it is in a tab."""
    from evidently import __version__

    title = (
        f"<title>Drift report: {rows_current:,} current vs {rows_reference:,} reference rows "
        f"(Evidently {__version__})</title>"
    )
    return html.replace("<head>", "<head>\n" + title, 1)


# --------------------------------------------------------------------------------------------
# Reading Evidently's result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    score: float
    method: str
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class ParsedDrift:
    columns: dict[str, ColumnDrift]
    drifted_count: int
    drifted_share: float
    dataset_drift: bool


def parse_drift_snapshot(snapshot: Mapping[str, Any]) -> ParsedDrift:
    """Per-column drift and the dataset verdict from ``Snapshot.dict()`` of a DataDriftPreset run
    with ``Report(..., include_tests=True)``.

    The structure relied on (Evidently 0.7; the same as ``json.loads(snapshot.json())``)::

        {"metrics": [
            {"id": "<metric id>",
             "config": {"type": "evidently:metric_v2:DriftedColumnsCount", "drift_share": 0.5, ...},
             "value": {"count": 2.0, "share": 0.08}},
            {"id": "<metric id>",
             "config": {"type": "evidently:metric_v2:ValueDrift", "column": "amount",
                        "method": "Wasserstein distance (normed)", "threshold": 0.1},
             "value": 0.013},                                  # the drift score
            ...],
         "tests": [
            {"metric_config": {"metric_id": "<metric id>", "params": {...}},
             "status": "FAIL" | "SUCCESS" | ...}, ...]}

    A ValueDrift test FAILs when Evidently detects drift in that column (whatever the direction of
    its method); the DriftedColumnsCount test is ``share < drift_share``, so it FAILs on dataset
    drift. Anything else (a missing verdict, a test in ERROR) raises: a silent misread of a
    changed format would be worse than a failed report.
    """
    status_by_metric: dict[str, str] = {}
    for test in snapshot.get("tests", []):
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        status = str(getattr(test.get("status"), "value", test.get("status"))).upper()
        if metric_id is not None:
            status_by_metric[metric_id] = status

    def verdict(metric: Mapping[str, Any], what: str) -> bool:
        status = status_by_metric.get(metric.get("id"))
        if status not in ("FAIL", "SUCCESS"):
            raise RuntimeError(f"Evidently gave no usable test verdict for {what}: {status!r}")
        return status == "FAIL"

    columns: dict[str, ColumnDrift] = {}
    count_metric: Mapping[str, Any] | None = None
    for metric in snapshot.get("metrics", []):
        config = metric.get("config") or {}
        kind = config.get("type")
        if kind == _VALUE_DRIFT:
            name = config["column"]
            threshold = config.get("threshold")
            columns[name] = ColumnDrift(
                score=float(metric["value"]),
                method=str(config.get("method")),
                threshold=None if threshold is None else float(threshold),
                drifted=verdict(metric, f"column {name!r}"),
            )
        elif kind == _DRIFTED_COUNT:
            count_metric = metric
    if count_metric is None:
        raise RuntimeError("no DriftedColumnsCount metric in the Evidently snapshot")
    value = count_metric["value"]
    count, share = round(float(value["count"])), float(value["share"])
    flagged = sum(c.drifted for c in columns.values())
    if count != flagged:  # two code paths inside Evidently; they must tell the same story
        raise RuntimeError(
            f"Evidently counted {count} drifted columns but flagged {flagged} individually"
        )
    return ParsedDrift(
        columns=columns,
        drifted_count=count,
        drifted_share=share,
        dataset_drift=verdict(count_metric, "the dataset"),
    )


# --------------------------------------------------------------------------------------------
# One day of served traffic against the version's reference
# --------------------------------------------------------------------------------------------


def load_reference(registry, version: int) -> pd.DataFrame | None:
    """The drift reference registered with `version` (None for a version registered without)."""
    try:
        data = registry.get_file(version, DRIFT_REFERENCE_FILE)
    except UnknownFileError:
        return None
    return pd.read_parquet(io.BytesIO(data))


def served_by_production(store: ObjectStore, day: str) -> tuple[int | None, pd.DataFrame]:
    """The version that served most of the day as production, and the offline features of the
    transactions it scored joined with its scores (empty while features are not in yet)."""
    hours = hours_of_day(day)
    log = read_predictions(store, hours)
    served = log[log["role"] == "production"] if len(log) else log
    if served.empty:
        return None, pd.DataFrame()
    version = int(served["model_version"].value_counts().idxmax())
    served = served[served["model_version"] == version].drop_duplicates("transaction_id")
    offline = read_offline(store, hours)
    if offline.empty:  # no hour of the day has features yet (a frame without columns)
        return version, offline
    current = offline.merge(
        served[["transaction_id", "score"]].astype({"transaction_id": "string"}),
        on="transaction_id",
    )
    return version, current


def day_drift(
    store: ObjectStore, registry, day: str, policy: MonitoringPolicy
) -> tuple[dict[str, Any], DriftResult | None]:
    """The drift record of one day (the HTML report stored beside it), and the result."""
    version, current = served_by_production(store, day)
    if version is None:
        return {"status": "no predictions", "problems": []}, None
    if current.empty:
        return {"status": "no features yet", "model_version": version, "problems": []}, None
    reference = load_reference(registry, version)
    if reference is None:
        status = f"v{version} was registered without a drift reference"
        return {"status": status, "model_version": version, "problems": []}, None
    result, html = drift_report(
        reference,
        current,
        FEATURE_NAMES,
        "score",
        max_reference_rows=policy.drift_max_rows,
        max_current_rows=policy.drift_max_rows,
    )
    html_key = record_key("drift", f"{day}-v{version}", "html")
    store.put_bytes(html_key, html.encode())
    record = {"status": "computed", "model_version": version, "report": html_key}
    record.update(result.to_dict())
    record["problems"] = drift_problems(record, policy)
    return record, result


def drift_problems(record: dict, policy: MonitoringPolicy) -> list[str]:
    if record.get("status") != "computed":
        return []
    problems = []
    if record["drifted_share"] >= policy.drift_share:
        drifted = [k for k, v in record["drifted"].items() if v]
        problems.append(
            f"{record['drifted_share']:.0%} of features drifted (>= {policy.drift_share:.0%}): "
            + ", ".join(drifted[:8])
        )
    if record.get("prediction_drifted"):
        problems.append(f"the score distribution drifted ({record['prediction_drift_score']:.3g})")
    return problems
