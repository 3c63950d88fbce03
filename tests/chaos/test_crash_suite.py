"""Writers killed with SIGKILL at seeded points during raw ingestion, registration, packaging
and the rollout controller (start, its tick, a promote); after every kill the store is checked
as a reader sees it, and a rerun must converge.

The schedule comes from ``FRAUDLOOP_CHAOS_SEED`` (default 13) and runs
``FRAUDLOOP_CHAOS_KILLS`` kills (default 24, about a minute here; ``make chaos`` runs 300).
Half of the kills land at a chosen commit of a local write (just before or just after the rename
or link), half after a random delay. A reader thread checks the invariants all along.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fraudloop.core.store import LocalObjectStore
from tests.chaos import workload

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("FRAUDLOOP_CHAOS_SEED", "13"))
KILLS = int(os.environ.get("FRAUDLOOP_CHAOS_KILLS", "24"))


def _count_commits(op: str, root: Path) -> tuple[int, float]:
    """How many renames/links a clean run of `op` makes (the range of commit kill points), and
    how long it takes (the range of delay kill points)."""
    calls = []
    started = time.perf_counter()
    real_replace, real_link = os.replace, os.link
    os.replace = lambda *a, **k: (calls.append(1), real_replace(*a, **k))[1]
    os.link = lambda *a, **k: (calls.append(1), real_link(*a, **k))[1]
    try:
        workload.OPERATIONS[op](LocalObjectStore(root))
    finally:
        os.replace, os.link = real_replace, real_link
    return len(calls), time.perf_counter() - started


def _killed_run(
    op: str, root: Path, rng: random.Random, commits: int, seconds: float
) -> tuple[str, bool]:
    """One writer process, killed at a seeded point; (where it was aimed, killed or not)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if rng.random() < 0.5:
        point = f"{rng.randint(1, commits)}:{rng.choice(['before', 'after'])}"
        env[workload.KILL_AT] = point
        delay = None
    else:
        delay = rng.uniform(0.0, 1.2 * seconds)
        point = f"{delay:.3f}s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.workload", op, str(root)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        if delay is not None:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return point, proc.returncode == -signal.SIGKILL


class Reader(threading.Thread):
    """Checks the invariants over and over while writers run and die."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.store = LocalObjectStore(root)
        self.stop = threading.Event()
        self.seen: list[str] = []
        self.checks = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen += workload.violations(self.store)
            self.checks += 1
            time.sleep(0.05)


def test_killed_writers_leave_nothing_a_reader_can_trip_over(tmp_path, monkeypatch):
    rng = random.Random(SEED)
    model = tmp_path / "model.txt"
    workload.small_model_text(model)
    monkeypatch.setenv(workload.MODEL_TEXT, str(model))  # the writers (children) inherit it
    commits = {op: _count_commits(op, tmp_path / f"count-{op}") for op in workload.OPERATIONS}
    expected = {op: workload.expected_hashes(op, tmp_path / f"clean-{op}") for op in commits}
    tried = landed = trials = temp_left = temp_bytes = reader_checks = 0
    problems: list[str] = []
    per_op: dict[str, int] = {}
    order = sorted(workload.OPERATIONS)
    rng.shuffle(order)
    while tried < KILLS:
        trials += 1
        op = order[(trials - 1) % len(order)]  # every operation gets its share of kills
        per_op[op] = per_op.get(op, 0)
        root = tmp_path / f"trial-{trials}"
        root.mkdir()
        reader = Reader(root)
        reader.start()
        try:
            for _ in range(rng.randint(1, 3)):  # one to three kills before the rerun
                point, killed = _killed_run(op, root, rng, *commits[op])
                tried += 1
                landed += killed
                per_op[op] += 1
                after = workload.violations(LocalObjectStore(root))
                problems += [f"trial {trials} {op} kill@{point}: {v}" for v in after]
        finally:
            reader.stop.set()
            reader.join()
        problems += [f"trial {trials} {op} (reader): {v}" for v in sorted(set(reader.seen))]
        reader_checks += reader.checks
        left = workload.temp_files(root)
        temp_left += len(left)
        temp_bytes += sum(p.stat().st_size for p in left if p.exists())
        # restart: the same operation to completion; the store sweeps what the kills left
        store = LocalObjectStore(root, temp_max_age_seconds=0.001)
        time.sleep(0.01)
        workload.OPERATIONS[op](store)
        problems += [f"trial {trials} {op} after rerun: {v}" for v in workload.violations(store)]
        found = workload.converged(store, op)
        if op == "package" and len(found) == 1 and found.keys() != expected[op].keys():
            version = next(iter(found))
            scratch = tmp_path / f"clean-package-{trials}"
            expected_now = workload.expected_package(scratch, version)
        else:
            expected_now = expected[op]
        if found != expected_now:
            problems.append(f"trial {trials} {op}: the rerun did not converge")
        problems += [
            f"trial {trials} {op}: {p} survived the rerun" for p in workload.temp_files(root)
        ]
    print(
        f"\ncrash suite (seed {SEED}): {tried} kills tried ({per_op}), {landed} landed "
        "mid-operation, "
        f"{trials} trials, {temp_left} temp files ({temp_bytes / 2**20:.1f} MiB) left by kills "
        f"and swept by the reruns, {reader_checks} reader checks, {len(problems)} violations"
    )
    assert landed >= tried // 2, "the schedule hardly ever hit a writer: it tests nothing"
    assert problems == [], "\n".join(problems)
