"""HAProxy (Debian's package, installed by infra/system-deps.sh) in front of scoring replicas, as
the tests and bench/balancer.py run it: the project's own config (infra/haproxy/haproxy.cfg)
with the addresses in its environment, on free loopback ports, in the foreground; stopped on
exit. The stats page (CSV) says which replicas the balancer has in rotation."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fraudloop.core.ports import free_port

CONFIG = Path(__file__).resolve().parents[1] / "infra" / "haproxy" / "haproxy.cfg"


@dataclass
class Balancer:
    url: str
    stats_url: str
    proc: subprocess.Popen
    log_path: Path

    def servers(self) -> dict[str, str]:
        """{replica name: HAProxy's status (UP, DOWN, "UP 1/2", ...)} of the scoring backend."""
        text = httpx.get(f"{self.stats_url};csv", timeout=5).text.lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def haproxy_env(replicas: list[str], port: int, stats_port: int) -> dict[str, str]:
    """The variables infra/haproxy/haproxy.cfg reads; ``replicas`` are two host:port."""
    if len(replicas) != 2:
        raise ValueError("infra/haproxy/haproxy.cfg has two replica slots")
    return {
        "LB_BIND": f"127.0.0.1:{port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        "LB_REPLICA_1": replicas[0],
        "LB_REPLICA_2": replicas[1],
    }


@contextmanager
def haproxy(replicas: list[str], workdir: Path) -> Iterator[Balancer]:
    """HAProxy balancing over ``replicas`` (two host:port); yields once it answers its stats
    page (the replicas' health checks may still be running)."""
    from tests.servers import stop_process, wait_until

    binary = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        raise AssertionError(
            "haproxy not found: install it with `bash infra/system-deps.sh` as root"
        )
    port, stats_port = free_port(), free_port()
    env = {**os.environ, **haproxy_env(replicas, port, stats_port)}
    check = subprocess.run(
        [binary, "-c", "-q", "-f", str(CONFIG)], env=env, capture_output=True, text=True
    )
    if check.returncode != 0:
        raise AssertionError(f"haproxy rejects {CONFIG}: {check.stdout}{check.stderr}")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "haproxy.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, "-W", "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    balancer = Balancer(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", proc, log_path
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {log_path.read_text()[-2000:]}")
            try:
                return httpx.get(balancer.stats_url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=30, what="haproxy up")
        yield balancer
    finally:
        stop_process(proc)
        log.close()
