"""Run the project's jobs from the command line, recorded in the same Dagster instance as the UI.

Two ways: `submit_partition_range` puts the run in the instance's queue, exactly as the UI's
*Materialize* does (the daemon launches it under the queue's limits, in its own process or
container); `run_partition_range` executes it in this process (no process start-up, no daemon
needed: tests and a laptop without `make ui`). Either way it is an ordinary Dagster run that the
UI shows with its materializations, checks and metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "infra" / "local" / "dagster.yaml"
WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def ensure_dagster_home() -> Path:
    """The instance that records the runs: ``$DAGSTER_HOME``, which must be set. Defaulting to a
    folder under the current directory would record runs where the UI does not look (``make``
    targets export ``DAGSTER_HOME=<checkout>/.dagster``, the one ``make ui`` shows). A new
    instance gets the local profile's dagster.yaml."""
    from fraudloop.core.errors import ConfigError

    value = os.environ.get("DAGSTER_HOME", "").strip()
    if not value:
        raise ConfigError(
            "DAGSTER_HOME is not set, so this run would be recorded in no instance the UI "
            f"shows; export DAGSTER_HOME={PROJECT_ROOT / '.dagster'} (the one `make ui` uses) "
            "or the production instance's folder"
        )
    home = Path(value).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and LOCAL_INSTANCE_CONFIG.exists():
        shutil.copyfile(LOCAL_INSTANCE_CONFIG, config)
    return home


def instance():
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def _range_tags(start: str, end: str, tags: dict | None) -> dict[str, str]:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    return {
        ASSET_PARTITION_RANGE_START_TAG: start,
        ASSET_PARTITION_RANGE_END_TAG: end,
        **(tags or {}),
    }


def submit_partition_range(
    job_name: str, start: str, end: str, tags=None, workspace: str | Path = WORKSPACE
) -> str:
    """Submit `job_name` over [start, end] as one run to the instance's run coordinator (the
    queue: its limits, pools and retries apply) through `dagster job launch`, the public path a
    run from the UI takes; returns the run id. Raises RuntimeError with Dagster's message when
    the submission is refused."""
    from fraudloop.core.errors import ConfigError

    ensure_dagster_home()
    if not Path(workspace).exists():
        raise ConfigError(f"no Dagster workspace at {workspace}")
    run_id = str(uuid.uuid4())
    command = [
        str(Path(sys.executable).parent / "dagster"),
        *("job", "launch", "-w", str(workspace), "-j", job_name),
        *("--tags", json.dumps(_range_tags(start, end, tags)), "--run-id", run_id),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(workspace).parent)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"the instance refused the run of {job_name}: " + " / ".join(tail))
    return run_id


def wait_for_run(run_id: str, timeout_seconds: float, poll_seconds: float = 2.0):
    """The run's final status once it leaves the queue and ends, or its status at the timeout."""
    import dagster as dg

    terminal = {
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    }
    deadline = time.monotonic() + timeout_seconds
    with dg.DagsterInstance.get() as dagster_instance:
        while True:
            run = dagster_instance.get_run_by_id(run_id)
            if (run is not None and run.status in terminal) or time.monotonic() > deadline:
                return run.status if run is not None else None
            time.sleep(poll_seconds)


def run_partition_range(
    job_name: str, start: str, end: str, dagster_instance=None, tags=None, config=None
):
    """Execute `job_name` over the partition range [start, end] as one run (BackfillPolicy),
    with definitions built from `config` (default: this process's environment)."""
    from pipelines.config import ProjectConfig
    from pipelines.definitions import build_definitions

    job = build_definitions(config or ProjectConfig.from_env()).resolve_job_def(job_name)
    return job.execute_in_process(
        instance=dagster_instance or instance(),
        tags=_range_tags(start, end, tags),
        raise_on_error=False,
    )
