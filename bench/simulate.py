"""Simulator throughput: scale 100 (~1 M transactions a day) against the handbook's scale.

Each run writes CSV (or Parquet) files to a fresh LocalObjectStore in a temporary directory and
is timed end to end from a cold start, population build and writing included. The same-run
comparison is the handbook scale's transactions per second: vectorised generation must not get
slower per transaction as the population grows 100-fold.

    .venv/bin/python bench/simulate.py [--fmt csv|parquet] [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Report, arguments
from fraudloop.core.store import LocalObjectStore
from fraudloop.feeds.files import simulate
from fraudloop.feeds.population import clear_population_cache

START = date(2018, 4, 1)
#: (scale of the large runs, days of the handbook run)
FULL = (100.0, 7)
QUICK = (3.0, 2)


def run(scale: float, days: int, fmt: str) -> dict:
    clear_population_cache()  # every run pays for its population build
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-") as root:
        began = time.perf_counter()
        summary = simulate(
            LocalObjectStore(root), START, days, scale=scale, fmt=fmt, progress=False
        )
        seconds = time.perf_counter() - began
    return {
        "scale": scale,
        "days": days,
        "transactions": summary.transactions,
        "files": summary.files_written,
        "fraud_rate": summary.fraud_rate,
        "seconds": seconds,
        "tx_per_s": summary.transactions / seconds,
    }


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--fmt", choices=["csv", "parquet"], default="csv")
    args = parser.parse_args()
    report = Report("simulate", args)
    big, handbook_days = QUICK if args.quick else FULL
    run(0.1, 1, args.fmt)  # warm-up: the first run of a process pays for lazy imports
    one = run(big, 1, args.fmt)
    two = run(big, 2, args.fmt)  # > 1 M transactions at scale 100 (~969 k a day)
    hand = run(1.0, handbook_days, args.fmt)

    report.figure(
        "large_tx_per_s",
        f"simulator, 1 day at scale {big:g}, cold (population build included), {args.fmt}",
        one["tx_per_s"],
        "tx/s",
        text=f"{one['transactions']:,} tx in {one['seconds']:.1f} s ({one['tx_per_s']:,.0f} tx/s)",
        versus=f"handbook scale, {handbook_days} days",
        versus_value=hand["tx_per_s"],
        versus_text=f"{hand['transactions']:,} tx in {hand['seconds']:.1f} s "
        f"({hand['tx_per_s']:,.0f} tx/s)",
        ratio_means="tx/s at scale / tx/s at handbook scale",
    )
    report.figure(
        "large_2days_s",
        f"simulator, 2 days at scale {big:g} ({two['transactions']:,} tx), cold",
        two["seconds"],
        "s",
        text=f"{two['seconds']:.1f} s ({two['tx_per_s']:,.0f} tx/s)",
        versus="1 day at the same scale",
        versus_value=one["seconds"],
        versus_text=f"{one['seconds']:.1f} s",
        ratio_means="2 days / 1 day",
        target="<= 60 s for >= 1 M tx",
    )
    report.note(f"\n| run ({args.fmt}) | transactions | files | fraud rate | seconds | tx/s |")
    report.note("|---|---:|---:|---:|---:|---:|")
    for r in (one, two, hand):
        report.note(
            f"| scale {r['scale']:g}, {r['days']} day(s) | {r['transactions']:,} | {r['files']:,} "
            f"| {r['fraud_rate']:.2%} | {r['seconds']:.1f} | {r['tx_per_s']:,.0f} |"
        )
    report.details["runs"] = [one, two, hand]
    report.finish()


if __name__ == "__main__":
    main()
