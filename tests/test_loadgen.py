"""bench/loadgen.py against a real stdlib HTTP/1.1 server on loopback: request counts, failure
accounting, reconnection after abrupt closes, response framing, and the open-loop latency clock."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fraudloop.core.ports import free_port

SERVICE_S = 0.02  # /slow's service time


def _load_loadgen():
    """bench/ is not a package; registered before executing so its dataclass can resolve."""
    name = "fraudloop_bench_loadgen"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "bench" / "loadgen.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


loadgen = _load_loadgen()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn does
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a request). asyncio servers such as uvicorn set TCP_NODELAY too.
    disable_nagle_algorithm = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        with server.lock:
            server.bodies.append(body)
            server.hits += 1
            drop = self.path == "/drop" and server.hits % 3 == 0
        if drop:
            # RST instead of an answer: linger 0, then close under the handler's feet.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            with server.lock:
                server.drops += 1
            return
        if self.path == "/slow":
            time.sleep(SERVICE_S)
        payload = json.dumps({"bytes": len(body)}).encode()
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(payload) // 2
            for chunk in (payload[:half], payload[half:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 would drop SYNs when a pool connects at once

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.hits = 0
        self.drops = 0

    def handle_error(self, request, client_address):
        pass  # writes to connections the generator gave up on (timeouts) are expected


@pytest.fixture
def server():
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _port(httpd) -> int:
    return httpd.server_address[1]


def _assert_latencies_sane(result):
    assert result.latencies_ms.size == result.ok
    assert (result.latencies_ms > 0).all()
    quantiles = [result.percentile(q) for q in (50, 90, 99, 100)]
    assert quantiles == sorted(quantiles)
    assert quantiles[-1] == pytest.approx(result.latencies_ms.max())
    summary = result.summary()
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    json.dumps(summary)


def test_constant_rate_sends_the_schedule_and_all_succeed(server):
    bodies = [b'{"a": 1}', b'{"bbbb": 22}']
    result = loadgen.run_constant_rate(
        "127.0.0.1", _port(server), "/", bodies, rate=200, duration_s=0.5, connections=8
    )
    assert abs(result.sent - 100) <= 1
    assert result.ok == result.sent == server.hits
    assert result.failed == result.non_2xx == result.errored == 0
    assert result.status_counts == {200: result.sent}
    assert result.errors == {}
    # Bodies are cycled through, in order.
    assert server.bodies.count(bodies[0]) == pytest.approx(result.sent / 2, abs=1)
    assert set(server.bodies) == set(bodies)
    _assert_latencies_sane(result)
    assert result.rps == pytest.approx(200, rel=0.2)


def test_non_2xx_are_failed_with_their_status(server):
    result = loadgen.run_constant_rate(
        "127.0.0.1", _port(server), "/fail", [b"{}"], rate=100, duration_s=0.3, connections=4
    )
    assert abs(result.sent - 30) <= 1
    assert result.ok == 0 and result.errored == 0
    assert result.failed == result.non_2xx == result.sent
    assert result.status_counts == {500: result.sent}
    assert result.errors == {}
    assert result.latencies_ms.size == 0
    assert np.isnan(result.percentile(50))
    assert result.rps == 0


def test_abrupt_closes_are_errors_and_the_run_goes_on(server):
    result = loadgen.run_constant_rate(
        "127.0.0.1", _port(server), "/drop", [b"{}"], rate=200, duration_s=0.5, connections=4
    )
    assert abs(result.sent - 100) <= 1
    assert result.sent == server.hits  # every request reached the server: reconnects worked
    assert result.errored == server.drops == result.sent // 3
    assert result.ok == result.sent - result.errored
    assert result.failed == result.errored and result.non_2xx == 0
    assert sum(result.errors.values()) == result.errored
    assert set(result.errors) <= {"ConnectionResetError", "IncompleteReadError"}
    _assert_latencies_sane(result)


def test_open_loop_latency_counts_queueing(server):
    """Offered 100/s to a one-connection pool that serves at most 50/s: the backlog grows, and
    latencies measured from the due instants must show it, as closed-loop ones cannot."""
    port = _port(server)
    opened = loadgen.run_constant_rate(
        "127.0.0.1", port, "/slow", [b"{}"], rate=100, duration_s=0.4, connections=1
    )
    assert opened.ok == opened.sent == 40
    assert opened.percentile(100) > 10 * SERVICE_S * 1000
    assert opened.latencies_ms[-1] > opened.latencies_ms[0]
    closed = loadgen.run_max_throughput(
        "127.0.0.1", port, "/slow", [b"{}"], duration_s=0.2, connections=1
    )
    assert closed.ok > 0
    assert closed.percentile(99) < 4 * SERVICE_S * 1000


def test_timeouts_tell_a_backlog_from_a_slow_answer(server):
    """Offered twice what one connection serves: requests that queued past the timeout are
    dropped unsent; the ones sent in time are served in full."""
    timeout_s = 0.1
    port = _port(server)
    backlog = loadgen.run_constant_rate(
        "127.0.0.1", port, "/slow", [b"{}"], 100, 0.3, connections=1, timeout_s=timeout_s
    )
    assert backlog.sent == 30
    assert backlog.ok > 0 and backlog.errored > 0
    assert backlog.ok + backlog.errored == backlog.sent
    assert backlog.errors == {"QueueTimeout": backlog.errored}
    assert server.hits == backlog.ok  # the expired ones never went out
    assert backlog.percentile(100) < 2 * timeout_s * 1000

    hits = server.hits
    slow = loadgen.run_max_throughput(
        "127.0.0.1", port, "/slow", [b"{}"], 0.1, connections=1, timeout_s=SERVICE_S / 4
    )
    assert slow.sent > 0 and slow.ok == 0
    # each timeout closes the connection, so the next request reconnects first: on a loaded
    # host the 5 ms can run out in the connect, before the request is written (ConnectTimeout)
    assert slow.errors.get("TimeoutError", 0) > 0, slow.errors
    assert set(slow.errors) <= {"TimeoutError", "ConnectTimeout"}, slow.errors
    assert sum(slow.errors.values()) == slow.sent
    written = slow.errors["TimeoutError"]
    # These were sent, then given up on; the server may still be reading the last of them.
    deadline = time.monotonic() + 2
    while server.hits - hits < written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.hits - hits == written


@pytest.mark.timeout(60)  # a hang is the kernel's 127 s of SYN retries per connect
def test_a_server_that_never_accepts_gives_connect_timeouts_and_the_run_still_ends():
    """A listener whose accept queue is full drops SYNs, and the kernel retries a connect for two
    minutes: the pool's handshakes and each request's reconnect are bounded by the timeout, and
    the failures say the requests never went out (the generator used to hang here)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # complete the handshakes the queue holds; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            result = loadgen.run_max_throughput(
                "127.0.0.1", port, "/", [b"{}"], 0.3, connections=2, timeout_s=0.05
            )
        finally:
            for filler in fillers:
                filler.close()
    assert result.sent > 0 and result.ok == 0
    assert result.errors == {"ConnectTimeout": result.sent}


def test_max_throughput(server):
    result = loadgen.run_max_throughput(
        "127.0.0.1", _port(server), "/", [b"{}"], duration_s=0.5, connections=4
    )
    assert result.ok > 0
    assert result.ok == result.sent == server.hits
    assert result.failed == 0
    assert result.duration_s >= 0.5
    assert result.rps == pytest.approx(result.ok / result.duration_s)
    _assert_latencies_sane(result)


@pytest.mark.parametrize("path", ["/chunked", "/close"])
def test_chunked_and_connection_close_answers_are_delimited(server, path):
    """A misread body would desynchronise the keep-alive stream and fail the requests after it."""
    result = loadgen.run_max_throughput(
        "127.0.0.1", _port(server), path, [b"{}"], duration_s=0.2, connections=2
    )
    assert result.ok > 10
    assert result.failed == 0


def test_async_variant_inside_a_running_loop(server):
    async def scenario():
        return await loadgen.arun_constant_rate(
            "127.0.0.1", _port(server), "/", [b"{}"], rate=50, duration_s=0.2, connections=2
        )

    result = asyncio.run(scenario())
    assert result.ok == result.sent == 10


def test_server_down_counts_refusals():
    nobody_listens = free_port()
    result = loadgen.run_constant_rate(
        "127.0.0.1", nobody_listens, "/", [b"{}"], rate=100, duration_s=0.1, connections=2
    )
    assert result.sent == 10
    assert result.errored == 10
    assert result.errors == {"ConnectionRefusedError": 10}


def test_rejects_empty_bodies():
    with pytest.raises(ValueError):
        loadgen.run_max_throughput("127.0.0.1", 1, "/", [], duration_s=0.1)


def test_cli_prints_the_summary(server, tmp_path, capsys):
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"a": 1}\n{"b": 2}\n\n')
    code = loadgen.main(
        [
            "--port",
            str(_port(server)),
            "--path",
            "/v1/score",
            "--body-file",
            str(bodies),
            "--rate",
            "50",
            "--duration",
            "0.2",
            "--header",
            "X-Bench: 1",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sent"] == summary["ok"] == 10
    assert set(server.bodies) == {b'{"a": 1}', b'{"b": 2}'}
    for key in ("failed", "rps", "p50", "p90", "p99", "max"):
        assert key in summary
