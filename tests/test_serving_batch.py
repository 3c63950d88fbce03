"""The batch endpoint answers, logs and counts exactly what the same transactions sent one by
one in time order get: same scores, decisions, roles (canary split included), feature hashes in
the prediction log and metrics; its JSON is what ``json.dumps`` writes, and a histogram updated
once per batch holds what one update per row would."""

from __future__ import annotations

import json
import random
import shutil

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from fraudloop.core.store import LocalObjectStore
from fraudloop.delivery import rollout
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.app import Decisions, float_texts
from fraudloop.serving.prometheus import observe_many
from tests.servers import service_thread, wait_until
from tests.serving_home import requests_of

ANSWER = ("transaction_id", "score", "decision", "threshold", "model_version", "role", "fallback")
LOGGED = ("score", "decision", "model_version", "role", "feature_hash", "status", "threshold")


def test_observe_many_records_what_one_observe_per_row_records():
    registry = CollectorRegistry()
    hist = Histogram("h", "h", ["k"], buckets=(0.001, 0.01, 0.1), registry=registry)
    for value, count in ((0.0004, 3), (0.02, 5), (0.5, 2), (0.01, 4)):
        for _ in range(count):
            hist.labels("one").observe(value)
        observe_many(hist.labels("many"), value, count)
    observe_many(hist.labels("many"), 0.02, 0)

    def samples(label: str) -> dict:
        return {
            (s.name, s.labels.get("le")): round(s.value, 12)
            for metric in registry.collect()
            for s in metric.samples
            if s.labels.get("k") == label and not s.name.endswith("_created")
        }

    assert samples("one") == samples("many")
    assert samples("many")[("h_count", None)] == 14


def test_the_batch_json_is_what_json_dumps_writes():
    decided = Decisions(
        "r1",
        ["a.1", "b:2", "c-3"],
        [0.125, 1e-17, 0.9999999999999999],
        ["approve", "approve", "review"],
        [0.5, 0.5, 0.3],
        [1, 1, 3],
        ["production", "production", "canary"],
        [False, True, False],
    )
    expected = json.dumps({"request_id": "r1", "scores": decided.dicts()}).encode()
    assert decided.json() == expected
    odd = decided._replace(transaction_ids=['q"uote', "back\\slash", "é"])
    assert json.loads(odd.json()) == json.loads(
        json.dumps({"request_id": "r1", "scores": odd.dicts()})
    )


def test_scores_are_written_as_repr_writes_them():
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1.0, 1e-4, 9.99e-5, 1e-17, 5e-324, 0.1 + 0.2, 0.9999999999999999]
    values += rng.random(20_000).tolist() + (10.0 ** rng.uniform(-12, 0, 20_000)).tolist()
    assert float_texts(values) == [repr(v) for v in values]


@pytest.mark.slow
def test_batches_answer_log_and_count_what_the_rows_one_by_one_get(world, tmp_path):
    store, traffic = world
    ModelRegistry(store).promote(1, to="production", actor="test", reason="test setup")
    rollout.start(store, ModelRegistry(store), 3, actor="test", reason="a canary in the split")
    rollout.set_share(store, "fraud", 0.5, actor="test", reason="half the cards")
    shutil.copytree(store.root, tmp_path / "singles")
    singles_store = LocalObjectStore(tmp_path / "singles")
    bodies = requests_of(traffic.head(600))
    bodies += [dict(b) for b in bodies[::9]]  # client retries, counted once
    answers = {}
    for name, where in (("singles", singles_store), ("batches", store)):
        got = answers[name] = []
        with service_thread(where) as (base, app), httpx.Client(timeout=60) as client:
            wait_until(lambda b=base: client.get(f"{b}/v1/deployment").json()["canary_share"])
            ordered = sorted(bodies, key=lambda b: (b["tx_datetime"], b["transaction_id"]))
            if name == "singles":
                for body in ordered:
                    response = client.post(f"{base}/v1/score", json=body)
                    assert response.status_code == 200, response.text
                    got.append(response.json())
            else:  # consecutive stretches, each out of order: a batch is scored in time order
                for part in (ordered[:17], ordered[17:317], ordered[317:]):
                    part = random.Random(3).sample(part, len(part))
                    response = client.post(f"{base}/v1/score/batch", json={"transactions": part})
                    assert response.status_code == 200, response.text
                    got.extend(response.json()["scores"])
            # the control answers are counted off the request path: read the counters once
            # they are all in (read before, a batch's 331 control rows once showed as 146)
            wait_until(lambda a=app: a.state.service.offpath.idle, what="control drained")
            metrics = client.get(f"{base}/metrics").text
        answers[name + "_metrics"] = {
            line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
            for line in metrics.splitlines()
            if line.startswith(("fraudloop_predictions_total", "fraudloop_flagged_total"))
            or line.startswith("fraudloop_prediction_latency_seconds_count")
        }

    def answered(rows: list[dict]) -> list[tuple]:  # a retry is answered again (with its
        # first features): each copy's answer, in any order
        return sorted(tuple(r[k] for k in ANSWER) for r in rows)

    one, many = answered(answers["singles"]), answered(answers["batches"])
    assert one == many and len(one) == len(bodies)
    assert {a[5] for a in one} == {"production", "canary"}
    assert answers["singles_metrics"] == answers["batches_metrics"]
    assert answers["singles_metrics"]  # the lines were found

    def logged(where) -> list[tuple]:
        log = read_predictions(where, dedupe=False)
        return sorted(
            (r["transaction_id"], *(r[k] for k in LOGGED)) for r in log.to_dict("records")
        )

    rows = logged(store)
    assert logged(singles_store) == rows
    assert {r[4] for r in rows} == {"production", "canary", "control"}
    assert len([r for r in rows if r[4] != "control"]) == len(bodies)
