"""Serving health per hour: volume, latency p50/p95/p99, fallback (error) and flagged rates, and
the cost of inference (CPU seconds of the scoring thread, logged per row, x a configured price,
per 1,000 predictions); an hour with transactions but no production predictions means the
service was down.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fraudloop.core import tables
from fraudloop.core.store import ObjectStore
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.monitoring.policy import MonitoringPolicy
from fraudloop.monitoring.records import GROUPS, production_row


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


def hour_health(
    store: ObjectStore, hour: str, policy: MonitoringPolicy, cpu_hour_price: float
) -> dict[str, Any]:
    """The health record of one hour: every version x role, the transactions that arrived, and
    its problems."""
    log = read_predictions(store, [hour])
    pointer = tables.read_pointer(store, "transactions", hour)
    record = {
        "groups": health(log, cpu_hour_price),
        "predictions": len(log),
        "transactions": int(pointer.get("rows", 0)) if pointer else 0,
    }
    record["problems"] = health_problems(record, policy)
    return record


def health_problems(record: dict, policy: MonitoringPolicy) -> list[str]:
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
    if prod["p99_ms"] > policy.latency_slo_ms:
        problems.append(
            f"p99 latency {prod['p99_ms']:.2f} ms of v{prod['model_version']} is over the SLO "
            f"{policy.latency_slo_ms:g} ms"
        )
    if prod["error_rate"] > policy.max_error_rate:
        problems.append(f"error rate {prod['error_rate']:.3f} over {policy.max_error_rate:g}")
    return problems
