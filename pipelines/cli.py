"""`fraudloop`: the command line of the project.

Sub-commands import what they need when they run, so `fraudloop --help` and the light commands
start in a fraction of a second (Dagster, Great Expectations and LightGBM cost seconds each).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date, timedelta


def _duration(text: str) -> timedelta:
    """``7d``, ``36h``, ``90m`` or a bare number of days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 7d, 36h or 90m, not {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "d"
    return timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: value})


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, not {text!r}") from None


def _corrupt_spec(text: str) -> tuple[str, str]:
    """``KIND@YYYY-MM-DDTHH`` -> ``(kind, "YYYY-MM-DD-HH:00")``, with the kinds listed on error."""
    from fraudloop.corrupt import CORRUPTION_KINDS
    from fraudloop.simulate import parse_corrupt

    try:
        kind, hour = parse_corrupt(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--corrupt takes KIND@YYYY-MM-DDTHH (e.g. negative_amount@2018-04-03T14), not {text!r}"
        ) from None
    if kind not in CORRUPTION_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown corruption {kind!r}; expected one of: {', '.join(sorted(CORRUPTION_KINDS))}"
        )
    return kind, hour


def _settings():
    from pipelines.settings import Settings

    return Settings.from_env()


def cmd_simulate(args) -> int:
    from fraudloop.simulate import simulate

    summary = simulate(
        _settings().open_store(),
        args.start,
        args.days,
        seed=args.seed,
        scale=args.scale,
        customers=args.customers,
        terminals=args.terminals,
        fmt=args.format,
        label_delay=args.label_delay,
        drift=args.drift,
        corrupt=args.corrupt,
        labels_until=args.labels_until,
        progress=not args.quiet,
    )
    print(summary.describe() if hasattr(summary, "describe") else summary)
    return 0


def cmd_import(args) -> int:
    from fraudloop.importer import import_history, parse_mapping

    summary = import_history(
        _settings().open_store(),
        args.transactions,
        args.labels,
        mapping=parse_mapping(args.map),
        fmt=args.format,
        label_delay=args.label_delay,
    )
    print(
        f"imported {summary.transaction_rows:,} transactions into {summary.transaction_files:,} "
        f"hourly files and {summary.label_rows:,} labels into {summary.label_files:,} daily files"
    )
    for note in summary.notes:
        print(f"note: {note}")
    return 0


def cmd_backfill(args) -> int:
    from pipelines.runner import run_partition_range

    job = {"transactions": "hourly_ingestion_job", "labels": "daily_labels_job"}[args.table]
    result = run_partition_range(job, args.start, args.end, tags={"fraudloop/trigger": "cli"})
    print(f"run {result.run_id}: {'success' if result.success else 'FAILURE'}")
    return 0 if result.success else 1


def cmd_quarantine(args) -> int:
    from fraudloop.quarantine import list_quarantine

    records = list_quarantine(_settings().open_store(), table=args.table)
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    if not records:
        print("quarantine is empty")
    for record in records:
        print(f"{record.get('partition')}  {record.get('source_key')}\n    {record.get('summary')}")
    return 0


def cmd_demo(args) -> int:
    from pipelines.demo import run_demo

    return run_demo(days=args.days, scale=args.scale, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudloop", description="The fraudloop MLOps delivery loop (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="generate card transactions and labels into landing/")
    sim.add_argument("--start", type=_date, default=date(2018, 4, 1))
    sim.add_argument("--days", type=int, default=7)
    sim.add_argument("--customers", type=int, default=None)
    sim.add_argument("--terminals", type=int, default=None)
    sim.add_argument("--scale", type=float, default=1.0, help="1 = handbook, 100 = ~1 M tx/day")
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--format", choices=["csv", "parquet"], default="csv")
    sim.add_argument("--label-delay", type=_duration, default=timedelta(days=7))
    sim.add_argument("--labels-until", type=_date, default=None)
    sim.add_argument(
        "--drift", action="append", default=[], help="e.g. card_testing@2018-05-15 (repeatable)"
    )
    sim.add_argument(
        "--corrupt",
        action="append",
        type=_corrupt_spec,
        default=[],
        help="KIND@YYYY-MM-DDTHH: replace that hour's file with a broken one (repeatable)",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_simulate)

    imp = sub.add_parser("import", help="split an existing history into the landing layout")
    imp.add_argument("--transactions", required=True)
    imp.add_argument("--labels", default=None)
    imp.add_argument("--map", action="append", default=[], metavar="SOURCE=canonical")
    imp.add_argument("--format", choices=["csv", "parquet"], default="parquet")
    imp.add_argument("--label-delay", type=_duration, default=timedelta(days=7))
    imp.set_defaults(func=cmd_import)

    back = sub.add_parser("backfill", help="ingest a partition range as one Dagster run")
    back.add_argument("table", choices=["transactions", "labels"])
    back.add_argument("--from", dest="start", required=True, help="first partition key")
    back.add_argument("--to", dest="end", required=True, help="last partition key (inclusive)")
    back.set_defaults(func=cmd_backfill)

    quar = sub.add_parser("quarantine", help="list quarantined files and why")
    quar.add_argument("--table", choices=["transactions", "labels"], default=None)
    quar.add_argument("--json", action="store_true")
    quar.set_defaults(func=cmd_quarantine)

    demo = sub.add_parser("demo", help="the end-to-end demo on the local profile")
    demo.add_argument("--days", type=int, default=10)
    demo.add_argument("--scale", type=float, default=0.5)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"fraudloop {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
