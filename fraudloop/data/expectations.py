"""Running Great Expectations 1.x suites, and turning every failed expectation into a
:class:`Problem` a human can read (the GE expectation type as ``check``, the column, how many values
failed, up to five distinct examples and one sentence).

Great Expectations takes seconds to import, so it is imported inside functions, never at module
import time; the ephemeral context, its pandas data source and one batch definition per table are
created once per process and reused, so that validating a partition costs tens of milliseconds.
The suites themselves belong to their stage (`fraudloop.data.validation` for the raw tables,
`fraudloop.features.validation` for the feature table).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

UNKNOWN_ID_COLUMN = "unknown_transaction_id"
MAX_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Problems and JSON-safe values (shared by ingest, quarantine and the assets)
# --------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One reason a partition cannot be accepted, in words a human understands.

    ``stage`` is where it was found ("read", "normalise", "expectations"), ``check`` a stable
    machine name (a GE expectation type for stage "expectations"), ``source`` the landing key of
    the file when the problem belongs to one file (None for whole-partition checks).
    """

    stage: str
    check: str
    message: str
    column: str | None = None
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["examples"] = [jsonable(v) for v in self.examples]
        out["unexpected_count"] = jsonable(self.unexpected_count)
        return out

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.message}"


def jsonable(value: Any) -> Any:
    """Convert a value to something ``json.dumps(allow_nan=False)`` accepts.

    Timestamps become ISO 8601 strings, numpy scalars Python numbers, NaN/inf the strings
    "NaN"/"inf"/"-inf", missing values None, bytes a short repr.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if value is pd.NaT:
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, np.timedelta64)):
        return str(value)
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(value, bytes):
        return repr(value[:80])
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

_LOCK = threading.RLock()  # GE's context is not thread-safe; sensors and runs share a process


@lru_cache(maxsize=1)
def _pandas_source():
    """One ephemeral context per process with a pandas data source. Progress bars are off (they
    would flood Dagster's captured logs)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context.data_sources.add_pandas("fraudloop")


_DEFINITIONS: dict[str, Any] = {}


def batch_definition(table: str):
    """The whole-dataframe batch definition of `table`, created on first use (this also makes the
    context active, which building a suite needs)."""
    with _LOCK:
        if table not in _DEFINITIONS:
            asset = _pandas_source().add_dataframe_asset(table)
            _DEFINITIONS[table] = asset.add_batch_definition_whole_dataframe("whole")
        return _DEFINITIONS[table]


def warm_up() -> None:
    """Import Great Expectations and build the context now (e.g. when a worker starts)."""
    _pandas_source()


@dataclass
class ValidationOutcome:
    passed: bool
    problems: list[Problem]
    statistics: dict[str, Any]
    expectations: list[dict[str, Any]]
    seconds: float = 0.0
    # Great Expectations' own Data Docs page of this validation (None if it could not render)
    data_docs: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": [p.to_dict() for p in self.problems],
            "statistics": jsonable(self.statistics),
            "expectations": self.expectations,
            "seconds": self.seconds,
        }


def _fmt(value: Any) -> str:
    if isinstance(value, pd.Timestamp) and value.tzinfo is not None:
        return value.tz_convert("UTC").isoformat().replace("+00:00", "Z")
    value = jsonable(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.endswith("+00:00"):
        return value[: -len("+00:00")] + "Z"
    return str(value)


def _examples(result: dict[str, Any]) -> list[Any]:
    """Up to MAX_EXAMPLES distinct unexpected values, in row order."""
    values = list(result.get("partial_unexpected_list") or [])
    if not values:
        values = [item["value"] for item in result.get("partial_unexpected_counts") or []]
    seen, out = set(), []
    for v in values:
        key = repr(jsonable(v))
        if key not in seen:
            seen.add(key)
            out.append(jsonable(v))
        if len(out) == MAX_EXAMPLES:
            break
    return out


def _sentence(
    kind: str,
    kwargs: dict[str, Any],
    result: dict[str, Any],
    examples: list,
    rows: int,
    basis_note: str | None = None,
) -> str:
    column = kwargs.get("column")
    raw_count = result.get("unexpected_count")
    count = "some" if raw_count is None else f"{int(raw_count):,}"
    eg = f", e.g. {', '.join(_fmt(v) for v in examples)}" if examples else ""
    of = f" of {rows:,} rows" if rows else " rows"
    if kind == "expect_column_to_exist":
        return f"required column '{column}' is missing"
    if kind == "expect_column_values_to_not_be_null":
        return f"column '{column}' is empty/null in {count}{of}"
    if kind == "expect_column_values_to_be_unique":
        return f"column '{column}' has {count} row(s) with a duplicated value{eg}"
    if kind == "expect_column_values_to_be_between":
        lo = "(" if kwargs.get("strict_min") else "["
        hi = ")" if kwargs.get("strict_max") else "]"
        rng = f"{lo}{_fmt(kwargs.get('min_value'))}, {_fmt(kwargs.get('max_value'))}{hi}"
        return f"column '{column}' is outside {rng} in {count}{of}{eg}"
    if kind == "expect_column_values_to_be_in_set":
        allowed = ", ".join(_fmt(v) for v in kwargs.get("value_set") or [])
        return f"column '{column}' is not in {{{allowed}}} in {count}{of}{eg}"
    if kind == "expect_column_values_to_be_null" and column == UNKNOWN_ID_COLUMN:
        mostly = kwargs.get("mostly", 1.0)
        need = "" if mostly >= 1.0 else f" (at most {1 - mostly:.1%} may be unknown)"
        return f"{count}{of} refer to transaction ids that were never ingested{need}{eg}"
    if kind == "expect_table_row_count_to_be_between":
        basis = f" ({basis_note})" if basis_note else ""
        return (
            f"the partition has {_fmt(result.get('observed_value'))} rows; the history of "
            f"earlier valid partitions{basis} allows "
            f"{kwargs.get('min_value')}..{kwargs.get('max_value')}"
        )
    return f"{kind} failed on column '{column}'{eg}"


def _exception_message(info: Any) -> str | None:
    """GE reports errors either flat or keyed by metric id; the first message, if any."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


@lru_cache(maxsize=1)
def _data_docs_views():
    """GE's validation page renderer and Jinja view, built once: building them costs ~60 ms (the
    template environment), rendering a page with them ~3 ms."""
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
    from great_expectations.render.view.view import DefaultJinjaPageView

    return ValidationResultsPageRenderer(), DefaultJinjaPageView()


def render_data_docs(result) -> str | None:
    """The Data Docs HTML page of one GE validation result, as GE's own site renders it.

    A page that fails to render is a missing view, not a verdict on the data: it returns None
    (the problems and statistics stand) rather than fail the ingestion of a good partition."""
    try:
        with _LOCK:
            renderer, view = _data_docs_views()
            return view.render(renderer.render(result))
    except Exception:  # GE's renderers may raise anything; the verdict must not
        return None


def run_suite(
    table: str, frame: pd.DataFrame, suite, basis_note: str | None = None
) -> ValidationOutcome:
    """Validate `frame` against `suite`; every failed expectation becomes a :class:`Problem`."""
    started = time.perf_counter()
    definition = batch_definition(table)
    with _LOCK:
        batch = definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    data_docs = render_data_docs(result)
    rows = len(frame)
    problems: list[Problem] = []
    expectations: list[dict[str, Any]] = []
    missing_columns = {
        item.expectation_config.kwargs.get("column")
        for item in result.results
        if item.expectation_config.type == "expect_column_to_exist" and not item.success
    }
    for item in result.results:
        config = item.expectation_config
        kind = config.type
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        res = dict(item.result or {})
        examples = _examples(res)
        error = _exception_message(item.exception_info)
        expectations.append(
            {
                "type": kind,
                "kwargs": jsonable(kwargs),
                "success": bool(item.success),
                "observed_value": jsonable(res.get("observed_value")),
                "unexpected_count": jsonable(res.get("unexpected_count")),
                "examples": examples,
            }
        )
        if item.success:
            continue
        column = kwargs.get("column")
        if column in missing_columns and kind != "expect_column_to_exist":
            continue  # already reported as a missing column
        if error is not None:
            message = f"{kind} could not be evaluated on column '{column}': {error}"
        else:
            message = _sentence(kind, kwargs, res, examples, rows, basis_note)
        if column == UNKNOWN_ID_COLUMN:
            column = "transaction_id"
        unexpected = res.get("unexpected_count")
        if kind.startswith("expect_table_row_count"):
            unexpected = None
        problems.append(
            Problem(
                stage="expectations",
                check=kind,
                message=message,
                column=column,
                unexpected_count=None if unexpected is None else int(unexpected),
                examples=examples,
            )
        )
    return ValidationOutcome(
        passed=bool(result.success) and not problems,
        problems=problems,
        statistics=jsonable(dict(result.statistics)),
        expectations=expectations,
        seconds=round(time.perf_counter() - started, 4),
        data_docs=data_docs,
    )
