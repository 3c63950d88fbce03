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

from fraudloop.core.errors import ConfigError, FraudloopError
from pipelines.runner import WORKSPACE


def _duration(text: str) -> timedelta:
    """``7d``, ``36h``, ``90m`` or a bare number of days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 7d, 36h or 90m, not {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "d"
    try:
        return timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: value})
    except OverflowError:  # found by tests/fuzz: 99999999999d was a traceback
        raise argparse.ArgumentTypeError(f"duration {text!r} is too long") from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, not {text!r}") from None


def _corrupt_spec(text: str) -> tuple[str, str]:
    """``KIND@YYYY-MM-DDTHH`` -> ``(kind, "YYYY-MM-DD-HH:00")``, with the kinds listed on error."""
    from fraudloop.feeds.corruption import CORRUPTION_KINDS
    from fraudloop.feeds.files import parse_corrupt

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
    from fraudloop.core.settings import Settings

    return Settings.from_env()


def _config():
    """Every setting, the stages' policies included (pipelines.config)."""
    from pipelines.config import ProjectConfig

    return ProjectConfig.from_env()


def cmd_simulate(args) -> int:
    from fraudloop.feeds.files import simulate

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
    from fraudloop.feeds.importer import import_history, parse_mapping

    if args.first_day and args.last_day and args.first_day > args.last_day:
        raise ConfigError(f"--from {args.first_day} is after --to {args.last_day}")
    summary = import_history(
        _settings().open_store(),
        args.transactions,
        args.labels,
        mapping=parse_mapping(args.map),
        fmt=args.format,
        label_delay=args.label_delay,
        first_day=args.first_day,
        last_day=args.last_day,
    )
    print(
        f"imported {summary.transaction_rows:,} transactions into {summary.transaction_files:,} "
        f"hourly files and {summary.label_rows:,} labels into {summary.label_files:,} daily files"
        + (f"; superseded {summary.superseded:,} earlier file(s)" if summary.superseded else "")
    )
    for note in summary.notes:
        print(f"note: {note}")
    return 0


def cmd_backfill(args) -> int:
    from datetime import UTC, datetime

    from fraudloop.core.hours import check_partition_range

    settings = _settings()
    grain = {"transactions": "hourly", "labels": "daily"}[args.table]
    try:
        first, last = check_partition_range(
            grain,
            args.start,
            args.end,
            start=settings.partition_start,
            end=settings.partition_end,
            now=datetime.now(UTC),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    from pipelines import runner

    home = runner.ensure_dagster_home()  # before Dagster loads: refuses when DAGSTER_HOME is unset
    job = {"transactions": "hourly_ingestion_job", "labels": "daily_labels_job"}[args.table]
    tags = {"fraudloop/trigger": "cli"}
    if args.in_process:
        print(f"{job} over {first} .. {last} in this process, recorded in the instance at {home}")
        result = runner.run_partition_range(job, first, last, tags=tags)
        print(f"run {result.run_id}: {'success' if result.success else 'FAILURE'}")
        return 0 if result.success else 1
    try:
        run_id = runner.submit_partition_range(job, first, last, tags, args.workspace)
    except RuntimeError as error:
        raise ConfigError(str(error)) from None
    print(
        f"run {run_id}: {job} over {first} .. {last} submitted to the queue of the instance at "
        f"{home}; the daemon launches it (`make ui` runs one); the UI shows it under Runs"
    )
    if not args.wait:
        return 0
    status = runner.wait_for_run(run_id, args.wait)
    print(f"run {run_id}: {status.value if status else 'not found'}")
    return 0 if status is not None and status.value == "SUCCESS" else 1


def _listing(records: list[dict], as_json: bool, empty: str, describe) -> int:
    """Print records as JSON, or each as the lines `describe(record)` gives (or `empty`)."""
    if as_json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    if not records:
        print(empty)
    for record in records:
        print(describe(record))
    return 0


def cmd_quarantine(args) -> int:
    from fraudloop.data.quarantine import list_quarantine

    return _listing(
        list_quarantine(_settings().open_store(), table=args.table),
        args.json,
        "quarantine is empty",
        lambda r: f"{r.get('partition')}  {r.get('source_key')}\n    {r.get('summary')}",
    )


def _incident_lines(i: dict) -> str:
    head = f"{i['opened_at'][:19]}  {i['severity']:<8} {i['dedup_key']}  x{i['count']}"
    return f"{head}\n    {i['title']}"


def _event_lines(e: dict) -> str:
    sent = ", ".join(f"{k}: {v}" for k, v in e.get("deliveries", {}).items()) or "recorded"
    head = f"{e['raised_at'][:19]}  {e['action']:<8} {e['severity']:<8} {e['dedup_key']}"
    return f"{head}\n    {e['title']}: {e['summary'][:120]}  [{sent}]"


def cmd_alerts(args) -> int:
    from fraudloop.core.alerts import Alerter, read_events

    store = _settings().open_store()
    if args.open:
        rows = sorted(Alerter(store).open_incidents().values(), key=lambda i: i["opened_at"])
        return _listing(rows, args.json, "no open incident", _incident_lines)
    return _listing(read_events(store)[-args.last :], args.json, "no alert", _event_lines)


def cmd_reports(args) -> int:
    from fraudloop.core.report_server import make_server

    server = make_server(_settings().open_store(), args.host, args.port)
    print(f"reports at http://{args.host}:{server.server_address[1]}/ (read-only; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_demo(args) -> int:
    from pipelines.demo import DemoPlan, run_demo

    return run_demo(DemoPlan(scale=args.scale, seed=args.seed, pace_seconds=args.pace))


def _actor() -> str:
    import os

    return f"cli:{os.environ.get('USER') or 'unknown'}"


def _registry():
    from fraudloop.model.registry import ModelRegistry

    settings = _settings()
    return ModelRegistry(settings.open_store(), name=settings.model_name)


def _ref(text: str) -> int | str:
    """A version number (``3``) or an alias name (``production``), as typed."""
    text = text.strip()
    return int(text) if text.isdigit() else text


def _fmt_metric(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _aliases_by_version(aliases: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name, version in sorted(aliases.items()):
        out.setdefault(version, []).append(name)
    return out


def cmd_models_list(args) -> int:
    registry = _registry()
    versions = registry.list_versions()
    by_version = _aliases_by_version(registry.aliases())
    rows = [
        {
            "version": v.version,
            "created_at": v.created_at,
            "dataset_id": v.metadata.get("dataset_id"),
            "metrics": {
                k: v.metadata.get("metrics", {}).get(k) for k in ("auc", "ap", "cp_at_100")
            },
            "aliases": by_version.get(v.version, []),
            "actor": v.actor,
        }
        for v in versions
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"model {registry.name!r} has no registered versions")
        return 0
    print(
        f"{'VERSION':>7}  {'CREATED':<19}  {'DATASET':<12}  "
        f"{'AUC':>6}  {'AP':>6}  {'CP@100':>6}  ALIASES"
    )
    for row in rows:
        m = row["metrics"]
        print(
            f"{row['version']:>7}  {str(row['created_at'])[:19]:<19}  "
            f"{str(row['dataset_id'] or '-')[:12]:<12}  {_fmt_metric(m['auc']):>6}  "
            f"{_fmt_metric(m['ap']):>6}  {_fmt_metric(m['cp_at_100']):>6}  "
            f"{', '.join(row['aliases']) or '-'}"
        )
    return 0


def _lineage_summary(lineage: dict) -> dict:
    dataset = lineage.get("dataset") or {}
    return {
        "dataset_id": lineage.get("dataset_id"),
        "dataset_spec": dataset.get("spec"),
        "dataset_rows": dataset.get("rows"),
        "skipped_hours": len(dataset.get("skipped_hours") or {}),
        "splits": lineage.get("splits"),
        "seed": lineage.get("seed"),
        "config": lineage.get("config"),
        "model_sha256": lineage.get("model_sha256"),
        "best_iteration": lineage.get("best_iteration"),
        "feature_code_hash": lineage.get("feature_code_hash"),
        "git_commit": lineage.get("git_commit"),
        "uv_lock_sha256": lineage.get("uv_lock_sha256"),
        "libraries": lineage.get("libraries"),
        "train_seconds": lineage.get("train_seconds"),
        "cost": lineage.get("cost"),
    }


def cmd_models_show(args) -> int:
    from fraudloop.model.training import LINEAGE_FILE

    registry = _registry()
    loaded = registry.load(_ref(args.version))  # every file verified against the manifest
    info = loaded.info
    aliases = _aliases_by_version(registry.aliases()).get(info.version, [])
    lineage = None
    if LINEAGE_FILE in loaded.files:
        lineage = _lineage_summary(json.loads(loaded.files[LINEAGE_FILE]))
    out = {
        "name": info.name,
        "version": info.version,
        "created_at": info.created_at,
        "actor": info.actor,
        "reason": info.reason,
        "aliases": aliases,
        "files": info.files,
        "metadata": info.metadata,
        "lineage": lineage,
    }
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"model {info.name!r} version {info.version}  (aliases: {', '.join(aliases) or 'none'})")
    print(f"  created   {info.created_at} by {info.actor}: {info.reason}")
    for fname, entry in sorted(info.files.items()):
        print(f"  file      {fname}  sha256 {entry['sha256']}  {entry['size']:,} bytes  (verified)")
    metrics = info.metadata.get("metrics", {})
    if metrics:
        print("  metrics   " + "  ".join(f"{k}={_fmt_metric(v)}" for k, v in metrics.items()))
    if lineage is None:
        print("  lineage   none (no lineage.json)")
        return 0
    spec = lineage["dataset_spec"] or {}
    print(f"  dataset   {lineage['dataset_id']}")
    if spec:
        print(
            f"            train {spec.get('train_start')} .. {spec.get('holdout_start')}, "
            f"holdout .. {spec.get('end')}, cutoff {spec.get('cutoff')}"
        )
    if lineage["dataset_rows"]:
        rows = lineage["dataset_rows"]
        print(
            f"            rows train={rows.get('train')} holdout={rows.get('holdout')} "
            f"unlabelled={rows.get('unlabelled_rows')} skipped_hours={lineage['skipped_hours']}"
        )
    print(f"  seed      {lineage['seed']}  best_iteration {lineage['best_iteration']}")
    print(
        f"  code      git {lineage['git_commit']}  "
        f"features {str(lineage['feature_code_hash'])[:12]}"
    )
    libs = lineage["libraries"] or {}
    print("  libraries " + "  ".join(f"{k}={v}" for k, v in sorted(libs.items())))
    return 0


def cmd_models_diff(args) -> int:
    diff = _registry().diff(_ref(args.a), _ref(args.b))
    if args.json:
        print(json.dumps(diff, indent=2, default=str))
        return 0
    a, b = diff["a"], diff["b"]
    if not diff["metadata"] and not diff["files"]:
        print(f"v{a} and v{b} have the same metadata and files")
        return 0
    width = max([len(k) for k in (*diff["metadata"], *diff["files"])] + [8])
    print(f"{'KEY':<{width}}  v{a} -> v{b}")
    for key, change in diff["metadata"].items():
        print(f"{key:<{width}}  {change['a']!r} -> {change['b']!r}")
    for fname, change in diff["files"].items():
        print(f"{('file ' + fname):<{width}}  {change['a']} -> {change['b']}")
    return 0


def _print_aliases(aliases: dict[str, int]) -> None:
    print("aliases: " + (", ".join(f"{k}=v{v}" for k, v in sorted(aliases.items())) or "none"))


def cmd_models_promote(args) -> int:
    registry = _registry()
    version = registry.resolve(_ref(args.version))
    before = registry.aliases()
    if args.to == "canary":
        return _start_rollout(registry, version, args.reason)
    if args.to == "shadow":
        from fraudloop.delivery.package import require_staged

        require_staged(registry.store, registry.name, version)  # only a staged package shadows
    if args.to == "production":
        from fraudloop.delivery.package import PackageError, load_package

        try:
            load_package(registry.store, registry.name, version)
        except PackageError:
            print(
                f"warning: v{version} has no package; scoring services keep serving the "
                f"previous version until `fraudloop models package {version}`",
                file=sys.stderr,
            )
    after = registry.promote(
        version,
        args.to,
        actor=_actor(),
        reason=args.reason or f"promoted to {args.to} from the command line",
        evidence={"command": "fraudloop models promote", "before": before},
    )
    if after == before:
        print(f"{args.to} already points at v{version}: nothing changed")
    else:
        print(f"promoted v{version} to {args.to}")
    _print_aliases(after)
    return 0


def cmd_models_rollback(args) -> int:
    registry = _registry()
    before = registry.aliases()
    after = registry.rollback(
        actor=_actor(),
        reason=args.reason or "rolled back from the command line",
        evidence={"command": "fraudloop models rollback", "before": before},
    )
    print(f"rolled back production v{before.get('production')} -> v{after['production']}")
    _print_aliases(after)
    return 0


def _start_rollout(registry, version: int, reason: str | None) -> int:
    from fraudloop.delivery import rollout

    doc = rollout.start(
        registry.store,
        registry,
        version,
        policy=_config().rollout,
        actor=_actor(),
        reason=reason or "canary rollout started from the command line",
    )
    print(
        f"canary rollout {doc['rollout_id']} of v{version} started at {doc['share']:.0%} "
        f"(steps {', '.join(f'{x:.0%}' for x in doc['policy']['steps'])}); "
        "rollout_sensor drives it from here"
    )
    return 0


def cmd_models_package(args) -> int:
    from fraudloop.delivery.package import build_package, export_package
    from fraudloop.model.evaluation import read_evaluation

    registry = _registry()
    version = registry.resolve(_ref(args.version))
    # the same package the pipeline builds: with the evaluation (and its threshold) if any
    evaluation = read_evaluation(registry.store, version)
    package = build_package(
        registry.store,
        registry,
        version,
        evaluation=evaluation.to_dict() if evaluation else None,
        decision_threshold=None if evaluation else _config().model.decision_threshold,
    )
    print(f"package of v{version}: sha256 {package.sha256}")
    for name, entry in sorted(package.manifest["files"].items()):
        if not name.startswith("build/src/"):
            print(f"  {name:32} {entry['size']:>10,}  {entry['sha256'][:16]}")
    if args.output:
        path = export_package(registry.store, registry.name, version, args.output)
        print(f"exported (verified) to {path}")
        print(f"build the image with: docker build -t fraudloop-{registry.name}:v{version} {path}")
    return 0


def cmd_models_stage(args) -> int:
    from fraudloop.delivery.staging import check_lines, run_staging

    registry = _registry()
    version = registry.resolve(_ref(args.version))
    report = run_staging(registry.store, registry, version, _config().staging)
    for line in check_lines(report):
        print(line)
    print(f"staging test of v{version}: {'passed' if report['passed'] else 'FAILED'}")
    return 0 if report["passed"] else 1


def cmd_rollout(args) -> int:
    from fraudloop.delivery import rollout

    registry = _registry()
    store, name = registry.store, registry.name
    action = args.rollout_command
    if action == "start":
        return _start_rollout(registry, registry.resolve(_ref(args.version)), args.reason)
    reason = getattr(args, "reason", None) or f"{action} from the command line"
    if action == "pause":
        doc = rollout.pause(store, name, actor=_actor(), reason=reason)
    elif action == "resume":
        doc = rollout.resume(store, name, actor=_actor(), reason=reason)
    elif action == "abort":
        doc = rollout.abort(store, registry, actor=_actor(), reason=reason)
    elif action == "share":
        doc = rollout.set_share(store, name, args.share, actor=_actor(), reason=reason)
    else:
        doc = rollout.read_state(store, name)[0]
    if doc is None:
        print("no rollout has been started")
        return 0
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"rollout {doc['rollout_id']}: canary v{doc['canary_version']} vs production "
        f"v{doc['baseline_version']}, {doc['status']}, step {doc['step'] + 1}/"
        f"{len(doc['policy']['steps'])}, share {doc['share']:.0%}"
    )
    for entry in doc.get("decisions", [])[-10:]:
        print(f"  {entry['at']}  {entry['action']:9} {entry['actor']}: {entry['reason']}")
    _print_aliases(registry.aliases())
    return 0


def cmd_serve(args) -> int:
    from fraudloop.serving.__main__ import serve

    return serve(args)


def cmd_models_history(args) -> int:
    entries = _registry().history(alias=args.alias)
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    if not entries:
        print("no audit entries")
    for e in entries:
        target = e.get("alias") or "version"
        moves = f"{target}: {e.get('from_version') or '-'} -> {e.get('to_version') or '-'}"
        print(
            f"{e.get('timestamp', '')[:19]}  {e.get('action', ''):<12} {moves:<28} "
            f"{e.get('actor', '')}  {e.get('reason', '')}"
        )
    return 0


def cmd_models_reproduce(args) -> int:
    from fraudloop.model.training import LINEAGE_FILE, MODEL_FILE, reproduce

    registry = _registry()
    store = registry.store
    info = registry.show(registry.resolve(_ref(args.version)))
    missing = {MODEL_FILE, LINEAGE_FILE} - set(info.files)
    if missing:
        raise ValueError(
            f"version {info.version} has no {', '.join(sorted(missing))}: not reproducible"
        )
    result = reproduce(store, registry, info.version)
    print(f"version   v{result.version}  dataset {result.dataset_id}")
    print(f"recorded  sha256 {result.recorded_sha}")
    print(f"rebuilt   sha256 {result.rebuilt_sha}")
    print(f"seconds   {result.seconds:.2f}")
    if result.library_mismatches:
        for name, versions in result.library_mismatches.items():
            print(f"library   {name}: recorded {versions['recorded']}, now {versions['current']}")
    else:
        print("library   versions match the lineage")
    if result.feature_code_changed:
        print("note: the feature code changed since training (stored features were used)")
    for note in result.notes:
        print(f"note: {note}")
    if result.identical:
        print("identical: the rebuilt model.txt is byte-for-byte the registered one")
    else:
        print("NOT identical: the rebuilt model.txt differs from the registered one")
    return 0 if result.identical else 1


def cmd_score(args) -> int:
    from pathlib import Path

    from fraudloop.delivery.scoring import score_transactions
    from fraudloop.feeds.importer import read_table

    output = Path(args.output)
    suffixes = "".join(output.suffixes).lower()
    if ".parquet" not in suffixes and ".csv" not in suffixes:
        raise ValueError(f"{output}: the output must end in .csv(.gz) or .parquet")
    frame = read_table(args.input)
    registry = _registry()
    scored = score_transactions(registry.store, registry, _ref(args.model), frame)
    output.parent.mkdir(parents=True, exist_ok=True)
    if ".parquet" in suffixes:
        scored.to_parquet(output, index=False)
    else:
        scored.to_csv(output, index=False)
    counts = scored["feature_source"].value_counts().to_dict()
    version = int(scored["model_version"].iloc[0]) if len(scored) else "-"
    print(
        f"scored {len(scored):,} transactions with v{version} "
        f"(offline features {counts.get('offline', 0):,}, online {counts.get('online', 0):,}) "
        f"-> {output}"
    )
    return 0


JSON_HELP = "print JSON instead of a table"
VERSION_HELP = "a version number (3) or an alias (production, canary, previous, candidate)"
REASON_HELP = "why, for the registry's audit log"


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS, []) or action.required
        if quiet or "%(default)" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fraudloop")
    except PackageNotFoundError:  # a checkout run without installing the project
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudloop",
        description="The fraudloop MLOps delivery loop (see README.md).",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"fraudloop {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_parser_class())

    sim = sub.add_parser("simulate", help="generate card transactions and labels into landing/")
    sim.add_argument(
        "--start", type=_date, default=date(2018, 4, 1), help="first simulated day (UTC)"
    )
    sim.add_argument("--days", type=int, default=7, help="number of days to simulate")
    sim.add_argument(
        "--customers", type=int, default=None, help="customers (default: 5,000 x scale)"
    )
    sim.add_argument(
        "--terminals", type=int, default=None, help="terminals (default: 10,000 x scale)"
    )
    sim.add_argument("--scale", type=float, default=1.0, help="1 = handbook, 100 = ~1 M tx/day")
    sim.add_argument("--seed", type=int, default=42, help="same seed, same bytes")
    sim.add_argument(
        "--format", choices=["csv", "parquet"], default="csv", help="format of the landed files"
    )
    sim.add_argument(
        "--label-delay",
        type=_duration,
        default=timedelta(days=7),
        help="when a day's fraud labels arrive: 7d, 36h, 90m",
    )
    sim.add_argument(
        "--labels-until",
        type=_date,
        default=None,
        help="land only the label files due by this day (default: all)",
    )
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
    imp.add_argument("--transactions", required=True, help="CSV or Parquet history of transactions")
    imp.add_argument(
        "--labels", default=None, help="CSV or Parquet of fraud labels (default: none)"
    )
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=canonical",
        help="rename a source column to a canonical one (repeatable)",
    )
    imp.add_argument(
        "--format", choices=["csv", "parquet"], default="parquet", help="format of the landed files"
    )
    imp.add_argument(
        "--label-delay",
        type=_duration,
        default=timedelta(days=7),
        help="when a day's labels land after it: 7d, 36h, 90m",
    )
    imp.add_argument(
        "--from",
        dest="first_day",
        type=_date,
        default=None,
        help="first UTC day to import, YYYY-MM-DD (default: the export's first day)",
    )
    imp.add_argument(
        "--to",
        dest="last_day",
        type=_date,
        default=None,
        help="last UTC day to import, inclusive (default: the export's last day); a re-import "
        "supersedes earlier imported files of these days",
    )
    imp.set_defaults(func=cmd_import)

    back = sub.add_parser("backfill", help="ingest a partition range as one Dagster run")
    back.add_argument(
        "table",
        choices=["transactions", "labels"],
        help="transactions (hourly keys, 2018-04-01-13:00) or labels (daily keys, 2018-04-01)",
    )
    back.add_argument("--from", dest="start", required=True, help="first partition key")
    back.add_argument("--to", dest="end", required=True, help="last partition key (inclusive)")
    back.add_argument(
        "--in-process",
        action="store_true",
        help="execute here instead of submitting to the run queue (no daemon needed)",
    )
    back.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="after submitting, follow the run until it ends or this many seconds pass",
    )
    back.add_argument(
        "--workspace",
        default=str(WORKSPACE),
        help="the Dagster workspace whose code location runs the job",
    )
    back.set_defaults(func=cmd_backfill)

    quar = sub.add_parser("quarantine", help="list quarantined files and why")
    quar.add_argument(
        "--table", choices=["transactions", "labels"], default=None, help="only this table"
    )
    quar.add_argument("--json", action="store_true", help=JSON_HELP)
    quar.set_defaults(func=cmd_quarantine)

    alerts = sub.add_parser("alerts", help="alert events on record, or the open incidents")
    alerts.add_argument("--open", action="store_true", help="open incidents instead of events")
    alerts.add_argument("--last", type=int, default=50, help="how many recent events")
    alerts.add_argument("--json", action="store_true", help=JSON_HELP)
    alerts.set_defaults(func=cmd_alerts)

    rep = sub.add_parser("reports", help="serve the stored reports read-only over HTTP")
    rep.add_argument("--host", default="127.0.0.1", help="address to listen on")
    rep.add_argument("--port", type=int, default=3001, help="port (0: any free one)")
    rep.set_defaults(func=cmd_reports)

    demo = sub.add_parser("demo", help="the end-to-end demo on the local profile")
    demo.add_argument("--scale", type=float, default=0.2, help="data volume (1 = handbook)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated feed")
    demo.add_argument(
        "--pace", type=float, default=8.0, help="minimum wall seconds per replayed day"
    )
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="the model registry: versions, aliases, audit log")
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="versions, metrics and the aliases pointing at them")
    mlist.add_argument("--json", action="store_true", help=JSON_HELP)
    mlist.set_defaults(func=cmd_models_list)
    mshow = msub.add_parser("show", help="manifest and lineage of a version (files verified)")
    mshow.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    mshow.add_argument("--json", action="store_true", help=JSON_HELP)
    mshow.set_defaults(func=cmd_models_show)
    mdiff = msub.add_parser("diff", help="params, metrics and file hashes that differ")
    mdiff.add_argument("a", metavar="N|ALIAS", help=VERSION_HELP)
    mdiff.add_argument("b", metavar="M|ALIAS", help=VERSION_HELP)
    mdiff.add_argument("--json", action="store_true", help=JSON_HELP)
    mdiff.set_defaults(func=cmd_models_diff)
    mprom = msub.add_parser(
        "promote", help="point an alias at a version (production keeps the old one as previous)"
    )
    mprom.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    mprom.add_argument("--to", required=True, metavar="ALIAS", help="e.g. production, canary")
    mprom.add_argument("--reason", default=None, help=REASON_HELP)
    mprom.set_defaults(func=cmd_models_promote)
    mroll = msub.add_parser("rollback", help="production <- previous (one atomic swap)")
    mroll.add_argument("--reason", default=None, help=REASON_HELP)
    mroll.set_defaults(func=cmd_models_rollback)
    mhist = msub.add_parser("history", help="the audit log, oldest first")
    mhist.add_argument("--alias", default=None, help="only changes that moved this alias")
    mhist.add_argument("--json", action="store_true", help=JSON_HELP)
    mhist.set_defaults(func=cmd_models_history)
    mrepro = msub.add_parser(
        "reproduce", help="retrain a version from its lineage; exit 0 only if byte-identical"
    )
    mrepro.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    mrepro.set_defaults(func=cmd_models_reproduce)

    mpack = msub.add_parser(
        "package", help="build (or verify) the deployment package of a version; export it"
    )
    mpack.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    mpack.add_argument("--output", default=None, help="write the verified package to this dir")
    mpack.set_defaults(func=cmd_models_package)

    mstage = msub.add_parser(
        "stage", help="staging test: serve the package in a real process and replay an hour"
    )
    mstage.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    mstage.set_defaults(func=cmd_models_stage)

    roll = sub.add_parser("rollout", help="the canary rollout: status, start, pause, abort")
    rsub = roll.add_subparsers(dest="rollout_command", required=True)
    rstatus = rsub.add_parser("status", help="the rollout document and its last decisions")
    rstatus.add_argument("--json", action="store_true", help=JSON_HELP)
    rstatus.set_defaults(func=cmd_rollout)
    rstart = rsub.add_parser("start", help="start a canary rollout of a staged version")
    rstart.add_argument("version", metavar="N|ALIAS", help=VERSION_HELP)
    rstart.add_argument("--reason", default=None, help=REASON_HELP)
    rstart.set_defaults(func=cmd_rollout)
    for action, text in (
        ("pause", "stop the controller from moving the canary"),
        ("resume", "hand control back to the controller (the step's analysis restarts)"),
        ("abort", "remove the canary; production stays"),
    ):
        sp = rsub.add_parser(action, help=text)
        sp.add_argument("--reason", default=None, help=REASON_HELP)
        sp.set_defaults(func=cmd_rollout)
    rshare = rsub.add_parser("share", help="set the canary's share by hand (pauses the rollout)")
    rshare.add_argument("share", type=float, help="0..1")
    rshare.add_argument("--reason", default=None, help=REASON_HELP)
    rshare.set_defaults(func=cmd_rollout)

    from fraudloop.serving.__main__ import build_parser as serve_parser

    serve = sub.add_parser("serve", help="run the scoring service (FastAPI + uvicorn)")
    serve_parser(serve)
    serve.set_defaults(func=cmd_serve)

    score = sub.add_parser("score", help="score a file of transactions with a registered model")
    score.add_argument("--model", required=True, metavar="N|ALIAS", help=VERSION_HELP)
    score.add_argument("--input", required=True, help="CSV or Parquet with canonical columns")
    score.add_argument("--output", required=True, help="CSV or Parquet (by extension)")
    score.set_defaults(func=cmd_score)
    return parser


def _parser_class():
    """Sub-command parsers that show defaults too (sub-parsers do not inherit the formatter)."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("formatter_class", _Help)
            super().__init__(*args, **kwargs)

    return Parser


def _quiet_library_warnings() -> None:
    """Dagster's beta/preview notices and the libraries' deprecations are for developers of
    this project, not for a person at the command line; errors still print."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*(is|are) currently in (beta|preview)")
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")


def main(argv: list[str] | None = None) -> int:
    _quiet_library_warnings()
    args = build_parser().parse_args(argv)
    command = args.command
    for sub in ("models_command", "rollout_command"):
        if getattr(args, sub, None):
            command = f"{command} {getattr(args, sub)}"
    try:
        return args.func(args)
    except FraudloopError as error:
        # every stage's refusals: one line, and the exit code of its stage (core.errors)
        print(f"fraudloop {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except (ValueError, FileNotFoundError, OverflowError) as error:
        # OverflowError: a date argument the computation leaves the calendar with (simulate
        # --start 0001-01-01 reaches back before year 1; found by tests/fuzz)
        print(f"fraudloop {command}: error: {error}", file=sys.stderr)
        return ConfigError.exit_code
    except Exception as error:
        # the S3 client's own failures (no credentials, endpoint unreachable, access denied)
        # are the object store's: one line naming the store, not a botocore traceback
        if not type(error).__module__.startswith("botocore"):
            raise
        from fraudloop.core.errors import StoreError

        place = _settings().open_store().location()
        where = f"s3://{place['bucket']}/{place['prefix'] or ''}"
        if place.get("endpoint_url"):
            where += f" at {place['endpoint_url']}"
        print(f"fraudloop {command}: error: object store {where}: {error}", file=sys.stderr)
        return StoreError.exit_code


if __name__ == "__main__":
    sys.exit(main())
