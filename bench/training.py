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

from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.core.store import LocalObjectStore
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import generate_day
from fraudloop.model import datasets, training
from fraudloop.model.booster import TrainConfig
from fraudloop.model.evaluation import evaluate
from fraudloop.model.registry import ModelRegistry
from tests.factories import store_history

START = date(2018, 4, 1)


def stored_history(store, days: int) -> None:
    """A handbook-scale history as ingestion would leave it, then its features."""
    population = make_population(seed=42, scale=1.0)
    history = pd.concat(
        [generate_day(population, START + timedelta(days=d)) for d in range(days)],
        ignore_index=True,
    )
    first = pd.Timestamp(START, tz="UTC")
    hours = [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24 * days)]
    store_history(store, history, hours)
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
        spec = datasets.DatasetSpec(cutoff=cutoff, window_days=28, holdout_days=7)

        started = time.perf_counter()
        dataset = datasets.build_dataset(store, spec)
        build_s = time.perf_counter() - started
        rows.append(
            (
                "build the dataset from the feature store",
                f"{len(dataset.train):,} train + {len(dataset.holdout):,} holdout rows",
                f"{build_s:.1f} s",
            )
        )

        config = TrainConfig()  # what training_job ships
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
