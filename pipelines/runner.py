"""Run the project's jobs from the command line, recorded in the same Dagster instance as the UI.

Runs execute in this process (no process start-up per step or per run), but they are ordinary
Dagster runs: `make ui` shows them, their materializations, checks and metadata afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_INSTANCE_CONFIG = PROJECT_ROOT / "infra" / "local" / "dagster.yaml"


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


def run_partition_range(
    job_name: str, start: str, end: str, dagster_instance=None, tags=None, config=None
):
    """Execute `job_name` over the partition range [start, end] as one run (BackfillPolicy),
    with definitions built from `config` (default: this process's environment)."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from pipelines.config import ProjectConfig
    from pipelines.definitions import build_definitions

    job = build_definitions(config or ProjectConfig.from_env()).resolve_job_def(job_name)
    run_tags = {
        ASSET_PARTITION_RANGE_START_TAG: start,
        ASSET_PARTITION_RANGE_END_TAG: end,
        **(tags or {}),
    }
    return job.execute_in_process(
        instance=dagster_instance or instance(), tags=run_tags, raise_on_error=False
    )
