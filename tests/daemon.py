"""The real Dagster daemon for tests, as `make ui` runs it: a temporary instance with the local
profile's dagster.yaml, sensors switched on with `dagster sensor start`, `dagster-daemon run`
in its own process group (stopped, then killed if it lingers, on exit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from fraudloop.core.processes import default_interrupts, stop_group

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def daemon_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment of a fresh instance under `tmp_path` (plus `variables`)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "infra" / "local" / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FRAUDLOOP_HOME": str(tmp_path / "fraudloop"),
        **variables,
    }


@contextmanager
def running_daemon(env: dict[str, str], sensors: list[str]):
    """Start `sensors` in the instance, run the daemon while the block runs."""
    for sensor in sensors:
        subprocess.run(
            [BIN / "dagster", "sensor", "start", sensor, "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    process = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_interrupts,
    )
    try:
        yield process
    finally:
        stop_group(process)
