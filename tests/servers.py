"""The scoring service on a real HTTP port for tests: in a thread (uvicorn.Server, so a test can
reach into the app) or in its own process (for signals: a graceful SIGTERM); and a real
redis-server (Debian's package, installed by infra/system-deps.sh) for the shared online store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import httpx
import uvicorn

from fraudloop.core.ports import free_port
from fraudloop.core.settings import store_env
from fraudloop.serving.app import create_app
from fraudloop.serving.config import ServeConfig

TOKEN = "test-admin-token"  # a test-only value, never a real secret


def config(**overrides) -> ServeConfig:
    base = ServeConfig(poll_seconds=0.2, flush_seconds=0.5, admin_token=TOKEN)
    return replace(base, **overrides)


@contextmanager
def service_thread(store, serve_config: ServeConfig | None = None, ready: bool = True):
    """Yields (base url, app); the server is stopped (graceful shutdown) on exit."""
    app = create_app(store, serve_config or config())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    if ready:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="ready")
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a server a test started, SIGKILL it if it outlives `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> float:
    """Seconds it took for `predicate` to hold; AssertionError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def service_process(store, *args: str, env: dict | None = None):
    """`python -m fraudloop.serving` in its own process; yields (base url, Popen)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraudloop.serving",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        env={**os.environ, **store_env(store), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-2000:])
            try:
                return httpx.get(f"{base}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=60, what="service process ready")
        yield base, proc
    finally:
        stop_process(proc, timeout=30)
        proc.stderr.close()


@contextmanager
def redis_server(directory, port: int | None = None):
    """Debian's redis-server on 127.0.0.1 at a free port (or ``port``), no persistence; yields
    its URL and the Popen (a test may kill it). Stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError(
            "redis-server not found: install it with `bash infra/system-deps.sh` as root"
        )
    port = port or free_port()
    os.makedirs(directory, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--protected-mode", "yes", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-2000:])
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, timeout=30, what="redis-server ready")
        client.close()
        yield url, proc
    finally:
        stop_process(proc)
        proc.stderr.close()
