"""Dagster's SQLite instance storage (the local profile), with its schema checked once per
process instead of by every new instance.

Every stock SQLite storage checks its database's schema revision when it is made (runs,
schedules) or first used (the event log's index, each run's event shard), and each check loads
the ~90 migration scripts of Dagster's alembic history from disk: ~40 ms of CPU per new
instance. The code server makes a new instance for every sensor evaluation (11 sensors and the
schedule every 3 s in `make demo`): about half of its CPU there, on the same 2 cores as the
runs. Here the first instance of a process checks (and creates or stamps, as the stock storage
does); later ones reuse that result (`fraudloop_instance.once`).

    storage:
      custom:
        module: fraudloop_instance.sqlite
        class: SqliteStorage
        config:
          base_dir:
            env: DAGSTER_HOME      # where the default `storage` keeps it

Same files, same layout, same tables as Dagster's default storage: an instance written by
either reads with the other.
"""

from __future__ import annotations

import os

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)

from fraudloop_instance.once import once_per_process


class _EventLogStorage(SqliteEventLogStorage):
    """The event log, whose index shard is checked once per process. A run's own shard is
    checked by each new storage, as before: deleting a run's events deletes its file, and a
    process-wide memory of it would then skip creating the next one."""

    def _initdb(self, engine, for_index_shard=False) -> None:
        url = str(engine.url)
        if url != self.conn_string_for_shard(INDEX_SHARD_NAME):
            return super()._initdb(engine, for_index_shard)
        with once_per_process(("sqlite", url)) as first:
            if first:
                super()._initdb(engine, for_index_shard)
        return None


class SqliteStorage(DagsterSqliteStorage):
    """`storage: sqlite:` with the schema checked once per process (see the module)."""

    def __init__(self, base_dir: str, inst_data=None) -> None:
        self.base_dir = base_dir
        self._inst_data = inst_data
        runs, schedules = _runs_directory(base_dir), _schedule_directory(base_dir)
        with once_per_process(("sqlite", os.path.realpath(base_dir))) as first:
            if first:  # create or stamp the databases as the stock storage does
                self._run_storage = SqliteRunStorage.from_local(runs)
                self._schedule_storage = SqliteScheduleStorage.from_local(schedules)
            else:
                self._run_storage = SqliteRunStorage(create_db_conn_string(runs, "runs"))
                self._schedule_storage = SqliteScheduleStorage(
                    create_db_conn_string(schedules, "schedules")
                )
        self._event_log_storage = _EventLogStorage(_event_logs_directory(base_dir))
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> SqliteStorage:
        # the stock one names DagsterSqliteStorage, not cls; its from_local makes base_dir
        return cls.from_local(inst_data=inst_data, **config_value)
