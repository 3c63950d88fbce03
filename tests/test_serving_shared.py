"""Scoring replicas sharing the Redis online store, as real service processes on a real
redis-server: interleaved traffic gets exactly the answers one in-process replica gives for the
same sequence, the features they used are the offline features of those hours, and a replica
whose Redis is unreachable answers 503 and is not ready, then recovers by itself."""

from __future__ import annotations

import random
import shutil
import signal
import threading

import httpx
import numpy as np
import pandas as pd
import pytest

from fraudloop.core import tables
from fraudloop.core.store import LocalObjectStore
from fraudloop.delivery.package import load_package
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.feature_store import load_online
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.live import LiveFeatures, feature_hash
from tests.factories import store_history
from tests.servers import config, redis_server, service_process, service_thread, wait_until
from tests.serving_home import LABEL_DELAY, START, requests_of

pytestmark = pytest.mark.slow
REPLICAS = 2


def redis_env(url: str) -> dict[str, str]:
    return {
        "FRAUDLOOP_ONLINE_STORE": "redis",
        "FRAUDLOOP_REDIS_URL": url,
        # a behaviour test on a shared, loaded machine: no spurious timeout (default 0.25 s)
        "FRAUDLOOP_REDIS_TIMEOUT_SECONDS": "2",
        "FRAUDLOOP_SERVE_POLL_SECONDS": "0.2",
        "FRAUDLOOP_SERVE_FLUSH_SECONDS": "0.5",
    }


def post(client: httpx.Client, base: str, body: dict) -> dict:
    response = client.post(f"{base}/v1/score", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_replicas_sharing_redis_answer_exactly_what_one_in_process_replica_answers(
    world, redis_url, tmp_path
):
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    shutil.copytree(store.root, tmp_path / "reference")
    reference_store = LocalObjectStore(tmp_path / "reference")
    # the first hours of the traffic, about 150 transactions (whole hours)
    of_hour = traffic["tx_datetime"].dt.floor("h")
    hours = sorted(of_hour.unique())
    last = next(h for h in hours if (of_hour <= h).sum() >= 150)
    todays = traffic[of_hour <= last].reset_index(drop=True)
    bodies = requests_of(todays)
    assert todays["customer_id"].duplicated().any() and todays["terminal_id"].duplicated().any()
    # the sequence: every transaction once, in time order, with client retries of some
    rng = random.Random(12)
    sequence = []
    for body in bodies:
        sequence.append(body)
        if rng.random() < 0.15:
            sequence.append(body)

    env = redis_env(redis_url)
    with (
        service_process(store, env=env) as (a, _),
        service_process(store, env=env) as (b, _),
        service_thread(reference_store) as (reference, _),
        httpx.Client() as client,
    ):
        replicas = [a, b]
        for base in replicas:
            assert client.get(f"{base}/readyz").json()["features_state_hour"] is not None
        answered = []
        for i, body in enumerate(sequence):
            got = post(client, replicas[rng.randrange(REPLICAS)], body)
            want = post(client, reference, body)
            assert got["score"] == want["score"], (i, body["transaction_id"])
            assert got["decision"] == want["decision"]
            answered.append(got["score"])
        assert len({round(s, 12) for s in answered}) > 5  # not a constant model
        # the shared overlay holds each transaction once, whichever replica saw it
        status = [client.get(f"{base}/readyz").json() for base in replicas]
        wait_until(
            lambda: all(
                client.get(f"{base}/readyz").json()["observed_transactions"] == len(bodies)
                for base in replicas
            ),
            what="both replicas report the shared overlay",
        )
        assert {s["features_state_hour"] for s in status} == {status[0]["features_state_hour"]}

    # The features the replicas used (their prediction logs' hashes) are those of the in-process
    # store fed the same sequence, and those are the offline features of the hour.
    log = read_predictions(store, dedupe=False).sort_values("served_at", kind="stable")
    first = log.drop_duplicates("transaction_id")
    assert len(log) == len(sequence) and len(first) == len(bodies)
    online, _ = load_online(reference_store)
    memory = LiveFeatures(store=None, prefix="unused")
    memory._online = online
    records = todays.to_dict("records")
    served = {}
    for body in sequence:
        rec = records[[r["transaction_id"] for r in records].index(body["transaction_id"])]
        values = memory.features_and_observe(rec)
        served.setdefault(rec["transaction_id"], values)
    slot_order = load_package(store, "fraud", 1).spec["features"]  # the model's inputs
    for row in first.itertuples():
        assert row.feature_hash == feature_hash([served[row.transaction_id][n] for n in slot_order])

    keys = [h.strftime("%Y-%m-%d-%H:%M") for h in hours if h <= last]
    # their labels would be known the next day: not in store yet, as when the hours were served
    store_history(store, todays.assign(is_fraud=0), keys, label_delay=LABEL_DELAY)
    compute_feature_hours(store, keys, label_delay=LABEL_DELAY, history_start=str(START))
    offline = pd.concat(
        [tables.read_partition(store, "transaction_features", key) for key in keys]
    ).set_index("transaction_id")
    assert sorted(offline.index.astype(str)) == sorted(served)
    for tid, values in served.items():
        np.testing.assert_allclose(
            np.array([values[n] for n in FEATURE_NAMES]),
            offline.loc[tid, list(FEATURE_NAMES)].to_numpy(dtype=float),
            rtol=0,
            atol=1e-9,
            err_msg=tid,
        )


def test_a_replica_without_redis_is_not_ready_and_answers_503_then_recovers(world, tmp_path):
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    body = requests_of(traffic.head(2))
    with redis_server(tmp_path / "redis-a") as (url, proc):
        port = url.rsplit(":", 1)[1].split("/")[0]
        serve_config = config(online_store="redis", redis_url=url, redis_timeout_seconds=1.0)
        with service_thread(store, serve_config) as (base, _), httpx.Client() as client:
            assert post(client, base, body[0])["model_version"] == 1
            proc.kill()
            proc.wait()
            response = client.post(f"{base}/v1/score", json=body[1])
            assert response.status_code == 503, response.text
            # the call finds Redis gone ("online features unavailable: Redis: ...") unless the
            # follower's poll found it first and unloaded them ("not ready: no verified model or
            # online features loaded"): both name the features
            assert "online features" in response.json()["detail"], response.text
            assert response.headers["retry-after"] == "1"
            # not ready at once (the failed call), and the next poll says why
            assert client.get(f"{base}/readyz").status_code == 503
            wait_until(
                lambda: (
                    "Redis" in client.get(f"{base}/readyz").json()["errors"].get("features", "")
                ),
                what="the reason on /readyz",
            )
            assert client.get(f"{base}/readyz").status_code == 503
            # Redis back on the same port (empty: no persistence): reloaded, ready, scoring
            with redis_server(tmp_path / "redis-b", port=int(port)):
                wait_until(lambda: client.get(f"{base}/readyz").status_code == 200, what="ready")
                assert post(client, base, body[1])["model_version"] == 1
                wait_until(
                    lambda: client.get(f"{base}/readyz").json()["observed_transactions"] == 1,
                    what="the new Redis's overlay on /readyz",
                )


def in_flight(client: httpx.Client, base: str) -> float:
    """The service's ``fraudloop_scoring_in_flight`` gauge, read from /metrics."""
    text = client.get(f"{base}/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith("fraudloop_scoring_in_flight ")]
    assert len(lines) == 1, text[-2000:]
    return float(lines[0].split()[1])


def test_a_hung_redis_holds_only_the_request_waiting_on_it_not_the_event_loop(world, tmp_path):
    """Redis stopped (SIGSTOP: its connections stay open, nothing answers) while a single
    request waits on it: health and metrics answer meanwhile, the metrics showing that request
    in flight; once Redis resumes, the request gets its answer (or the timeout's 503) and the
    replica scores again."""
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    body = requests_of(traffic.head(2))
    with redis_server(tmp_path / "redis") as (url, proc):
        serve_config = config(online_store="redis", redis_url=url, redis_timeout_seconds=8.0)
        with service_thread(store, serve_config) as (base, _), httpx.Client() as client:
            assert post(client, base, body[0])["model_version"] == 1
            assert in_flight(client, base) == 0
            answer: dict = {}

            def score() -> None:
                with httpx.Client(timeout=60) as own:
                    answer["response"] = own.post(f"{base}/v1/score", json=body[1])

            waiting = threading.Thread(target=score)
            proc.send_signal(signal.SIGSTOP)
            try:
                waiting.start()
                # on the event loop, the scoring call would hold /metrics until its timeout
                # (8 s), and the gauge would read 0 by then
                wait_until(lambda: in_flight(client, base) == 1, what="the request in flight")
                assert client.get(f"{base}/healthz", timeout=30).status_code == 200
                assert waiting.is_alive(), "the request was answered while Redis was stopped"
            finally:
                proc.send_signal(signal.SIGCONT)
            waiting.join(timeout=60)
            response = answer["response"]
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert "online features" in response.json()["detail"], response.text
            wait_until(lambda: client.get(f"{base}/readyz").status_code == 200, what="ready")
            assert post(client, base, body[1])["model_version"] == 1
            assert in_flight(client, base) == 0
