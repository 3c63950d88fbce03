"""The production profile is real: infra/production/dagster.yaml, loaded unchanged, runs an asset
against a throwaway PostgreSQL server with the object store on S3 (moto), and the deployment files
(docker-compose base and overrides, Dockerfiles) hang together.

The containers themselves run in tests/test_stack.py (the whole loop through the Docker stack);
the Kubernetes files are checked in tests/test_k8s.py (no cluster here).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster_docker import DockerRunLauncher

from fraudloop.core.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_YAML = ROOT / "infra" / "production" / "dagster.yaml"
COMPOSE_YAML = ROOT / "infra" / "docker-compose.yaml"
COMPOSE_PRODUCTION = ROOT / "infra" / "docker-compose.production.yaml"
COMPOSE_STACK = ROOT / "infra" / "docker-compose.stack.yaml"
HELM_VALUES = ROOT / "infra" / "production" / "dagster-k8s-values.yaml"
PG_ENV = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB")
HOUR = "2018-04-01-05:00"
# A secret is a reference to the env file with no default: ${VAR} or ${VAR:?message}.
SECRET_REF = re.compile(r"\$\{[A-Za-z0-9_]+(:\?[^}]*)?\}")
SYSTEM_DEPS_HINT = "install it with `bash infra/system-deps.sh` as root (`make test` does this)"


# --------------------------------------------------------------------------------------------
# A throwaway PostgreSQL server
# --------------------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    found = candidates[-1] if candidates else shutil.which("initdb")
    if not found:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {SYSTEM_DEPS_HINT}")
    return Path(found).parent


def _unprivileged_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (created by Debian's
    package) or else `nobody`. As any other user, run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and neither a `postgres` nor a `nobody` account exists")


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    account: pwd.struct_passwd | None
    user: str = "fraudloop"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.account is not None:
            kwargs = {
                "user": self.account.pw_uid,
                "group": self.account.pw_gid,
                "extra_groups": [],
            }
        env = {
            "PATH": f"{self.bindir}:/usr/bin:/bin",
            "HOME": str(self.root),
            "LC_ALL": "C",
            "LANG": "C",
        }
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n{tail}"
            )
        return proc

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=dbname, connect_timeout=5
        )


@pytest.fixture(scope="module")
def postgres():
    bindir = _pg_bindir()
    account = _unprivileged_account()
    # Not pytest's tmp_path: that lives under a 0700 root-owned directory the server can't enter.
    root = Path(tempfile.mkdtemp(prefix="fraudloop-pg-"))
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bindir=bindir, root=root, port=free_port(), account=account)
    started = False
    try:
        server.run(
            "initdb", "-D", str(server.datadir), "-A", "trust", "-U", server.user,
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        server.run(
            "pg_ctl", "-D", str(server.datadir), "-l", str(root / "server.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip
        started = True
        conn = server.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE dagster_prod")
        conn.close()
        yield server
    finally:
        pidfile = server.datadir / "postmaster.pid"
        if started or pidfile.exists():
            try:
                server.run("pg_ctl", "-D", str(server.datadir), "-m", "fast", "-w", "stop")
            except Exception as exc:  # the server we started must not outlive the test
                print(f"pg_ctl stop failed, killing the postmaster: {exc}")
                if pidfile.exists():
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def production_home(postgres, monkeypatch, tmp_path):
    """DAGSTER_HOME holding the production dagster.yaml byte for byte, with its env vars set."""
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "ignored-by-trust-auth")
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_DB", "dagster_prod")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres.port))
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "fraudloop")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PRODUCTION_YAML, home / "dagster.yaml")
    return home


# --------------------------------------------------------------------------------------------
# The production dagster.yaml, end to end on Postgres + S3
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_production_instance_runs_an_asset_on_postgres_and_s3(
    postgres, production_home, s3_endpoint, s3_bucket, tmp_path, monkeypatch
):
    from fraudloop.core import tables
    from resources.store import S3ObjectStoreResource
    from tests.dagster_runs import DagsterEnv
    from tests.factories import land_hour

    started = time.monotonic()
    # the compute-log manager writes step logs to the same bucket
    monkeypatch.setenv("FRAUDLOOP_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("FRAUDLOOP_S3_ENDPOINT_URL", s3_endpoint)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(production_home)))
    # The file is used as written: Postgres for all three storages, the queued coordinator with
    # the retrain limit, and the Docker launcher (constructed; it only talks to Docker on launch,
    # and materialize() executes in this process, so no launcher call happens here).
    assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PooledPostgresScheduleStorage"
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert isinstance(instance.run_launcher, DockerRunLauncher)
    assert instance.run_launcher.networks == ["fraudloop"]  # DAGSTER_DOCKER_NETWORK
    assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs > 0
    assert {"key": "fraudloop/retrain", "limit": 1} in queue.tag_concurrency_limits
    monitoring_lane = {"key": "fraudloop/lane", "value": "monitoring", "limit": 1}
    assert monitoring_lane in queue.tag_concurrency_limits

    env = DagsterEnv.build(
        instance,
        {
            "FRAUDLOOP_STORE": "s3",
            "FRAUDLOOP_S3_BUCKET": s3_bucket,
            "FRAUDLOOP_S3_PREFIX": "prod",
            "FRAUDLOOP_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": "us-east-1",
            "FRAUDLOOP_HOME": str(tmp_path / "home"),
        },
    )
    assert isinstance(env.resources["store"], S3ObjectStoreResource)
    store = env.store
    land_hour(store, HOUR, rows=40, seed=3)

    result = dg.materialize(
        [env.asset("raw_transactions"), env.check("transactions_pass_expectations")],
        instance=instance,
        resources=env.resources,
        partition_key=HOUR,
    )
    assert result.success
    pointer = tables.read_pointer(store, "transactions", HOUR)
    assert pointer["status"] == "valid"
    assert pointer["key"].startswith("raw/transactions/")
    assert store.exists(pointer["key"])  # the canonical copy is on S3, not on local disk
    instance.dispose()

    # A fresh instance object on the same database sees everything the run wrote.
    fresh = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(production_home)))
    try:
        run = fresh.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == HOUR
        records = fresh.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("raw_transactions"), asset_partitions=[HOUR]
            ),
            limit=1,
        ).records
        assert records, "no materialization of raw_transactions in Postgres"
        materialization = records[0].asset_materialization
        assert records[0].run_id == result.run_id
        assert materialization.tags["dagster/data_version"] == pointer["sha256"]
        assert materialization.metadata["dagster/row_count"].value == 40
        check_key = dg.AssetCheckKey(
            dg.AssetKey("raw_transactions"), "transactions_pass_expectations"
        )
        (execution,) = fresh.event_log_storage.get_asset_check_execution_history(check_key, limit=5)
        assert execution.run_id == result.run_id
        assert execution.status == AssetCheckExecutionRecordStatus.SUCCEEDED
        evaluation = execution.event.dagster_event.event_specific_data
        assert evaluation.passed
    finally:
        fresh.dispose()

    # And straight from SQL, so nothing above could have come from a local SQLite fallback.
    conn = postgres.connect("dagster_prod")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchone() == ("SUCCESS",)
            cur.execute(
                "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                (result.run_id, "ASSET_MATERIALIZATION"),
            )
            assert cur.fetchone()[0] == 1
            cur.execute(
                "SELECT execution_status FROM asset_check_executions WHERE run_id = %s",
                (result.run_id,),
            )
            assert cur.fetchall() == [("SUCCEEDED",)]
    finally:
        conn.close()
    assert not list(production_home.glob("**/*.db")), "a SQLite file appeared in DAGSTER_HOME"
    print(f"production profile run on Postgres + S3: {time.monotonic() - started:.1f} s")


def _sessions(postgres: PostgresServer) -> tuple[int, int]:
    """(connections ever opened to dagster_prod, connections open now), this query's excepted."""
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = 'dagster_prod'")
            (opened,) = cur.fetchone()
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'dagster_prod'")
            (open_now,) = cur.fetchone()
        return opened, open_now
    finally:
        conn.close()


def test_the_pooled_storage_reuses_connections_and_reconnects_after_a_restart(
    postgres, production_home
):
    """Stock dagster-postgres opens a connection per statement outside the webserver, and each
    new instance lists the tables three times; the production storage keeps a few connections
    per process for all its instances, pings them before reuse, and checks the tables once."""
    from fraudloop_instance.postgres import POOL_SIZE, dispose_engines

    ref = InstanceRef.from_dir(str(production_home))
    first = dg.DagsterInstance.from_ref(ref)
    runs = first.get_runs_count()
    opened_before, _ = _sessions(postgres)
    for _ in range(20):  # a sensor evaluation's instance, one after the other
        with dg.DagsterInstance.from_ref(ref) as instance:
            instance.get_runs_count()
            instance.event_log_storage.get_latest_storage_id_by_partition(
                dg.AssetKey("raw_transactions"), dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            instance.schedule_storage.all_instigator_state()
    opened_after, open_now = _sessions(postgres)
    # 20 instances, 60 statements on the process's kept connections (stock: 280 connections)
    assert opened_after - opened_before <= POOL_SIZE
    assert 1 <= open_now <= POOL_SIZE

    # PostgreSQL restarted under the kept connections: the next statement reconnects instead
    # of failing on a dead one
    log = str(postgres.root / "server.log")  # not stdout: the new postmaster would hold our pipe
    postgres.run("pg_ctl", "-D", str(postgres.datadir), "-l", log, "-m", "fast", "-w", "restart")
    assert first.get_runs_count() == runs
    first.schedule_storage.all_instigator_state()
    first.dispose()

    dispose_engines()
    assert _sessions(postgres)[1] == 0


# --------------------------------------------------------------------------------------------
# The production dagster.yaml as configuration (no server needed)
# --------------------------------------------------------------------------------------------


def _production_config() -> dict:
    with tempfile.TemporaryDirectory() as home:
        shutil.copyfile(PRODUCTION_YAML, Path(home) / "dagster.yaml")
        config, custom_class = dagster_instance_config(home)
    assert custom_class is None
    return dict(config)


def _settings_env_vars() -> set[str]:
    """Every FRAUDLOOP_* variable the pipeline's processes read (the service's own excepted)."""
    from fraudloop.core.settings import declared
    from fraudloop.serving.config import ServeConfig
    from pipelines.config import SETTINGS_CLASSES

    names = {
        name
        for cls in SETTINGS_CLASSES
        if cls is not ServeConfig
        for field in declared(cls)
        for name in field.metadata["env"]
        if name.startswith("FRAUDLOOP_")
    }
    assert names, "no FRAUDLOOP_* setting is declared any more?"
    return names


def test_production_yaml_validates_and_names_the_docker_launcher(monkeypatch):
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "fraudloop")
    config = _production_config()
    storage = config["storage"]["custom"]
    assert (storage["module"], storage["class"]) == (
        "fraudloop_instance.postgres",
        "PooledPostgresStorage",
    )
    pg = storage["config"]["postgres_db"]
    assert {
        field: pg[field] for field in ("username", "password", "hostname", "db_name", "port")
    } == {
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "port": {"env": "DAGSTER_PG_PORT"},
    }
    # SQLAlchemy 2.1 would pick psycopg 3 (not installed) for a bare postgresql:// URL.
    assert pg["scheme"] == "postgresql+psycopg2"
    assert config["telemetry"] == {"enabled": False}
    assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]
    assert {"key": "fraudloop/retrain", "limit": 1} in config["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    # a dead run container fails the run (no resume), and run_retries starts it again
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert config["run_retries"]["max_retries"] >= 1
    logs = config["compute_logs"]
    assert (logs["module"], logs["class"]) == (
        "dagster_aws.s3.compute_log_manager",
        "S3ComputeLogManager",
    )
    assert logs["config"]["bucket"] == {"env": "FRAUDLOOP_S3_BUCKET"}

    # The launcher is built from the file exactly as a daemon would (no Docker call at init).
    with tempfile.TemporaryDirectory() as home:
        shutil.copyfile(PRODUCTION_YAML, Path(home) / "dagster.yaml")
        ref = InstanceRef.from_dir(home)
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == (
        "dagster_docker",
        "DockerRunLauncher",
    )
    launcher = ref.run_launcher_data.rehydrate(DockerRunLauncher)
    assert isinstance(launcher, DockerRunLauncher)
    assert launcher.networks == ["fraudloop"]
    assert launcher.container_kwargs.get("auto_remove") is False
    assert "volumes" not in launcher.container_kwargs
    env_vars = set(launcher.env_vars)
    assert all("=" not in name for name in env_vars), "values belong in the environment"
    missing = (_settings_env_vars() | set(PG_ENV) | {"DAGSTER_PG_PORT", "AWS_REGION"}) - env_vars
    assert not missing, f"run containers would not get {sorted(missing)}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_vars
    coordinator = ref.run_coordinator_data.rehydrate(QueuedRunCoordinator)
    assert isinstance(coordinator, QueuedRunCoordinator)


# --------------------------------------------------------------------------------------------
# docker-compose, Dockerfiles, workspace, Helm values: structure only
# --------------------------------------------------------------------------------------------


def _load(path: Path) -> dict:
    assert path.exists(), path
    return yaml.safe_load(path.read_text())


def _merge(base: dict, override: dict) -> dict:
    """Compose's merge for what these tests read: mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _compose(override: Path | None = None) -> dict:
    compose = _load(COMPOSE_YAML)
    return _merge(compose, _load(override)) if override else compose


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _walk_env(node, path=()):
    """Every (key, value) pair under any `environment:` mapping of the compose file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "environment" and isinstance(value, dict | list):
                for name, val in _environment({"environment": value}).items():
                    yield (*path, name), val
            else:
                yield from _walk_env(value, (*path, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk_env(item, (*path, str(i)))


def test_production_override_puts_every_service_on_the_fraudloop_network():
    compose = _compose(COMPOSE_PRODUCTION)
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "code-location", "webserver", "daemon"} <= set(
        services
    )
    # The run launcher attaches run containers to the network by its literal name.
    assert compose["networks"]["fraudloop"]["name"] == "fraudloop"
    for name, service in services.items():
        assert "fraudloop" in (service.get("networks") or []), f"{name} is not on the network"
    for name in ("code-location", "webserver", "daemon", "scoring"):
        assert "minio-init" in services[name]["depends_on"], name
    # published ports only on the host's loopback
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_stack_override_is_host_networking_only():
    compose = _compose(COMPOSE_STACK)
    assert "networks" not in compose, "the local stack must not create a network"
    for name, service in compose["services"].items():
        assert service.get("network_mode") == "host", f"{name} is not on host networking"
        assert not service.get("ports"), f"{name} publishes ports (host networking needs none)"
        assert not service.get("networks"), name
    assert compose["services"]["s3"]["image"].startswith("fraudloop-s3:")
    assert compose["services"]["postgres"]["image"].startswith("fraudloop-postgres:")


def test_the_local_stack_sizes_the_run_queue_to_its_host():
    """The production file allows 8 run containers at a time (a 16 GB multi-core host); on 2
    cores that drove the load to ~20 and the system test never closed the loop. The local
    stack's daemon and webserver read the same file with only that number changed."""
    stack_sh = ROOT / "infra" / "stack.sh"
    done = subprocess.run(
        ["bash", str(stack_sh), "instance-yaml", "3"], capture_output=True, text=True, check=True
    )
    sized, production = yaml.safe_load(done.stdout), _load(PRODUCTION_YAML)
    assert sized["concurrency"]["runs"]["max_concurrent_runs"] == 3
    production["concurrency"]["runs"]["max_concurrent_runs"] = 3
    assert sized == production
    bad = subprocess.run(
        ["bash", str(stack_sh), "instance-yaml", "0"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "positive integer" in bad.stderr
    services = _load(COMPOSE_STACK)["services"]
    for name in ("daemon", "webserver"):
        (mount,) = services[name]["volumes"]
        assert mount.startswith("${FRAUDLOOP_STACK_INSTANCE_YAML:?")
        assert mount.endswith(":/opt/dagster/home/dagster.yaml:ro")


def test_compose_holds_no_secrets():
    secret_like = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
    for path in (COMPOSE_YAML, COMPOSE_PRODUCTION, COMPOSE_STACK):
        for env_path, value in _walk_env(_load(path)):
            if secret_like.search(env_path[-1]):
                reference = isinstance(value, str) and SECRET_REF.fullmatch(value)
                assert reference, (
                    f"{path.name}: {'/'.join(env_path)} must be ${{VAR}}, not {value!r}"
                )
        text = path.read_text()
        assert "minioadmin" not in text and "changeme" not in text.lower()


def test_compose_wires_images_commands_and_env_the_profile_needs():
    compose = _compose(COMPOSE_PRODUCTION)
    services = compose["services"]
    dagster_services = ("code-location", "webserver", "daemon")
    for name in dagster_services:
        build = services[name].get("build")
        if build:
            dockerfile = (COMPOSE_YAML.parent / build["context"] / build["dockerfile"]).resolve()
            assert dockerfile == ROOT / "infra" / "docker" / "Dockerfile.dagster", name
    # the code location (and every run) from the code image; webserver + daemon from the
    # instance image (Dagster only, the code comes over gRPC)
    assert services["code-location"]["image"].startswith("fraudloop-dagster:")
    assert services["webserver"]["image"] == services["daemon"]["image"]
    assert services["webserver"]["image"].startswith("fraudloop-dagster-instance:")
    assert services["code-location"]["build"]["target"] == "code"
    assert services["webserver"]["build"]["target"] == "instance"

    code = services["code-location"]
    command = " ".join(code["command"])
    assert "code-server start" in command and "DAGSTER_GRPC_PORT:-4000" in command
    module = re.search(r"-m\s+([\w.]+)", command).group(1)
    assert (ROOT / Path(*module.split("."))).with_suffix(".py").exists(), module
    assert _environment(code)["DAGSTER_CURRENT_IMAGE"] == code["image"]

    workspace_path = "/opt/dagster/app/infra/docker/workspace.docker.yaml"
    for name in ("webserver", "daemon"):
        cmd = " ".join(services[name]["command"])
        assert workspace_path in cmd, f"{name} must load {workspace_path}"
        # the DockerRunLauncher (daemon launches, webserver terminates) needs the Docker socket
        assert any("/var/run/docker.sock" in v for v in services[name].get("volumes", []))

    # DockerRunLauncher reads every env_vars name from the launching process and fails the
    # launch when one is unset: the daemon (and the webserver) must define all of them.
    launcher_env = _production_config()["run_launcher"]["config"]["env_vars"]
    for name in dagster_services:
        env = _environment(services[name])
        missing = [var for var in launcher_env if var not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["FRAUDLOOP_STORE"] == "s3"
        assert env["FRAUDLOOP_S3_ENDPOINT_URL"] == "${FRAUDLOOP_S3_ENDPOINT_URL:-http://minio:9000}"
        assert env["DAGSTER_DOCKER_NETWORK"] == "${DAGSTER_DOCKER_NETWORK:-fraudloop}"
    workspace = yaml.safe_load((ROOT / "infra" / "docker" / "workspace.docker.yaml").read_text())
    (location,) = workspace["load_from"]
    # a fixed location name: sensor states and run origins are keyed by it
    assert location["grpc_server"]["location_name"] == "fraudloop"
    assert location["grpc_server"]["host"] == {"env": "DAGSTER_GRPC_HOST"}
    assert location["grpc_server"]["port"] == {"env": "DAGSTER_GRPC_PORT"}
    assert "--location-name fraudloop" in command
    automation = services["automation"]
    assert "sensor start --start-all" in automation["command"][0]
    assert _environment(automation)["FRAUDLOOP_AUTOMATION"] == "${FRAUDLOOP_AUTOMATION:-on}"

    assert "healthcheck" in services["postgres"]
    assert services["postgres"]["image"].startswith("postgres:15")
    example = ROOT / "infra" / "docker" / ".env.example"
    assert example.exists()
    example_keys = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    code_text = "\n".join(
        line
        for path in (COMPOSE_YAML, COMPOSE_PRODUCTION)
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    referenced = set(re.findall(r"\$\{([A-Za-z0-9_]+):\?", code_text))
    assert "DAGSTER_PG_PASSWORD" in referenced
    assert referenced <= example_keys, f".env.example lacks {sorted(referenced - example_keys)}"


def test_dockerfiles_and_helm_values_are_consistent():
    dagster_df = (ROOT / "infra" / "docker" / "Dockerfile.dagster").read_text()
    # python:3.11-slim for users; a local Debian base where no registry answers
    assert "ARG BASE_IMAGE=python:3.11-slim" in dagster_df
    assert "FROM ${BASE_IMAGE}" in dagster_df
    assert "uv sync --locked --no-dev" in dagster_df
    assert "infra/production/dagster.yaml" in dagster_df
    assert "DAGSTER_HOME=/opt/dagster/home" in dagster_df
    assert "DAGSTER_CURRENT_IMAGE" in dagster_df
    assert re.search(r"^USER\s+(?!root)\S+", dagster_df, re.M), "the image must not run as root"

    serve_text = (ROOT / "infra" / "docker" / "Dockerfile.serve").read_text()
    serve_df = "\n".join(
        line for line in serve_text.splitlines() if not line.lstrip().startswith("#")
    )
    assert "uv export --locked --no-dev" in serve_df
    from fraudloop.delivery.package import PRUNED_FROM_IMAGE

    for name in PRUNED_FROM_IMAGE:  # the same closure as a model package's image
        assert f"--prune {name} " in serve_df, name
    assert "uv sync" not in serve_df, "uv sync would install dagster into the scoring image"
    assert re.search(r"^USER\s+(?!root)\S+", serve_df, re.M)

    values = yaml.safe_load(HELM_VALUES.read_text())
    assert "not exercised" in HELM_VALUES.read_text().lower()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][-1] == "pipelines.definitions"
    runs = values["concurrency"]["runs"]
    assert {"key": "fraudloop/retrain", "limit": 1} in runs["tagConcurrencyLimits"]
    assert {"key": "fraudloop/lane", "value": "monitoring", "limit": 1} in runs[
        "tagConcurrencyLimits"
    ]
    assert values["telemetry"]["enabled"] is False
