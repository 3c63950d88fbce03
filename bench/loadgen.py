"""Open- and closed-loop HTTP/1.1 load generator for benchmarking the scoring service on loopback.

Raw keep-alive requests over asyncio streams rather than an HTTP client library: on a 2-core
machine the generator shares the CPU with the server under test, so every microsecond it spends
on a request is taken from the thing being measured. Responses are parsed only as far as needed
to learn their status and where they end.

Open loop (``run_constant_rate``) is what a latency benchmark needs: requests fall due at fixed
instants whatever the server does, and latency is counted from the instant a request fell due, so
time spent queued behind a slow server, or waiting for a free connection, shows up in the
percentiles instead of being absorbed by a generator that politely slows down (coordinated
omission). Closed loop (``run_max_throughput``) answers the other question: how many requests a
second the server completes when it is never left idle.

    .venv/bin/python bench/loadgen.py --port 8000 --path /v1/score --body-file f.json \\
        --rate 200 --duration 10
    .venv/bin/python bench/loadgen.py --port 8000 --path /v1/score --body-file f.json --max
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import uvloop
except ImportError:  # pragma: no cover - installed with the project; the generator works without
    uvloop = None

# What a broken exchange can raise: socket errors and timeouts (OSError), a peer that closes
# mid-response (IncompleteReadError is an EOFError), oversized or malformed heads.
_FAILURES = (OSError, EOFError, asyncio.LimitOverrunError, ValueError)
_EARLY_S = 0.0005  # how far ahead of schedule the open loop may send; see arun_constant_rate


class ProtocolError(ValueError):
    """Raised for an answer that is not an HTTP/1.x response, so it is counted, not crashed on."""


class ConnectTimeout(TimeoutError):
    """Its own name in ``Result.errors``: the timeout ran out while the connection was being
    (re)opened, before the request was written, so the server never saw it (a full accept queue,
    or a host too busy to complete a connect in time) rather than answering it too slowly
    (``TimeoutError``, whose request went out)."""


class QueueTimeout(TimeoutError):
    """Its own name in ``Result.errors``: the request waited longer than the timeout for a free
    connection and was dropped unsent, which points at a backlog (server too slow for the offered
    rate, or too small a pool) rather than at one slow answer (``TimeoutError``)."""


@dataclass
class Result:
    """``failed`` is split into ``non_2xx`` (the server answered, with an error status) and
    ``errored`` (no usable answer: refused, reset, closed mid-response, timed out) because the
    two point at different culprits. Latencies are kept for 2xx answers only: a fast 500 is not a
    served request and would flatter the percentiles."""

    sent: int
    ok: int
    failed: int
    non_2xx: int
    errored: int
    status_counts: dict[int, int]
    errors: dict[str, int]
    latencies_ms: np.ndarray
    duration_s: float
    # Worst delay between a request falling due and the scheduler releasing it: the generator's
    # own lateness, already inside the latencies. About a millisecond is timer resolution; more
    # means the generator, not the server, was short of CPU.
    max_lag_ms: float = 0.0

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN without any successful request, so an empty run cannot pass for a
        fast one."""
        if self.latencies_ms.size == 0:
            return math.nan
        return float(np.percentile(self.latencies_ms, q))

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict:
        """JSON-ready; latencies in ms."""
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "non_2xx": self.non_2xx,
            "errored": self.errored,
            "rps": round(self.rps, 2),
            "p50": round(self.percentile(50), 3),
            "p90": round(self.percentile(90), 3),
            "p99": round(self.percentile(99), 3),
            "max": round(self.percentile(100), 3),
            "duration_s": round(self.duration_s, 3),
            "max_lag_ms": round(self.max_lag_ms, 3),
            "status_counts": dict(sorted(self.status_counts.items())),
            "errors": dict(sorted(self.errors.items())),
        }


class _Connection:
    """One keep-alive connection, reopened lazily so that a broken one costs only the request
    that was on it."""

    __slots__ = ("host", "port", "reader", "writer", "wrote")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.wrote = False  # whether the current exchange's request went out

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            # Requests go out in one write, but a delayed ACK must never hold one back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def _usable(self) -> bool:
        reader = self.reader
        return not (
            reader is None
            or reader.at_eof()
            or reader.exception() is not None
            or self.writer.is_closing()
        )

    async def exchange(self, request: bytes) -> int:
        self.wrote = False
        if not self._usable():
            # A server may drop an idle connection (uvicorn's keep-alive timeout is 5 s); reopening
            # before sending keeps that from being charged to a request it never saw.
            self.close()
            await self.open()
        self.writer.write(request)
        self.wrote = True
        await self.writer.drain()
        return await self._read_response()

    async def _read_response(self) -> int:
        reader = self.reader
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            status_line = lines[0]
            if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
                raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:40]!r}")
            status = int(status_line[9:12])
            if not 100 <= status < 200:
                break  # 1xx answers are interim, bodiless, and followed by the real one

        length = None
        chunked = False
        keep_alive = status_line[5:8] == b"1.1"  # HTTP/1.0 closes unless it says otherwise
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                value = value.lower()
                if b"close" in value:
                    keep_alive = False
                elif b"keep-alive" in value:
                    keep_alive = True

        if chunked:  # takes precedence over Content-Length (RFC 9112 6.3)
            await self._skip_chunked()
        elif length is not None:
            if length:
                await reader.readexactly(length)
        elif status not in (204, 304):
            await reader.read()  # body delimited by the server closing the connection
            keep_alive = False
        if not keep_alive:
            self.close()
        return status

    async def _skip_chunked(self) -> None:
        reader = self.reader
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                break
            await reader.readexactly(size + 2)  # the chunk and its CRLF
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then a blank line
            pass


class _Tally:
    """Counters shared by the workers of one run; one event loop, so no locks."""

    def __init__(self, requests: list[bytes], timeout_s: float) -> None:
        self.requests = requests
        self.timeout_s = timeout_s
        self.issued = 0
        self.ok = 0
        self.non_2xx = 0
        self.errored = 0
        self.status_counts: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []

    def _error(self, name: str) -> None:
        self.errored += 1
        self.errors[name] = self.errors.get(name, 0) + 1

    async def issue(self, conn: _Connection, due: float) -> bool:
        """Sends the next request on ``conn``; its latency runs from ``due`` (perf_counter
        seconds), not from the send, so time spent queued is charged to it. The timeout bounds the
        queueing and the answer separately: one budget for both would hand every request after an
        overload a sliver of time, send it anyway and fail it, never telling a backlog from a
        slow answer. Returns whether an HTTP answer, of any status, came back."""
        request = self.requests[self.issued % len(self.requests)]
        self.issued += 1
        if time.perf_counter() - due > self.timeout_s:
            self._error(QueueTimeout.__name__)
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await conn.exchange(request)
        except _FAILURES as exc:
            unsent = isinstance(exc, TimeoutError) and not conn.wrote
            conn.close()  # whatever state the stream is in, it can no longer be trusted
            self._error(ConnectTimeout.__name__ if unsent else type(exc).__name__)
            return False
        elapsed = time.perf_counter() - due
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if 200 <= status < 300:
            self.ok += 1
            self.latencies.append(elapsed)
        else:
            self.non_2xx += 1
        return True

    def result(self, duration_s: float, max_lag_s: float = 0.0) -> Result:
        return Result(
            sent=self.issued,
            ok=self.ok,
            failed=self.non_2xx + self.errored,
            non_2xx=self.non_2xx,
            errored=self.errored,
            status_counts=self.status_counts,
            errors=self.errors,
            latencies_ms=np.asarray(self.latencies, dtype=np.float64) * 1000.0,
            duration_s=duration_s,
            max_lag_ms=max_lag_s * 1000.0,
        )


def _build_requests(
    host: str, port: int, path: str, bodies: Sequence[bytes], headers: dict | None
) -> list[bytes]:
    """Whole requests, serialised once, so the hot loop only writes bytes."""
    if not bodies:
        raise ValueError("at least one body is needed")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    fields = {"host": ("Host", authority), "content-type": ("Content-Type", "application/json")}
    for name, value in (headers or {}).items():
        fields[name.lower()] = (name, str(value))
    for framing in ("content-length", "transfer-encoding"):  # ours: must match each body
        fields.pop(framing, None)
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields.values())
    requests = []
    for body in bodies:
        data = body.encode() if isinstance(body, str) else bytes(body)
        requests.append(f"{head}Content-Length: {len(data)}\r\n\r\n".encode("latin-1") + data)
    return requests


async def _open_pool(host: str, port: int, connections: int, timeout_s: float) -> list[_Connection]:
    if connections < 1:
        raise ValueError("connections must be >= 1")
    pool = [_Connection(host, port) for _ in range(connections)]

    async def open_one(conn: _Connection) -> None:
        # Handshakes happen before the clock starts, each within the timeout: a server whose
        # accept queue is full drops the SYN, and the kernel retries it for two minutes (the
        # run hung there). A refusal or a timeout here is not fatal: the request that next
        # uses the connection tries again and is charged with the failure.
        try:
            async with asyncio.timeout(timeout_s):
                await conn.open()
        except _FAILURES:
            conn.close()

    await asyncio.gather(*(open_one(conn) for conn in pool))
    return pool


async def _finish(tasks: list[asyncio.Task], pool: list[_Connection]) -> None:
    for task in tasks:
        task.cancel()  # no-op for finished ones; matters when the run itself is cancelled
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in pool:
        conn.close()


async def arun_constant_rate(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    connections: int = 32,
    timeout_s: float = 5.0,
    headers: dict | None = None,
) -> Result:
    """Open loop: request i falls due at i / rate, for every i / rate < duration_s, whether or not
    earlier ones were answered. A request that waits more than ``timeout_s`` for a free connection
    is failed as ``QueueTimeout`` without being sent; one sent gets ``timeout_s`` for its answer.
    Both bound how long the backlog can drain after the schedule ends."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration_s must be positive")
    tally = _Tally(_build_requests(host, port, path, bodies, headers), timeout_s)
    total = math.ceil(rate * duration_s - 1e-9)
    pool = await _open_pool(host, port, connections, timeout_s)
    loop = asyncio.get_running_loop()
    backlog: deque[float] = deque()  # clock starts of requests waiting for a free connection
    # Parked workers, most recently used last: waking the last one keeps a low rate on a few warm
    # connections instead of rotating through all of them and outliving the server's keep-alive.
    idle: list[asyncio.Future] = []
    scheduled_all = False

    async def worker(conn: _Connection) -> None:
        while True:
            if backlog:
                await tally.issue(conn, backlog.popleft())
            elif scheduled_all:
                return
            else:
                wake = loop.create_future()
                idle.append(wake)
                await wake

    tasks = [asyncio.create_task(worker(conn)) for conn in pool]
    max_lag = 0.0
    start = time.perf_counter()
    try:
        i = 0
        while i < total:
            now = time.perf_counter()
            # Loop timers have millisecond resolution (uvloop rounds a delay to the nearest ms, so
            # one under 0.5 ms returns at once and waiting for it exactly would spin a core).
            # Hence everything due within _EARLY_S goes out now, and the next sleep is always
            # longer than that. A request sent early has its clock start at the send: sending
            # ahead of schedule must not make an answer look faster.
            while i < total and (due := start + i / rate) <= now + _EARLY_S:
                backlog.append(min(due, now))
                max_lag = max(max_lag, now - due)
                if idle:
                    idle.pop().set_result(None)
                i += 1
            if i < total:
                await asyncio.sleep(start + i / rate - now)
        scheduled_all = True
        while idle:
            idle.pop().set_result(None)
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    finally:
        await _finish(tasks, pool)
    return tally.result(duration, max_lag)


async def arun_max_throughput(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    duration_s: float,
    connections: int = 16,
    timeout_s: float = 5.0,
    headers: dict | None = None,
    once: bool = False,
) -> Result:
    """Closed loop: each connection sends its next request as soon as the previous answer is in,
    until ``duration_s`` has passed (or, with ``once``, every body has been sent once: a
    request is not replayed); answers still in flight then are waited for and counted, and
    the measured duration includes them, so ``rps`` is the sustained peak."""
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    tally = _Tally(_build_requests(host, port, path, bodies, headers), timeout_s)
    pool = await _open_pool(host, port, connections, timeout_s)
    start = time.perf_counter()
    stop = start + duration_s
    budget = len(tally.requests) if once else None

    async def worker(conn: _Connection) -> None:
        while (now := time.perf_counter()) < stop and (budget is None or tally.issued < budget):
            if not await tally.issue(conn, now):
                # A dead server would otherwise turn this into a busy loop of refused connects,
                # stealing the CPU the server needs to come back.
                await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(worker(conn)) for conn in pool]
    try:
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    finally:
        await _finish(tasks, pool)
    return tally.result(duration)


def _run(coro: Coroutine[Any, Any, Result]) -> Result:
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def run_constant_rate(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    rate: float,
    duration_s: float,
    connections: int = 32,
    timeout_s: float = 5.0,
    headers: dict | None = None,
) -> Result:
    """Blocking ``arun_constant_rate`` on a fresh (uv)loop; not callable from inside a running
    loop, where the async variant is the one to await."""
    return _run(
        arun_constant_rate(
            host, port, path, bodies, rate, duration_s, connections, timeout_s, headers
        )
    )


def run_max_throughput(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    duration_s: float,
    connections: int = 16,
    timeout_s: float = 5.0,
    headers: dict | None = None,
    once: bool = False,
) -> Result:
    """Blocking ``arun_max_throughput`` on a fresh (uv)loop."""
    return _run(
        arun_max_throughput(
            host, port, path, bodies, duration_s, connections, timeout_s, headers, once
        )
    )


def _read_bodies(args: argparse.Namespace) -> list[bytes]:
    if args.body_file is None:
        return [args.body.encode()]
    path = Path(args.body_file)
    data = path.read_bytes()
    if path.suffix in (".jsonl", ".ndjson"):  # one body per line, cycled through
        return [line for line in data.splitlines() if line.strip()]
    return [data.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--body", default="{}", help="inline JSON body (default: {})")
    source.add_argument(
        "--body-file", help="JSON body; .jsonl/.ndjson: one body per line, cycled through"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop at this many requests/s")
    mode.add_argument("--max", action="store_true", help="closed loop: peak requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default: 10)")
    parser.add_argument(
        "--connections", type=int, help="keep-alive connections (default: 32 open, 16 max)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    args = parser.parse_args(argv)

    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            parser.error(f"--header wants 'NAME: VALUE', got {item!r}")
        headers[name.strip()] = value.strip()
    bodies = _read_bodies(args)
    common = {"timeout_s": args.timeout, "headers": headers}
    if args.max:
        result = run_max_throughput(
            args.host,
            args.port,
            args.path,
            bodies,
            args.duration,
            connections=args.connections or 16,
            **common,
        )
    else:
        result = run_constant_rate(
            args.host,
            args.port,
            args.path,
            bodies,
            args.rate,
            args.duration,
            connections=args.connections or 32,
            **common,
        )
    print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
