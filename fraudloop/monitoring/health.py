"""Monitoring over the prediction log: health, accuracy on matured labels, and the records the
checks and sensors read.

Three views, each per model version and role (production, canary, shadow, control):

- **health** (per hour): volume, latency p50/p95/p99, fallback (error) rate, flagged rate, and the
  cost of inference: CPU seconds of the scoring thread (logged per row) x a configured price,
  per 1,000 predictions;
- **accuracy** (per day of predictions): AP, precision and recall at the operating threshold,
  CP@100 (the handbook's definition, `fraudloop.model.evaluation`), computed only with the labels
  known *now* and marked with how complete they are (labels arrive days later; a day is judged
  only once enough of them did);
- **drift** (per day): Evidently's report on the served transactions' features and scores against
  the version's training data (`fraudloop.monitoring.drift`).

Every record is JSON under ``monitoring/<view>/<partition>.json`` (the HTML drift reports beside
them), so checks, sensors, the CLI and the demo's timeline read the same numbers the UI shows.
Dagster-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core import tables
from fraudloop.core.store import ObjectNotFound, ObjectStore

PREFIX = "monitoring"
GROUPS = ["model_version", "role"]


def record_key(view: str, partition: str, suffix: str = "json") -> str:
    return f"{PREFIX}/{view}/{partition}.{suffix}"


def write_record(store: ObjectStore, view: str, partition: str, record: dict[str, Any]) -> str:
    key = record_key(view, partition)
    body = {**record, "view": view, "partition": partition, "computed_at": _now()}
    store.put_bytes(key, json.dumps(body, indent=2, sort_keys=True, default=_json).encode())
    return key


def read_record(store: ObjectStore, view: str, partition: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(record_key(view, partition)))
    except ObjectNotFound:
        return None


def _now() -> str:
    # microseconds: sensors use it as a cursor, and records are written many per second
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# ---------------------------------------------------------------------------------- health


def health(log: pd.DataFrame, cpu_hour_price: float) -> list[dict[str, Any]]:
    """Per (version, role): requests, latency percentiles, fallback and flagged rates, cost."""
    out = []
    if log.empty:
        return out
    for (version, role), rows in log.groupby(GROUPS, sort=True):
        latency = rows["latency_ms"].to_numpy(dtype=float)
        cpu_seconds = float(rows["cpu_ms"].sum()) / 1000 if "cpu_ms" in rows else 0.0
        n = len(rows)
        out.append(
            {
                "model_version": int(version),
                "role": str(role),
                "requests": n,
                "p50_ms": float(np.percentile(latency, 50)),
                "p95_ms": float(np.percentile(latency, 95)),
                "p99_ms": float(np.percentile(latency, 99)),
                "error_rate": float((rows["status"] != "ok").mean()),
                "flagged_rate": float((rows["decision"] == "review").mean()),
                "mean_score": float(rows["score"].mean()),
                "cpu_seconds": cpu_seconds,
                "cost_per_1000": cpu_seconds / 3600 * cpu_hour_price / n * 1000,
            }
        )
    return out


# ---------------------------------------------------------------------------------- accuracy


def labels_known(store: ObjectStore, days: Iterable[str]) -> pd.DataFrame:
    """Every label delivered in the raw label partitions of `days` (valid ones), known so far."""
    frames = []
    for day in days:
        try:
            frames.append(tables.read_partition(store, "labels", day))
        except (tables.PartitionMissing, tables.PartitionQuarantined):
            continue
    if not frames:
        return pd.DataFrame(columns=["transaction_id", "is_fraud", "known_at"])
    labels = pd.concat(frames, ignore_index=True)
    return labels.sort_values("known_at").drop_duplicates("transaction_id", keep="last")


def accuracy(log: pd.DataFrame, labels: pd.DataFrame, *, k: int = 100) -> list[dict[str, Any]]:
    """Per (version, role): metrics on the predictions whose label is known, and completeness."""
    from fraudloop.model.evaluation import evaluate

    out = []
    if log.empty:
        return out
    known = labels[["transaction_id", "is_fraud"]].astype({"transaction_id": "string"})
    for (version, role), rows in log.groupby(GROUPS, sort=True):
        rows = rows.drop_duplicates("transaction_id", keep="last")
        joined = rows.astype({"transaction_id": "string"}).merge(known, on="transaction_id")
        threshold = float(rows["threshold"].iloc[0])
        record: dict[str, Any] = {
            "model_version": int(version),
            "role": str(role),
            "predictions": len(rows),
            "labelled": len(joined),
            "completeness": len(joined) / len(rows),
            "frauds": int(joined["is_fraud"].sum()) if len(joined) else 0,
            "threshold": threshold,
        }
        if len(joined) and 0 < record["frauds"] < len(joined):
            metrics = evaluate(
                joined[["transaction_id", "tx_datetime", "customer_id", "is_fraud", "score"]],
                k=k,
                threshold=threshold,
            )
            record.update(
                {
                    "ap": _finite(metrics["ap"]),
                    "auc": _finite(metrics["auc"]),
                    f"cp_at_{k}": _finite(metrics[f"cp_at_{k}"]),
                    "precision": _finite(metrics["precision"]),
                    "recall": _finite(metrics["recall"]),
                }
            )
        out.append(record)
    return out


def production_row(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the role that answered most traffic as production (one version per day
    normally; after a promotion the day has two, and the newer, busier one speaks for it)."""
    rows = [r for r in records if r["role"] == "production"]
    if not rows:
        return None
    return max(rows, key=lambda r: (r.get("requests", r.get("predictions", 0)), r["model_version"]))


# ---------------------------------------------------------------------------------- judgements
# `config` is anything with the thresholds as attributes (the Dagster MonitoringResource, tests).


def health_problems(record: dict, config) -> list[str]:
    """What is wrong with an hour: no production predictions while transactions arrived,
    p99 over the SLO, too many fallbacks."""
    problems = []
    prod = production_row(record["groups"])
    if prod is None:
        if record.get("transactions", 0) > 0:
            problems.append(
                f"missing predictions: {record['transactions']} transactions arrived, none "
                "scored by production (is the service down?)"
            )
        return problems
    if prod["p99_ms"] > config.latency_slo_ms:
        problems.append(
            f"p99 latency {prod['p99_ms']:.2f} ms of v{prod['model_version']} is over the SLO "
            f"{config.latency_slo_ms:g} ms"
        )
    if prod["error_rate"] > config.max_error_rate:
        problems.append(f"error rate {prod['error_rate']:.3f} over {config.max_error_rate:g}")
    return problems


def drift_problems(record: dict, config) -> list[str]:
    if record.get("status") != "computed":
        return []
    problems = []
    if record["drifted_share"] >= config.drift_share:
        drifted = [k for k, v in record["drifted"].items() if v]
        problems.append(
            f"{record['drifted_share']:.0%} of features drifted (>= {config.drift_share:.0%}): "
            + ", ".join(drifted[:8])
        )
    if record.get("prediction_drifted"):
        problems.append(f"the score distribution drifted ({record['prediction_drift_score']:.3g})")
    return problems


def accuracy_problems(record: dict, config) -> list[str]:
    prod = record.get("production")
    if not prod or prod.get("ap") is None or prod.get("reference_ap") is None:
        return []
    if prod["completeness"] < config.min_label_completeness:
        return []  # not judged yet: too few labels have arrived
    floor = config.accuracy_min_ratio * prod["reference_ap"]
    if prod["ap"] < floor:
        return [
            f"AP {prod['ap']:.3f} of v{prod['model_version']} is under {floor:.3f} "
            f"({config.accuracy_min_ratio:g} x its holdout AP {prod['reference_ap']:.3f}); "
            f"recall {prod.get('recall') or 0:.2f}, {prod['frauds']} frauds, labels "
            f"{prod['completeness']:.0%} complete"
        ]
    return []
