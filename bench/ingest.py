"""Ingestion figures: what one hour costs, what a Dagster run adds, and a single-run backfill.

1. Ingest + validate one hour of ~42,000 transactions (a 1 M/day feed): compute only, in a
   warm process (Great Expectations already imported), against the first call of a fresh
   process.
2. The whole Dagster run for that partition, `fraudloop backfill` from process start to exit,
   against the compute: the ratio is what a run costs beyond the work.
3. A single-run backfill of 30 days of hourly partitions at handbook scale (~10,000 tx/day),
   against a run per partition (the same command for one of those hours, times the number of
   partitions).
4. The row-level policy (``--policy`` runs only this part and prints its tables; the default
   run keeps them in the JSON's details): rows kept vs lost for one hour with 0.1 %, 1 % and
   10 % bad rows, whole-file quarantine (before) against row-level rejection with the 5 %
   backstop (after); and what the cross-hour id index costs per hour (check + update) as the
   history grows from 7 to 183 days at handbook scale.

    .venv/bin/python bench/ingest.py [--days 30] [--quick] [--json PATH]
    .venv/bin/python bench/ingest.py --policy [--quick]
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from bench.report import REPO, Report, arguments
from fraudloop.core.hours import hour_key, hour_start
from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.core.store import LocalObjectStore
from fraudloop.data import id_index
from fraudloop.data.ingest import ingest_transactions_hour, landed_files
from fraudloop.data.policy import IngestPolicy
from fraudloop.feeds.corruption import sample_transactions_csv
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
    """`fraudloop backfill transactions --in-process` on the store `tmp/name` with its own
    Dagster instance, process start to exit; fails unless the last partition was ingested."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / f"dagster-{name}"),
        "FRAUDLOOP_HOME": str(tmp / name),
    }
    cli = Path(sys.executable).parent / "fraudloop"
    started = time.perf_counter()
    done = subprocess.run(
        [str(cli), "backfill", "transactions", "--from", first, "--to", last, "--in-process"],
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


def _hour_with_bad_rows(key: str, rows: int, share: float) -> bytes:
    """A valid hour in which ``share`` of the rows (spread evenly) have a negative amount."""
    frame = pd.read_csv(
        io.BytesIO(sample_transactions_csv(hour_start(key), rows=rows, seed=5)), dtype=str
    )
    bad = round(rows * share)
    if bad:
        frame.loc[np.linspace(0, rows - 1, bad).astype(int), "amount"] = "-1.00"
    return frame.to_csv(index=False, lineterminator="\n").encode()


def rows_kept(tmp: Path, rows: int) -> list[dict]:
    """Rows kept of one hour with 0.1 %, 1 %, 10 % bad rows: before (one bad row quarantined
    the whole file) and after (row-level rejection, file-level backstop)."""
    key = "2018-04-01-05:00"
    out = []
    for share in (0.001, 0.01, 0.10):
        data = _hour_with_bad_rows(key, rows, share)
        store = LocalObjectStore(tmp / f"policy-{share}")
        files = [(hour_landing_prefix(key) + "part-0000.csv", data)]
        started = time.perf_counter()
        outcome = ingest_transactions_hour(store, key, files, [], IngestPolicy())
        seconds = time.perf_counter() - started
        bad = round(rows * share)
        kept = outcome.rows if outcome.status == "valid" else 0
        out.append(
            {
                "bad_share": share,
                "rows": rows,
                "bad_rows": bad,
                "kept_before": 0 if bad else rows,
                "kept_after": kept,
                "lost_after": rows - kept,
                "status_after": outcome.status,
                "seconds": round(seconds, 3),
            }
        )
    return out


def index_cost(tmp: Path, days_checked: tuple[int, ...], per_day: int) -> list[dict]:
    """Check + update of the cross-hour id index for one new hour, as history grows (hours of
    ``per_day / 24`` ids each, indexed hour by hour as ingestion does)."""
    store = LocalObjectStore(tmp / "index")
    per_hour = max(per_day // 24, 1)
    numbers = pd.Series(np.arange(per_hour)).map("{:06d}".format)
    out, indexed = [], 0
    for day_n in range(max(days_checked) + 1):
        day = FIRST + timedelta(days=day_n)
        for h in range(24):
            key = f"{day}-{h:02d}:00"
            frame = pd.DataFrame(
                {
                    "transaction_id": f"{day:%Y%m%d}{h:02d}-" + numbers,
                    "tx_datetime": hour_start(key) + pd.to_timedelta(np.arange(per_hour), "ms"),
                }
            )
            measure = day_n in days_checked and h == 12
            started = time.perf_counter()
            if measure:
                index = id_index.load(store)
                loaded = time.perf_counter() - started
                id_index.ingested_elsewhere(store, key, frame["transaction_id"], index)
            id_index.replace_hour(store, key, frame)
            if measure:
                size = id_index.describe(store)
                out.append(
                    {
                        "history_days": day_n,
                        "history_ids": indexed,
                        "index_mb": round(size["bytes"] / 1e6, 2),
                        "load_s": round(loaded, 4),
                        "hour_s": round(time.perf_counter() - started, 4),
                    }
                )
            indexed += per_hour
    return out


def policy_markdown(kept: list[dict], index: list[dict]) -> str:
    lines = [
        "| bad rows in the hour | rows kept before (whole file lost) | rows kept after | "
        "after: the hour is |",
        "|---|---|---|---|",
    ]
    for r in kept:
        lines.append(
            f"| {r['bad_share']:.1%} ({r['bad_rows']:,} of {r['rows']:,}) | {r['kept_before']:,} "
            f"| {r['kept_after']:,} | {r['status_after']} |"
        )
    lines += [
        "",
        "| history | ids indexed | index size | load | check + update, one hour |",
        "|---|---|---|---|---|",
    ]
    for r in index:
        lines.append(
            f"| {r['history_days']} day(s) | {r['history_ids']:,} | {r['index_mb']:.2f} MB "
            f"| {r['load_s'] * 1000:.0f} ms | {r['hour_s'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def policy(tmp: Path, quick: bool) -> dict:
    kept = rows_kept(tmp, 2_000 if quick else 42_000)
    index = index_cost(tmp, (1, 3) if quick else (7, 30, 90, 183), 10_000)
    print(policy_markdown(kept, index))
    return {"rows_kept": kept, "index_cost": index}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--days", type=int, help="days of the backfill (30; quick: 1)")
    parser.add_argument(
        "--policy", action="store_true", help="only the row-policy and id-index tables"
    )
    args = parser.parse_args()
    if args.policy:
        with tempfile.TemporaryDirectory(prefix="fraudloop-bench-policy-") as tmp:
            policy(Path(tmp), args.quick)
        return
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
        row_policy = policy(tmp, args.quick)

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
        **row_policy,
    }
    report.finish()


if __name__ == "__main__":
    main()
