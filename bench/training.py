"""Training figures for the README (issue: training, gate, registry, reproduction).

Builds a stored handbook-scale history (raw partitions, bi-temporal labels, hourly features) in a
temporary local store, then measures, in one run:
- building the training dataset (28-day window + 7-day holdout) from the feature store;
- training the candidate on the 28-day window (~280 k rows), with its CPU seconds;
- `reproduce` of that registered version: byte-identical or not, and its time.

Usage: .venv/bin/python bench/training.py [--days 43]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraudloop import raw, training
from fraudloop.evaluation import evaluate
from fraudloop.feature_pipeline import (
    TransactionLookup,
    build_fraud_labels,
    compute_feature_hours,
)
from fraudloop.model import TrainConfig
from fraudloop.registry import ModelRegistry
from fraudloop.schema import HOUR_KEY_FORMAT
from fraudloop.simulate import generate_day, make_population
from fraudloop.storage import LocalObjectStore

START = date(2018, 4, 1)


def stored_history(store, days: int) -> None:
    population = make_population(seed=42, scale=1.0)
    history = pd.concat(
        [generate_day(population, START + timedelta(days=d)) for d in range(days)],
        ignore_index=True,
    )
    tx = history[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]]
    of_hour = tx["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    first = pd.Timestamp(START, tz="UTC")
    hours = [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24 * days)]
    for key, rows in tx.groupby(of_hour):
        raw.write_raw_partition(store, "transactions", key, rows, [])
    labels = pd.DataFrame(
        {
            "transaction_id": history["transaction_id"],
            "is_fraud": history["is_fraud"].astype("int8"),
            "known_at": history["tx_datetime"] + timedelta(days=7),
        }
    )
    label_day = labels["known_at"].dt.strftime("%Y-%m-%d")
    lookup = TransactionLookup(store)
    for day, rows in labels.groupby(label_day):
        if day <= hours[-1][:10]:
            raw.write_raw_partition(store, "labels", day, rows, [])
            build_fraud_labels(store, day, 45, lookup)
    compute_feature_hours(store, hours, history_start=str(START))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=43)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp) / "store")
        started = time.perf_counter()
        stored_history(store, args.days)
        setup_s = time.perf_counter() - started
        cutoff = pd.Timestamp(START, tz="UTC") + timedelta(days=args.days)
        spec = training.DatasetSpec(cutoff=cutoff, window_days=28, holdout_days=7)

        started = time.perf_counter()
        dataset = training.build_dataset(store, spec)
        build_s = time.perf_counter() - started
        rows.append(
            (
                "build the dataset from the feature store",
                f"{len(dataset.train):,} train + {len(dataset.holdout):,} holdout rows",
                f"{build_s:.1f} s",
            )
        )

        config = TrainConfig(min_child_samples=400)
        started = time.perf_counter()
        model = training.fit(dataset, config)
        fit_s = time.perf_counter() - started
        holdout = dataset.holdout.assign(score=model.predict(dataset.holdout))
        metrics = evaluate(holdout)
        rows.append(
            (
                "train the candidate (28 days, LightGBM, 2 threads, early stopping)",
                f"{len(dataset.train):,} rows, {model.best_iteration} rounds",
                f"{fit_s:.1f} s wall, {model.cpu_seconds:.1f} CPU s; "
                f"holdout AP {metrics['ap']:.3f}",
            )
        )
        registry = ModelRegistry(store)
        record = training.lineage_record(dataset.manifest, config, model, metrics, {})
        registry.register(
            {"model.txt": model.model_text.encode(), "lineage.json": training.lineage_json(record)},
            metadata={"dataset_id": dataset.id},
            actor="bench",
            reason="bench/training.py",
        )
        result = training.reproduce(store, registry, 1)
        rows.append(
            (
                "`reproduce` of that version from its lineage",
                "byte-identical" if result.identical else "DIFFERENT",
                f"{result.seconds:.1f} s",
            )
        )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; history {args.days} days at "
        f"handbook scale built in {setup_s:.0f} s"
    )
    print("| measurement | data | result |\n|---|---|---|")
    for name, data, figure in rows:
        print(f"| {name} | {data} | {figure} |")


if __name__ == "__main__":
    main()
