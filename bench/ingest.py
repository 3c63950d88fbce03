"""Ingestion figures: what one hour costs, what a Dagster run adds, and a single-run backfill.

1. Ingest + validate one hour of ~42,000 transactions (a 1 M/day feed): compute only, in a
   warm process (Great Expectations already imported), against the first call of a fresh
   process.
2. The whole Dagster run for that partition, `fraudloop backfill` from process start to exit,
   against the compute: the ratio is what a run costs beyond the work.
3. A single-run backfill of 30 days of hourly partitions at handbook scale (~10,000 tx/day),
   against a run per partition (the same command for one of those hours, times the number of
   partitions).

    .venv/bin/python bench/ingest.py [--days 30] [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, Report, arguments
from fraudloop.core.hours import hour_key
from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.core.store import LocalObjectStore
from fraudloop.data.ingest import ingest_transactions_hour, landed_files
from fraudloop.data.policy import IngestPolicy
from fraudloop.feeds.files import simulate
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import generate_day

FIRST = date(2018, 4, 1)
#: (scale of the day the hour comes from, rows wanted in the hour, warm repeats, backfill scale)
FULL = (100.0, 42_000, 3, 1.0)
QUICK = (2.0, 1_000, 2, 0.1)


def land_hour(store: LocalObjectStore, scale: float, rows_wanted: int) -> tuple[str, int]:
    """Land the hour of a simulated day whose size is closest to `rows_wanted` rows."""
    day = generate_day(make_population(seed=1, scale=scale), date(2018, 4, 2))
    hours = day["tx_datetime"].dt.floor("h")
    counts = hours.value_counts()
    target = (counts - rows_wanted).abs().idxmin()
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


def backfill(tmp: Path, name: str, first: str, last: str) -> float:
    """`fraudloop backfill transactions` on the store `tmp/name` with its own Dagster instance,
    process start to exit; fails unless the last partition was ingested."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / f"dagster-{name}"),
        "FRAUDLOOP_HOME": str(tmp / name),
    }
    cli = Path(sys.executable).parent / "fraudloop"
    started = time.perf_counter()
    done = subprocess.run(
        [str(cli), "backfill", "transactions", "--from", first, "--to", last],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not LocalObjectStore(tmp / name).exists(
        f"raw/transactions/{last}/_current.json"
    ):
        raise SystemExit(f"backfill {first}..{last} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--days", type=int, help="days of the backfill (30; quick: 1)")
    args = parser.parse_args()
    scale, rows_wanted, repeats, backfill_scale = QUICK if args.quick else FULL
    days = args.days or (1 if args.quick else 30)
    report = Report("ingest", args)
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-ingest-") as tmp:
        tmp = Path(tmp)
        store = LocalObjectStore(tmp / "hour")
        key, rows = land_hour(store, scale, rows_wanted)
        files = landed_files(store, "transactions", key)
        history = [rows] * 7

        started = time.perf_counter()
        first = ingest_transactions_hour(store, key, files, history, IngestPolicy())
        first_s = time.perf_counter() - started
        if first.status != "valid":
            raise SystemExit(f"the hour was not ingested: {first.reason}")
        warm = []
        for i in range(repeats):
            fresh = LocalObjectStore(tmp / f"warm{i}")
            started = time.perf_counter()
            ingest_transactions_hour(fresh, key, files, history, IngestPolicy())
            warm.append(time.perf_counter() - started)
        warm_s = min(warm)

        month = LocalObjectStore(tmp / "month")
        sim = simulate(month, FIRST, days, seed=3, scale=backfill_scale, progress=False)
        last = f"{FIRST + timedelta(days=days - 1)}-23:00"
        first_hour = f"{FIRST}-00:00"
        # the first hour alone, in a run of its own; at full size twice, the first run warming
        # the file cache for every run after it (the 42k-hour run above paid for that)
        for i in range(1 if args.quick else 2):
            one = LocalObjectStore(tmp / f"one{i}")
            for file_key, data in landed_files(month, "transactions", first_hour):
                one.put_bytes(file_key, data)
            one_s = backfill(tmp, f"one{i}", first_hour, first_hour)
        run_store = LocalObjectStore(tmp / "run")
        for file_key, data in files:
            run_store.put_bytes(file_key, data)
        run_s = backfill(tmp, "run", key, key)
        backfill_s = backfill(tmp, "month", first_hour, last)
        partitions = sum(
            1 for i in month.list("raw/transactions/") if i.key.endswith("_current.json")
        )

    report.figure(
        "hour_compute_s",
        f"ingest + validate 1 hour (compute, warm process, best of {repeats})",
        warm_s,
        "s",
        text=f"{rows:,} rows in {warm_s:.2f} s",
        versus="first call of a fresh process (Great Expectations import)",
        versus_value=first_s,
        ratio=first_s / warm_s,
        ratio_means="first call / warm",
        target="<= 3 s",
    )
    report.figure(
        "dagster_run_s",
        "whole Dagster run for that partition (`fraudloop backfill`, process start to exit)",
        run_s,
        "s",
        versus="the warm compute",
        versus_value=warm_s,
        ratio_means="run / compute: the rest is interpreter, imports, instance",
    )
    report.figure(
        "backfill_s",
        f"single-run backfill, {days} day(s) hourly at scale {backfill_scale:g} "
        f"({sim.transactions:,} tx, {partitions} partitions)",
        backfill_s,
        "s",
        text=f"{backfill_s:.1f} s ({backfill_s / max(partitions, 1) * 1000:.0f} ms/partition)",
        versus=f"a run per partition ({partitions} x one hour's run, {one_s:.1f} s)",
        versus_value=partitions * one_s,
        versus_text=f"{partitions * one_s:,.0f} s",
        ratio=partitions * one_s / backfill_s,
        ratio_means="a run per partition / one run",
        target="<= 3 min for 30 days",
    )
    report.details = {
        "hour": key,
        "rows": rows,
        "warm_s_all": [round(s, 3) for s in warm],
        "first_call_s": round(first_s, 3),
        "one_hour_run_s": round(one_s, 2),
        "backfill_transactions": sim.transactions,
        "backfill_partitions": partitions,
    }
    report.finish()


if __name__ == "__main__":
    main()
