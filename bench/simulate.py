"""Simulator throughput: scale 100 (~1 M transactions a day) and the handbook's scale for a week.

Each run writes CSV (or Parquet) files to a fresh LocalObjectStore in a temporary directory and
is timed end to end from a cold start, population build and writing included. Prints a
markdown table.

    .venv/bin/python bench/simulate.py [--fmt csv|parquet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date

from fraudloop.core.store import LocalObjectStore
from fraudloop.feeds.files import simulate
from fraudloop.feeds.population import clear_population_cache

START = date(2018, 4, 1)
RUNS = [
    ("scale 100, 1 day", 100.0, 1),
    ("scale 100, 2 days", 100.0, 2),  # > 1 M transactions (~969 k a day at scale 100)
    ("handbook (scale 1), 7 days", 1.0, 7),
]


def run(scale: float, days: int, fmt: str) -> dict:
    clear_population_cache()  # every run pays for its population build
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-") as root:
        began = time.perf_counter()
        summary = simulate(
            LocalObjectStore(root), START, days, scale=scale, fmt=fmt, progress=False
        )
        seconds = time.perf_counter() - began
    return {
        "transactions": summary.transactions,
        "files": summary.files_written,
        "fraud_rate": summary.fraud_rate,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fmt", choices=["csv", "parquet"], default="csv")
    args = parser.parse_args()
    print(f"| run ({args.fmt}) | transactions | files | fraud rate | seconds | tx/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, scale, days in RUNS:
        r = run(scale, days, args.fmt)
        print(
            f"| {name} | {r['transactions']:,} | {r['files']:,} | {r['fraud_rate']:.2%} "
            f"| {r['seconds']:.1f} | {r['transactions'] / r['seconds']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
