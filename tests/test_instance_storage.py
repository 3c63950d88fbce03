"""The local profile's instance storage (fraudloop_instance/sqlite.py): Dagster's SQLite files,
with the schema checked by a process's first instance only. (The production profile's pooled
PostgreSQL storage is tested against a real server in test_production_profile.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.runs.sqlite import sqlite_run_storage
from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage

from pipelines.runner import LOCAL_INSTANCE_CONFIG

MODULES = (sqlite_run_storage, sqlite_schedule_storage, sqlite_event_log)


@pytest.fixture
def local_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(LOCAL_INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def schema_checks(monkeypatch) -> list[str]:
    """Every schema check a storage makes (Dagster's alembic revision lookup), by module."""
    calls: list[str] = []
    for module in MODULES:
        real = module.check_alembic_revision

        def counted(config, conn, _real=real, _name=module.__name__):
            calls.append(_name)
            return _real(config, conn)

        monkeypatch.setattr(module, "check_alembic_revision", counted)
    return calls


@dg.op
def noop() -> None:
    pass


@dg.job
def one_op_job():
    noop()


def _touch_every_storage(instance) -> None:
    instance.get_runs_count()
    instance.event_log_storage.get_latest_storage_id_by_partition(
        dg.AssetKey("raw_transactions"), dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    instance.schedule_storage.all_instigator_state()


def test_the_schema_is_checked_by_the_first_instance_of_a_process_only(local_home, schema_checks):
    ref = InstanceRef.from_dir(str(local_home))
    with dg.DagsterInstance.from_ref(ref) as first:
        assert type(first.run_storage).__name__ == "SqliteRunStorage"
        _touch_every_storage(first)
        result = one_op_job.execute_in_process(instance=first)
        assert result.success
    # runs, schedules and the event log's index, each checked (created) once
    assert len(schema_checks) >= 3, schema_checks
    checked = len(schema_checks)

    for _ in range(3):  # a sensor evaluation's instance, one after the other
        with dg.DagsterInstance.from_ref(ref) as instance:
            _touch_every_storage(instance)
            (run,) = instance.get_runs()
            assert run.run_id == result.run_id and run.is_success
    assert len(schema_checks) == checked


def test_dagsters_default_storage_reads_what_it_wrote(local_home):
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(local_home))) as ours:
        result = one_op_job.execute_in_process(instance=ours)
    stock_home = local_home.parent / "stock"
    stock_home.mkdir()
    (stock_home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {local_home}\n")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(stock_home))) as stock:
        assert type(stock.run_storage).__name__ == "SqliteRunStorage"
        assert stock.get_run_by_id(result.run_id).is_success
        steps = stock.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        assert [e.step_key for e in steps] == ["noop"]
