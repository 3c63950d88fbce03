"""Ingestion figures for the README (issue: data foundation).

1. Ingest + validate one hour of ~42,000 transactions (a 1 M/day feed): compute only, in a
   warm process (Great Expectations already imported) and the first call of a fresh process.
2. The whole Dagster run for that partition, `fraudloop backfill` from process start to exit,
   measured in the same session, and its ratio to the compute.
3. A single-run backfill of 30 days of hourly partitions at handbook scale (~10,000 tx/day).

Usage: .venv/bin/python bench/ingest.py [--days 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fraudloop.core.hours import hour_key  # noqa: E402
from fraudloop.core.keyspace import hour_landing_prefix  # noqa: E402
from fraudloop.core.store import LocalObjectStore  # noqa: E402
from fraudloop.data.ingest import ingest_transactions_hour, landed_files  # noqa: E402
from fraudloop.data.policy import IngestPolicy  # noqa: E402
from fraudloop.feeds.files import simulate  # noqa: E402
from fraudloop.feeds.population import make_population  # noqa: E402
from fraudloop.feeds.scenarios import generate_day  # noqa: E402


def _hour_of_42k(store: LocalObjectStore) -> tuple[str, int]:
    """Land the hour of a scale-100 day whose size is closest to 42,000 rows."""
    day = generate_day(make_population(seed=1, scale=100), date(2018, 4, 2))
    hours = day["tx_datetime"].dt.floor("h")
    counts = hours.value_counts()
    target = (counts - 42_000).abs().idxmin()
    rows = day[hours == target]
    frame = rows[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]].copy()
    frame["tx_datetime"] = frame["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame["amount"] = frame["amount"].map("{:.2f}".format)
    key = hour_key(target)
    store.put_bytes(
        hour_landing_prefix(key) + "part-0000.csv",
        frame.to_csv(index=False, lineterminator="\n").encode(),
    )
    return key, len(frame)


def _cli(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "fraudloop"), *args],
        env=env,
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = LocalObjectStore(tmp / "hour")
        key, rows = _hour_of_42k(store)
        files = landed_files(store, "transactions", key)
        history = [rows] * 7

        started = time.perf_counter()
        first = ingest_transactions_hour(store, key, files, history, IngestPolicy())
        first_s = time.perf_counter() - started
        assert first.status == "valid", first.reason
        warm = []
        for _ in range(3):
            fresh = LocalObjectStore(tmp / f"warm{len(warm)}")
            started = time.perf_counter()
            ingest_transactions_hour(fresh, key, files, history, IngestPolicy())
            warm.append(time.perf_counter() - started)
        warm_s = min(warm)
        rows_out.append(
            (
                "ingest + validate 1 hour (compute, warm process)",
                f"{rows:,} rows",
                f"{warm_s:.2f} s",
            )
        )
        rows_out.append(
            (
                "same, first call of a fresh process (GE import)",
                f"{rows:,} rows",
                f"{first_s:.2f} s",
            )
        )

        env = {
            **os.environ,
            "DAGSTER_HOME": str(tmp / "dagster"),
            "FRAUDLOOP_HOME": str(tmp / "run"),
        }
        run_store = LocalObjectStore(tmp / "run")
        for file_key, data in files:
            run_store.put_bytes(file_key, data)
        run_s = _cli(["backfill", "transactions", "--from", key, "--to", key], env)
        ok = run_store.exists(f"raw/transactions/{key}/_current.json")
        rows_out.append(
            (
                "whole Dagster run for that partition (process start to exit)",
                f"{rows:,} rows",
                f"{run_s:.2f} s ({run_s / warm_s:.1f}x the compute){'' if ok else ' FAILED'}",
            )
        )

        month = LocalObjectStore(tmp / "month")
        sim = simulate(month, date(2018, 4, 1), args.days, seed=3, scale=1.0, progress=False)
        env_month = {
            **env,
            "DAGSTER_HOME": str(tmp / "dagster_month"),
            "FRAUDLOOP_HOME": str(tmp / "month"),
        }
        last = f"{date(2018, 4, 1).toordinal() + args.days - 1}"
        last_day = date.fromordinal(int(last))
        backfill_s = _cli(
            ["backfill", "transactions", "--from", "2018-04-01-00:00", "--to", f"{last_day}-23:00"],
            env_month,
        )
        valid = sum(1 for i in month.list("raw/transactions/") if i.key.endswith("_current.json"))
        rows_out.append(
            (
                f"single-run backfill, {args.days} days hourly at handbook scale",
                f"{sim.transactions:,} rows, {valid} partitions",
                f"{backfill_s:.1f} s ({backfill_s / max(valid, 1) * 1000:.0f} ms/partition)",
            )
        )

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("| measurement | data | time |\n|---|---|---|")
    for name, data, figure in rows_out:
        print(f"| {name} | {data} | {figure} |")


if __name__ == "__main__":
    main()
