"""The hourly loop at scale through real Dagster runs: does each hour finish before the next lands?

Simulates ``--days`` days at ``--scale`` (100: ~1 M transactions a day, ~42 k an hour) into a
feed, then plays them hour by hour into a fresh object store and a fresh Dagster instance with
the local profile's dagster.yaml and ``dagster-daemon`` running: every run is submitted to the
run queue with `pipelines.runner.submit_partition_range` (``dagster job launch``, the path of the
UI's *Materialize* and of `fraudloop backfill --submit`) and launched by the daemon through the
local run launcher into its own run worker process, as the sensors' runs are.

Per hour: the hour's files land, then ``hourly_ingestion_job``, ``features_job`` (features and
the online publish, split by their steps) and ``health_job``, one after the other. Per day (its
labels land with the next day, the demo's one-day label delay): ``daily_labels_job`` (raw and
fraud labels), ``daily_monitoring_job`` (drift and accuracy). After the last day: one
``training_job`` (dataset, train, evaluate, package, staging test in a real service process,
release). The first ``--warmup-days`` are ingested and featured as one range run each and not
timed per hour (history the state and the training set need).

Per run: wall time from submission to its end, CPU seconds and peak RSS of the run worker
process (sampled from /proc every 0.2 s, so the last fraction of a second may be missed), bytes
of the files the run wrote to the store, and the Dagster overhead share (start-up phases of
`pipelines.run_phases` over the run's time). An hour "holds" if its ingest + features + publish
+ health finish within the 3,600 s until the next hour lands (target: 300 s, 12x headroom).

Live traffic: after the history, a first ``training_job`` puts v1 in production and the scoring
service starts on the loop's store (``python -m fraudloop.serving``, one process, the local
profile's embedded online store). Each played hour's transactions are scored through its batch
endpoint in time order *before* the hour's files land, as a payment switch's traffic precedes
the feed, so health, drift and accuracy judge a 100x prediction log (a day's drift and accuracy
run judges the day before, which was served once ``--days`` >= 2). ``--no-traffic`` plays the
hours without it (the jobs' fixed cost only).

    .venv/bin/python bench/scale.py [--scale 100] [--warmup-days 3] [--days 1] [--hours 4]
                                    [--launch daemon|in-process] [--quick] [--json PATH]

The defaults play 4 hours of one day after 3 days of history (what fits a working session on 2
shared cores: each run through the daemon costs 10-40 s of start-up there); the issue's three
whole days are ``--days 3 --hours 24``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, Report, arguments
from fraudloop.core.processes import default_interrupts, stop_group

BIN = Path(sys.executable).parent
START = date(2018, 4, 1)
HOUR_TARGET_S = 300.0
TRAIN_TARGET_S = 600.0
DAILY_TARGET_S = 600.0
RSS_LIMIT_MB = 8192.0
SAMPLE_S = 0.2
HOURLY_STAGES = ("ingest", "features", "health")


@dataclass
class Stage:
    """One Dagster run and what it cost."""

    stage: str
    job: str
    partitions: str
    status: str = ""
    wall_s: float = 0.0
    startup_s: float = 0.0
    steps_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    bytes_written: int = 0
    step_s: dict[str, float] = field(default_factory=dict)
    #: the run process's peak RSS as each step that reports it ended (`process_peak_rss_mb`
    #: metadata: the training assets), by step key, in step order
    step_peak_mb: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def overhead_share(self) -> float:
        total = self.startup_s + self.steps_s
        return self.startup_s / total if total else 0.0


class WorkerSampler(threading.Thread):
    """CPU seconds and peak RSS of a run's worker process, read from /proc until it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.cpu_s, self.peak_rss_mb = pid, 0.0, 0.0
        self.stop = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text()
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":
                return
            # utime, stime, and the children it waited for (a staging service, a subprocess)
            ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
            self.cpu_s = max(self.cpu_s, ticks / self.tick)
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
            self.stop.wait(SAMPLE_S)


def worker_pid(instance, run_id: str) -> int | None:
    """The pid the run worker announced in its first engine event (as run monitoring reads it)."""
    from dagster import DagsterEventType

    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        pid = (record.dagster_event.event_specific_data.metadata or {}).get("pid")
        if pid:
            return int(pid.value)
    return None


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its end, by step key."""
    from dagster import DagsterEventType as Kind

    started, out = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == Kind.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (Kind.STEP_SUCCESS, Kind.STEP_FAILURE):
            out[event.step_key] = round(entry.timestamp - started.get(event.step_key, 0), 3)
    return out


def step_peak_mb(instance, run_id: str) -> dict[str, float]:
    """The ``process_peak_rss_mb`` each step's materializations report, by step key."""
    from dagster import DagsterEventType as Kind

    out = {}
    for entry in instance.all_logs(run_id, of_type=Kind.ASSET_MATERIALIZATION):
        event = entry.dagster_event
        metadata = event.event_specific_data.materialization.metadata
        if "process_peak_rss_mb" in metadata:
            out[event.step_key] = float(metadata["process_peak_rss_mb"].value)
    return out


def failure_text(instance, run_id: str) -> str:
    """The messages of the run's failure events (what the UI shows for a failed run)."""
    from dagster import DagsterEventType as Kind

    texts = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type in (Kind.STEP_FAILURE, Kind.RUN_FAILURE):
            data = event.event_specific_data
            error = getattr(data, "error", None)
            texts.append(error.message.strip() if error is not None else event.message or "")
    return " | ".join(t for t in texts if t)[-2000:]


def bytes_since(root: Path, since: float) -> int:
    """Bytes of the files under `root` written at or after `since` (epoch seconds)."""
    total, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    info = entry.stat(follow_symlinks=False)
                    if info.st_mtime >= since:
                        total += info.st_size
    return total


class Loop:
    """A fresh store and instance with the daemon running; `run` submits one job and measures it."""

    def __init__(self, tmp: Path, env: dict[str, str], launch: str = "daemon"):
        self.tmp, self.env, self.launch = tmp, env, launch
        self.store_root = Path(env["FRAUDLOOP_HOME"])
        self.daemon: subprocess.Popen | None = None
        self._definitions = None

    def __enter__(self) -> Loop:
        import dagster as dg

        os.environ.update(self.env)
        self.instance = dg.DagsterInstance.get()
        if self.launch != "daemon":
            return self
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "daemon.log", "w"),
            start_new_session=True,
            preexec_fn=default_interrupts,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.instance.dispose()
        if self.daemon is not None:
            stop_group(self.daemon)

    def run(
        self,
        stage: str,
        job: str,
        first: str,
        last: str,
        timeout: float = 3600,
        run_config: dict | None = None,
    ) -> Stage:
        result = Stage(stage, job, first if first == last else f"{first}..{last}")
        began, wall0 = time.time(), time.perf_counter()
        if self.launch != "daemon":
            run_id = self._in_process(result, job, first, last, run_config)
        else:
            run_id = self._through_daemon(result, job, first, last, timeout, run_config)
        result.wall_s = time.perf_counter() - wall0
        return self._measured(result, run_id, began)

    def _in_process(
        self, result: Stage, job: str, first: str, last: str, run_config: dict | None
    ) -> str:
        """`execute_in_process` on the same instance (``--launch in-process``: the quick mode,
        no run worker to start); CPU and peak RSS are this process's (rusage deltas; the peak
        is the process's high-water mark so far)."""
        import resource

        from pipelines.config import ProjectConfig
        from pipelines.definitions import build_definitions
        from pipelines.runner import _range_tags

        if self._definitions is None:
            self._definitions = build_definitions(ProjectConfig.from_env())
        before = resource.getrusage(resource.RUSAGE_SELF)
        tags = _range_tags(first, last, BENCH_TAG) if first else BENCH_TAG
        done = self._definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, raise_on_error=False, run_config=run_config
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
        result.cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        result.peak_rss_mb = after.ru_maxrss / 1024
        return done.run_id

    def _through_daemon(
        self, result: Stage, job: str, first: str, last: str, timeout, run_config: dict | None
    ) -> str:
        import dagster as dg

        from pipelines.runner import submit_partition_range

        run_id = (
            submit_partition_range(job, first, last, tags=BENCH_TAG)
            if first
            else submit_unpartitioned(job, run_config)
        )
        sampler, deadline = None, time.monotonic() + timeout
        while True:
            run = self.instance.get_run_by_id(run_id)
            if sampler is None and run is not None and run.status != dg.DagsterRunStatus.QUEUED:
                pid = worker_pid(self.instance, run_id)
                if pid is not None:
                    sampler = WorkerSampler(pid)
                    sampler.start()
            if run is not None and run.is_finished:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job} {result.partitions} did not finish in {timeout:.0f} s")
            time.sleep(SAMPLE_S)
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
            result.cpu_s, result.peak_rss_mb = sampler.cpu_s, sampler.peak_rss_mb
        return run_id

    def _measured(self, result: Stage, run_id: str, began: float) -> Stage:
        import dagster as dg

        from pipelines.run_phases import run_phases

        result.status = self.instance.get_run_by_id(run_id).status.value
        (record,) = self.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
        phases = run_phases(self.instance, record)
        if phases is not None:
            result.startup_s, result.steps_s = phases.startup, phases.steps
        result.step_s = step_seconds(self.instance, run_id)
        result.step_peak_mb = step_peak_mb(self.instance, run_id)
        result.bytes_written = bytes_since(self.store_root, began)
        if result.status != "SUCCESS":
            result.error = failure_text(self.instance, run_id)
            print(f"  FAILED {result.job}: {result.error}", flush=True)
        print(
            f"  {result.stage:<10} {result.partitions:<36} {result.status:<8} "
            f"{result.wall_s:7.1f} s "
            f"cpu {result.cpu_s:6.1f} s rss {result.peak_rss_mb:6.0f} MB "
            f"wrote {result.bytes_written / 1e6:8.1f} MB overhead {result.overhead_share:4.0%}",
            flush=True,
        )
        for step, peak in result.step_peak_mb.items():
            print(f"    {step}: process peak {peak:,.0f} MB at its end", flush=True)
        return result


BENCH_TAG = {"fraudloop/trigger": "bench"}


def submit_unpartitioned(job: str, run_config: dict | None = None) -> str:
    """`dagster job launch` of a job without partitions (training), as from the UI."""
    import json
    import uuid

    run_id = str(uuid.uuid4())
    command = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", job]
    command += ["--tags", json.dumps(BENCH_TAG), "--run-id", run_id]
    if run_config:
        command += ["--config-json", json.dumps(run_config)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return run_id


class Traffic:
    """The scoring service on the loop's store, fed the simulated transactions hour by hour."""

    def __init__(self, frame, workdir: Path):
        import numpy as np
        import pandas as pd

        frame = frame.sort_values(["tx_datetime", "transaction_id"], ignore_index=True)
        since = frame["tx_datetime"] - pd.Timestamp(START, tz="UTC")
        self.frame = frame
        self.hour_of = (since // pd.Timedelta(hours=1)).to_numpy(dtype=np.int64)
        self.workdir, self.service, self.client, self.sampler = workdir, None, None, None

    def start(self, store) -> float:
        """Start the service (production must have a version) and sample its CPU and peak RSS
        as a run worker's are; seconds until it is ready."""
        import httpx

        from bench.serve import Service

        self.service = Service(store, self.workdir, {"FRAUDLOOP_SERVE_FLUSH_SECONDS": "1"})
        self.sampler = WorkerSampler(self.service.proc.pid)
        self.sampler.start()
        ready = self.service.wait_ready(timeout=600)
        self.client = httpx.Client(timeout=120)
        return ready

    def hour(self, day: date, hour: int) -> dict:
        """Score the hour's transactions; its rows and wall seconds."""
        import numpy as np

        from pipelines.demo import replay_hour

        n = (day - START).days * 24 + hour
        first, last = np.searchsorted(self.hour_of, [n, n + 1])
        began = time.perf_counter()
        rows = replay_hour(self.client, self.service.base, self.frame.iloc[first:last], day, hour)
        seconds = time.perf_counter() - began
        return {
            "scored": rows,
            "score_s": round(seconds, 3),
            "tx_per_s": round(rows / max(seconds, 1e-9), 1),
        }

    def service_usage(self) -> dict:
        """The service's CPU seconds and peak RSS so far (it is not a run: the stage table
        does not see it); `start` came first."""
        return {
            "service_cpu_s": round(self.sampler.cpu_s, 1),
            "service_peak_rss_mb": round(self.sampler.peak_rss_mb),
        }

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.sampler is not None:
            self.sampler.stop.set()
        if self.service is not None:
            self.service.close()


#: the first model only has to serve the traffic: released whatever its holdout says (at quick
#: sizes a day's holdout has a handful of frauds); the last training run uses the gate's defaults
FIRST_MODEL_CONFIG = {"ops": {"model_evaluation": {"config": {"floor_auc": 0.0, "floor_ap": 0.0}}}}


def land(feed, store, prefix: str) -> None:
    for info in feed.list(prefix):
        store.put_bytes(info.key, feed.get_bytes(info.key))


def hour_keys(day: date, hours: int) -> list[str]:
    return [f"{day:%Y-%m-%d}-{h:02d}:00" for h in range(hours)]


def loop_env(tmp: Path, days: int, warmup: int, hours: int) -> dict[str, str]:
    """A fresh instance (the local profile) and store; the demo's one-day label delay, so that
    labels mature inside the run; the holdout is the last day whose labels matured, training
    on the days before it."""
    dagster_home = tmp / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO / "infra" / "local" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUDLOOP_", "DAGSTER_"))}
    total = warmup + days
    env.update(
        DAGSTER_HOME=str(dagster_home),
        FRAUDLOOP_HOME=str(tmp / "store"),
        FRAUDLOOP_PARTITION_START=f"{START:%Y-%m-%d}-00:00",
        FRAUDLOOP_PARTITION_END=f"{START + timedelta(days=total + 1):%Y-%m-%d}-00:00",
        FRAUDLOOP_LABEL_DELAY_DAYS="1",
        FRAUDLOOP_TRAIN_WINDOW_DAYS=str(max(total - 2 - (hours < 24), 1)),
        FRAUDLOOP_HOLDOUT_DAYS="1",
        DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="true",
    )
    return env


def play(args, tmp: Path) -> tuple[list[Stage], list[dict], dict]:
    """Simulate, then play the days through the daemon; (runs, hours, context)."""
    from fraudloop.core.keyspace import day_landing_prefix, hour_landing_prefix
    from fraudloop.core.store import LocalObjectStore
    from fraudloop.feeds.files import simulate

    total = args.warmup_days + args.days
    feed = LocalObjectStore(tmp / "feed")
    began = time.perf_counter()
    sim = simulate(
        feed,
        START,
        total,
        seed=11,
        scale=args.scale,
        label_delay=timedelta(days=1),
        progress=False,
        keep_frame=args.traffic,
    )
    context = {
        "transactions": sim.transactions,
        "tx_per_hour": sim.transactions / (24 * total),
        "simulate_s": round(time.perf_counter() - began, 1),
    }
    print(f"simulated {sim.transactions:,} transactions in {context['simulate_s']} s", flush=True)
    env = loop_env(tmp, args.days, args.warmup_days, args.hours)
    store = LocalObjectStore(Path(env["FRAUDLOOP_HOME"]))
    days = [START + timedelta(days=n) for n in range(total)]
    runs: list[Stage] = []
    hours: list[dict] = []
    traffic = Traffic(sim.frame, tmp) if args.traffic else None
    sim = None  # the frame lives on in `traffic` (sorted) only
    with Loop(tmp, env, args.launch) as loop, contextlib.ExitStack() as stack:
        if args.warmup_days:
            warm = days[: args.warmup_days]
            for day in warm:
                land(feed, store, f"landing/transactions/{day:%Y-%m-%d}/")
            # labels are known from the second day on (one-day delay), as in `make demo`
            for day in warm[1:]:
                land(feed, store, day_landing_prefix(f"{day:%Y-%m-%d}"))
            # a range run per day and job (at 100x a day is ~1 M transactions); quick: one
            chunks = [warm] if args.quick else [[day] for day in warm]
            print(f"warm-up: {len(warm)} day(s) in {len(chunks)} range run(s) per job", flush=True)
            for chunk in chunks:
                first, last = f"{chunk[0]:%Y-%m-%d}-00:00", f"{chunk[-1]:%Y-%m-%d}-23:00"
                runs.append(loop.run("warmup", "hourly_ingestion_job", first, last))
                labelled = [f"{day:%Y-%m-%d}" for day in chunk if day != days[0]]
                if labelled:
                    span = (labelled[0], labelled[-1])
                    runs.append(loop.run("warmup", "daily_labels_job", *span))
                runs.append(loop.run("warmup", "features_job", first, last))
        if traffic is not None:
            runs.append(loop.run("first model", "training_job", "", "", 3600, FIRST_MODEL_CONFIG))
            stack.callback(traffic.close)
            context["service_ready_s"] = round(traffic.start(store), 1)
            print(f"scoring service ready in {context['service_ready_s']} s", flush=True)
        for n, day in enumerate(days[args.warmup_days :], start=args.warmup_days):
            print(f"day {day}", flush=True)
            played = hour_keys(day, args.hours)
            for h, key in enumerate(played):
                scored = traffic.hour(day, h) if traffic is not None else {}
                land(feed, store, hour_landing_prefix(key))
                stages = [
                    loop.run("ingest", "hourly_ingestion_job", key, key),
                    loop.run("features", "features_job", key, key),
                    loop.run("health", "health_job", key, key),
                ]
                runs += stages
                wall = sum(s.wall_s for s in stages)
                hours.append(
                    {
                        "hour": key,
                        "day_index": n - args.warmup_days,
                        "wall_s": round(wall, 2),
                        "holds": wall <= 3600,
                        "within_target": wall <= HOUR_TARGET_S,
                        "ok": all(s.status == "SUCCESS" for s in stages),
                        **scored,
                    }
                )
                if scored:
                    print(
                        f"  scored     {scored['scored']:,} tx in {scored['score_s']:.1f} s "
                        f"({scored['tx_per_s']:,.0f} tx/s)",
                        flush=True,
                    )
            # the day's labels (known during it) land at its end; the labels runs, then the
            # features from the day's first hour again (what features_sensor asks for), then
            # drift and accuracy of the day before (its labels have matured: one-day delay)
            label_day = f"{day:%Y-%m-%d}"
            land(feed, store, day_landing_prefix(label_day))
            runs.append(loop.run("labels", "daily_labels_job", label_day, label_day))
            runs.append(loop.run("relabel", "features_job", played[0], played[-1]))
            if n:
                prev = f"{days[n - 1]:%Y-%m-%d}"
                runs.append(loop.run("daily", "daily_monitoring_job", prev, prev))
                context.setdefault("daily", []).append(judged(store, prev))
        if traffic is not None:
            context.update(traffic.service_usage())
            print(
                f"scoring service: {context['service_cpu_s']:,.0f} s CPU, peak RSS "
                f"{context['service_peak_rss_mb']:,} MB",
                flush=True,
            )
        print("training", flush=True)
        runs.append(loop.run("training", "training_job", "", "", timeout=3600))
    return runs, hours, context


def judged(store, day: str) -> dict:
    """What the daily run judged of `day`: predictions, and the rows drift compared."""
    from fraudloop.monitoring.records import read_record

    drift = read_record(store, "drift", day) or {}
    accuracy = read_record(store, "accuracy", day) or {}
    return {
        "day": day,
        "predictions": int(accuracy.get("predictions") or 0),
        "drift_status": drift.get("status", "none"),
        "drift_rows": int(drift.get("rows_current_total") or 0),
        "drift_rows_compared": int(drift.get("rows_current") or 0),
    }


def _timed(fn, *args):
    """(result, CPU seconds of this process, wall seconds): CPU is what a loaded, shared machine
    changes least."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def state_publish(days: int, hour_tx: int) -> dict:
    """The feature state's publish for one hour, in process, on `days` days of history at
    `hour_tx` transactions an hour (bench/features.py's synthetic state: ~2 transactions per
    customer a day): the whole canonical blob written (the layout before pieces: after every
    features run as the latest state, and again as the online store) against the pieces an hour
    adds; and reading each back."""
    from bench.features import _bench_state
    from fraudloop.core.store import LocalObjectStore
    from fraudloop.features.compute import advance_hour
    from fraudloop.features.state import FeatureState, hour_key_of
    from fraudloop.features.state_blocks import read_state, write_state

    state, hour_frame, last_h, customers = _bench_state(hour_tx, days)
    print(f"state: {days} days at {hour_tx:,} tx/hour, {customers:,} customers", flush=True)
    out: dict = {"days": days, "hour_tx": hour_tx, "customers": customers}
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-state-") as tmp:
        store = LocalObjectStore(Path(tmp))

        def whole_blob(s):
            blob = s.to_bytes()
            store.put_bytes("before/state.bin", blob)
            return len(blob)

        out["blob_bytes"], out["blob_cpu_s"], out["blob_wall_s"] = _timed(whole_blob, state)
        data = store.get_bytes("before/state.bin")
        loaded, out["blob_load_cpu_s"], out["blob_load_wall_s"] = _timed(
            FeatureState.from_bytes, data
        )
        del data, loaded  # two states at once would double the peak memory
        (_, first), out["migrate_cpu_s"], out["migrate_wall_s"] = _timed(write_state, store, state)
        out["migrate_bytes"] = first["bytes_written"]
        _, state = advance_hour(state, hour_frame, None, hour_key_of(last_h))
        (manifest, hour), out["hour_cpu_s"], out["hour_wall_s"] = _timed(write_state, store, state)
        out["hour_bytes"], out["hour_pieces"] = hour["bytes_written"], hour["pieces_written"]
        out["manifest_bytes"] = len(manifest)
        del state
        loaded, out["pieces_load_cpu_s"], out["pieces_load_wall_s"] = _timed(
            read_state, store, manifest
        )
        del loaded
    print(
        f"  whole blob {out['blob_bytes'] / 1e6:,.1f} MB in {out['blob_cpu_s']:.1f} s CPU; an "
        f"hour's pieces {out['hour_bytes'] / 1e6:,.2f} MB in {out['hour_cpu_s']:.2f} s CPU; load "
        f"{out['blob_load_cpu_s']:.1f} s (blob) vs {out['pieces_load_cpu_s']:.1f} s (pieces)",
        flush=True,
    )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def stage_table(runs: list[Stage]) -> list[dict]:
    """Per stage: runs, median and max wall, CPU, peak RSS, bytes, overhead share."""
    rows = []
    split = {"features": "transaction_features", "publish": "online_feature_store"}
    names = (
        "warmup", "first model", "ingest", "features", "publish", "health", "labels",
        "relabel", "daily", "training",
    )  # fmt: skip
    for name in names:
        if name == "publish":
            chosen = [r for r in runs if r.stage == "features"]
        else:
            chosen = [r for r in runs if r.stage == name]
        if not chosen:
            continue
        if name in split:  # the features run's two asset steps
            walls = [r.step_s.get(split[name], 0.0) for r in chosen]
        else:
            walls = [r.wall_s for r in chosen]
        share = sum(r.startup_s for r in chosen) / max(
            sum(r.startup_s + r.steps_s for r in chosen), 1e-9
        )
        rows.append(
            {
                "stage": name,
                "runs": len(chosen),
                "failed": sum(r.status != "SUCCESS" for r in chosen),
                "wall_median_s": round(statistics.median(walls), 2),
                "wall_max_s": round(max(walls), 2),
                "cpu_median_s": round(statistics.median(r.cpu_s for r in chosen), 2),
                "peak_rss_mb": round(max(r.peak_rss_mb for r in chosen), 0),
                "bytes_median": int(statistics.median(r.bytes_written for r in chosen)),
                "overhead_share": round(share, 3),
                "timed": "step" if name in split else "run",
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| stage | runs | wall median / max | CPU median | peak RSS | written median | "
        "Dagster overhead |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = " (step)" if r["timed"] == "step" else ""
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            f"| {r['stage']}{note} | {r['runs']}{failed} | {r['wall_median_s']:.1f} / "
            f"{r['wall_max_s']:.1f} s | {r['cpu_median_s']:.1f} s | {r['peak_rss_mb']:.0f} MB | "
            f"{r['bytes_median'] / 1e6:.2f} MB | {r['overhead_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--scale", type=float, help="simulator scale (100; quick: 0.3)")
    parser.add_argument("--days", type=int, help="days played hour by hour (1)")
    parser.add_argument("--warmup-days", type=int, help="days landed as range runs first (3)")
    parser.add_argument("--hours", type=int, help="hours of each day played (4; quick: 1)")
    parser.add_argument(
        "--state-days",
        type=int,
        help="days of history of the in-process state publish at the scale's rate (30; quick: 1)",
    )
    parser.add_argument(
        "--loop", action=argparse.BooleanOptionalAction, default=True, help="run the Dagster loop"
    )
    parser.add_argument(
        "--traffic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score each played hour through the scoring service before its files land",
    )
    parser.add_argument(
        "--launch",
        choices=["daemon", "in-process"],
        help="through the daemon's queue and run launcher (default), or execute_in_process on "
        "the same instance (quick's default: no run worker start-up, so the suite stays short)",
    )
    args = parser.parse_args()
    quick = args.quick
    args.scale = args.scale if args.scale is not None else (0.3 if quick else 100.0)
    args.days = args.days if args.days is not None else (2 if quick else 1)
    args.warmup_days = args.warmup_days if args.warmup_days is not None else 3
    args.hours = args.hours if args.hours is not None else (1 if quick else 4)
    args.launch = args.launch or ("in-process" if quick else "daemon")
    args.state_days = args.state_days if args.state_days is not None else (1 if quick else 30)
    command = (
        f"python bench/scale.py --scale {args.scale:g} --days {args.days} "
        f"--warmup-days {args.warmup_days} --hours {args.hours} --launch {args.launch}"
        + ("" if args.traffic else " --no-traffic")
    )
    report = Report("scale", args, command=command)
    # the feature state's hourly publish first: in process, CPU-timed, the stage item 2 changed
    state = state_publish(args.state_days, max(int(420 * args.scale), 50))
    report.figure(
        "state_hour_mb",
        f"what publishing the feature state writes for one hour, {state['days']} days of state at "
        f"{state['hour_tx']:,} tx/hour ({state['customers']:,} customers)",
        state["hour_bytes"] / 1e6,
        "MB",
        text=f"{state['hour_bytes'] / 1e6:,.2f} MB ({state['hour_pieces']} pieces)",
        versus="the whole state as one blob (the layout before pieces, written twice an hour)",
        versus_value=state["blob_bytes"] / 1e6,
        ratio=state["blob_bytes"] / max(state["hour_bytes"], 1),
        ratio_means="whole blob / an hour's pieces",
    )
    report.figure(
        "state_hour_cpu_s",
        "CPU seconds of that publish",
        state["hour_cpu_s"],
        "s",
        versus="serialising and writing the whole blob",
        versus_value=state["blob_cpu_s"],
        ratio=state["blob_cpu_s"] / max(state["hour_cpu_s"], 1e-6),
        ratio_means="whole blob / pieces",
    )
    report.details["state_publish"] = state
    if not args.loop:
        report.finish()
        return
    with tempfile.TemporaryDirectory(
        prefix="fraudloop-bench-scale-", ignore_cleanup_errors=True
    ) as tmp:
        runs, hours, context = play(args, Path(tmp))
    rows = stage_table(runs)
    by = {r["stage"]: r for r in rows}
    hour_walls = [h["wall_s"] for h in hours]
    worst = max(hour_walls)
    features = [r for r in runs if r.stage == "features"]
    first_day = [r.wall_s for r, h in zip(features, hours, strict=True) if h["day_index"] == 0]
    last_day = [
        r.wall_s for r, h in zip(features, hours, strict=True) if h["day_index"] == args.days - 1
    ]
    training = next(r for r in runs if r.stage == "training")
    hourly = [r for r in runs if r.stage in HOURLY_STAGES]
    startup = sum(r.startup_s for r in hourly)
    steps = sum(r.steps_s for r in hourly)
    peak = max(r.peak_rss_mb for r in runs)
    failed = [f"{r.job} {r.partitions}" for r in runs if r.status != "SUCCESS"]

    report.figure(
        "hour_wall_s",
        f"an hour's ingest + features + publish + health through the daemon, worst of "
        f"{len(hours)} at scale {args.scale:g} (~{context['tx_per_hour']:,.0f} tx/hour)",
        worst,
        "s",
        text=f"{worst:.0f} s (median {statistics.median(hour_walls):.0f} s)",
        versus="the hour's real time until the next lands",
        versus_value=3600.0,
        ratio_means="worst hour / 3,600 s (< 1: real time holds)",
        target=f"<= {HOUR_TARGET_S:.0f} s",
    )
    report.figure(
        "features_growth",
        f"features + publish run, median on the last played day (day {args.days})",
        statistics.median(last_day),
        "s",
        versus="the same on the first played day",
        versus_value=statistics.median(first_day),
        ratio_means="last day / first day: growth with history",
        target="x1 (no growth with history)",
    )
    report.figure(
        "features_mb",
        "bytes the features + publish run writes for one hour (median)",
        by["features"]["bytes_median"] / 1e6,
        "MB",
        versus="bytes its ingest run writes (median)",
        versus_value=by["ingest"]["bytes_median"] / 1e6,
        ratio_means="features / ingest",
    )
    report.figure(
        "peak_rss_mb",
        "peak RSS of any run worker process",
        peak,
        "MB",
        versus="the 8 GB limit per process",
        versus_value=RSS_LIMIT_MB,
        ratio_means="peak / limit",
        target="<= 8,192 MB",
    )
    report.figure(
        "training_s",
        "one training run (dataset, train, gate, package, staging, release)",
        training.wall_s,
        "s",
        text=f"{training.wall_s:.0f} s ({training.status}), peak {training.peak_rss_mb:.0f} MB",
        versus="the 10-minute target",
        versus_value=TRAIN_TARGET_S,
        ratio_means="run / target",
        target="<= 600 s",
    )
    daily = [r for r in runs if r.stage == "daily"]
    if daily:
        slowest = max(range(len(daily)), key=lambda i: daily[i].wall_s)
        seen = context["daily"][slowest]  # one per daily run, in order
        report.figure(
            "daily_s",
            f"the daily drift + accuracy run, slowest of {len(daily)} ({seen.get('day')}: "
            f"{seen.get('predictions', 0):,} predictions judged, drift on "
            f"{seen.get('drift_rows_compared', 0):,} of {seen.get('drift_rows', 0):,} rows)",
            daily[slowest].wall_s,
            "s",
            versus="the 10-minute target",
            versus_value=DAILY_TARGET_S,
            ratio_means="run / target",
            target="<= 600 s",
        )
    scored = [h for h in hours if h.get("scored")]
    if scored:
        rates = [h["tx_per_s"] for h in scored]
        arrival = context["tx_per_hour"] / 3600
        report.figure(
            "score_tx_per_s",
            f"scoring an hour's traffic through the service's batch endpoint, median of "
            f"{len(scored)} hours (one process, embedded online store)",
            statistics.median(rates),
            "tx/s",
            text=f"{statistics.median(rates):,.0f} tx/s",
            versus="the rate the hour's transactions arrive at",
            versus_value=arrival,
            versus_text=f"{arrival:,.1f} tx/s",
            ratio_means="capacity / arrival rate (headroom)",
        )
    report.figure(
        "overhead_share",
        "Dagster overhead share of the hourly runs' time (start-up phases)",
        startup / max(startup + steps, 1e-9),
        "",
        text=f"{startup / max(startup + steps, 1e-9):.0%}",
        versus="steps' share",
        versus_value=steps / max(startup + steps, 1e-9),
        versus_text=f"{steps / max(startup + steps, 1e-9):.0%}",
        ratio_means="start-up / steps",
    )
    report.note("")
    report.note(markdown(rows))
    if failed:
        report.note(f"FAILED runs: {', '.join(failed)}")
    report.details.update(
        scale=args.scale,
        days=args.days,
        warmup_days=args.warmup_days,
        hours_per_day=args.hours,
        **context,
        hours=hours,
        stages=rows,
        runs=[{**asdict(r), "overhead_share": round(r.overhead_share, 3)} for r in runs],
        failed=failed,
    )
    report.finish()
    if failed:
        raise SystemExit(f"runs failed: {failed}")


if __name__ == "__main__":
    main()
