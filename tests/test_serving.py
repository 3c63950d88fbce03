"""The scoring service over real HTTP: contract, errors, parity with batch scoring, canary split,
shadow isolation, fallback, hot swaps under load, rollback via the CLI, and the prediction log
across a graceful restart."""

import json
import math
import signal
import threading
import time

import httpx
import jsonschema
import numpy as np
import pytest

from fraudloop.delivery import rollout
from fraudloop.delivery.package import load_package
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.delivery.scoring import score_transactions
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.live import bucket
from pipelines.cli import main
from tests.servers import TOKEN, config, service_process, service_thread, wait_until
from tests.serving_home import requests_of

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def promote(store, version: int, to: str = "production") -> None:
    ModelRegistry(store).promote(version, to=to, actor="test", reason="test setup")


def deployment(base: str) -> dict:
    return httpx.get(f"{base}/v1/deployment").json()


def score_all(client: httpx.Client, base: str, bodies: list[dict], singles: int) -> dict:
    """The first `singles` one by one, the rest as one batch: {transaction_id: answer}."""
    answers = {}
    for body in bodies[:singles]:
        response = client.post(f"{base}/v1/score", json=body)
        assert response.status_code == 200, response.text
        answers[body["transaction_id"]] = response.json()
    if bodies[singles:]:
        response = client.post(f"{base}/v1/score/batch", json={"transactions": bodies[singles:]})
        assert response.status_code == 200, response.text
        answers.update({a["transaction_id"]: a for a in response.json()["scores"]})
    return answers


@pytest.mark.slow
def test_scores_match_batch_scoring_and_the_schema(world):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic.head(400))
    package = load_package(store, "fraud", 1)
    single_schema = json.loads(package.files["response.schema.json"])
    batch_schema = json.loads(package.files["batch_response.schema.json"])
    with service_thread(store) as (base, _), httpx.Client() as client:
        answers = score_all(client, base, bodies, singles=100)
        jsonschema.validate(answers[bodies[0]["transaction_id"]], single_schema)
        response = client.post(f"{base}/v1/score/batch", json={"transactions": bodies[-3:]})
        jsonschema.validate(response.json(), batch_schema)
    # the same transactions through the batch scorer (online store, time order): same scores
    expected = score_transactions(store, ModelRegistry(store), 1, traffic.head(400))
    got = np.array([answers[t]["score"] for t in expected["transaction_id"]])
    assert np.abs(got - expected["score"].to_numpy()).max() <= 1e-12
    first = answers[bodies[0]["transaction_id"]]
    assert first["model_version"] == 1 and first["role"] == "production"
    assert first["decision"] == ("review" if first["score"] >= first["threshold"] else "approve")
    assert len({a["request_id"] for a in answers.values()}) == 101  # 100 singles + 1 batch


@pytest.mark.slow
def test_bad_requests_get_4xx_naming_the_problem(world):
    store, traffic = world
    promote(store, 1)
    good = requests_of(traffic.head(1))[0]
    with service_thread(store, config(max_body_bytes=4096)) as (base, _), httpx.Client() as c:
        cases = [
            ({k: v for k, v in good.items() if k != "amount"}, "amount"),
            ({**good, "amount": 0}, "amount"),
            ({**good, "amount": "NaN"}, "amount"),
            ({**good, "tx_datetime": "2018-13-45"}, "tx_datetime"),
            ({**good, "customer_id": ""}, "customer_id"),
            ({**good, "customer_id": "x" * 65}, "customer_id"),
            ({**good, "extra": 1}, "extra"),
            ({**good, "tx_datetime": "2018-04-01T00:00:00"}, "tx_datetime"),  # older than state
        ]
        for body, field in cases:
            response = c.post(f"{base}/v1/score", json=body)
            assert response.status_code == 422, (body, response.text)
            assert field in json.dumps(response.json()["detail"]), response.text
        response = c.post(
            f"{base}/v1/score", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        too_big = {"transactions": [good] * 100}
        response = c.post(f"{base}/v1/score/batch", json=too_big)
        assert response.status_code == 413 and "limit" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold while streaming too
            for _ in range(10):
                yield b" " * 1000

        response = c.post(
            f"{base}/v1/score", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        # a rejected request changed nothing: the service still answers
        assert c.post(f"{base}/v1/score", json=good).status_code == 200

        # admin: 401 without / with a wrong token, 200 with it
        assert c.post(f"{base}/admin/reload").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert c.post(f"{base}/admin/reload", headers=wrong).status_code == 401
        assert c.post(f"{base}/admin/reload", headers=AUTH).status_code == 200
        body = {"canary_share": 1.5, "reason": "x"}
        assert c.post(f"{base}/admin/traffic", json=body, headers=AUTH).status_code == 422
        body = {"canary_share": 0.5, "reason": "no rollout running"}
        assert c.post(f"{base}/admin/traffic", json=body, headers=AUTH).status_code == 409

    with service_thread(store, config(admin_token=None)) as (base, _):
        response = httpx.post(f"{base}/admin/reload", headers=AUTH)
        assert response.status_code == 403 and "FRAUDLOOP_ADMIN_TOKEN" in response.text


@pytest.mark.slow
def test_not_ready_without_a_verified_model(world):
    store, traffic = world
    good = requests_of(traffic.head(1))[0]
    with service_thread(store, ready=False) as (base, _):
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        refused = httpx.post(f"{base}/v1/score", json=good)
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()  # clients and the balancer try again
        # tamper with v1's package, then promote it: the service refuses it and stays unready
        key = "models/fraud/packages/1/model.txt"
        store.put_bytes(key, store.get_bytes(key).replace(b"tree", b"tree ", 1))
        promote(store, 1)
        wait_until(lambda: "production" in deployment(base)["errors"], what="refusal")
        status = httpx.get(f"{base}/readyz")
        assert status.status_code == 503
        assert "does not match the manifest sha256" in status.json()["errors"]["production"]


@pytest.mark.slow
def test_canary_share_is_stable_and_within_tolerance(world):
    store, traffic = world
    promote(store, 1)
    rollout.start(store, ModelRegistry(store), 3, actor="test", reason="canary test")
    rollout.set_share(store, "fraud", 0.3, actor="test", reason="share test")
    bodies = requests_of(traffic)
    with service_thread(store) as (base, _), httpx.Client() as client:
        wait_until(lambda: deployment(base)["canary_share"] == 0.3, what="share")
        answers = score_all(client, base, bodies, singles=300)
    by_customer: dict[str, set] = {}
    for body in bodies:
        by_customer.setdefault(body["customer_id"], set()).add(
            answers[body["transaction_id"]]["role"]
        )
    assert all(len(roles) == 1 for roles in by_customer.values())  # sticky per card
    canary_customers = sum(roles == {"canary"} for roles in by_customer.values())
    share = canary_customers / len(by_customer)
    sd = math.sqrt(0.3 * 0.7 / len(by_customer))
    assert abs(share - 0.3) <= 4 * sd, (share, len(by_customer))
    # the hash itself, on many ids: within 1 % of the share, and monotone in the share
    ids = [f"C{i}" for i in range(100_000)]
    positions = np.array([bucket(i, 3) for i in ids])
    assert abs((positions < 0.3).mean() - 0.3) < 0.01
    assert set(np.flatnonzero(positions < 0.05)) <= set(np.flatnonzero(positions < 0.25))


class Broken:
    """A booster whose every prediction fails (a model that crashes in production)."""

    def predict(self, *_args, **_kwargs):
        raise RuntimeError("simulated model failure")


def break_slot(app, role: str) -> None:
    import dataclasses

    follower = app.state.service.follower
    dep = follower.deployment
    broken = dataclasses.replace(getattr(dep, role), booster=Broken())
    follower.deployment = dataclasses.replace(dep, **{role: broken})


@pytest.mark.slow
def test_shadow_never_changes_a_response_and_is_logged(world):
    store, traffic = world
    promote(store, 1)
    promote(store, 2, to="shadow")  # the deliberately bad model
    bodies = requests_of(traffic.head(300))
    with service_thread(store) as (base, app), httpx.Client() as client:
        assert deployment(base)["deployment"] == {"production": 1, "shadow": 2}
        answers = score_all(client, base, bodies[:150], singles=50)
        wait_until(lambda: app.state.service.offpath.idle, what="shadow drained")
        break_slot(app, "shadow")  # a crashing shadow must not be noticed by clients either
        answers.update(score_all(client, base, bodies[150:], singles=50))
        wait_until(lambda: app.state.service.offpath.idle, what="shadow drained")
        metrics = client.get(f"{base}/metrics").text
    expected = score_transactions(store, ModelRegistry(store), 1, traffic.head(300))
    for tid, score in zip(expected["transaction_id"], expected["score"], strict=True):
        assert answers[tid]["score"] == pytest.approx(score, abs=1e-12)
        assert answers[tid]["model_version"] == 1 and answers[tid]["role"] == "production"
    # one failed off-path job per request of the second half: 50 singles and 1 batch
    assert 'fraudloop_model_errors_total{role="shadow",version="2"} 51.0' in metrics
    log = read_predictions(store)
    shadow = log[log["role"] == "shadow"]
    assert len(shadow) == 150 and set(shadow["model_version"]) == {2}
    production = log[log["role"] == "production"]
    assert len(production) == 300
    paired = shadow.merge(production, on=["request_id", "transaction_id"])
    assert len(paired) == 150
    # the shadow really scored (another model, other scores) on the same features
    assert (paired["score_x"] - paired["score_y"]).abs().mean() > 0.01
    assert (paired["feature_hash_x"] == paired["feature_hash_y"]).all()


@pytest.mark.slow
def test_failing_canary_falls_back_to_production_and_is_counted(world):
    store, traffic = world
    promote(store, 1)
    rollout.start(store, ModelRegistry(store), 3, actor="test", reason="fallback test")
    rollout.set_share(store, "fraud", 1.0, actor="test", reason="all traffic to the canary")
    bodies = requests_of(traffic.head(200))
    with service_thread(store) as (base, app), httpx.Client() as client:
        wait_until(lambda: deployment(base)["canary_share"] == 1.0, what="share")
        break_slot(app, "canary")
        answers = score_all(client, base, bodies, singles=50)
        metrics = client.get(f"{base}/metrics").text
    assert all(a["fallback"] and a["model_version"] == 1 for a in answers.values())
    assert 'fraudloop_fallbacks_total{version="3"} 200.0' in metrics
    log = read_predictions(store)
    canary_rows = log[log["role"] == "canary"]
    assert len(canary_rows) == 200 and set(canary_rows["status"]) == {"fallback"}


def _load(base: str, bodies: list[dict], seconds: float, rate: float, stop: threading.Event):
    """Constant-rate single requests; returns (statuses, versions answered)."""
    statuses, versions = [], []
    with httpx.Client() as client:
        start = time.monotonic()
        i = 0
        while not stop.is_set() and time.monotonic() - start < seconds:
            due = start + i / rate
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                response = client.post(f"{base}/v1/score", json=bodies[i % len(bodies)])
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])
            except httpx.HTTPError as error:
                statuses.append(type(error).__name__)
            i += 1
    return statuses, versions


@pytest.mark.slow
def test_hot_swaps_under_load_fail_no_request(world):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic)
    registry = ModelRegistry(store)
    with service_thread(store) as (base, _):
        result = {}
        stop = threading.Event()

        def load():
            result["statuses"], result["versions"] = _load(base, bodies, 12, 150, stop)

        loader = threading.Thread(target=load)
        loader.start()
        for i in range(6):
            time.sleep(0.8)
            target = 3 if i % 2 == 0 else 1
            registry.promote(target, to="production", actor="test", reason=f"swap {i}")
            wait_until(
                lambda t=target: deployment(base)["deployment"]["production"] == t, what="swap"
            )
        stop.set()
        loader.join()
    statuses = result["statuses"]
    assert len(statuses) > 500
    assert all(s == 200 for s in statuses), {s for s in statuses if s != 200}
    assert {1, 3} <= set(result["versions"])


@pytest.mark.slow
def test_rollback_from_the_cli_is_followed_within_seconds(world, monkeypatch, capsys):
    store, traffic = world
    promote(store, 1)
    promote(store, 3)  # production v3, previous v1
    monkeypatch.setenv("FRAUDLOOP_HOME", str(store.root))
    body = requests_of(traffic.head(1))[0]
    with service_thread(store) as (base, _):
        assert httpx.post(f"{base}/v1/score", json=body).json()["model_version"] == 3
        assert main(["models", "rollback", "--reason", "incident 7"]) == 0
        took = wait_until(
            lambda: httpx.post(f"{base}/v1/score", json=body).json()["model_version"] == 1,
            timeout=5,
            what="rollback followed",
        )
    assert took < 2.0  # poll interval 0.2 s here; the default is 1 s
    last = ModelRegistry(store).history("production")[-1]
    assert last["action"] == "rollback" and last["reason"] == "incident 7"


@pytest.mark.slow
def test_prediction_log_survives_graceful_restarts(world):
    store, traffic = world
    promote(store, 1)
    bodies = requests_of(traffic)
    env = {"FRAUDLOOP_SERVE_FLUSH_SECONDS": "3600"}  # nothing flushes on its own: only shutdown
    sent = []
    for part in (bodies[:250], bodies[250:400]):
        with service_process(store, env=env) as (base, proc), httpx.Client() as client:
            for body in part[:50]:
                assert client.post(f"{base}/v1/score", json=body).status_code == 200
            response = client.post(f"{base}/v1/score/batch", json={"transactions": part[50:]})
            assert response.status_code == 200
            sent += [b["transaction_id"] for b in part]
            assert read_predictions(store).empty or len(read_predictions(store)) < len(sent)
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = read_predictions(store)
    assert sorted(log["transaction_id"]) == sorted(sent)
    assert log["request_id"].nunique() == 50 + 1 + 50 + 1
    assert log["instance"].nunique() == 2  # each process wrote its own files
    assert set(log["role"]) == {"production"} and set(log["status"]) == {"ok"}
    keys = [i.key for i in store.list("predictions/")]
    assert keys and all(k.endswith(".parquet") for k in keys)  # no temp or partial files
