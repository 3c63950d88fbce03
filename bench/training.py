"""Training figures: the dataset, the candidate, and its reproduction from lineage.

Builds a stored handbook-scale history (raw partitions, bi-temporal labels, hourly features) in a
temporary local store, then measures, in one run, each beside a figure of the same run:
- building the training dataset (28-day window + 7-day holdout) from the feature store, against
  computing the hourly features of that history;
- training the candidate on the 28-day window (~280 k rows): wall against CPU seconds;
- `reproduce` of that registered version (byte-identical or not), against the training.

    .venv/bin/python bench/training.py [--days 43] [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Report, arguments
from fraudloop.core.store import LocalObjectStore
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.model import datasets, training
from fraudloop.model.booster import TrainConfig
from fraudloop.model.evaluation import evaluate
from fraudloop.model.registry import ModelRegistry
from tests.factories import hour_keys, simulated_history, store_history

START = date(2018, 4, 1)
#: (days of history, scale, window days, holdout days, label delay days)
FULL = (43, 1.0, 28, 7, 7)
QUICK = (5, 0.1, 3, 1, 1)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--days", type=int, help="days of history (43; quick: 5)")
    args = parser.parse_args()
    days, scale, window, holdout, delay = QUICK if args.quick else FULL
    days = args.days or days
    report = Report("training", args)
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-training-") as tmp:
        store = LocalObjectStore(Path(tmp) / "store")
        started = time.perf_counter()
        history = simulated_history(START, days, seed=42, scale=scale)
        hours = hour_keys(START, days)
        store_history(store, history, hours, label_delay=timedelta(days=delay))
        stored_s = time.perf_counter() - started
        started = time.perf_counter()
        compute_feature_hours(
            store, hours, label_delay=timedelta(days=delay), history_start=str(START)
        )
        features_s = time.perf_counter() - started
        cutoff = pd.Timestamp(START, tz="UTC") + timedelta(days=days)
        spec = datasets.DatasetSpec(
            cutoff=cutoff, window_days=window, holdout_days=holdout, label_delay_days=delay
        )

        started = time.perf_counter()
        dataset = datasets.build_dataset(store, spec)
        build_s = time.perf_counter() - started

        import lightgbm  # noqa: F401 - imported before the clock starts (~6 s here, once)

        config = TrainConfig()  # what training_job ships
        started = time.perf_counter()
        model = training.fit(dataset, config)
        fit_s = time.perf_counter() - started
        holdout_frame = dataset.holdout.assign(score=model.predict(dataset.holdout))
        metrics = evaluate(holdout_frame)
        registry = ModelRegistry(store)
        record = training.lineage_record(dataset.manifest, config, model, metrics, {})
        registry.register(
            {"model.txt": model.model_text.encode(), "lineage.json": training.lineage_json(record)},
            metadata={"dataset_id": dataset.id},
            actor="bench",
            reason="bench/training.py",
        )
        result = training.reproduce(store, registry, 1)

    report.figure(
        "dataset_build_s",
        f"build the training set ({window}-day window + {holdout}-day holdout) from the "
        "feature store",
        build_s,
        "s",
        text=f"{len(dataset.train):,} + {len(dataset.holdout):,} rows in {build_s:.1f} s",
        versus=f"computing the hourly features of the {days}-day history",
        versus_value=features_s,
        versus_text=f"{features_s:.1f} s",
        ratio_means="build / features",
    )
    report.figure(
        "train_s",
        f"train the candidate ({window} days at scale {scale:g}, LightGBM, 2 threads, "
        "early stopping)",
        fit_s,
        "s",
        text=f"{fit_s:.1f} s wall, {model.best_iteration} rounds; holdout AP {metrics['ap']:.3f}",
        versus="its CPU seconds",
        versus_value=model.cpu_seconds,
        versus_text=f"{model.cpu_seconds:.1f} CPU s",
        ratio=model.cpu_seconds / fit_s,
        ratio_means="CPU / wall",
        target="<= 30 s",
    )
    report.figure(
        "reproduce_s",
        "`reproduce` of that version from its lineage (dataset reloaded, retrained, compared)",
        result.seconds,
        "s",
        text=f"{'byte-identical' if result.identical else 'DIFFERENT'}, {result.seconds:.1f} s",
        versus="the training",
        versus_value=fit_s,
        versus_text=f"{fit_s:.1f} s",
        ratio_means="reproduce / train",
    )
    report.details = {
        "identical": result.identical,
        "history_stored_s": round(stored_s, 1),
        "transactions": len(history),
        "holdout_ap": metrics["ap"],
    }
    report.finish()
    if not result.identical:
        raise SystemExit("reproduce did not give a byte-identical model")


if __name__ == "__main__":
    main()
