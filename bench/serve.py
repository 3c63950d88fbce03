"""Scoring-service figures for the README (issue: serving): what one decision costs, how many the
service sustains, and whether hot swaps and a shutdown lose any.

Why these figures. The service scores on its event-loop thread, so latency and throughput are
bounded by the Python work per request, not by the model. The floor -- LightGBM on one row, then
the service's own scoring path without HTTP -- tells how much of an HTTP figure is the model, how
much the service and how much the web stack. Then, against the service in its own process:
open-loop latency at a steady rate (no coordinated omission), closed-loop peak requests/s, batch
rows/s (with a per-row profile of where the batch time goes), a load run across hot swaps of the
production alias, a SIGTERM whose prediction log must hold every decision answered, then (issue
12) the latency of the prediction-log spool in its three modes, decisions lost to a `kill -9`,
single requests beside 200 half-sent request heads and beside a large batch, and the same open-loop
latency with the online features in Redis (one and two replicas sharing it) beside the in-process
store, and what remembering each transaction's features for its retries costs each store
(time and memory, against the same calls without; `--only-online-stores` runs just that
phase). Targets
(from the serving issue): p99 <= 10 ms at 200 requests/s, >= 1,000 requests/s, >= 200,000 batch
rows/s, no failed request across hot swaps. The hot swaps run before the batch phase so that
their figures are the swaps' own.

One machine: the load generator shares the cores with the service, so the peak figures are what
the service does with part of the machine. The CPU seconds each side used in each phase are
printed, with those of every other process of the machine: on a shared box, that column says
which figures a neighbour disturbed.

The world is `tests.serving_home.build_world` (seeded) in a temp dir, with a third version (v3,
good, another seed) and the packages of v1 and v3 (production loads a package without a staging
test, and only production serves here); its two days of live traffic (~1,900 transactions) are
reused cyclically by the single-request phases. A reused transaction id is observed by the
service only once, so the online state stays that of the traffic; from the second pass on each
request is a retry to the service, whose features are computed all the same and then replaced
by the remembered ones (`fraudloop.features.retries`: a read instead of a write). The world is
built in a child process: building it leaves a large heap behind, and this process hosts the
in-process measurements and the load generator, whose garbage-collection pauses must look like
those of a freshly started service, not like those of a training pipeline.

The batch phases do not reuse that traffic (`fresh_world`): a batch of 10,000 of its rows would
hold each of its 440 cards ~23 times, and from the second request on every row would be a
retry, which is not what a card issuer's batch is (until 2026-12-07 they did, and measured
47,000-108,000 rows/s where new transactions give ~25,000). They run last, against a copy of
the world whose online state is synthetic at a card issuer's size (`bench/features.py`'s
`_bench_state`: 42,000 transactions an hour, 100x the handbook's, 504,000 cards, 8 days), with
the transactions of the hours after it sent once each, in time order: the stage profile in this
process, then rows/s over HTTP against a service process of their own.

Each headline figure is printed beside the comparison measured in the same run: the HTTP p99
against the in-process scoring path, that path against LightGBM alone, peak requests/s against
the in-process path's rate on one core, batch rows/s against single-request rows/s, failed
requests against those sent across the hot swaps, log rows against decisions answered.

Usage: .venv/bin/python bench/serve.py [--quick] [--json PATH] [--only-online-stores]
[--only-batch] (--quick: short phases; --only-batch: the batch profile and batch rows/s alone)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import Result, run_constant_rate, run_max_throughput  # noqa: E402
from bench.report import Report, arguments  # noqa: E402
from fraudloop.core.ports import free_port  # noqa: E402
from fraudloop.core.settings import store_env  # noqa: E402
from fraudloop.core.store import LocalObjectStore  # noqa: E402
from fraudloop.delivery.contract import Transaction  # noqa: E402
from fraudloop.delivery.prediction_log import PredictionLog, read_predictions  # noqa: E402
from fraudloop.model.registry import ModelRegistry  # noqa: E402
from fraudloop.serving import batch_body  # noqa: E402
from fraudloop.serving.app import ScoringService, row_hashes, slot_matrix  # noqa: E402
from fraudloop.serving.config import ServeConfig  # noqa: E402

HOST = "127.0.0.1"
POLL_SECONDS = 1.0  # the service's default alias polling period, set explicitly


@dataclass(frozen=True)
class Plan:
    floor_calls: int = 5_000
    latency_rate: float = 200.0
    latency_s: float = 20.0
    peak_s: float = 10.0
    peak_connections: tuple[int, ...] = (1, 4, 16, 32)  # 1: the round trip of a busy server
    batch_s: float = 10.0
    batch_connections: int = 2
    batch_rows: tuple[int, int] = (1_000, 10_000)
    profile_rows: int = 10_000
    profile_reps: int = 6
    swap_rate: float = 200.0
    swaps: int = 10
    swap_every_s: float = 2.5
    retry_rounds: int = 3  # rows remembered for retries or not, alternated (online stores)
    retry_memory_rows: int = 20_000  # transactions whose rows' memory is measured
    # the batch phases' population (`fresh_world`): the state's transactions an hour (42,000:
    # 100x the handbook's, ~1 M a day), its days, and the new transactions sent per request
    # size, each once
    batch_hour_tx: int = 42_000
    batch_state_days: int = 8
    batch_rows_sent: int = 400_000


QUICK = Plan(  # every phase, briefly: a smoke run for the suite
    floor_calls=500,
    latency_s=2.0,
    peak_s=1.5,
    peak_connections=(1, 16),
    batch_s=1.5,
    batch_rows=(100, 1_000),
    profile_rows=1_000,
    profile_reps=3,
    swaps=2,
    swap_every_s=1.5,
    retry_rounds=1,
    retry_memory_rows=2_000,
    batch_hour_tx=2_000,
    batch_state_days=2,
    batch_rows_sent=20_000,
)


# ---- small helpers


def us(seconds: float) -> float:
    return seconds * 1e6


def pct(values_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values_s), q))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (all threads) or of ``pid`` (Linux /proc)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def at_most(value: float, target: float, unit: str) -> str:
    if value != value:  # NaN
        return "no data"
    if value <= target:
        return f"meets (<= {target:g} {unit})"
    return f"misses: {value / target:.1f}x the target"


def at_least(value: float, target: float, unit: str) -> str:
    if value >= target:
        return f"meets (>= {target:,.0f} {unit})"
    return f"misses: {value / target:.0%} of the target"


def bodies_bytes(bodies: list[dict]) -> list[bytes]:
    return [json.dumps(b, separators=(",", ":")).encode() for b in bodies]


def cyclic(bodies: list[dict], start: int, n: int) -> list[dict]:
    return [bodies[(start + i) % len(bodies)] for i in range(n)]


# ---- 1. the floor in process


@contextlib.contextmanager
def scoring_in_process(store):
    """A `ScoringService` in this process on ``store``, started, writing no prediction log."""
    service = ScoringService(store, ServeConfig(log_predictions=False, poll_seconds=3600))
    service.start()
    try:
        yield service
    finally:
        service.predlog = None
        service.stop()


def in_process(store, bodies: list[dict], plan: Plan, rng: np.random.Generator) -> dict:
    """LightGBM on one row and the service's scoring path on one request."""
    with scoring_in_process(store) as service:
        dep = service.follower.deployment
        slot = dep.production
        features = service.follower.features
        picks = rng.choice(len(bodies), size=min(len(bodies), 1_000), replace=False)
        # the service's own online-features call (it also observes these transactions, as
        # the warm-up below does for others)
        values = [features.features_and_observe(bodies[i]) for i in picks]
        rows = np.array([[v[n] for n in slot.features] for v in values], dtype=np.float64)
        singles = [rows[i : i + 1].copy() for i in range(len(rows))]
        for x in singles[:200]:  # warm-up
            slot.booster.predict(x, num_threads=1)
        predict_s = []
        for i in range(plan.floor_calls):
            x = singles[i % len(singles)]
            t0 = time.perf_counter()
            slot.booster.predict(x, num_threads=1)
            predict_s.append(time.perf_counter() - t0)

        for body in bodies[:200]:  # warm-up (also observes these transactions once)
            service.score([Transaction(**body)])
        score_s, validate_s = [], []
        for i in range(plan.floor_calls):
            body = bodies[(200 + i) % len(bodies)]
            t0 = time.perf_counter()
            service.score([Transaction(**body)])
            score_s.append(time.perf_counter() - t0)
        for i in range(min(plan.floor_calls, 2_000)):
            t0 = time.perf_counter()
            Transaction(**bodies[i % len(bodies)])
            validate_s.append(time.perf_counter() - t0)
    return {
        "model_version": slot.version,
        "features": len(slot.features),
        "trees": slot.booster.num_trees(),
        "booster_predict_1row_us": {
            "p50": round(us(pct(predict_s, 50)), 1),
            "p99": round(us(pct(predict_s, 99)), 1),
            "calls": len(predict_s),
        },
        "service_score_1tx_us": {
            "p50": round(us(pct(score_s, 50)), 1),
            "p99": round(us(pct(score_s, 99)), 1),
            "calls": len(score_s),
            "of_which_transaction_validation_p50": round(us(pct(validate_s, 50)), 1),
        },
    }


class GcWatch:
    """Time spent in the cyclic garbage collector while it is installed (all generations), and
    the length of each full (generation 2) collection."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.seconds += took
        if info["generation"] == 2:
            self.full.append(took)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


class Timed:
    """Stands in for a method on one object: sums the wall and GC seconds of its calls."""

    def __init__(self, owner: object, name: str, watch: GcWatch, keep: bool = False):
        self.owner, self.name, self.watch = owner, name, watch
        self.fn = getattr(owner, name)
        self.keep = keep
        self.results: list = []
        self.wall = self.gc = 0.0
        setattr(owner, name, self)  # an instance attribute shadows the class's method

    def __call__(self, *args, **kwargs):
        started, gc_started = time.perf_counter(), self.watch.seconds
        try:
            result = self.fn(*args, **kwargs)
        finally:
            self.wall += time.perf_counter() - started
            self.gc += self.watch.seconds - gc_started
        if self.keep:
            self.results.append(result)
        return result

    def reset(self) -> None:
        self.results.clear()
        self.wall = self.gc = 0.0

    def remove(self) -> None:
        delattr(self.owner, self.name)


PARSE_STAGE = "JSON body into validated columns (batch_body.parse: msgspec + arrays)"
DECIDE_STAGE = "ScoringService.decide_rows, of which:"


def batch_profile(service: ScoringService, bodies: list[bytes], slot, rows: int) -> dict:
    """Where the time of one batch request goes, per row: the body into columns (the service's
    own parser, `batch_body.parse`), the real `ScoringService.decide_rows` with its main steps
    timed by wrapping them on this instance (so the profile follows the service's code, not a
    copy of it), the response JSON, and the background prediction-log flush of the rows. Each
    stage also reports the part spent in the garbage collector. One request per body of
    ``bodies`` (``rows`` new transactions each, in time order); means over the repetitions
    after the first (a full collection lands in some of them only)."""
    reps = len(bodies)
    scratch = tempfile.TemporaryDirectory()
    watch = GcWatch()
    features = Timed(service.follower.features, "features_and_observe_matrix", watch, keep=True)
    predict = Timed(service, "_predict", watch)
    booster = Timed(slot.booster, "predict", watch)
    answer = Timed(service, "_answer", watch)
    wrapped = (features, predict, booster, answer)
    stages: dict[str, list[tuple[float, float]]] = {}
    mark = [0.0, 0.0]  # perf_counter, gc seconds at the last clock

    def clock(name: str | None) -> tuple[float, float]:
        now, gc_now = time.perf_counter(), watch.seconds
        took = (now - mark[0], gc_now - mark[1])
        if name is not None:
            stages.setdefault(name, []).append(took)
        mark[:] = [now, gc_now]
        return took

    def add(name: str, wall: float, in_gc: float) -> None:
        stages.setdefault(name, []).append((wall, in_gc))

    try:
        for rep in range(reps):
            for w in wrapped:
                w.reset()
            service.predlog = PredictionLog(
                LocalObjectStore(Path(scratch.name) / f"s{rep}"), "bench", flush_seconds=3600
            )
            clock(None)
            columns = batch_body.parse(bodies[rep])
            clock(PARSE_STAGE)
            decided, _ = service.decide_rows(columns)
            wall, in_gc = clock(DECIDE_STAGE)
            add("  online features (features_and_observe_matrix)", features.wall, features.gc)
            add("  feature matrix + LightGBM predict (_predict)", predict.wall, predict.gc)
            add("    of which LightGBM Booster.predict (whole batch)", booster.wall, booster.gc)
            add("  answers + log rows + metrics (_answer)", answer.wall, answer.gc)
            top = (features, predict, answer)
            add(
                "  the rest (time-order sort, routing)",
                wall - sum(w.wall for w in top),
                in_gc - sum(w.gc for w in top),
            )
            decided.json()
            clock("JSON of the response")
            service.predlog.flush()
            clock("prediction log flush (background thread, not in the total)")
            service.predlog = None
            hashes = [row_hashes(slot_matrix(slot, m)) for m in features.results]
            clock("feature_hash of every row, alone (inside _answer)")
            del hashes, decided
    finally:
        for w in wrapped:
            w.remove()
        watch.close()
        service.predlog = None
        scratch.cleanup()

    def per_row(values: list[float]) -> float:
        return round(us(statistics.fmean(values[1:])) / rows, 2)

    table = {
        name: {"us": per_row([w for w, _ in v]), "gc_us": per_row([g for _, g in v])}
        for name, v in stages.items()
    }
    path = (PARSE_STAGE, DECIDE_STAGE, "JSON of the response")
    return {
        "rows": rows,
        "body_bytes": len(bodies[0]),
        "repetitions_averaged": reps - 1,
        "us_per_row": table,
        "request_path_us_per_row": round(sum(table[n]["us"] for n in path), 2),
        "request_path_gc_us_per_row": round(sum(table[n]["gc_us"] for n in path), 2),
        "full_collections": len(watch.full),
        "full_collection_ms": [round(s * 1000, 1) for s in watch.full],
    }


class FreshTraffic:
    """New transactions in time order, handed out once each as JSON batch bodies."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.next = 0

    def take(self, n_bodies: int, rows: int) -> list[bytes]:
        """``n_bodies`` batch bodies of ``rows`` transactions, the next ones in time order."""
        stop = self.next + n_bodies * rows
        if stop > len(self.frame):
            raise ValueError(f"fresh traffic exhausted: {stop:,} rows asked, {len(self.frame):,}")
        part = self.frame.iloc[self.next : stop]
        self.next = stop
        records = part.to_dict("records")
        return [
            json.dumps({"transactions": records[k : k + rows]}, separators=(",", ":")).encode()
            for k in range(0, len(records), rows)
        ]


def fresh_world(
    workdir: Path, hour_tx: int, days: int, rows: int
) -> tuple[LocalObjectStore, FreshTraffic, dict]:
    """The batch phases' world: a copy of the world's store (registry, packages) whose online
    state is a synthetic one of ``days`` days at ``hour_tx`` transactions an hour
    (bench/features.py: 12 cards per hourly transaction, ~2 transactions a card a day, 78
    terminals a card), and at least ``rows`` transactions of the hours after it, new to the
    service (why not the world's traffic: the module docstring). Built in a child process, as
    the world is."""
    home = workdir / "fresh-home"
    shutil.copytree(workdir / "home", home)
    # an hour holds hour_tx transactions on average: one hour more than the mean needs
    spec = {"hour_tx": hour_tx, "days": days, "hours": -(-rows // hour_tx) + 1}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--build-fresh",
            str(workdir),
            json.dumps(spec),
        ],
        cwd=REPO,
        check=True,
    )
    facts = json.loads((workdir / "fresh.json").read_text())
    frame = pd.read_parquet(workdir / "fresh.parquet")
    facts |= spec | {"build_s": round(time.perf_counter() - started, 1), "traffic_rows": len(frame)}
    return LocalObjectStore(home), FreshTraffic(frame), facts


def _build_fresh_child(workdir: Path, spec: dict) -> None:
    from bench.features import _bench_state
    from fraudloop.core.hours import HOUR_KEY_FORMAT, HOUR_NS
    from fraudloop.features.feature_store import publish_online

    state, frame, first_hour, customers = _bench_state(
        spec["hour_tx"], spec["days"], new_hours=spec["hours"]
    )
    state_hour = pd.Timestamp((first_hour - 1) * HOUR_NS, tz="UTC").strftime(HOUR_KEY_FORMAT)
    publish_online(LocalObjectStore(workdir / "fresh-home"), state, state_hour)
    # whole seconds, as a payment switch stamps them (and the simulator), in time order
    frame = frame.assign(tx_datetime=frame["tx_datetime"].dt.floor("s"))
    frame = frame.sort_values(["tx_datetime", "transaction_id"], kind="mergesort")
    frame = frame.assign(
        tx_datetime=frame["tx_datetime"].map(lambda t: t.isoformat()),
        amount=frame["amount"].astype(float),
    )
    frame.astype({c: str for c in ("transaction_id", "customer_id", "terminal_id")}).to_parquet(
        workdir / "fresh.parquet"
    )
    summary = {"state_hour": state_hour, "customers": customers, "terminals": len(state.terminals)}
    (workdir / "fresh.json").write_text(json.dumps(summary))


def fresh_batches(workdir: Path, plan: Plan) -> dict:
    """The batch figures on new transactions (:func:`fresh_world`): the stage profile of the
    batch path in this process, then rows/s over HTTP against a service process of its own
    (prediction log on)."""
    needed = len(plan.batch_rows) * plan.batch_rows_sent + plan.profile_rows * plan.profile_reps
    store, traffic, world = fresh_world(workdir, plan.batch_hour_tx, plan.batch_state_days, needed)
    out: dict = {"world": world}
    started = time.perf_counter()
    with scoring_in_process(store) as service:
        out["in_process_load_s"] = round(time.perf_counter() - started, 1)
        slot = service.follower.deployment.production
        bodies = traffic.take(plan.profile_reps, plan.profile_rows)
        out["batch_profile"] = batch_profile(service, bodies, slot, plan.profile_rows)
    del service
    gc.collect()
    http = Service(store, workdir, name="batch-service")
    try:
        out["startup_s"] = round(http.wait_ready(timeout=600), 1)
        out["batch"] = batch_phase(http, traffic, plan)
        http.terminate()
    finally:
        http.close()
    return out


def batch_phase(service: Service, traffic: FreshTraffic, plan: Plan) -> dict:
    """Batch rows/s over HTTP, closed loop, for each request size of the plan: new
    transactions, each sent once (``plan.batch_s`` bounds the phase)."""
    out = {}
    for rows in plan.batch_rows:
        batch_bodies = traffic.take(plan.batch_rows_sent // rows, rows)
        result, cpu = timed(
            lambda b=batch_bodies: run_max_throughput(
                HOST,
                service.port,
                "/v1/score/batch",
                b,
                plan.batch_s,
                connections=plan.batch_connections,
                timeout_s=60,
                once=True,
            ),
            service,
        )
        out[str(rows)] = (
            result.summary()
            | cpu
            | {
                "rows_per_request": rows,
                "connections": plan.batch_connections,
                "body_bytes": len(batch_bodies[0]),
                "rows_per_s": round(result.ok * rows / result.duration_s),
            }
        )
    return out


def only_batch(plan: Plan) -> dict:
    """``--only-batch``: the batch phases (:func:`fresh_batches`) without the others."""
    out: dict = {"load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-serve-") as tmp:
        workdir = Path(tmp)
        store, _, _ = build_world(workdir)
        ModelRegistry(store).promote(1, to="production", actor="bench", reason="bench")
        out["fresh"] = fresh_batches(workdir, plan)
    out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return out


# ---- the service in its own process


class Service:
    def __init__(self, store, workdir: Path, env: dict | None = None, name: str = "service"):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.stderr_path = workdir / f"{name}.stderr"
        env = {
            **os.environ,
            **store_env(store),
            "FRAUDLOOP_SERVE_POLL_SECONDS": str(POLL_SECONDS),
            "FRAUDLOOP_SERVE_LOG_PREDICTIONS": "1",
            **(env or {}),
        }
        self.stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fraudloop.serving",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        self.client = httpx.Client(base_url=self.base, timeout=10)

    def wait_ready(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.stderr_text()[-2000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("service not ready in time")

    def deployment(self) -> dict:
        return self.client.get("/v1/deployment").json()

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith("fraudloop_") and " " in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def terminate(self) -> tuple[int | None, float]:
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        return code, time.perf_counter() - started

    def stderr_text(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.client.close()
        self.stderr.close()


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, _steal = ticks
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(run, service: Service):
    """Runs ``run()``; returns (result, CPU seconds used meanwhile by the service, by this process
    (the load generator), and by every other process of the machine, which are noise)."""
    svc, me, busy, wall = service.cpu(), cpu_seconds(), machine_busy_seconds(), time.perf_counter()
    result = run()
    svc, me = service.cpu() - svc, cpu_seconds() - me
    return result, {
        "wall_s": round(time.perf_counter() - wall, 2),
        "service_cpu_s": round(svc, 2),
        "loadgen_cpu_s": round(me, 2),
        "other_cpu_s": round(max(0.0, machine_busy_seconds() - busy - svc - me), 2),
    }


def hot_swaps(
    service: Service, store, single: list[bytes], plan: Plan, rng: np.random.Generator
) -> dict:
    """Open-loop load while the production alias alternates v3 / v1; each swap is timed from
    just before the alias write to the first /v1/deployment showing it. The intervals between
    swaps are jittered (+-20 %): at a fixed multiple of the poll period every swap would land at
    the same phase of the polling and the follow times would be that phase, not a sample."""
    registry = ModelRegistry(store)
    intervals = (plan.swap_every_s * rng.uniform(0.8, 1.2, size=plan.swaps)).tolist()
    duration = 2.0 + sum(intervals)
    box: dict[str, Result] = {}
    loader = threading.Thread(
        target=lambda: box.update(
            result=run_constant_rate(
                HOST, service.port, "/v1/score", single, plan.swap_rate, duration
            )
        )
    )
    loader.start()
    time.sleep(1.0)
    follow_s, alias_write_s, missed = [], [], 0
    for i, interval in enumerate(intervals):
        target = 3 if i % 2 == 0 else 1
        started = time.monotonic()
        registry.promote(target, to="production", actor="bench", reason=f"bench swap {i}")
        alias_write_s.append(time.monotonic() - started)
        while service.deployment()["deployment"].get("production") != target:
            if time.monotonic() - started > 15:
                missed += 1
                break
            time.sleep(0.02)
        else:
            follow_s.append(time.monotonic() - started)
        time.sleep(max(0.0, started + interval - time.monotonic()))
    loader.join()
    result = box["result"]
    return {
        "load": result.summary(),
        "swaps": plan.swaps,
        "swaps_followed": len(follow_s),
        "swaps_not_followed_in_15s": missed,
        "follow_s": {
            "median": round(statistics.median(follow_s), 3) if follow_s else None,
            "max": round(max(follow_s), 3) if follow_s else None,
            "all": [round(s, 3) for s in follow_s],
        },
        "alias_write_ms_median": round(statistics.median(alias_write_s) * 1000, 1),
        "final_production": service.deployment()["deployment"].get("production"),
    }


# ---- the run


# ---- durability and guards (issue 12): each in its own service process


def spool_modes(store, workdir: Path, single: list[bytes], plan: Plan) -> dict:
    """Open-loop p99 with the decision fsync'd before the answer, within the commit window, and
    with no spool (memory only, the old behaviour)."""
    modes = {
        "fsync before answer": {},
        "commit window (async)": {"FRAUDLOOP_SERVE_SPOOL_SYNC": "false"},
        "spool off (memory)": {"FRAUDLOOP_SERVE_SPOOL_DIR": "off"},
    }
    out = {}
    for i, (mode, env) in enumerate(modes.items()):
        service = Service(store, workdir, env, name=f"spool-{i}")
        try:
            service.wait_ready()
            run_constant_rate(HOST, service.port, "/v1/score", single, 200, 0.5)  # warm-up
            result = run_constant_rate(
                HOST, service.port, "/v1/score", single, plan.latency_rate, plan.latency_s
            )
            out[mode] = result.summary()
            service.terminate()
        finally:
            service.close()
    return out


def kill_9(store, workdir: Path, single: list[bytes], plan: Plan) -> dict:
    """Answered decisions, `kill -9`, restart on the same spool: rows logged vs answered."""
    env = {"FRAUDLOOP_SERVE_SPOOL_DIR": str(workdir / "kill9-spool")}
    service = Service(store, workdir, env, name="kill9-a")
    try:
        service.wait_ready()
        instance = service.deployment()["instance"]
        answered = run_constant_rate(
            HOST, service.port, "/v1/score", single, plan.latency_rate, plan.latency_s
        ).ok
        service.proc.kill()
        service.proc.wait()
    finally:
        service.close()

    def logged() -> int:
        log = read_predictions(store, dedupe=False)  # the traffic's ids repeat across phases
        return int((log["instance"] == instance).sum())

    before = logged()
    again = Service(store, workdir, env, name="kill9-b")
    try:
        again.wait_ready()
        deadline = time.monotonic() + 30
        while logged() < answered and time.monotonic() < deadline:
            time.sleep(0.2)
        after = logged()
        again.terminate()
    finally:
        again.close()
    return {"answered": answered, "in_store_after_kill": before, "after_restart": after}


def slow_clients_and_batches(store, workdir: Path, bodies: list[dict], plan: Plan) -> dict:
    """Single requests while hundreds of connections hold half a request head, and while a
    large batch is scored: p99 and failures, and how long the half-open connections lived."""
    header_s = 2.0
    env = {"FRAUDLOOP_SERVE_HEADER_TIMEOUT_SECONDS": str(header_s)}
    service = Service(store, workdir, env, name="guards")
    single = bodies_bytes(bodies)
    out: dict = {"header_timeout_s": header_s}
    try:
        service.wait_ready()
        socks = []
        opened = time.monotonic()
        for _ in range(200):
            sock = socket.create_connection((HOST, service.port), timeout=15)
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Ty")
            socks.append(sock)
        during = run_constant_rate(HOST, service.port, "/v1/score", single, 100, 1.0)
        closed_after = []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.recv(1024)
            closed_after.append(time.monotonic() - opened)
            sock.close()
        out["half_open"] = {
            "connections": len(socks),
            "singles_meanwhile": during.summary(),
            "all_closed_after_s": round(max(closed_after), 2),
        }
        rows = plan.batch_rows[-1]
        body = json.dumps({"transactions": cyclic(bodies, 0, rows)}).encode()
        took: dict = {}

        def batch() -> None:
            t0 = time.perf_counter()
            response = httpx.post(
                f"{service.base}/v1/score/batch",
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            took["s"], took["status"] = time.perf_counter() - t0, response.status_code

        quiet = run_constant_rate(HOST, service.port, "/v1/score", single, 100, 1.0)
        sender = threading.Thread(target=batch)
        sender.start()
        meanwhile = run_constant_rate(HOST, service.port, "/v1/score", single, 100, 1.0)
        sender.join()
        out["batch"] = {
            "rows": rows,
            "batch_s": round(took["s"], 3),
            "batch_status": took["status"],
            "singles_alone": quiet.summary(),
            "singles_during_batch": meanwhile.summary(),
        }
        service.terminate()
    finally:
        service.close()
    return out


@contextlib.contextmanager
def redis_server(workdir: Path):
    """Debian's redis-server on a free loopback port, no persistence (the online store phase)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly",
         "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://{HOST}:{port}/0"
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield url, client, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def split_load(ports: list[int], single: list[bytes], rate: float, seconds: float) -> list:
    """``rate`` req/s in all, split evenly over the replicas at ``ports``, all at once; each
    replica gets its own share of the traffic (the cards overlap: that is what is shared)."""
    results: list = [None] * len(ports)

    def load(k: int) -> None:
        part = single[k :: len(ports)]
        results[k] = run_constant_rate(
            HOST, ports[k], "/v1/score", part, rate / len(ports), seconds
        )

    threads = [threading.Thread(target=load, args=(k,)) for k in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def call_records(single: list[bytes], calls: int, tag: str) -> list[dict]:
    """``calls`` transactions of the traffic as the online stores take them, each under an id
    no other call used (``tag``): every one is first seen by the store it is given to."""
    records = []
    for i in range(max(calls, 1)):  # the traffic again after its end, under other ids
        tx = Transaction.model_validate_json(single[i % len(single)])
        records.append(
            {
                "transaction_id": f"{tag}-{len(records)}-{tx.transaction_id}",
                "tx_datetime": tx.tx_datetime,
                "customer_id": tx.customer_id,
                "terminal_id": tx.terminal_id,
                "amount": tx.amount,
            }
        )
    return records


def timed_calls(features, records: list[dict]) -> list[float]:
    took = []
    for rec in records:
        t0 = time.perf_counter()
        features.features_and_observe(rec)
        took.append(time.perf_counter() - t0)
    return took


def retry_answers(store, url: str, client, single: list[bytes], plan: Plan) -> dict:
    """What answering a retry with its first features costs (:mod:`fraudloop.features.
    retries`), per online store. Time: one transaction's features + observation with the rows
    remembered for the default time and without (0 s), alternated ``plan.retry_rounds`` times
    on the same transactions under fresh ids, so that a drift of the machine falls on both;
    then the same transactions again (each a retry: its row recalled, not computed). Memory, in
    passes of their own over ``plan.retry_memory_rows`` transactions: Redis's ``used_memory``
    grown over the pass with rows less without (the marker and the row of each), and in process
    the bytes allocated and still held, likewise (tracemalloc, which slows the calls). Its
    first passes with rows kept are also the per-call cost of each store (``call_us``)."""
    import tracemalloc

    from fraudloop.features.retries import DEFAULT_SECONDS
    from fraudloop.serving.live import LiveFeatures
    from fraudloop.serving.shared_features import RedisFeatures

    def make(name: str, seconds: float):
        client.flushall()
        if name == "memory":
            features = LiveFeatures(store, "featurestore/online", retry_answer_seconds=seconds)
        else:
            features = RedisFeatures(
                store, "featurestore/online", url, timeout=1.0, retry_answer_seconds=seconds
            )
        features.refresh()
        return features

    def redis_used() -> int:
        return int(client.info("memory")["used_memory"])

    modes = {f"rows {'kept' if seconds else 'off'}": seconds for seconds in (0.0, DEFAULT_SECONDS)}
    took: dict = {}
    for rnd in range(plan.retry_rounds):
        for name in ("memory", "redis"):
            for mode, seconds in modes.items():
                features = make(name, seconds)
                records = call_records(single, plan.floor_calls, f"retry-{rnd}-{mode[5:]}")
                passes = took.setdefault(f"{name}, {mode}", {"first": [], "retry": []})
                passes["first"] += timed_calls(features, records)
                if name == "redis":
                    features.shared.answers.flush()  # what the writer thread still holds
                passes["retry"] += timed_calls(features, records)
                if name == "redis":
                    features.close()
    out: dict = {
        "calls": plan.floor_calls,
        "rounds": plan.retry_rounds,
        "seconds": DEFAULT_SECONDS,
        "memory_rows": plan.retry_memory_rows,
    }
    for mode, passes in took.items():
        out[mode] = {
            f"{which}_p{q}": round(us(pct(values, q)), 1)
            for which, values in passes.items()
            for q in (50, 99)
        }
    # one transaction's features + observation as the service runs them (rows kept, the
    # default), first sight: the in-process store against Redis (one script call on loopback)
    out["call_us"] = {
        name: {
            "p50": out[f"{name}, rows kept"]["first_p50"],
            "p99": out[f"{name}, rows kept"]["first_p99"],
        }
        for name in ("memory", "redis")
    }

    grown: dict = {"memory": {}, "redis": {}}
    for mode, seconds in modes.items():
        records = call_records(single, plan.retry_memory_rows, f"retry-memory-{mode[5:]}")
        shared = make("redis", seconds)
        before = redis_used()
        for rec in records:
            shared.features_and_observe(rec)
        shared.shared.answers.flush()
        grown["redis"][mode] = redis_used() - before
        shared.close()
        memory = make("memory", seconds)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for rec in records:
                memory.features_and_observe(rec)
            grown["memory"][mode] = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        del memory
    for name, by_mode in grown.items():
        held = (by_mode["rows kept"] - by_mode["rows off"]) / plan.retry_memory_rows
        out[f"{name}_bytes_per_tx"] = round(held, 1)
        out[f"{name}_grown_bytes"] = by_mode
    return out


def online_stores(store, workdir: Path, single: list[bytes], plan: Plan) -> dict:
    """Open-loop single-transaction latency with the in-process online store (one replica) and
    with the shared Redis store (one replica; two replicas, the rate split between them: no
    balancer here, each replica gets half). Same rate, same traffic, one after the other."""
    out: dict = {}
    with redis_server(workdir) as (url, client, proc):
        out["retries"] = retry_answers(store, url, client, single, plan)
        client.flushall()
        redis_env = {"FRAUDLOOP_ONLINE_STORE": "redis", "FRAUDLOOP_REDIS_URL": url}
        modes = {"memory, 1 replica": ({}, 1), "redis, 1 replica": (redis_env, 1)}
        modes["redis, 2 replicas"] = (redis_env, 2)
        for i, (mode, (env, replicas)) in enumerate(modes.items()):
            client.flushall()  # each mode loads the state afresh
            services = [
                Service(store, workdir, env, name=f"online-{i}-{k}") for k in range(replicas)
            ]
            try:
                for service in services:
                    service.wait_ready()
                for service in services:  # warm-up
                    run_constant_rate(HOST, service.port, "/v1/score", single, 100, 0.5)
                cpu0 = [service.cpu() for service in services]
                redis_cpu0 = cpu_seconds(proc.pid)

                ports = [service.port for service in services]
                results = split_load(ports, single, plan.latency_rate, plan.latency_s)
                latencies = np.concatenate([r.latencies_ms for r in results])
                out[mode] = {
                    "replicas": replicas,
                    "rate": plan.latency_rate,
                    "sent": sum(r.sent for r in results),
                    "ok": sum(r.ok for r in results),
                    "failed": sum(r.failed for r in results),
                    "p50": round(float(np.percentile(latencies, 50)), 3),
                    "p99": round(float(np.percentile(latencies, 99)), 3),
                    "service_cpu_s": round(
                        sum(s.cpu() - c for s, c in zip(services, cpu0, strict=True)), 2
                    ),
                    "redis_cpu_s": round(cpu_seconds(proc.pid) - redis_cpu0, 2),
                }
                for service in services:
                    service.terminate()
            finally:
                for service in services:
                    service.close()
    return out


def build_world(workdir: Path) -> tuple[LocalObjectStore, list[dict], dict]:
    """The deployable world under ``workdir/home``, built by a child process (see the module
    docstring); returns (store, traffic bodies in time order, facts about the world)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--build-world", str(workdir)],
        cwd=REPO,
        check=True,
    )
    world = json.loads((workdir / "world.json").read_text())
    bodies = world.pop("bodies")
    world["build_s"] = round(time.perf_counter() - started, 1)
    return LocalObjectStore(workdir / "home"), bodies, world


def _build_world_child(workdir: Path) -> None:
    from fraudloop.delivery.package import build_package
    from fraudloop.model.datasets import build_dataset
    from tests.factories import register
    from tests.serving_home import GOOD_OTHER_SEED, SPEC, build_world, requests_of

    store, traffic = build_world(workdir / "home")
    registry = ModelRegistry(store)
    register(registry, build_dataset(store, SPEC), GOOD_OTHER_SEED)  # v3
    for version in (1, 3):
        build_package(store, registry, version, decision_threshold=0.5)
    world = {
        "traffic_rows": len(traffic),
        "customers": int(traffic["customer_id"].nunique()),
        "terminals": int(traffic["terminal_id"].nunique()),
        "bodies": requests_of(traffic),
    }
    (workdir / "world.json").write_text(json.dumps(world))


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument(
        "--seed", type=int, default=0, help="picks the floor's rows and the swaps' timing"
    )
    parser.add_argument("--build-world", type=Path, help=argparse.SUPPRESS)  # the child's job
    parser.add_argument("--build-fresh", nargs=2, help=argparse.SUPPRESS)  # the child's job
    parser.add_argument(
        "--only-online-stores",
        action="store_true",
        help="only the online store phase: in-process vs Redis (1 and 2 replicas)",
    )
    parser.add_argument(
        "--only-batch",
        action="store_true",
        help="only the batch phases: the in-process batch profile and batch rows/s over HTTP",
    )
    args = parser.parse_args()
    if args.build_world is not None:
        _build_world_child(args.build_world)
        return
    if args.build_fresh is not None:
        _build_fresh_child(Path(args.build_fresh[0]), json.loads(args.build_fresh[1]))
        return
    plan = QUICK if args.quick else Plan()
    bench = Report("serve", args)
    if args.only_batch:
        out = only_batch(plan)
        batch_figures(bench, out["fresh"])
        bench.details = out
        bench.finish()
        return
    if args.only_online_stores:
        with tempfile.TemporaryDirectory(prefix="fraudloop-bench-serve-") as tmp:
            store, bodies, _ = build_world(Path(tmp))
            ModelRegistry(store).promote(1, to="production", actor="bench", reason="bench")
            out = {"online_stores": online_stores(store, Path(tmp), bodies_bytes(bodies), plan)}
        out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        online_store_figures(bench, out["online_stores"])
        bench.details = out
        bench.finish()
        return
    rng = np.random.default_rng(args.seed)
    t_all = time.perf_counter()
    out: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "platform": platform.platform(),
            "processor": platform.machine(),
            "python": platform.python_version(),
        },
        "plan": plan.__dict__ | {"poll_seconds": POLL_SECONDS},
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-serve-") as tmp:
        workdir = Path(tmp)
        store, bodies, out["world"] = build_world(workdir)
        ModelRegistry(store).promote(1, to="production", actor="bench", reason="bench")
        single = bodies_bytes(bodies)

        # 1. the floor (before the service process exists: no CPU contention)
        me, busy, wall = cpu_seconds(), machine_busy_seconds(), time.perf_counter()
        out["floor"] = in_process(store, bodies, plan, rng)
        me = cpu_seconds() - me
        out["floor"]["cpu"] = {
            "wall_s": round(time.perf_counter() - wall, 2),
            "service_cpu_s": round(me, 2),  # the service is this process here
            "loadgen_cpu_s": 0.0,
            "other_cpu_s": round(max(0.0, machine_busy_seconds() - busy - me), 2),
        }

        # 2. the service process, production v1, prediction log on
        service = Service(store, workdir)
        expected_rows = 0  # decisions the prediction log must hold (production role)
        try:
            out["startup_s"] = round(service.wait_ready(), 2)
            out["instance"] = instance = service.deployment()["instance"]
            warm = run_constant_rate(HOST, service.port, "/v1/score", single, 200, 1.5)
            expected_rows += warm.ok

            # 3. latency at a steady rate
            latency, cpu = timed(
                lambda: run_constant_rate(
                    HOST,
                    service.port,
                    "/v1/score",
                    single,
                    plan.latency_rate,
                    plan.latency_s,
                ),
                service,
            )
            expected_rows += latency.ok
            out["latency"] = latency.summary() | cpu

            # 4. closed-loop peak
            out["peak"] = {}
            for connections in plan.peak_connections:
                peak, cpu = timed(
                    lambda c=connections: run_max_throughput(
                        HOST, service.port, "/v1/score", single, plan.peak_s, connections=c
                    ),
                    service,
                )
                expected_rows += peak.ok
                out["peak"][str(connections)] = peak.summary() | cpu

            # 5. hot swaps under load
            swaps, cpu = timed(lambda: hot_swaps(service, store, single, plan, rng), service)
            out["hot_swaps"] = swaps | {"cpu": cpu}
            expected_rows += swaps["load"]["ok"]

            # 6. SIGTERM, then the prediction log
            out["metrics_before_stop"] = {
                k: v
                for k, v in service.metrics().items()
                if k.startswith(
                    (
                        "fraudloop_prediction_log",
                        "fraudloop_swap",
                        "fraudloop_requests_total",
                        "fraudloop_model_errors",
                    )
                )
            }
            code, stop_s = service.terminate()
            out["shutdown"] = {"exit_code": code, "seconds": round(stop_s, 2)}
        finally:
            stderr = service.stderr_text()
            service.close()
        out["service_stderr_lines"] = [line for line in stderr.splitlines() if line.strip()][-20:]

        # 7. durability and guards (issue 12)
        out["spool_modes"] = spool_modes(store, workdir, single, plan)
        out["kill_9"] = kill_9(store, workdir, single, plan)
        out["guards"] = slow_clients_and_batches(store, workdir, bodies, plan)
        out["online_stores"] = online_stores(store, workdir, single, plan)
        # 8. batch rows/s on new transactions, last: its state is large, and this process's
        # heap after the profile's is not a fresh service's
        out["fresh"] = fresh_batches(workdir, plan)

        log = read_predictions(store, dedupe=False)  # the traffic's ids repeat across phases
        mine = log[log["instance"] == instance]
        prod = mine[mine["role"] == "production"]
        out["prediction_log"] = {
            "rows": len(prod),
            "expected": expected_rows,
            "other_roles": int((mine["role"] != "production").sum()),
            "by_version": {str(k): int(v) for k, v in prod["model_version"].value_counts().items()},
            "status": {str(k): int(v) for k, v in prod["status"].value_counts().items()},
        }
    out["total_s"] = round(time.perf_counter() - t_all, 1)
    out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    figures(bench, out)
    details(bench, out)
    bench.details = out
    bench.finish()


def fresh_label(fresh: dict, rows: int, connections: int) -> str:
    w = fresh["world"]
    return (
        f"batch endpoint, {rows:,}-row requests of new transactions, {connections} connections "
        f"(online state: {w['days']} days at {w['hour_tx']:,} transactions an hour, "
        f"{w['customers']:,} cards)"
    )


def batch_figures(bench: Report, fresh: dict) -> None:
    """The ``--only-batch`` figures: rows/s over HTTP beside the in-process batch path."""
    profile = fresh["batch_profile"]
    in_process = 1e6 / profile["request_path_us_per_row"]
    for n, r in fresh["batch"].items():
        bench.figure(
            f"batch_{n}_rows_per_s",
            fresh_label(fresh, int(n), r["connections"]),
            r["rows_per_s"],
            "rows/s",
            text=f"{r['rows_per_s']:,} rows/s ({r['ok']} requests, p50 {r['p50']:.0f} ms, "
            f"failed {r['failed']})",
            versus=f"the batch path in process, one {profile['rows']:,}-row request on one core",
            versus_value=in_process,
            versus_text=f"{in_process:,.0f} rows/s ({profile['request_path_us_per_row']} us/row)",
            ratio_means="HTTP / in process",
            target=">= 200,000 rows/s",
        )


def retry_figures(bench: Report, retries: dict) -> None:
    """What remembering each transaction's features for its retries costs, per online store,
    beside the same calls without (the full run's figures and ``--only-online-stores``')."""
    for name in ("memory", "redis"):
        kept, off = retries[f"{name}, rows kept"], retries[f"{name}, rows off"]
        held = retries[f"{name}_bytes_per_tx"]
        bench.figure(
            f"retry_rows_{name}_p50_us",
            f"one first-seen transaction's features + observation, {name} store, its row "
            f"remembered for retries ({retries['seconds']:.0f} s)",
            kept["first_p50"],
            "us",
            text=f"p50 {kept['first_p50']:.0f} us, p99 {kept['first_p99']:.0f} us; a retry "
            f"answered with the row: p50 {kept['retry_p50']:.0f} us; {held:,.0f} bytes a "
            f"transaction kept",
            versus="rows not remembered (FRAUDLOOP_SERVE_RETRY_ANSWER_SECONDS=0), same "
            f"transactions, alternated x{retries['rounds']}",
            versus_value=off["first_p50"],
            versus_text=f"p50 {off['first_p50']:.0f} us, p99 {off['first_p99']:.0f} us",
            ratio_means="rows remembered / not",
        )


def online_store_figures(bench: Report, stores: dict) -> None:
    """Redis-backed replicas against the in-process store, same rate, same run (the figures of
    ``--only-online-stores``; a full run keeps them in its details, beside its own figures,
    but for the retry rows' cost, which it reports too)."""
    calls = stores["retries"]["call_us"]
    bench.figure(
        "redis_features_p99_us",
        "one transaction's online features + observation in process, Redis store (one script "
        "call on loopback)",
        calls["redis"]["p99"],
        "us",
        text=f"p50 {calls['redis']['p50']:.0f} us, p99 {calls['redis']['p99']:.0f} us",
        versus="the in-process store, same transactions",
        versus_value=calls["memory"]["p99"],
        versus_text=f"p50 {calls['memory']['p50']:.0f} us, p99 {calls['memory']['p99']:.0f} us",
        ratio_means="Redis p99 / in-process p99",
    )
    retry_figures(bench, stores["retries"])
    memory = stores["memory, 1 replica"]
    for key, mode in (
        ("redis_p99_ms", "redis, 1 replica"),
        ("redis_2x_p99_ms", "redis, 2 replicas"),
    ):
        r = stores[mode]
        bench.figure(
            key,
            f"single transaction, online features in Redis ({mode}), open loop at "
            f"{r['rate']:.0f} req/s in all",
            r["p99"],
            "ms",
            text=f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms; failed {r['failed']} of "
            f"{r['sent']:,}",
            versus="the in-process online store, 1 replica, same rate",
            versus_value=memory["p99"],
            versus_text=f"p50 {memory['p50']:.2f} ms, p99 {memory['p99']:.2f} ms",
            ratio_means="Redis p99 / in-process p99",
            target="p99 <= 10 ms",
        )


def figures(bench: Report, out: dict) -> None:
    """The headline figures, each beside the comparison measured in the same run."""
    floor = out["floor"]
    bp, sc = floor["booster_predict_1row_us"], floor["service_score_1tx_us"]
    lat = out["latency"]
    best_c, best = max(out["peak"].items(), key=lambda kv: kv[1]["rps"])
    swaps, plog = out["hot_swaps"], out["prediction_log"]
    in_process_rps = 1e6 / sc["p50"]
    bench.figure(
        "score_p99_us",
        "the service's scoring path in process, one transaction, no HTTP (`ScoringService.score`)",
        sc["p99"],
        "us",
        text=f"p50 {sc['p50']:.0f} us, p99 {sc['p99']:.0f} us",
        versus=f"LightGBM `Booster.predict` alone, 1 row x {floor['features']} features, "
        f"{floor['trees']} trees (the floor)",
        versus_value=bp["p99"],
        versus_text=f"p50 {bp['p50']:.0f} us, p99 {bp['p99']:.0f} us",
        ratio_means="p99 / p99",
    )
    bench.figure(
        "http_p99_ms",
        f"single transaction over HTTP, open loop at {lat['rps']:.0f} req/s for "
        f"{lat['duration_s']:.0f} s",
        lat["p99"],
        "ms",
        text=f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; failed {lat['failed']} of "
        f"{lat['sent']:,}",
        versus="the scoring path in process (above)",
        versus_value=sc["p99"] / 1000,
        versus_text=f"p99 {sc['p99'] / 1000:.3f} ms",
        ratio_means="HTTP p99 / in-process p99",
        target="p99 <= 10 ms",
    )
    per_core = best["rps"] / out["machine"]["cpu_count"]
    bench.figure(
        "peak_rps",
        "peak single-transaction requests/s (closed loop, load generator on the same cores)",
        best["rps"],
        "req/s",
        text=f"{best['rps']:,.0f} req/s ({best_c} conn., p99 {best['p99']:.1f} ms), "
        f"{per_core:,.0f} per core",
        versus="the scoring path in process on one core (1 / its p50)",
        versus_value=in_process_rps,
        versus_text=f"{in_process_rps:,.0f} calls/s",
        ratio_means="HTTP peak / in-process rate",
        target=">= 1,000 req/s",
    )
    for key, (n, r) in zip(
        ("batch_rows_per_s", "big_batch_rows_per_s"), out["fresh"]["batch"].items(), strict=True
    ):
        bench.figure(
            key,
            fresh_label(out["fresh"], int(n), out["plan"]["batch_connections"]),
            r["rows_per_s"],
            "rows/s",
            text=f"{r['rows_per_s']:,} rows/s ({r['ok']} requests, p50 {r['p50']:.0f} ms, "
            f"failed {r['failed']})",
            versus="single-transaction requests (the peak above)",
            versus_value=best["rps"],
            versus_text=f"{best['rps']:,.0f} rows/s",
            ratio_means="batch / single",
            target=">= 200,000 rows/s",
        )
    sl = swaps["load"]
    bench.figure(
        "swap_failed",
        f"failed requests across {swaps['swaps']} hot swaps (v1 <-> v3) under "
        f"{sl['rps']:.0f} req/s",
        sl["failed"],
        "",
        text=f"{sl['failed']} failed (p99 {sl['p99']:.1f} ms, max {sl['max']:.0f} ms); swaps "
        f"followed {swaps['swaps_followed']} / {swaps['swaps']}",
        versus="requests sent meanwhile",
        versus_value=sl["sent"],
        versus_text=f"{sl['sent']:,}",
        ratio_means="failed / sent",
        target="0 failed",
    )
    follow = swaps["follow_s"]
    bench.figure(
        "swap_follow_s",
        "time for the service to follow a swap (alias write -> `/v1/deployment`), median",
        follow["median"] if follow["median"] is not None else float("nan"),
        "s",
        text=f"median {follow['median']} s, max {follow['max']} s",
        versus="the service's alias polling period (a setting)",
        versus_value=out["plan"]["poll_seconds"],
        ratio_means="median / period",
    )
    bench.figure(
        "predlog_rows",
        "prediction log after SIGTERM: production rows",
        plog["rows"],
        "rows",
        text=f"{plog['rows']:,} rows",
        versus="decisions answered (all phases)",
        versus_value=plog["expected"],
        versus_text=f"{plog['expected']:,}",
        ratio_means="rows / decisions",
        target="equal",
    )
    retry_figures(bench, out["online_stores"]["retries"])


def details(bench: Report, out: dict) -> None:
    """Every phase, the CPU each side used in each, and the batch path's profile."""
    floor, lat = out["floor"], out["latency"]
    swaps = out["hot_swaps"]
    w = out["world"]
    note = bench.note
    note(
        f"\nworld: {w['traffic_rows']:,} traffic transactions ({w['customers']} customers, "
        f"{w['terminals']} terminals) reused cyclically, built in {w['build_s']:.0f} s; "
        f"service start to /readyz 200 in {out['startup_s']:.1f} s; SIGTERM: exit code "
        f"{out['shutdown']['exit_code']} in {out['shutdown']['seconds']:.1f} s"
    )
    if "1" in out["peak"]:
        note(
            f"open loop p50 {lat['p50']:.2f} ms vs a busy server's round trip (closed loop, 1 "
            f"connection) p50 {out['peak']['1']['p50']:.2f} ms: the rest is waking an idle "
            "server and generator (timer resolution ~1 ms)"
        )
    note("\n| closed loop | req/s | p50 ms | p99 ms | failed |\n|---|---|---|---|---|")
    for c, r in out["peak"].items():
        note(
            f"| {c} conn., {r['duration_s']:.0f} s | {r['rps']:,.0f} | {r['p50']:.1f} | "
            f"{r['p99']:.1f} | {r['failed']} |"
        )
    note(
        f"\nswap follow times (poll {out['plan']['poll_seconds']:g} s): "
        f"{swaps['follow_s']['all']}; alias write median {swaps['alias_write_ms_median']} ms"
    )
    phases = [("in-process floor", floor["cpu"])]
    phases.append(("single tx, open loop", lat))
    phases += [(f"closed loop, {c} conn.", r) for c, r in out["peak"].items()]
    phases.append(("hot swaps, open loop", swaps["cpu"]))
    phases += [(f"batch {int(n):,} new rows", r) for n, r in out["fresh"]["batch"].items()]
    note(
        "\nCPU seconds per phase (2 cores = 2 CPU s per wall second; 'other' = every other "
        "process of the machine, i.e. noise in the figures above)"
    )
    note("| phase | wall s | service | load generator | other processes |\n|---|---|---|---|---|")
    for name, c in phases:
        note(
            f"| {name} | {c['wall_s']:.1f} | {c['service_cpu_s']:.1f} | "
            f"{c['loadgen_cpu_s']:.1f} | {c['other_cpu_s']:.1f} |"
        )
    noisy = [name for name, c in phases if c["other_cpu_s"] > 0.25 * c["wall_s"]]
    if noisy:
        note(
            f"WARNING: other processes used more than a quarter of a core during {len(noisy)} "
            f"of {len(phases)} phases ({', '.join(noisy)}): those figures are pessimistic"
        )
    durability(bench, out)
    prof = out["fresh"]["batch_profile"]
    note(
        f"\nbatch path, one {prof['rows']:,}-row request of new transactions in process (mean of "
        f"{prof['repetitions_averaged']}), us per row "
        f"(= {1e6 / prof['request_path_us_per_row']:,.0f} rows/s on one core); full GC pauses "
        f"seen: {', '.join(f'{ms:.0f}' for ms in prof['full_collection_ms']) or 'none'} ms"
    )
    note("| stage | us/row | of which in GC |\n|---|---|---|")
    for name, value in prof["us_per_row"].items():
        label = name.replace("  ", "&nbsp;&nbsp;")  # keeps the nesting visible in Markdown
        note(f"| {label} | {value['us']:.2f} | {value['gc_us']:.2f} |")
        if name == "JSON of the response":
            note(
                f"| **request path total** (parse + validation + score + response) | "
                f"**{prof['request_path_us_per_row']:.2f}** | "
                f"{prof['request_path_gc_us_per_row']:.2f} |"
            )


def durability(bench: Report, out: dict) -> None:
    """The prediction-log spool's cost and what it saves, and the connection guards."""
    note = bench.note
    note("\nprediction-log spool, single tx open loop\n| mode | p50 ms | p99 ms | failed |")
    note("|---|---|---|---|")
    for mode, r in out["spool_modes"].items():
        note(f"| {mode} | {r['p50']:.2f} | {r['p99']:.2f} | {r['failed']} |")
    k = out["kill_9"]
    note(
        f"kill -9 after {k['answered']:,} answered decisions: {k['in_store_after_kill']:,} in "
        f"the store at the kill, {k['after_restart']:,} after the restart drained the spool "
        f"(lost: {k['answered'] - k['after_restart']:,})"
    )
    g = out["guards"]
    h, b = g["half_open"], g["batch"]
    during = h["singles_meanwhile"]
    note(
        f"{h['connections']} half-sent request heads: singles meanwhile p99 {during['p99']:.1f} "
        f"ms, failed {during['failed']} of {during['sent']}; every such connection closed after "
        f"{h['all_closed_after_s']:.1f} s (header timeout {g['header_timeout_s']:g} s)"
    )
    alone, meanwhile = b["singles_alone"], b["singles_during_batch"]
    note(
        f"a {b['rows']:,}-row batch ({b['batch_s']:.2f} s, status {b['batch_status']}): singles "
        f"p99 {meanwhile['p99']:.1f} ms (max {meanwhile['max']:.1f}) during it vs "
        f"{alone['p99']:.1f} ms alone"
    )


if __name__ == "__main__":
    main()
