"""Accuracy on matured labels, per day of predictions and per version x role: AP, precision and
recall at the operating threshold, CP@100 (the handbook's definition), computed only with the
labels known *now* and marked with how complete they are (labels arrive days later; a day is
judged only once enough of them did).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pandas as pd

from fraudloop.core import tables
from fraudloop.core.hours import day_start, hours_of_day
from fraudloop.core.store import ObjectStore
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.model.evaluation import SCORE_COLUMNS, evaluate
from fraudloop.monitoring.policy import MonitoringPolicy
from fraudloop.monitoring.records import GROUPS, finite, production_row


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
            metrics = evaluate(joined[list(SCORE_COLUMNS)], k=k, threshold=threshold)
            record.update(
                {
                    "ap": finite(metrics["ap"]),
                    "auc": finite(metrics["auc"]),
                    f"cp_at_{k}": finite(metrics[f"cp_at_{k}"]),
                    "precision": finite(metrics["precision"]),
                    "recall": finite(metrics["recall"]),
                }
            )
        out.append(record)
    return out


def _holdout_ap(registry, version: int) -> float | None:
    """The AP a version scored on its own holdout (the registry records it)."""
    value = registry.show(version).metadata.get("metrics", {}).get("ap")
    return None if value is None else float(value)


def day_accuracy(
    store: ObjectStore, registry, day: str, policy: MonitoringPolicy, label_lookback_days: int
) -> dict[str, Any]:
    """The accuracy record of one day of predictions, with the labels known now (any label day
    from that day to `label_lookback_days` later), and its problems."""
    log = read_predictions(store, hours_of_day(day))
    label_days = [
        (day_start(day) + timedelta(days=d)).strftime("%Y-%m-%d")
        for d in range(label_lookback_days + 1)
    ]
    label_days = [d for d in label_days if tables.read_pointer(store, "labels", d)]
    groups = accuracy(log, labels_known(store, label_days))
    prod = production_row(groups)
    if prod is not None:
        prod = {**prod, "reference_ap": _holdout_ap(registry, prod["model_version"])}
    record = {"groups": groups, "production": prod, "predictions": len(log)}
    record["problems"] = accuracy_problems(record, policy)
    return record


def accuracy_problems(record: dict, policy: MonitoringPolicy) -> list[str]:
    prod = record.get("production")
    if not prod or prod.get("ap") is None or prod.get("reference_ap") is None:
        return []
    if prod["completeness"] < policy.min_label_completeness:
        return []  # not judged yet: too few labels have arrived
    floor = policy.accuracy_min_ratio * prod["reference_ap"]
    if prod["ap"] < floor:
        return [
            f"AP {prod['ap']:.3f} of v{prod['model_version']} is under {floor:.3f} "
            f"({policy.accuracy_min_ratio:g} x its holdout AP {prod['reference_ap']:.3f}); "
            f"recall {prod.get('recall') or 0:.2f}, {prod['frauds']} frauds, labels "
            f"{prod['completeness']:.0%} complete"
        ]
    return []


def accuracy_severity(
    incident: dict | None, day: str, version: int | None, policy: MonitoringPolicy
) -> str:
    """How loud a day under the accuracy floor is.

    The loop answers such a day by itself (`accuracy_sensor` retrains, the gate and the canary
    ship the new model), so the first days are a warning; a person is paged when the
    condition outlives that answer: `accuracy_page_after_days` distinct failing days, or a
    failing day judged on another production version than the one the incident opened on (the
    retrained model is under its floor too)."""
    current = incident if incident and incident.get("status") == "open" else None
    failing = set((current or {}).get("failing", [])) | {day}
    opened_on = ((current or {}).get("details") or {}).get("model_version", version)
    if len(failing) >= policy.accuracy_page_after_days:
        return "critical"
    if version is not None and opened_on is not None and version != opened_on:
        return "critical"
    return "warning"
