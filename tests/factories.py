"""Small, valid feed files for tests that need a few landed hours without the simulator."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fraudloop.core.hours import hour_start
from fraudloop.core.keyspace import day_landing_prefix, hour_landing_prefix


def hour_frame(partition_key: str, rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = hour_start(partition_key)
    offsets = np.sort(rng.integers(0, 3600, rows))
    stamp = start.strftime("%Y%m%d%H")
    return pd.DataFrame(
        {
            "transaction_id": [f"{stamp}-{seed}-{i:05d}" for i in range(rows)],
            "tx_datetime": [
                (start + pd.Timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ")
                for s in offsets
            ],
            "customer_id": [f"C{int(c):05d}" for c in rng.integers(0, 50, rows)],
            "terminal_id": [f"T{int(t):05d}" for t in rng.integers(0, 80, rows)],
            "amount": [f"{a:.2f}" for a in rng.uniform(1, 150, rows)],
        }
    )


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def land_hour(
    store, partition_key: str, rows: int = 40, seed: int = 0, name: str = "part-0000.csv"
):
    """Land one valid hourly file; returns its key and frame."""
    frame = hour_frame(partition_key, rows, seed)
    key = hour_landing_prefix(partition_key) + name
    store.put_bytes(key, csv_bytes(frame))
    return key, frame


def land_labels(store, day: str, transactions: pd.DataFrame, name: str = "labels.csv") -> str:
    """Labels for `transactions`, all known on `day` (noon), every 10th one a fraud."""
    labels = pd.DataFrame(
        {
            "transaction_id": transactions["transaction_id"].to_numpy(),
            "is_fraud": [1 if i % 10 == 0 else 0 for i in range(len(transactions))],
            "known_at": f"{day}T12:00:00Z",
        }
    )
    key = day_landing_prefix(day) + name
    store.put_bytes(key, csv_bytes(labels))
    return key


def load_bench_features():
    """bench/features.py as a module: its data generator and the naive reference implementation
    serve the feature tests as an oracle (one copy of the reference, not one per test file)."""
    name = "fraudloop_bench_features"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "bench" / "features.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def store_history(
    store,
    history: pd.DataFrame,
    hours: list[str],
    *,
    label_delay=None,
    labelled: pd.DataFrame | None = None,
    all_label_days: bool = False,
    quarantined_hours: tuple[str, ...] = (),
) -> None:
    """Leave a simulated history as ingestion would: raw hourly transactions for `hours`, raw
    daily labels (known `label_delay` after each transaction; only for `labelled` rows when
    given; only days up to the last hour unless `all_label_days`) and the bi-temporal labels;
    `quarantined_hours` are marked quarantined instead of written.
    Written directly: ingestion has its own tests, and these tests are about what comes after."""
    from datetime import timedelta

    from fraudloop.core import tables
    from fraudloop.core.hours import HOUR_KEY_FORMAT
    from fraudloop.features.labels import TransactionLookup, build_fraud_labels

    tx = history[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]]
    of_hour = tx["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    for key in hours:
        if key in quarantined_hours:
            tables.mark_quarantined(store, "transactions", key, "broken feed file")
        else:
            tables.write_partition(store, "transactions", key, tx[of_hour == key], [])
    rows = history if labelled is None else labelled
    labels = pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"],
            "is_fraud": rows["is_fraud"].astype("int8"),
            "known_at": rows["tx_datetime"] + (label_delay or timedelta(days=7)),
        }
    )
    label_day = labels["known_at"].dt.strftime("%Y-%m-%d")
    lookup = TransactionLookup(store)  # each hour is read once for all label days
    for day in sorted(label_day.unique()):
        if all_label_days or day <= hours[-1][:10]:
            tables.write_partition(store, "labels", day, labels[label_day == day], [])
            build_fraud_labels(store, day, 45, lookup)


def register(registry, dataset, config) -> int:
    """Train `config` on `dataset` and register it the one way candidates are made
    (`fraudloop.model.training.train_candidate`); returns the version number."""
    from fraudloop.model.training import train_candidate

    candidate = train_candidate(
        registry, dataset, config, cpu_hour_price=0.0, actor="test:trainer", reason="by the test"
    )
    return candidate.version


def hour_keys(first_day, days: int) -> list[str]:
    """The hourly partition keys of `days` days from `first_day` (a date)."""
    from datetime import timedelta

    from fraudloop.core.hours import HOUR_KEY_FORMAT

    first = pd.Timestamp(first_day, tz="UTC")
    return [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24 * days)]


def simulated_history(first_day, days: int, *, seed: int, scale: float) -> pd.DataFrame:
    """`days` simulated days from `first_day`, in memory (transactions with their labels)."""
    from datetime import timedelta

    from fraudloop.feeds.population import make_population
    from fraudloop.feeds.scenarios import generate_day

    population = make_population(seed=seed, scale=scale)
    frames = [generate_day(population, first_day + timedelta(days=d)) for d in range(days)]
    return pd.concat(frames, ignore_index=True)
