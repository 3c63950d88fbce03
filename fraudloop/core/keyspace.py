"""The key space: where each kind of artifact lives in the object store, on every backend.

One place for the top-level layout (DESIGN.md, *Storage*); each stage builds its keys under the
root named here, so a newcomer can find any artifact from its key.
"""

from __future__ import annotations

from datetime import date, datetime

from fraudloop.core.hours import DAY_KEY_FORMAT, HOUR_KEY_FORMAT, hour_start

LANDING = "landing"  # what feeds deliver, never modified: transactions/<day>/<HH>/, labels/<day>/
RAW = "raw"  # canonical, content-addressed partitions of the raw tables
QUARANTINE = "quarantine"  # rejected inputs, bytes intact, with a reason
FEATURES = "features"  # derived tables and feature-state checkpoints
FEATURE_STORE = "featurestore"  # the published online feature state
DATASETS = "datasets"  # training-set manifests
MODELS = "models"  # registry versions, aliases, audit log, packages, rollout state
REPORTS = "reports"  # evaluation reports; Great Expectations Data Docs of each validation
PREDICTIONS = "predictions"  # the scoring services' prediction log
MONITORING = "monitoring"  # health, drift and accuracy records; drift HTML reports
ALERTS = "alerts"  # the durable alert log
ASSET_VALUES = "asset-values"  # small values passed between Dagster steps (JSON)


def retraining_claim_key(generation: str) -> str:
    """The record that a retraining was asked for in `generation` (one per generation:
    `fraudloop.monitoring.retraining.claim`)."""
    return f"{MONITORING}/retraining/claims/{generation}.json"


def data_docs_key(table: str, partition_key: str, inputs_digest: str) -> str:
    """The Data Docs page of one validation of a partition, named by what was validated (a
    re-delivery is a new page; the link on an older materialization keeps showing its own)."""
    return f"{REPORTS}/validations/{table}/{partition_key}/{inputs_digest}.html"


def hour_landing_prefix(key: str) -> str:
    """Landing folder of an hour: ``landing/transactions/<YYYY-MM-DD>/<HH>/``."""
    start = hour_start(key)
    return f"{LANDING}/transactions/{start:%Y-%m-%d}/{start:%H}/"


def day_landing_prefix(day: str | date) -> str:
    day = day if isinstance(day, str) else day.strftime(DAY_KEY_FORMAT)
    return f"{LANDING}/labels/{day}/"


def partition_from_landing_key(key: str) -> tuple[str, str] | None:
    """Map a landing object key to ``(table, partition_key)``; None if it is not a feed file.

    ``landing/transactions/2018-04-01/05/part.csv`` -> ``("transactions", "2018-04-01-05:00")``;
    ``landing/labels/2018-04-08/labels.csv`` -> ``("labels", "2018-04-08")``.
    """
    parts = key.split("/")
    if len(parts) == 5 and parts[:2] == ["landing", "transactions"]:
        try:
            start = datetime.strptime(f"{parts[2]} {parts[3]}", "%Y-%m-%d %H")
        except ValueError:
            return None
        return "transactions", start.strftime(HOUR_KEY_FORMAT)
    if len(parts) == 4 and parts[:2] == ["landing", "labels"]:
        try:
            datetime.strptime(parts[2], DAY_KEY_FORMAT)
        except ValueError:
            return None
        return "labels", parts[2]
    return None
