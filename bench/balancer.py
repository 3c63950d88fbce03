"""The scoring service at production shape (issue 12, item 2): two replicas sharing the online
features in Redis behind HAProxy (infra/haproxy/haproxy.cfg, the config the tests and compose
use), against one replica with its in-process store called directly (the shape before).

Why these figures. A balancer and a shared store add two loopback hops to every decision
(client -> HAProxy -> replica -> Redis); the open-loop p50/p99 at 200 and 500 requests/s say
what that costs at the rates a card issuer sees. Peak requests/s through the balancer for one
replica and for two says whether a second replica adds capacity on this machine (the two cores
also run the load generator, HAProxy and Redis, so it mostly adds availability); batch rows/s
the same way, since a batch is where a second core's worth of replica shows (a replica scores a
batch in a worker thread, one at a time). The failed
requests while one replica is killed with SIGKILL under 200 requests/s are the availability
figure: HAProxy's L7 retries (conn-failure, empty-response, response-timeout, 503) must leave
none to the client.

The world is bench/serve.py's (the seeded deployable world, built in a child process); its live
traffic is reused cyclically by the single-request phases (a reused transaction is observed
once by the shared store). The batch phases send new transactions, once each, to replicas of
their own on a state of 50,400 cards (bench/serve.py's `fresh_world`, at 10x: a 100x state
takes minutes to load into Redis); until 2026-12-07 they replayed the world's traffic, whose
rows were retries from the second request on.

Usage: .venv/bin/python bench/balancer.py [--quick] [--json PATH]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import Result, run_constant_rate, run_max_throughput  # noqa: E402
from bench.report import Report, arguments  # noqa: E402
from bench.serve import (  # noqa: E402
    HOST,
    FreshTraffic,
    Service,
    bodies_bytes,
    build_world,
    fresh_world,
    redis_server,
)
from fraudloop.model.registry import ModelRegistry  # noqa: E402
from tests.balancer import haproxy  # noqa: E402


@dataclass(frozen=True)
class Plan:
    rates: tuple[float, float] = (200.0, 500.0)
    latency_s: float = 15.0
    peak_s: float = 8.0
    peak_connections: int = 32
    kill_rate: float = 200.0
    kill_s: float = 12.0
    kill_at_s: float = 4.0
    batch_rows: int = 10_000
    batch_s: float = 30.0  # a bound: the batch phases send their new transactions once each
    batch_connections: int = 2
    # the batch phases' population (bench/serve.py's `fresh_world`): 4,200 transactions an hour
    # (10x the handbook's; a 100x state takes minutes to load into Redis), 8 days, and the new
    # transactions sent with two replicas and again with one
    batch_hour_tx: int = 4_200
    batch_state_days: int = 8
    batch_rows_sent: int = 300_000


QUICK = Plan(
    latency_s=2.0,
    peak_s=1.5,
    kill_s=4.0,
    kill_at_s=1.5,
    batch_rows=500,
    batch_s=10.0,
    batch_hour_tx=500,
    batch_state_days=2,
    batch_rows_sent=5_000,
)


def summary(result: Result) -> dict:
    return result.summary() | {"load_average": [round(v, 2) for v in os.getloadavg()]}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def warm(port: int, single: list[bytes]) -> None:
    run_constant_rate(HOST, port, "/v1/score", single, 100, 1.0)


def baseline(store, workdir: Path, single: list[bytes], plan: Plan) -> dict:
    """One replica, in-process online store, no balancer: the shape before issue 12."""
    service = Service(store, workdir, name="baseline")
    out: dict = {}
    try:
        service.wait_ready()
        warm(service.port, single)
        for rate in plan.rates:
            result = run_constant_rate(
                HOST, service.port, "/v1/score", single, rate, plan.latency_s
            )
            out[f"rate_{rate:.0f}"] = summary(result)
        service.terminate()
    finally:
        service.close()
    return out


@contextlib.contextmanager
def redis_replicas(store, workdir: Path, prefix: str, ready_timeout: float = 60):
    """Two scoring replicas on ``store`` sharing one Redis, ready; yields them with a dict that
    gets the tail of each one's stderr when they are stopped (SIGTERM at the end)."""
    stderr: dict[str, list[str]] = {}
    with redis_server(workdir) as (url, _client, _proc):
        env = {"FRAUDLOOP_ONLINE_STORE": "redis", "FRAUDLOOP_REDIS_URL": url}
        replicas = [Service(store, workdir, env, name=f"{prefix}-{k}") for k in (1, 2)]
        try:
            for replica in replicas:
                replica.wait_ready(timeout=ready_timeout)
            yield replicas, stderr
            for replica in replicas:
                replica.terminate()
        finally:
            for replica in replicas:
                lines = [line for line in replica.stderr_text().splitlines() if line.strip()]
                stderr[replica.stderr_path.stem] = lines[-10:]
                replica.close()


def with_balancer(store, workdir: Path, bodies: list[dict], plan: Plan) -> dict:
    """Two replicas on one Redis behind HAProxy: latency at each rate and peak with two
    replicas in rotation then one, then a replica killed under load (last: it leaves one
    replica)."""
    single = bodies_bytes(bodies)
    out: dict = {}
    with redis_replicas(store, workdir, "replica") as (replicas, _):
        addresses = [f"{HOST}:{r.port}" for r in replicas]
        with haproxy(addresses, workdir / "lb-2") as lb:
            wait_up(lb, 2)
            port = port_of(lb.url)
            warm(port, single)
            for rate in plan.rates:
                result = run_constant_rate(HOST, port, "/v1/score", single, rate, plan.latency_s)
                out[f"rate_{rate:.0f}"] = summary(result) | {"servers": lb.servers()}
            out["peak_2"] = summary(peak(port, single, plan))
        # one replica in rotation: both of HAProxy's slots point at replica 1
        with haproxy([addresses[0], addresses[0]], workdir / "lb-1") as lb:
            wait_up(lb, 2)
            out["peak_1"] = summary(peak(port_of(lb.url), single, plan))
        with haproxy(addresses, workdir / "lb-kill") as lb:
            wait_up(lb, 2)
            out["kill"] = kill_under_load(lb, replicas[0], single, plan)
    return out


def wait_up(lb, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(s == "UP" for s in lb.servers().values()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not UP behind HAProxy: {lb.servers()}")
        time.sleep(0.1)


def peak(port: int, single: list[bytes], plan: Plan) -> Result:
    return run_max_throughput(
        HOST, port, "/v1/score", single, plan.peak_s, connections=plan.peak_connections
    )


def balanced_batches(workdir: Path, plan: Plan) -> dict:
    """Batch rows/s of new transactions through HAProxy, two replicas on one Redis in rotation
    then one, against a state of a card issuer's size (`fresh_world`; the world's own traffic,
    replayed, would be retries from the second request on)."""
    rows = 2 * plan.batch_rows_sent
    store, traffic, world = fresh_world(workdir, plan.batch_hour_tx, plan.batch_state_days, rows)
    out: dict = {"world": world}
    started = time.perf_counter()
    with redis_replicas(store, workdir, "batch-replica", ready_timeout=600) as (replicas, logs):
        out["ready_s"] = round(time.perf_counter() - started, 1)
        addresses = [f"{HOST}:{r.port}" for r in replicas]
        for key, slots in (("batch_2", addresses), ("batch_1", [addresses[0]] * 2)):
            with haproxy(slots, workdir / f"lb-{key}") as lb:
                wait_up(lb, 2)
                out[key] = batch(port_of(lb.url), traffic, plan)
    out["replica_stderr"] = logs
    return out


def batch(port: int, traffic: FreshTraffic, plan: Plan) -> dict:
    """Batch rows/s through the balancer, closed loop, each new transaction sent once."""
    batches = traffic.take(plan.batch_rows_sent // plan.batch_rows, plan.batch_rows)
    result = run_max_throughput(
        HOST,
        port,
        "/v1/score/batch",
        batches,
        plan.batch_s,
        connections=plan.batch_connections,
        timeout_s=60,
        once=True,
    )
    rows_per_s = round(result.ok * plan.batch_rows / result.duration_s)
    return summary(result) | {"rows_per_request": plan.batch_rows, "rows_per_s": rows_per_s}


def kill_under_load(lb, victim: Service, single: list[bytes], plan: Plan) -> dict:
    """Open loop at ``kill_rate`` through the balancer; ``kill_at_s`` in, SIGKILL one replica."""
    killed_at: list[float] = []

    def kill() -> None:
        time.sleep(plan.kill_at_s)
        victim.proc.kill()
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    result = run_constant_rate(
        HOST, port_of(lb.url), "/v1/score", single, plan.kill_rate, plan.kill_s
    )
    killer.join()
    log = lb.log()
    retried = sum(1 for line in log.splitlines() if "/+" in line and "POST" in line)
    return summary(result) | {
        "rate": plan.kill_rate,
        "killed": bool(killed_at),
        "retried_by_haproxy": retried,
        "servers_after": lb.servers(),
    }


def main() -> None:
    args = arguments(__doc__).parse_args()
    plan = QUICK if args.quick else Plan()
    bench = Report("balancer", args)
    out: dict = {"plan": plan.__dict__, "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="fraudloop-bench-lb-") as tmp:
        workdir = Path(tmp)
        store, bodies, out["world"] = build_world(workdir)
        ModelRegistry(store).promote(1, to="production", actor="bench", reason="bench")
        single = bodies_bytes(bodies)
        out["baseline"] = baseline(store, workdir, single, plan)
        out["balancer"] = with_balancer(store, workdir, bodies, plan)
        out["balancer"] |= balanced_batches(workdir, plan)
    out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    figures(bench, out)
    bench.details = out
    bench.finish()


def figures(bench: Report, out: dict) -> None:
    base, lb = out["baseline"], out["balancer"]
    for rate in (200, 500):
        got, was = lb[f"rate_{rate}"], base[f"rate_{rate}"]
        bench.figure(
            f"lb_p99_{rate}_ms",
            f"single transaction through HAProxy, 2 replicas + Redis, open loop at {rate} req/s",
            got["p99"],
            "ms",
            text=f"p50 {got['p50']:.2f} ms, p99 {got['p99']:.2f} ms; failed "
            f"{got['failed']} of {got['sent']:,}",
            versus="1 replica, in-process store, no balancer, same rate",
            versus_value=was["p99"],
            versus_text=f"p50 {was['p50']:.2f} ms, p99 {was['p99']:.2f} ms",
            ratio_means="balanced p99 / single-process p99",
            target="p99 <= 10 ms",
        )
    two, one = lb["peak_2"], lb["peak_1"]
    connections = out["plan"]["peak_connections"]
    bench.figure(
        "lb_peak_rps",
        f"peak req/s through HAProxy, 2 replicas + Redis ({connections} connections)",
        two["rps"],
        "req/s",
        text=f"{two['rps']:,.0f} req/s",
        versus="1 replica in rotation, same balancer and Redis",
        versus_value=one["rps"],
        versus_text=f"{one['rps']:,.0f} req/s",
        ratio_means="2 replicas / 1 replica",
        target=">= 3,000 req/s",
    )
    two, one = lb["batch_2"], lb["batch_1"]
    bench.figure(
        "lb_batch_rows_s",
        f"batch rows/s of new transactions through HAProxy, 2 replicas + Redis, "
        f"{two['rows_per_request']:,}-row requests, {out['plan']['batch_connections']} "
        f"connections (online state: {lb['world']['days']} days at "
        f"{lb['world']['hour_tx']:,} transactions an hour, {lb['world']['customers']:,} cards)",
        two["rows_per_s"],
        "rows/s",
        text=f"{two['rows_per_s']:,} rows/s (p50 {two['p50']:.0f} ms, failed {two['failed']})",
        versus="1 replica in rotation, same balancer and Redis",
        versus_value=one["rows_per_s"],
        versus_text=f"{one['rows_per_s']:,} rows/s",
        ratio_means="2 replicas / 1 replica",
        target=">= 200,000 rows/s",
    )
    kill = lb["kill"]
    bench.figure(
        "kill_failed",
        f"failed requests while a replica is killed (SIGKILL) under {kill['rate']:.0f} req/s "
        "through HAProxy",
        kill["failed"],
        "requests",
        text=f"{kill['failed']} failed of {kill['sent']:,} ({kill['retried_by_haproxy']} "
        "retried by HAProxy)",
        versus="requests sent",
        versus_value=kill["sent"],
        versus_text=f"{kill['sent']:,}",
        ratio_means="failed / sent",
        target="0 failed",
    )


if __name__ == "__main__":
    main()
