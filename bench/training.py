"""Training figures: the dataset, the candidate, and its reproduction from lineage.

Builds a stored handbook-scale history (raw partitions, bi-temporal labels, hourly features) in a
temporary local store, then measures, in one run, each beside a figure of the same run:
- building the training dataset (28-day window + 7-day holdout) from the feature store, against
  computing the hourly features of that history;
- training the candidate on the 28-day window (~280 k rows): wall against CPU seconds;
- `reproduce` of that registered version (byte-identical or not), against the training;
- the peak memory of the fit (`booster.train`) on a window the size `FRAUDLOOP_TRAIN_MAX_ROWS`
  allows at 100x (3 M rows, all features; synthetic values, 60 rounds), in a child process:
  its RSS above the frame it is given, against the size of one float64 feature matrix (the
  ratio is the number of matrices the fit holds at its peak; 100x training's 8 GB limit is
  where this matters).

    .venv/bin/python bench/training.py [--days 43] [--fit-rows 3000000] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
#: rows of the fit-memory window (full, quick)
FIT_ROWS = (3_000_000, 50_000)


def _rss_mb() -> float:
    """This process's resident set now, MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fit_memory_child(rows: int) -> None:
    """Train on a synthetic ``rows``-row window and print what the fit's peak held above its
    frame. Its own process: the peak (``ru_maxrss``) must be the fit's, not a bench's."""
    from dataclasses import replace

    import numpy as np

    from fraudloop.core.processes import peak_rss_mb
    from fraudloop.features.compute import FEATURE_NAMES
    from fraudloop.model.booster import train

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({name: rng.gamma(2.0, 10.0, rows).round(2) for name in FEATURE_NAMES})
    seconds = np.sort(rng.integers(0, 4 * 86_400, rows))
    frame["tx_datetime"] = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    frame["transaction_id"] = [f"t{i:09d}" for i in rng.permutation(rows)]
    signal = (frame[FEATURE_NAMES[0]] - 20) / 10 + rng.normal(0, 1, rows)
    labels = (signal > 3.2).to_numpy().astype(np.int64)
    weights = np.where(labels == 1, 1.0, 2.0)  # a down-sampled window's weights
    import lightgbm  # noqa: F401 - loaded before the frame's RSS is read

    frame_mb = _rss_mb()
    started = time.perf_counter()
    model = train(frame, labels, replace(TrainConfig(), n_estimators=60), weights)
    peak_mb = peak_rss_mb()
    result = {
        "rows": rows,
        "features": len(FEATURE_NAMES),
        "frame_rss_mb": round(frame_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "matrix_mb": round(rows * len(FEATURE_NAMES) * 8 / 2**20, 1),
        "fit_s": round(time.perf_counter() - started, 1),
        "model_sha256": model.sha256,
    }
    print(json.dumps(result))


def fit_memory(rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--fit-memory-child", str(rows)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--days", type=int, help="days of history (43; quick: 5)")
    parser.add_argument("--fit-rows", type=int, help="rows of the fit-memory window (3 M)")
    parser.add_argument("--fit-memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_memory_child:
        _fit_memory_child(args.fit_memory_child)
        return
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
    fit_rows = args.fit_rows or FIT_ROWS[args.quick]
    memory = fit_memory(fit_rows)
    above = memory["peak_rss_mb"] - memory["frame_rss_mb"]

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
    report.figure(
        "fit_peak_mb",
        f"peak memory of the fit on a {fit_rows:,}-row window ({memory['features']} features, "
        "synthetic, 60 rounds): RSS above its frame",
        above,
        "MB",
        text=f"{above:,.0f} MB above the frame's {memory['frame_rss_mb']:,.0f} MB",
        versus="one float64 feature matrix of the window",
        versus_value=memory["matrix_mb"],
        versus_text=f"{memory['matrix_mb']:,.0f} MB",
        ratio_means="matrices held at the peak",
    )
    report.details = {
        "fit_memory": memory,
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
