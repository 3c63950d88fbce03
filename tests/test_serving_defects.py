"""The scoring service against the review's defects (issue 12), over real HTTP: future-dated
transactions, the scoring token, tampered packages, readiness that follows the store, overload,
slow clients, and a `kill -9` that must not lose logged decisions."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time

import httpx
import pytest

from fraudloop.core.ports import free_port
from fraudloop.core.settings import Settings
from fraudloop.core.store import sha256_hex
from fraudloop.delivery.package import MANIFEST, MODEL_FILE, SPEC_FILE, package_prefix
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.model.evaluation import Evaluation, write_evaluation
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.__main__ import open_store
from tests.servers import config, service_process, service_thread, wait_until
from tests.serving_home import requests_of

pytestmark = pytest.mark.slow


def promote(store, version: int) -> None:
    ModelRegistry(store).promote(version, to="production", actor="test", reason="test setup")


def status(base: str) -> httpx.Response:
    return httpx.get(f"{base}/readyz")


def test_future_dated_transactions_are_refused_and_scoring_needs_the_token(world):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic.head(3))
    token = "score-token-for-tests"
    with service_thread(store, config(score_token=token)) as (base, app), httpx.Client() as c:
        url = f"{base}/v1/score"
        assert c.post(url, json=bodies[0]).status_code == 401
        assert c.post(url, json=bodies[0], headers={"Authorization": token}).status_code == 401
        lower = {"Authorization": f"bearer {token}"}  # the scheme is case-insensitive
        assert c.post(url, json=bodies[0], headers=lower).status_code == 200
        observed = app.state.service.follower.features.observed

        future = {**bodies[1], "tx_datetime": "2100-01-01T00:00:00"}
        response = c.post(url, json=future, headers=lower)
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "tx_datetime"] and "future" in error["msg"]

        batch = {"transactions": [bodies[1], future, bodies[2]]}
        response = c.post(f"{base}/v1/score/batch", json=batch, headers=lower)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "transactions", 1, "tx_datetime"]
        assert app.state.service.follower.features.observed == observed  # nothing observed
        # a batch is validated in the worker thread: the same 422s, naming the row and field
        bad = {"transactions": [bodies[1], {**bodies[2], "amount": -1}]}
        response = c.post(f"{base}/v1/score/batch", json=bad, headers=lower)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "transactions", 1, "amount"]
        response = c.post(f"{base}/v1/score/batch", content=b"{nope", headers=lower)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body"
    assert not store.list("predictions/2100")
    assert len(read_predictions(store)) == 1


def retamper(store, version: int, edit) -> None:
    """Rewrite a stored package with `edit(files)` and a manifest recomputed to match, as
    someone with write access to the packages could."""
    prefix = package_prefix("fraud", version)
    manifest = json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    files = {name: store.get_bytes(f"{prefix}/{name}") for name in manifest["files"]}
    edit(files)
    for name, data in files.items():
        store.put_bytes(f"{prefix}/{name}", data)
        manifest["files"][name] = {"sha256": sha256_hex(data), "size": len(data)}
    manifest["model_sha256"] = sha256_hex(files[MODEL_FILE])
    body = {k: v for k, v in manifest.items() if k != "package_sha256"}
    manifest["package_sha256"] = sha256_hex(json.dumps(body, sort_keys=True).encode())
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest).encode())


def set_spec(files: dict, **changes) -> None:
    spec = json.loads(files[SPEC_FILE])
    files[SPEC_FILE] = json.dumps({**spec, **changes}).encode()


def test_packages_that_disagree_with_the_registry_are_refused(world):
    store, _ = world
    record = Evaluation(1, None, 0.5, {}, {}, None, {}, "report", "2018-04-09T00:00:00Z")
    write_evaluation(store, record)  # v1 was evaluated (and packaged) at 0.5
    retamper(store, 1, lambda files: set_spec(files, decision_threshold=0.999))

    def other_model(files: dict) -> None:
        files[MODEL_FILE] = files[MODEL_FILE].replace(b"tree", b"tree ", 1)
        set_spec(files, model_sha256=sha256_hex(files[MODEL_FILE]))

    retamper(store, 3, other_model)
    with service_thread(store, ready=False) as (base, _):
        promote(store, 1)
        wait_until(lambda: "production" in status(base).json()["errors"], what="refusal")
        response = status(base)
        assert response.status_code == 503
        assert (
            "threshold 0.999 differs from the 0.5 recorded"
            in response.json()["errors"]["production"]
        )
        promote(store, 3)
        wait_until(lambda: "v3" in status(base).json()["errors"].get("production", ""), what="v3")
        assert "not registry version 3's model" in status(base).json()["errors"]["production"]
        assert status(base).status_code == 503
        promote(store, 2)  # an untampered version is served
        wait_until(lambda: status(base).status_code == 200, what="v2 ready")


def test_readiness_follows_the_registry_and_recovers(world):
    store, _ = world
    promote(store, 1)
    key = "models/fraud/aliases.json"
    good = store.get_bytes(key)
    with service_thread(store, config(ready_max_sync_age_seconds=1.0)) as (base, _):
        store.put_bytes(key, b"{ not json")  # the registry becomes unreadable
        wait_until(lambda: status(base).status_code == 503, timeout=10, what="not ready")
        assert "sync" in status(base).json()["errors"]
        store.put_bytes(key, good)
        wait_until(lambda: status(base).status_code == 200, timeout=10, what="ready again")
        assert "sync" not in status(base).json()["errors"]
    store.put_bytes(key, b"{ not json")  # unreadable at start: not ready, then recovers
    with service_thread(store, ready=False) as (base, _):
        assert status(base).status_code == 503
        store.put_bytes(key, good)
        wait_until(lambda: status(base).status_code == 200, timeout=10, what="recovered")
        assert status(base).json()["errors"] == {}


def test_overload_is_shed_with_503_and_retry_after(world):
    store, traffic = world
    promote(store, 1)
    batch = {"transactions": requests_of(traffic.head(3000))}
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        response = httpx.post(f"{base}/v1/score/batch", json=batch, timeout=60)
        with lock:
            results.append(response)

    with service_thread(store, config(max_in_flight=2, retry_after_seconds=3)) as (base, _):
        senders = [threading.Thread(target=send) for _ in range(8)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        shed = [r for r in results if r.status_code == 503]
        assert shed and all(r.headers["retry-after"] == "3" for r in shed)
        assert all("overloaded" in r.json()["detail"] for r in shed)
        assert {r.status_code for r in results} == {200, 503}
        # once the load is gone, requests are answered again
        assert httpx.post(f"{base}/v1/score", json=batch["transactions"][0]).status_code == 200


def test_half_sent_request_heads_are_closed_and_do_not_block_others(world):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic.head(20))
    env = {"FRAUDLOOP_SERVE_HEADER_TIMEOUT_SECONDS": "2"}
    with service_process(store, env=env) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        slow = []
        try:
            for _ in range(300):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Ty")
                slow.append(sock)
            opened = time.monotonic()
            with httpx.Client() as client:
                for body in bodies:
                    assert client.post(f"{base}/v1/score", json=body).status_code == 200
            for sock in slow:  # each is closed by the server: recv sees EOF, not a timeout
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1024) == b""
            assert time.monotonic() - opened < 9  # the deadline, not the client's 10 s timeout
        finally:
            for sock in slow:
                sock.close()


def test_a_body_that_does_not_arrive_is_answered_408(world):
    store, _ = world
    promote(store, 1)
    with service_thread(store, config(body_timeout_seconds=1.0)) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(head + b"Content-Length: 200\r\n\r\n" + b'{"transaction_id": "T')
            started = time.monotonic()
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"not received within 1 s" in answer
            assert time.monotonic() - started < 5
        assert status(base).status_code == 200  # and the service goes on


def test_no_answer_without_its_log_record(world, tmp_path):
    store, traffic = world
    promote(store, 1)
    body = requests_of(traffic.head(1))[0]
    spool = tmp_path / "spool"
    with service_thread(store, config(spool_dir=str(spool))) as (base, _):
        shutil.rmtree(spool)
        spool.write_text("a file where the spool directory was: every write fails")
        response = httpx.post(f"{base}/v1/score", json=body)
        assert response.status_code == 503, response.text
        assert "could not be logged" in response.json()["detail"]
    assert read_predictions(store).empty


def test_kill_9_after_answers_loses_no_logged_decision(world, tmp_path):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic.head(400))
    env = {
        "FRAUDLOOP_SERVE_SPOOL_DIR": str(tmp_path / "spool"),
        "FRAUDLOOP_SERVE_FLUSH_SECONDS": "3600",  # only a start or a shutdown drains the spool
        "FRAUDLOOP_LOG_PSEUDONYM_KEY": "test-only-pseudonym-key",
    }
    with service_process(store, env=env) as (base, proc), httpx.Client() as client:
        for body in bodies[:100]:
            assert client.post(f"{base}/v1/score", json=body).status_code == 200
        response = client.post(f"{base}/v1/score/batch", json={"transactions": bodies[100:]})
        assert response.status_code == 200
        proc.kill()
        proc.wait(timeout=10)
    assert len(read_predictions(store)) < 400  # the store had not got them: the spool had
    with service_process(store, env=env) as (base, _):
        wait_until(lambda: len(read_predictions(store)) == 400, what="spool drained")
    log = read_predictions(store)
    assert sorted(log["transaction_id"]) == sorted(b["transaction_id"] for b in bodies)
    files = store.list("predictions/")
    assert all(info.key.endswith(".parquet") for info in files)
    sent_cards = {b["customer_id"] for b in bodies}
    assert not sent_cards & set(log["customer_id"])  # pseudonymised
    assert log.groupby("transaction_id")["customer_id"].nunique().max() == 1


class Cuttable:
    """A TCP forwarder in front of a real server that can be cut (listener and every connection
    closed: the store is unreachable) and restored on the same port."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.listener.close()
        for sock in self.conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.conns = []


def test_readiness_follows_an_s3_outage_and_recovers(world, s3_endpoint, s3_bucket):
    local, traffic = world
    promote(local, 1)
    proxy = Cuttable(int(s3_endpoint.rsplit(":", 1)[1]))
    settings = Settings(
        store_backend="s3",
        s3_bucket=s3_bucket,
        s3_prefix="fl",
        s3_endpoint_url=f"http://127.0.0.1:{proxy.port}",
        aws_region="us-east-1",
    )
    store = open_store(settings, 1.0)  # the service's client: short timeouts
    for prefix in ("models/", "featurestore/", "features/blocks/"):  # the state and its pieces
        for info in local.list(prefix):
            store.put_bytes(info.key, local.get_bytes(info.key))
    body = requests_of(traffic.head(1))[0]
    serve = config(ready_max_sync_age_seconds=2.0, log_predictions=False)
    try:
        with service_thread(store, serve) as (base, _):
            proxy.cut()
            wait_until(lambda: status(base).status_code == 503, timeout=20, what="not ready")
            assert "sync" in status(base).json()["errors"]
            # the loaded model and features still answer; readiness tells the balancer
            assert httpx.post(f"{base}/v1/score", json=body).status_code == 200
            proxy.restore()
            wait_until(lambda: status(base).status_code == 200, timeout=20, what="ready again")
            assert status(base).json()["errors"] == {}
    finally:
        proxy.cut()
