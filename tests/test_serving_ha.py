"""Two scoring replicas sharing a real redis-server behind a real HAProxy (infra/haproxy/
haproxy.cfg), all real processes on loopback: a replica killed with SIGKILL under ~200 req/s
costs no request (the balancer retries on the other replica, which is safe because Redis
records each transaction once), a replica that loses its Redis is taken out of rotation and put
back when Redis returns, and a canary rollout splits and rolls back the same way on every
replica."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from fraudloop.delivery import rollout
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.live import bucket
from tests.balancer import haproxy
from tests.servers import TOKEN, redis_server, service_process, wait_until
from tests.serving_home import requests_of
from tests.test_serving_shared import redis_env

pytestmark = pytest.mark.slow


def replica_env(url: str, **extra: str) -> dict[str, str]:
    return {**redis_env(url), "FRAUDLOOP_ADMIN_TOKEN": TOKEN, **extra}


def host_port(base: str) -> str:
    return base.removeprefix("http://")


class Sender:
    """``threads`` clients through the balancer, together ``rate`` requests/s, each body once;
    records (transaction id, status, replica that answered) of every request."""

    def __init__(self, url: str, bodies: list[dict], rate: float, threads: int = 8):
        self.url, self.bodies, self.threads = url, bodies, threads
        self.interval = threads / rate
        self.results: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)
        ]

    def _run(self, k: int) -> None:
        mine = self.bodies[k :: self.threads]
        start = time.monotonic() + k * self.interval / self.threads
        with httpx.Client(timeout=30) as client:
            for i, body in enumerate(mine):
                delay = start + i * self.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    response = client.post(f"{self.url}/v1/score", json=body)
                    outcome = (response.status_code, response.headers.get("x-served-by", ""))
                except httpx.TransportError as error:
                    outcome = (0, f"{type(error).__name__}: {error} at {time.time():.3f}")
                with self._lock:
                    self.results.append((body["transaction_id"], *outcome))

    def start(self) -> Sender:
        for worker in self._workers:
            worker.start()
        return self

    def join(self) -> list[tuple[str, int, str]]:
        for worker in self._workers:
            worker.join(timeout=120)
        return self.results


def retried_requests(log: str) -> int:
    """Requests HAProxy's log shows with a retry (httplog: ``.../<retries>`` after the
    connection counts; ``+N`` when the retry was redispatched to another replica)."""
    counts = re.findall(r" \d+/\d+/\d+/\d+/(\+?\d+) \d+/\d+ ", log)
    return sum(int(c.lstrip("+")) > 0 for c in counts)


def test_killing_a_replica_under_load_loses_no_request(world, redis_url, tmp_path):
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    bodies = requests_of(traffic.head(1000))
    env = replica_env(redis_url)
    with (
        service_process(store, env=env) as (a, proc_a),
        service_process(store, env=env) as (b, _),
        haproxy([host_port(a), host_port(b)], tmp_path / "lb") as lb,
    ):
        wait_until(lambda: set(lb.servers().values()) == {"UP"}, what="both replicas UP")
        sender = Sender(lb.url, bodies, rate=200).start()  # ~5 s of traffic
        wait_until(lambda: len(sender.results) >= 300, timeout=60, what="traffic on both")
        proc_a.kill()  # SIGKILL: no graceful shutdown, connections reset mid-request
        proc_a.wait()
        results = sender.join()
        servers = lb.servers()
        log = lb.log()
        # each transaction counted once in the shared features, retried or not (/readyz
        # reports the count of its last poll)
        distinct = len({body["transaction_id"] for body in bodies})
        wait_until(
            lambda: httpx.get(f"{b}/readyz").json()["observed_transactions"] == distinct,
            what="every transaction observed once",
        )

    assert len(results) == len(bodies)
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:10]
    served_by = [r[2] for r in results]
    assert {"replica-1", "replica-2"} <= set(served_by[:250])  # both served before the kill
    assert set(served_by[-200:]) == {"replica-2"}  # then only the survivor
    assert servers["replica-1"].startswith("DOWN") and servers["replica-2"] == "UP"
    # some requests were sent to the dead replica and answered by the other one
    assert retried_requests(log) >= 1, log[-3000:]


def test_a_replica_that_loses_its_redis_is_taken_out_and_comes_back(world, redis_url, tmp_path):
    """Replica 2 reaches Redis through its own server (a partition between one replica and
    Redis): when that Redis dies, /readyz turns 503, HAProxy's checks take replica 2 out, the
    requests it refused meanwhile (503, before any state change) are retried on replica 1; when
    Redis is back, replica 2 reloads the state and returns to rotation."""
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    bodies = requests_of(traffic.head(1200))
    with redis_server(tmp_path / "redis-b") as (url_b, redis_b):
        port_b = int(url_b.rsplit(":", 1)[1].split("/")[0])
        with (
            service_process(store, env=replica_env(redis_url)) as (a, _),
            service_process(store, env=replica_env(url_b)) as (b, _),
            haproxy([host_port(a), host_port(b)], tmp_path / "lb") as lb,
        ):
            wait_until(lambda: set(lb.servers().values()) == {"UP"}, what="both replicas UP")
            sender = Sender(lb.url, bodies[:600], rate=150).start()
            wait_until(lambda: len(sender.results) >= 150, timeout=60, what="traffic")
            redis_b.kill()
            redis_b.wait()
            wait_until(lambda: lb.servers()["replica-2"].startswith("DOWN"), what="replica 2 out")
            assert httpx.get(f"{b}/readyz").status_code == 503
            assert "Redis" in httpx.get(f"{b}/readyz").json()["errors"]["features"]
            out = sender.join()
            with redis_server(tmp_path / "redis-b2", port=port_b):
                wait_until(lambda: lb.servers()["replica-2"] == "UP", what="replica 2 back")
                back = Sender(lb.url, bodies[600:], rate=150).start().join()

    assert [r for r in out + back if r[1] != 200] == []
    answered_by = [r[2] for r in out]
    assert answered_by[-100:] == ["replica-1"] * 100  # out of rotation at the end
    assert "replica-2" in {r[2] for r in back}  # and back in


def test_when_no_replica_is_ready_for_a_shared_cause_the_live_ones_still_answer(
    world, redis_url, tmp_path
):
    """The registry unreadable (as with S3 down) past the readiness window: every replica is
    not ready, yet each still scores from its loaded model and Redis. HAProxy sends the traffic
    to the live replicas (/healthz) instead of refusing every decision, and goes back to routing
    on readiness when the registry is readable again."""
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    bodies = requests_of(traffic.head(300))
    key = "models/fraud/aliases.json"
    good = store.get_bytes(key)
    env = replica_env(redis_url, FRAUDLOOP_SERVE_READY_MAX_SYNC_AGE_SECONDS="1")
    with (
        service_process(store, env=env) as (a, _),
        service_process(store, env=env) as (b, _),
        haproxy([host_port(a), host_port(b)], tmp_path / "lb") as lb,
        httpx.Client(timeout=30) as client,
    ):
        wait_until(lambda: set(lb.servers().values()) == {"UP"}, what="both replicas UP")
        store.put_bytes(key, b"{ not json")  # the registry cannot be read by any replica
        wait_until(
            lambda: all(s.startswith("DOWN") for s in lb.servers().values()), what="none ready"
        )
        assert client.get(f"{a}/readyz").status_code == 503
        during = [client.post(f"{lb.url}/v1/score", json=body) for body in bodies[:100]]
        store.put_bytes(key, good)
        wait_until(lambda: set(lb.servers().values()) == {"UP"}, what="ready again")
        after = [client.post(f"{lb.url}/v1/score", json=body) for body in bodies[100:]]

    assert [r.status_code for r in during + after] == [200] * len(bodies)
    assert {r.json()["model_version"] for r in during} == {1}
    assert {r.headers["x-served-by"] for r in during} <= {"replica-1-alive", "replica-2-alive"}
    assert {r.headers["x-served-by"] for r in after} <= {"replica-1", "replica-2"}


def roles_by_customer(answers: list[tuple[dict, dict, int]]) -> dict[str, set[tuple[str, int]]]:
    """{card: the (role, model version) pairs its transactions were answered with}"""
    out: dict[str, set[tuple[str, int]]] = {}
    for body, answer, _ in answers:
        out.setdefault(body["customer_id"], set()).add((answer["role"], answer["model_version"]))
    return out


def cards_on_both(answers: list[tuple[dict, dict, int]]) -> int:
    """Cards whose transactions were answered by both replicas."""
    replicas: dict[str, set[int]] = {}
    for body, _, replica in answers:
        replicas.setdefault(body["customer_id"], set()).add(replica)
    return sum(len(r) == 2 for r in replicas.values())


def test_a_canary_rollout_splits_and_rolls_back_alike_on_every_replica(world, redis_url):
    """The canary split is a keyed hash of the card (fraudloop.serving.live.bucket), not a
    per-process random draw: two replicas with different hash seeds send every card the same
    way, share changes and the rollback reach both (they follow the same rollout document)."""
    store, traffic = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="test", reason="test setup")
    rollout.start(store, registry, 3, actor="test", reason="canary across replicas")
    rollout.set_share(store, "fraud", 0.3, actor="test", reason="split test")
    bodies = requests_of(traffic.head(900))
    with (
        service_process(store, env=replica_env(redis_url, PYTHONHASHSEED="1")) as (a, _),
        service_process(store, env=replica_env(redis_url, PYTHONHASHSEED="2")) as (b, _),
        httpx.Client(timeout=30) as client,
    ):
        replicas = [a, b]

        def deployments() -> list[dict]:
            return [client.get(f"{base}/v1/deployment").json() for base in replicas]

        def score(part: list[dict]) -> list[tuple[dict, dict, int]]:
            out = []
            for i, body in enumerate(part):  # alternate: a card's transactions reach both
                response = client.post(f"{replicas[i % 2]}/v1/score", json=body)
                assert response.status_code == 200, response.text
                out.append((body, response.json(), i % 2))
            return out

        wait_until(lambda: all(d["canary_share"] == 0.3 for d in deployments()), what="share")
        first = score(bodies[:400])
        # an operator moves the share on one replica: both follow the rollout document
        moved = client.post(
            f"{a}/admin/traffic",
            json={"canary_share": 0.6, "reason": "widen"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert moved.status_code == 200, moved.text
        wait_until(lambda: all(d["canary_share"] == 0.6 for d in deployments()), what="0.6")
        assert len({d["revision"] for d in deployments()}) == 1
        second = score(bodies[400:700])
        rollout.abort(store, registry, actor="test", reason="roll back")
        wait_until(
            lambda: all("canary" not in d["deployment"] for d in deployments()), what="rollback"
        )
        third = roles_by_customer(score(bodies[700:]))

    for share, answers in ((0.3, first), (0.6, second)):
        by_customer = roles_by_customer(answers)
        for customer, roles in by_customer.items():
            want = ("canary", 3) if bucket(customer, 3) < share else ("production", 1)
            assert roles == {want}, (customer, share, roles)
        assert cards_on_both(answers) > 20  # the same card, answered alike by both replicas
        on_canary = [roles == {("canary", 3)} for roles in by_customer.values()]
        assert 0 < sum(on_canary) < len(on_canary)  # a split, not all one way
    assert set().union(*third.values()) == {("production", 1)}
