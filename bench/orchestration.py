"""Orchestration cost: where a Dagster run's start-up goes, and what the local profile's run-queue
settings change, measured through the real daemon.

1. The pieces of a run's start-up, each timed in fresh processes (median of --repeat): the
   interpreter, ``import dagster``, opening the SQLite instance, importing and building the code
   location (pipelines.definitions), writing the run with its planned events (a 24-hour range
   run, one event per partition, against one per asset with
   DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS), and one engine event.
2. Real runs through `dagster-daemon` on a fresh instance, twice: with the local profile's
   dagster.yaml and environment as they are now ("after"), and with the queue settings this
   profile adds removed and per-partition planned events ("before": Dagster's defaults, what the
   profile had until the orchestration change). Each round submits two 24-hour `health_job`
   runs at once (the project's submit path, `dagster job launch`) on an empty store: real code
   location, real steps, little work, so what surrounds the steps shows. Every run's time is
   split by ``pipelines.run_phases`` (create, queued, launch, boot, other vs steps), the same
   reading `make demo` prints for its delivery window.
3. ``--demo``: also run `fraudloop demo` on temporary homes and keep its summary (delivery time,
   run phases in the delivery window and over the whole demo) in the JSON's details.

The machine is shared: the figures move with its load (printed at start and end); the ratios of
the two configurations, measured back to back in one run, move less.

    .venv/bin/python bench/orchestration.py [--rounds 3] [--repeat 3] [--demo] [--quick]
                                            [--json PATH]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bench.report import REPO, Report, arguments
from fraudloop.core.processes import default_interrupts, stop_group

BIN = Path(sys.executable).parent
PLANNED_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
LOCAL_YAML = REPO / "infra" / "local" / "dagster.yaml"
JOB = "health_job"
PHASES = ("create", "queued", "launch", "boot", "other", "steps")

# Timed in a fresh interpreter: each piece a run worker pays before its first step.
PIECES = r"""
import json, os, sys, time
t0 = time.perf_counter()
import dagster as dg
t1 = time.perf_counter()
instance = dg.DagsterInstance.get()
t2 = time.perf_counter()
from pipelines.config import ProjectConfig
from pipelines.definitions import build_definitions
job = build_definitions(ProjectConfig.from_env()).resolve_job_def(sys.argv[1])
t3 = time.perf_counter()
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as END, ASSET_PARTITION_RANGE_START_TAG as START)
tags = {START: "2018-04-01-00:00", END: "2018-04-01-23:00"}
os.environ.pop("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", None)
run = instance.create_run_for_job(job, tags=tags)
t4 = time.perf_counter()
os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"
instance.create_run_for_job(job, tags=tags)
t5 = time.perf_counter()
for _ in range(10):
    instance.report_engine_event("bench", run)
t6 = time.perf_counter()
print(json.dumps({"import_dagster": t1 - t0, "instance": t2 - t1, "code_location": t3 - t2,
    "create_per_partition": t4 - t3, "create_per_asset": t5 - t4, "engine_event": (t6 - t5) / 10}))
"""


def instance_env(home: Path, planned_per_asset: bool, config: dict) -> dict[str, str]:
    """A fresh instance under `home` with `config` as its dagster.yaml; an empty object store."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUDLOOP_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(dagster_home), FRAUDLOOP_HOME=str(home / "store"))
    if planned_per_asset:
        env[PLANNED_ENV] = "true"
    return env


def before_config(after: dict) -> dict:
    """The profile without what the orchestration change added: Dagster's queue defaults (a
    5 s dequeue interval, launches one after another)."""
    config = json.loads(json.dumps(after))
    config.pop("run_coordinator", None)
    return config


def create_databases(env: dict[str, str]) -> None:
    """Create the instance's SQLite databases (runs, events, schedules) before any process of
    the bench opens them: a daemon starting on a fresh instance and a `dagster job launch`
    beside it both created and stamped them, and the launch once failed in alembic's
    `get_current_revision` (the suite's quick run, 2026-12-06)."""
    opening = (
        "import dagster as dg; i = dg.DagsterInstance.get(); i.get_runs(limit=1); "
        "i.all_instigator_state(); "
        "i.fetch_run_status_changes(dg.DagsterEventType.RUN_SUCCESS, limit=1)"
    )
    subprocess.run([sys.executable, "-c", opening], env=env, check=True, capture_output=True)


def pieces(repeat: int) -> dict[str, float]:
    """Median seconds of each start-up piece over `repeat` fresh processes."""
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        env = instance_env(Path(tmp), False, yaml.safe_load(LOCAL_YAML.read_text()))
        create_databases(env)  # a run worker opens an instance that exists
        for _ in range(repeat):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            samples.setdefault("interpreter", []).append(time.perf_counter() - began)
            done = subprocess.run(
                [sys.executable, "-c", PIECES, JOB],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
                samples.setdefault(key, []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


class Daemon:
    """`dagster-daemon run` on an instance, in its own process group, stopped on exit."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Daemon:
        create_databases(self.env)
        self.process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=default_interrupts,
        )
        return self

    def __exit__(self, *exc) -> None:
        assert self.process is not None
        stop_group(self.process)


def submit_together(env: dict[str, str], days: list[str]) -> list[str]:
    """Submit one 24-hour run of JOB per day at the same moment (one `dagster job launch` each,
    in parallel, as two sensors' requests would land); returns the run ids."""
    code = (
        "import sys; from pipelines.runner import submit_partition_range as s; "
        "print(s(sys.argv[1], sys.argv[2], sys.argv[3]))"
    )
    ids: list[str] = []
    errors: list[str] = []

    def one(day: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", code, JOB, f"{day}-00:00", f"{day}-23:00"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            errors.append(done.stderr[-2000:])
        else:
            ids.append(done.stdout.strip().splitlines()[-1])

    threads = [threading.Thread(target=one, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("submitting a run failed:\n" + "\n".join(errors))
    return ids


def wait_finished(env: dict[str, str], run_ids: list[str], timeout: float = 600.0) -> list:
    """The run phases of `run_ids` once every one has finished."""
    import dagster as dg

    from pipelines.run_phases import run_phases

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.get() as instance:
        while True:
            records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            if len(records) == len(run_ids) and all(r.dagster_run.is_finished for r in records):
                failed = [r.dagster_run.run_id for r in records if not r.dagster_run.is_success]
                if failed:
                    raise RuntimeError(f"runs failed: {failed} (instance {env['DAGSTER_HOME']})")
                return [run_phases(instance, r) for r in records]
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs {run_ids} did not finish in {timeout:.0f} s")
            time.sleep(0.5)


def through_daemon(config: dict, planned_per_asset: bool, rounds: int) -> list:
    """Phases of 2 x `rounds` runs through a daemon on a fresh instance (after one warm-up run
    that starts the code server, not counted)."""
    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        env = instance_env(Path(tmp), planned_per_asset, config)
        with Daemon(env):
            wait_finished(env, submit_together(env, ["2018-04-01"]))
            phases = []
            for n in range(rounds):
                days = [f"2018-04-{2 + 2 * n:02d}", f"2018-04-{3 + 2 * n:02d}"]
                phases += wait_finished(env, submit_together(env, days))
        return phases


def medians(phases: list) -> dict[str, float]:
    out = {name: statistics.median(getattr(p, name) for p in phases) for name in PHASES}
    out["startup"] = statistics.median(p.startup for p in phases)
    out["total"] = statistics.median(p.total for p in phases)
    out["startup_share"] = sum(p.startup for p in phases) / sum(p.total for p in phases)
    return out


def run_demo() -> dict:
    """`fraudloop demo` on temporary homes; its summary (pipelines/demo.py writes it)."""
    with tempfile.TemporaryDirectory(prefix="bench-orch-demo-") as tmp:
        script = (
            "import sys; from pathlib import Path; from pipelines.demo import DemoPlan, run_demo; "
            f"sys.exit(run_demo(DemoPlan(home=Path({tmp + '/home'!r}), "
            f"dagster_home=Path({tmp + '/dagster'!r}))))"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUDLOOP_", "DAGSTER_"))}
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env)
        summary = json.loads((Path(tmp) / "home" / "demo-summary.json").read_text())
        summary["exit_code"] = done.returncode
        summary["wall_s"] = round(time.perf_counter() - began, 1)
        return summary


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs per configuration")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per piece")
    parser.add_argument("--demo", action="store_true", help="also run `fraudloop demo`")
    args = parser.parse_args()
    rounds, repeat = (1, 1) if args.quick else (args.rounds, args.repeat)
    report = Report("orchestration", args)

    print(f"1/3 start-up pieces, {repeat} fresh process(es) each", flush=True)
    piece = pieces(repeat)
    after_config = yaml.safe_load(LOCAL_YAML.read_text())
    print(f"2/3 {2 * rounds} runs through the daemon, before configuration", flush=True)
    before = medians(through_daemon(before_config(after_config), False, rounds))
    print(f"3/3 {2 * rounds} runs through the daemon, after (the local profile)", flush=True)
    after = medians(through_daemon(after_config, True, rounds))

    versus = "before: Dagster's queue defaults, per-partition planned events"
    for key, label, phase in (
        ("startup_s", "start-up of a 24-hour run through the daemon, two at once", "startup"),
        ("create_s", "writing the run and its planned events", "create"),
        ("queued_s", "queued until the daemon starts launching it", "queued"),
    ):
        report.figure(
            key,
            f"{label} (median)",
            after[phase],
            "s",
            versus=versus,
            versus_value=before[phase],
            ratio_means="after / before",
        )
    report.figure(
        "startup_share",
        "start-up share of those runs' time",
        after["startup_share"],
        "",
        versus=versus,
        versus_value=before["startup_share"],
        text=f"{after['startup_share']:.0%}",
        versus_text=f"{before['startup_share']:.0%}",
        ratio_means="after / before",
    )
    process = piece["interpreter"] + piece["import_dagster"] + piece["instance"]
    report.figure(
        "worker_start_s",
        "run worker start measured (launch + boot, median, after)",
        after["launch"] + after["boot"],
        "s",
        versus="its pieces timed alone: interpreter, import dagster, instance, code location",
        versus_value=process + piece["code_location"],
        ratio_means="measured / sum of pieces",
    )
    report.note("")
    report.note("start-up pieces (median, fresh processes):")
    for key, value in piece.items():
        report.note(f"- {key}: {value * 1000:.0f} ms")
    report.note("")
    report.note("run phases through the daemon (median s): " + " | ".join(PHASES))
    for name, row in (("before", before), ("after", after)):
        report.note(f"- {name}: " + " | ".join(f"{row[p]:.1f}" for p in PHASES))
    report.details.update(pieces=piece, before=before, after=after, rounds=rounds)
    if args.demo:
        print("demo: `fraudloop demo` on temporary homes", flush=True)
        summary = run_demo()
        report.details["demo"] = summary
        report.note("")
        report.note(
            f"demo: exit {summary['exit_code']}, {summary['wall_s']:.0f} s; first drifted day "
            f"landed -> retrained model at 100 %: {summary.get('delivery_s', 'not reached')} s; "
            f"start-up share of the window's runs "
            f"{summary.get('delivery_runs', {}).get('startup_share', float('nan')):.0%}, of all "
            f"runs {summary['runs']['startup_share']:.0%}"
        )
    report.finish()


if __name__ == "__main__":
    main()
