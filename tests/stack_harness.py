"""Driving the Docker stack from a test: bring it up through infra/stack.sh on
free loopback ports, talk to its services the way a user would (the CLI inside the code-location
container, the webserver's GraphQL, the scoring service's HTTP API, S3, PostgreSQL), inject
faults with the Docker CLI, and tear everything down (containers, run containers, volumes).

Traffic goes to 127.0.0.1 only: every container runs with host networking on its own port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from fraudloop.core.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
PRODUCTION_YAML = ROOT / "infra" / "production" / "dagster.yaml"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 1.0):
    """The predicate's first truthy value; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # a service restarting: try again until the deadline
            last_error = error
        time.sleep(poll)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}; last error: {last_error}"
    )


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def image_exists(image: str) -> bool:
    done = subprocess.run([DOCKER, "image", "inspect", image], capture_output=True, check=False)
    return done.returncode == 0


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that keeps every alert POSTed to it."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    """One stack: its compose project, ports, env file and handles on its services."""

    directory: Path
    project: str
    settings: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    started_dockerd: int | None = None
    dagster_home: Path | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, settings: dict[str, str], project: str | None = None) -> Stack:
        directory = Path(tempfile.mkdtemp(prefix="fraudloop-stack-"))
        stack = cls(
            directory=directory,
            project=project or f"fraudloop-test-{os.getpid()}",
            settings=settings,
        )
        names = ("pg", "s3", "grpc", "web", "scoring", "scoring2", "balancer", "lbstats", "redis")
        stack.ports = {name: free_port() for name in names}
        return stack

    def script_env(self) -> dict[str, str]:
        settings_file = self.directory / "settings.env"
        settings_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        return {
            **os.environ,
            "FRAUDLOOP_STACK_DIR": str(self.directory),
            "FRAUDLOOP_STACK_PROJECT": self.project,
            "FRAUDLOOP_STACK_PG_PORT": str(self.ports["pg"]),
            "FRAUDLOOP_STACK_S3_PORT": str(self.ports["s3"]),
            "FRAUDLOOP_STACK_GRPC_PORT": str(self.ports["grpc"]),
            "FRAUDLOOP_STACK_WEB_PORT": str(self.ports["web"]),
            "FRAUDLOOP_STACK_SCORING_PORT": str(self.ports["scoring"]),
            "FRAUDLOOP_STACK_SCORING_2_PORT": str(self.ports["scoring2"]),
            "FRAUDLOOP_STACK_BALANCER_PORT": str(self.ports["balancer"]),
            "FRAUDLOOP_STACK_BALANCER_STATS_PORT": str(self.ports["lbstats"]),
            "FRAUDLOOP_STACK_REDIS_PORT": str(self.ports["redis"]),
            "FRAUDLOOP_STACK_SETTINGS": str(settings_file),
        }

    def script(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            ["bash", str(ROOT / "infra" / "stack.sh"), *args],
            cwd=ROOT,
            env=self.script_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"infra/stack.sh {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done.stdout

    def ensure_engine(self) -> None:
        out = subprocess.run(
            ["bash", str(ROOT / "infra" / "docker" / "ensure-dockerd.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if out.startswith("started "):
            self.started_dockerd = int(out.split()[1])

    def remove_orphaned_stacks(self) -> list[str]:
        """Removes the containers of test stacks whose test process is gone (a killed test or
        a machine restarted under it): their services restart with the engine (`restart:
        unless-stopped`), and one such stack's daemon, launching runs of its own, made a run
        here 2.6x slower (history 566 s against 215 s)."""
        label = "com.docker.compose.project"
        listed = docker("ps", "-a", "--filter", f"label={label}", "--format",
                        f'{{{{.ID}}}} {{{{.Label "{label}"}}}}', check=False)  # fmt: skip
        orphans = []
        for line in listed.splitlines():
            cid, _, project = line.partition(" ")
            pid = project.removeprefix("fraudloop-test-")
            if project == self.project or pid == project or not pid.isdigit():
                continue
            if not Path(f"/proc/{pid}").exists():
                orphans.append(cid)
        if orphans:
            docker("rm", "-f", *orphans, check=False)
        return orphans

    def build(self) -> tuple[float, bool]:
        """Builds every image; (seconds, cold) where cold means no stack image existed."""
        cold = not any(image_exists(image) for image in self.images())
        started = time.monotonic()
        done = subprocess.run(
            ["bash", str(ROOT / "infra" / "docker" / "build.sh")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"image build failed:\n{done.stdout}\n{done.stderr}")
        seconds = time.monotonic() - started
        print(done.stdout, end="")
        return seconds, cold

    @staticmethod
    def images() -> list[str]:
        return [
            "fraudloop-dagster:latest",
            "fraudloop-dagster-instance:latest",
            "fraudloop-serve:latest",
            "fraudloop-s3:latest",
            "fraudloop-postgres:latest",
            "fraudloop-redis:latest",
            "fraudloop-haproxy:latest",
        ]

    def up(self) -> float:
        started = time.monotonic()
        env = self.script_env()
        env["FRAUDLOOP_STACK_NO_BUILD"] = "1"
        done = subprocess.run(
            ["bash", str(ROOT / "infra" / "stack.sh"), "up"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            logs = self.logs_tail()
            raise RuntimeError(f"stack up failed: {done.stdout}\n{done.stderr}\n{logs}")
        print(done.stdout, end="")
        self.env = dict(
            line.split("=", 1)
            for line in (self.directory / "stack.env").read_text().splitlines()
            if line and not line.startswith("#") and "=" in line
        )
        return time.monotonic() - started

    def down(self) -> None:
        try:
            self.script("down", timeout=300)
        finally:
            if self.dagster_home:
                shutil.rmtree(self.dagster_home, ignore_errors=True)
            shutil.rmtree(self.directory, ignore_errors=True)

    def stop_engine_if_started(self) -> None:
        """Stops the Docker engine if this stack started it (and nothing else runs on it)."""
        if self.started_dockerd is None:
            return
        if docker("ps", "-q", check=False):
            return
        try:
            os.kill(self.started_dockerd, 15)
        except ProcessLookupError:
            return
        wait_for(lambda: not Path("/var/run/docker.sock").exists(), 60, "dockerd to stop")

    def logs_tail(self, service: str = "") -> str:
        try:
            return self.script("logs", *([service] if service else []), timeout=60)[-6000:]
        except Exception as error:  # the logs are a diagnosis, never the failure itself
            return f"(no logs: {error})"

    # ------------------------------------------------------------------ services

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.script("compose", *args, timeout=timeout)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def cli(self, *args: str, timeout: float = 300) -> str:
        """`fraudloop ...` inside the code-location container (the stack's own environment)."""
        return docker("exec", self.container("code-location"), "fraudloop", *args, timeout=timeout)

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def scoring(self) -> str:
        """What clients call: HAProxy in front of the two replicas."""
        return f"http://127.0.0.1:{self.ports['balancer']}"

    @property
    def replicas(self) -> dict[str, str]:
        """Each scoring replica directly, by the name the balancer gives it (X-Served-By)."""
        return {
            "replica-1": f"http://127.0.0.1:{self.ports['scoring']}",
            "replica-2": f"http://127.0.0.1:{self.ports['scoring2']}",
        }

    def inspect(self, service: str, template: str) -> str:
        return docker("inspect", "-f", template, self.container(service))

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        for attempt in range(3):  # the webserver answers 500 while a reload or a query stalls
            response = httpx.post(
                f"{self.web}/graphql",
                json={"query": query, "variables": variables or {}},
                timeout=60,
            )
            if response.status_code < 500:
                break
            time.sleep(2 * (attempt + 1))
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def client_env(self) -> dict[str, str]:
        """What a process on the host needs to open the stack's store and instance."""
        names = (
            "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_HOST",
            "DAGSTER_PG_PORT", "DAGSTER_DOCKER_NETWORK", "FRAUDLOOP_S3_BUCKET",
            "FRAUDLOOP_S3_ENDPOINT_URL",
        )  # fmt: skip
        env = {name: self.env[name] for name in names}
        env["AWS_ACCESS_KEY_ID"] = self.env["FRAUDLOOP_S3_ACCESS_KEY"]
        env["AWS_SECRET_ACCESS_KEY"] = self.env["FRAUDLOOP_S3_SECRET_KEY"]
        env["AWS_REGION"] = "us-east-1"
        return env

    def store(self):
        from fraudloop.core.store import S3ObjectStore

        os.environ.update(self.client_env())
        return S3ObjectStore(
            self.env["FRAUDLOOP_S3_BUCKET"],
            endpoint_url=self.env["FRAUDLOOP_S3_ENDPOINT_URL"],
            region_name="us-east-1",
        )

    def instance(self):
        """The stack's Dagster instance, opened from the host with the production dagster.yaml."""
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        os.environ.update(self.client_env())
        if self.dagster_home is None:
            self.dagster_home = Path(tempfile.mkdtemp(prefix="fraudloop-stack-home-"))
            shutil.copyfile(PRODUCTION_YAML, self.dagster_home / "dagster.yaml")
        return DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))

    def psql(self, sql: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=int(self.env["DAGSTER_PG_PORT"]),
            user=self.env["DAGSTER_PG_USERNAME"],
            password=self.env["DAGSTER_PG_PASSWORD"],
            dbname=self.env["DAGSTER_PG_DB"],
            connect_timeout=5,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()

    def run_containers(self) -> list[str]:
        """The run containers this stack's daemon launched (infra/stack.sh runs)."""
        try:
            return self.script("runs", timeout=120).split()
        except RuntimeError:
            return []
