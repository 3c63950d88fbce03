"""Dagster's PostgreSQL instance storage, with one small connection pool per process.

dagster-postgres opens a new connection for every statement outside the webserver (its
storages use SQLAlchemy's NullPool): a run writes each of its events on a connection of its
own, and so does every tick of the daemon's sensors, schedules and run queue. In the Docker
stack's system test that was ~45 new connections a second, and each costs a forked PostgreSQL
backend and a SCRAM handshake: measured there, 10.5 ms of CPU (3.7 ms in the client, 6.8 ms in
PostgreSQL) against 0.15 ms for the same statement on an open connection, about a fifth of the
stack's CPU on 2 cores. And every new instance (one per sensor evaluation in the code server,
one per run) first lists the database's tables three times to create any that are missing:
57 ms of its 60.

Here every storage of every instance in a process uses that process's one pool per database
(up to `POOL_SIZE` connections kept open, each pinged before reuse, so a restarted PostgreSQL
costs a reconnect, which dagster-postgres retries as before, never a statement on a dead
connection), and the tables are checked by the process's first instance only: they are not
dropped under a running deployment, and `dagster instance migrate` is how a schema changes.
A forked child starts its own pool (the parent's connections are left to the parent).

    storage:
      custom:
        module: fraudloop_instance.postgres
        class: PooledPostgresStorage
        config:          # exactly the `storage: postgres:` block's
          postgres_db: ...

The webserver replaces these engines with its own pool (`optimize_for_webserver`), as it does
for the stock storage. This module needs Dagster and dagster-postgres only: the instance image
(webserver, daemon) carries it without the pipeline's code.
"""

from __future__ import annotations

import os
import threading

from dagster._core.storage.base_storage import DagsterStorage
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from fraudloop_instance.once import once_per_process

#: connections the process keeps open while idle, shared by its instances' three storages
POOL_SIZE = 4
#: connections beyond the pool while threads use the storage at once; closed on return
MAX_OVERFLOW = 16
#: a kept connection older than this is replaced at its next use (PostgreSQL-side timeouts,
#: a balancer in between)
RECYCLE_SECONDS = 600

_lock = threading.Lock()
_engines: dict = {}  # postgres_url -> this process's engine


def _forget_parents_pools() -> None:
    """In a forked child: the parent's connections are the parent's (closing them here would
    end the parent's sessions)."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_parents_pools)


def shared_engine(postgres_url: str, token_provider=None):
    """This process's pooled engine for `postgres_url`."""
    with _lock:
        engine = _engines.get(postgres_url)
        if engine is None:
            engine = _engines[postgres_url] = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                pool_recycle=RECYCLE_SECONDS,
                pool_pre_ping=True,
            )
        return engine


def dispose_engines() -> None:
    """Close this process's kept connections (tests; a process that stops using the instance)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


class _Pooled:
    """Swaps the NullPool engine the storage made in its __init__ for the process's pool."""

    postgres_url: str

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        unpooled = self._engine
        self._engine = shared_engine(self.postgres_url, self._token_provider)
        unpooled.dispose()

    def dispose(self) -> None:
        super().dispose()
        if self._engine is not _engines.get(self.postgres_url):  # the webserver's own pool
            self._engine.dispose()


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` with pooled connections (this module's docstring says why)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data=None,
        token_provider=None,
    ) -> None:
        # DagsterPostgresStorage.__init__ builds the stock storages, each with its own table
        # check; these are built instead, not after them, and check only once per process.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = bool(should_autocreate_tables)
        self._inst_data = inst_data
        with once_per_process(("postgres", postgres_url)) as first:
            args = (postgres_url, self.should_autocreate_tables and first)
            self._run_storage = PooledPostgresRunStorage(*args, token_provider=token_provider)
            self._event_log_storage = PooledPostgresEventLogStorage(
                *args, token_provider=token_provider
            )
            self._schedule_storage = PooledPostgresScheduleStorage(
                *args, token_provider=token_provider
            )
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
