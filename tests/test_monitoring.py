"""Monitoring: health and accuracy from prediction-log frames, the judgements the checks and
alerts use, the retraining decision (fire, cooldown, in flight), and the sensors on a real
instance (run keys, shared cooldown, the in-flight limit, the due monitoring runs)."""

import json
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraudloop.core.alerts import read_events
from fraudloop.delivery import rollout
from fraudloop.delivery.prediction_log import PredictionLog, Row, read_predictions
from fraudloop.monitoring import retraining
from fraudloop.monitoring.accuracy import accuracy, accuracy_problems, accuracy_severity
from fraudloop.monitoring.drift import drift_problems
from fraudloop.monitoring.health import health, health_problems
from fraudloop.monitoring.policy import MonitoringPolicy
from fraudloop.monitoring.records import read_record, record_key, write_record

CONFIG = MonitoringPolicy(
    latency_slo_ms=10.0,
    max_error_rate=0.01,
    drift_share=0.3,
    accuracy_min_ratio=0.75,
    min_label_completeness=0.9,
)


def rows(n: int, *, role="production", version=1, latency=1.0, fallback=0, seed=0, hour=10):
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2018-05-01", tz="UTC") + pd.Timedelta(hours=hour)
    out = []
    for i in range(n):
        score = float(rng.beta(1, 20))
        out.append(
            Row(
                f"r{seed}-{i}",
                f"t{seed}-{i}",
                f"c{i % 40}",
                "T1",
                int((base + pd.Timedelta(seconds=i)).value),
                10.0,
                int(base.value),
                version,
                role,
                score,
                "review" if score >= 0.5 else "approve",
                0.5,
                latency * (3.0 if i >= n - n // 20 else 1.0),  # the slowest 5 %
                0.2,
                "f",
                "fallback" if i < fallback else "ok",
            )
        )
    return out


def frame(*groups) -> pd.DataFrame:
    import pyarrow as pa

    from fraudloop.delivery.prediction_log import Block, _table

    return pa.concat_tables([_table([Block.of_rows(g)], "test") for g in groups]).to_pandas()


def test_health_per_version_and_role_with_cost():
    log = frame(rows(200, latency=2.0), rows(50, role="canary", version=2, fallback=5, seed=1))
    by = {(r["model_version"], r["role"]): r for r in health(log, cpu_hour_price=0.05)}
    prod, canary = by[(1, "production")], by[(2, "canary")]
    assert prod["requests"] == 200 and prod["p50_ms"] == 2.0 and prod["p99_ms"] == 6.0
    assert canary["error_rate"] == pytest.approx(0.1)
    # 0.2 ms CPU per row: 1,000 predictions = 0.2 CPU s = 0.2/3600 h x 0.05
    assert prod["cost_per_1000"] == pytest.approx(0.2 / 3600 * 0.05)
    assert health(log.iloc[0:0], 0.05) == []


def test_health_problems_name_slo_errors_and_missing_predictions():
    ok = {"groups": health(frame(rows(100)), 0.05), "transactions": 100}
    assert health_problems(ok, CONFIG) == []
    slow = {"groups": health(frame(rows(100, latency=12.0)), 0.05)}
    assert "over the SLO" in health_problems(slow, CONFIG)[0]
    failing = {"groups": health(frame(rows(100, fallback=5)), 0.05)}
    assert "error rate" in health_problems(failing, CONFIG)[0]
    down = {"groups": [], "transactions": 80}
    assert "missing predictions" in health_problems(down, CONFIG)[0]
    assert health_problems({"groups": [], "transactions": 0}, CONFIG) == []


def test_accuracy_uses_only_known_labels_and_reports_completeness():
    log = frame(rows(100))
    ids = log["transaction_id"]
    # labels for 80 of 100 predictions; the 10 highest scores are frauds
    top = set(log.nlargest(10, "score")["transaction_id"])
    labels = pd.DataFrame(
        {
            "transaction_id": ids[:80],
            "is_fraud": [int(t in top) for t in ids[:80]],
            "known_at": pd.Timestamp("2018-05-02", tz="UTC"),
        }
    )
    (record,) = accuracy(log, labels)
    assert record["predictions"] == 100 and record["labelled"] == 80
    assert record["completeness"] == pytest.approx(0.8)
    assert record["ap"] == pytest.approx(1.0)  # the frauds are exactly the top scores
    # nothing judged below the completeness bar, then judged once labels are in
    judged = {"production": {**record, "reference_ap": 0.9, "requests": 100}}
    assert accuracy_problems(judged, CONFIG) == []
    weak = {**record, "completeness": 0.95, "ap": 0.3, "reference_ap": 0.8, "requests": 100}
    (problem,) = accuracy_problems({"production": weak}, CONFIG)
    assert "AP 0.300" in problem and "0.600" in problem


def test_drift_problems():
    computed = {
        "status": "computed",
        "drifted_share": 0.4,
        "drifted": {"amount": True, "tx_hour": False},
        "prediction_drifted": True,
        "prediction_drift_score": 0.31,
    }
    problems = drift_problems(computed, CONFIG)
    assert "40% of features drifted" in problems[0] and "amount" in problems[0]
    assert "score distribution drifted" in problems[1]
    calm = {**computed, "drifted_share": 0.1, "prediction_drifted": False}
    assert drift_problems(calm, CONFIG) == []
    assert drift_problems({"status": "no predictions"}, CONFIG) == []


def signal(day: str, source="drift") -> retraining.Signal:
    at = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    return retraining.Signal(source, day, at, "test")


def test_retrain_decision_fire_cooldown_in_flight():
    assert not retraining.decide([], last_trigger_at=None, cooldown_hours=24, in_flight=None).fire
    first = retraining.decide(
        [signal("2018-05-06"), signal("2018-05-07")],
        last_trigger_at=None,
        cooldown_hours=24,
        in_flight=None,
    )
    assert first.fire and first.signal.partition == "2018-05-07"
    assert first.run_key == "retrain:drift:2018-05-07"
    cooling = retraining.decide(
        [signal("2018-05-08")],
        last_trigger_at=pd.Timestamp("2018-05-08 12:00", tz="UTC"),
        cooldown_hours=24,
        in_flight=None,
    )
    assert not cooling.fire and "cooling down" in cooling.reason
    after = retraining.decide(
        [signal("2018-05-09")],
        last_trigger_at=pd.Timestamp("2018-05-08 12:00", tz="UTC"),
        cooldown_hours=24,
        in_flight=None,
    )
    assert after.fire
    busy = retraining.decide(
        [signal("2018-05-09")], last_trigger_at=None, cooldown_hours=24, in_flight="run x is queued"
    )
    assert not busy.fire and "run x is queued" in busy.reason


def write_drift(store, day: str, share: float, version: int = 1) -> None:
    write_record(
        store,
        "drift",
        day,
        {
            "status": "computed",
            "model_version": version,
            "drifted_share": share,
            "drifted": {"amount": share > 0.3},
            "prediction_drifted": False,
            "prediction_drift_score": 0.0,
        },
    )


def write_failing_accuracy(store, day: str) -> None:
    """An accuracy record of `day` under the floor for v1 (AP 0.1 against its holdout's 0.8)."""
    write_record(
        store,
        "accuracy",
        day,
        {
            "production": {
                "model_version": 1,
                "ap": 0.1,
                "reference_ap": 0.8,
                "completeness": 1.0,
                "frauds": 30,
                "recall": 0.1,
                "requests": 500,
            }
        },
    )


def features_through(store, hour: str) -> None:
    """A stored feature partition of `hour`: what a training run's default cutoff follows."""
    from fraudloop.core.hours import hour_start
    from fraudloop.core.tables import write_partition

    at = hour_start(hour)
    frame = pd.DataFrame(
        {
            "transaction_id": pd.array([f"tx-{hour}"], dtype="string"),
            "tx_datetime": pd.to_datetime([at + pd.Timedelta(minutes=10)], utc=True),
            "customer_id": pd.array(["c"], dtype="string"),
            "terminal_id": pd.array(["t"], dtype="string"),
            "amount": [1.0],
        }
    )
    write_partition(store, "transaction_features", hour, frame, [])


@pytest.fixture
def env(env):
    """The Dagster test env with v1 registered and in production (signals are about it), and
    features stored far enough ahead that a retraining's data reaches every signal here."""
    from fraudloop.model.registry import ModelRegistry

    registry = ModelRegistry(env.store)
    for _ in range(2):
        registry.register({"model.txt": b"tree\n"}, {}, actor="test", reason="placeholder")
    registry.promote(1, to="production", actor="test", reason="test")
    features_through(env.store, "2018-06-30-23:00")
    return env


def evaluate(sensor, env, cursor=None):
    with dg.build_sensor_context(
        instance=env.instance, resources=env.resources, cursor=cursor
    ) as context:
        return sensor(context)


def test_drift_sensor_fires_once_then_cools_down_and_respects_in_flight(env):
    drift_sensor = env.sensor("drift_sensor")

    write_drift(env.store, "2018-05-06", 0.1)
    result = evaluate(drift_sensor, env)
    assert not result.run_requests and "no failed" in result.skip_reason.skip_message
    cursor = result.cursor

    write_drift(env.store, "2018-05-07", 0.6)
    fired = evaluate(drift_sensor, env, cursor)
    (request,) = fired.run_requests
    assert request.job_name == "training_job" and request.run_key == "retrain:drift:2018-05-07"
    assert request.tags[retraining.RETRAIN_TAG] == "drift"
    # the same record again: the cursor moved past it, nothing new
    assert not evaluate(drift_sensor, env, fired.cursor).run_requests

    # a run of that request is running: the next signal waits for it
    env.instance.create_run_for_job(
        dg.GraphDefinition(name="g", node_defs=[]).to_job(name="training_job"),
        tags=request.tags,
        status=dg.DagsterRunStatus.STARTED,
    )
    write_drift(env.store, "2018-05-10", 0.7)
    busy = evaluate(drift_sensor, env, fired.cursor)
    assert not busy.run_requests and "started" in busy.skip_reason.skip_message


def test_a_replaced_version_s_failures_ask_for_nothing(env):
    from fraudloop.model.registry import ModelRegistry

    drift_sensor = env.sensor("drift_sensor")

    ModelRegistry(env.store).promote(2, to="production", actor="test", reason="v2 took over")
    write_drift(env.store, "2018-05-07", 0.6, version=1)  # v1's last days, judged late
    result = evaluate(drift_sensor, env)
    assert not result.run_requests
    write_drift(env.store, "2018-05-08", 0.6, version=2)
    (request,) = evaluate(drift_sensor, env, result.cursor).run_requests
    assert request.run_key == "retrain:drift:2018-05-08"


def test_retraining_waits_while_a_rollout_is_active_and_cooldown_is_shared(env):
    accuracy_sensor, drift_sensor = env.sensor("accuracy_sensor"), env.sensor("drift_sensor")

    write_drift(env.store, "2018-05-07", 0.6)
    fired = evaluate(drift_sensor, env)
    (request,) = fired.run_requests
    env.instance.create_run_for_job(
        dg.GraphDefinition(name="g", node_defs=[]).to_job(name="training_job"),
        tags=request.tags,
        status=dg.DagsterRunStatus.SUCCESS,
    )
    # accuracy on the very next day: within the 24 h cooldown the drift trigger started
    write_failing_accuracy(env.store, "2018-05-07")
    cooled = evaluate(accuracy_sensor, env)
    assert not cooled.run_requests and "cooling down" in cooled.skip_reason.skip_message
    # later accuracy failures, but a canary rollout is running: no second candidate
    env.store.put_bytes(
        rollout.rollout_key("fraud"),
        json.dumps({"status": "running", "canary_version": 2}).encode(),
    )
    write_record(
        env.store,
        "accuracy",
        "2018-05-10",
        read_record(env.store, "accuracy", "2018-05-07"),
    )
    busy = evaluate(accuracy_sensor, env, cooled.cursor)
    assert not busy.run_requests and "rollout of v2 is running" in busy.skip_reason.skip_message


def test_drift_and_accuracy_in_the_same_tick_ask_for_one_retraining(env):
    """The daemon evaluates the two sensors in parallel threads: both can decide to retrain
    before either request is a run the other would see. One request until a run starts, even
    when a features run extends the data between the two evaluations (seen in the demo: two
    data ends 4 hours apart, two runs, the second release failing on the first's canary)."""
    accuracy_sensor, drift_sensor = env.sensor("accuracy_sensor"), env.sensor("drift_sensor")
    write_drift(env.store, "2018-05-07", 0.6)
    write_failing_accuracy(env.store, "2018-05-07")
    (request,) = evaluate(drift_sensor, env).run_requests  # no run created in between
    features_through(env.store, "2018-07-01-04:00")  # the data moved on in between
    second = evaluate(accuracy_sensor, env)
    assert not second.run_requests and second.cursor is not None  # its signals are spent
    message = second.skip_reason.skip_message
    assert f"already asked for by {request.run_key}" in message
    # once the request is a run (finished: nothing in flight), newer data is a new question
    env.instance.create_run_for_job(
        dg.GraphDefinition(name="g", node_defs=[]).to_job(name="training_job"),
        tags=request.tags,
        status=dg.DagsterRunStatus.SUCCESS,
    )
    features_through(env.store, "2018-07-02-23:00")
    write_failing_accuracy(env.store, "2018-05-09")
    (later,) = evaluate(accuracy_sensor, env, second.cursor).run_requests
    assert later.run_key == "retrain:accuracy:2018-05-09"


def test_a_claim_whose_request_never_became_a_run_gives_way_when_stale(env):
    from fraudloop.core.keyspace import retraining_claim_key
    from fraudloop.monitoring import retraining

    drift_sensor = env.sensor("drift_sensor")
    write_drift(env.store, "2018-05-07", 0.6)
    (lost,) = evaluate(drift_sensor, env).run_requests  # the tick died: never a run
    claims = retraining_claim_key("")[: -len(".json")]
    (key,) = [o.key for o in env.store.list(claims)]
    held = json.loads(env.store.get_bytes(key))
    assert held["request"] == lost.run_key and held["generation"].endswith("-after-0-runs")
    write_drift(env.store, "2018-05-08", 0.6)
    blocked = evaluate(drift_sensor, env)
    assert not blocked.run_requests and lost.run_key in blocked.skip_reason.skip_message
    stale = pd.Timestamp.now(tz="UTC") - retraining.CLAIM_STALE_AFTER - pd.Timedelta(seconds=1)
    env.store.put_bytes(key, json.dumps(held | {"claimed_at": stale.isoformat()}).encode())
    write_drift(env.store, "2018-05-09", 0.6)
    (retried,) = evaluate(drift_sensor, env, blocked.cursor).run_requests
    assert retried.run_key == "retrain:drift:2018-05-09"
    assert len(env.store.list(claims)) == 2


def test_monitoring_sensor_asks_for_health_from_the_first_served_hour(env):
    monitoring_sensor = env.sensor("monitoring_sensor")

    assert "no monitoring due" in evaluate(monitoring_sensor, env).skip_message
    log = PredictionLog(env.store, "test")
    log.extend(rows(20, hour=10))
    log.extend(rows(20, hour=12, seed=2))
    log.flush()
    # served but not ingested yet: the hours are still open
    assert "no monitoring due" in evaluate(monitoring_sensor, env).skip_message
    for hour in ("10", "11", "12"):
        env.instance.report_runless_asset_event(
            dg.AssetMaterialization("raw_transactions", partition=f"2018-05-01-{hour}:00")
        )
    result = evaluate(monitoring_sensor, env)
    (request,) = result.run_requests  # no day has all its features yet: health only
    assert request.job_name == "health_job"
    assert request.tags["dagster/asset_partition_range_start"] == "2018-05-01-10:00"
    assert request.tags["dagster/asset_partition_range_end"] == "2018-05-01-12:00"
    assert len(read_predictions(env.store)) == 40


def test_health_waits_for_transactions_being_ingested(env):
    """The hours of a range ingestion run are recorded one by one: asking for health while it
    runs would split them over two health runs. Health waits for it, then asks once; it does
    not wait for ingestion runs that started after its hold began (with a steady stream of
    deliveries one always runs), and never longer than MAX_HOLD_SECONDS."""
    from sensors import common

    monitoring_sensor = env.sensor("monitoring_sensor")
    log = PredictionLog(env.store, "test")
    log.extend(rows(20, hour=10))
    log.flush()

    def ingested(*hours: str) -> None:
        for hour in hours:
            env.instance.report_runless_asset_event(
                dg.AssetMaterialization("raw_transactions", partition=f"2018-05-01-{hour}:00")
            )

    def ingesting():
        return env.instance.create_run_for_job(
            dg.GraphDefinition(name="g", node_defs=[]).to_job(name="hourly_ingestion_job"),
            status=dg.DagsterRunStatus.STARTED,
        )

    ingested("10", "11")
    first = ingesting()
    held = evaluate(monitoring_sensor, env)
    assert not held.run_requests and "health waits" in held.skip_reason.skip_message
    assert json.loads(held.cursor)["health_held"]["runs"] == [first.run_id]
    assert not evaluate(monitoring_sensor, env, held.cursor).run_requests

    ingested("12")
    later = ingesting()  # started after the hold began: not waited for
    assert not evaluate(monitoring_sensor, env, held.cursor).run_requests
    env.instance.report_run_canceled(first)
    result = evaluate(monitoring_sensor, env, held.cursor)
    (request,) = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2018-05-01-10:00"
    assert request.tags["dagster/asset_partition_range_end"] == "2018-05-01-12:00"
    assert json.loads(result.cursor) == {}
    env.instance.report_run_canceled(later)

    # bounded: a hold older than MAX_HOLD_SECONDS lets health go while what it waits for runs
    ingested("13")
    stuck = ingesting()
    held = evaluate(monitoring_sensor, env, result.cursor)
    assert not held.run_requests
    state = json.loads(held.cursor)
    assert state["health_held"]["runs"] == [stuck.run_id]
    state["health_held"]["since"] -= common.MAX_HOLD_SECONDS
    (request,) = evaluate(monitoring_sensor, env, json.dumps(state)).run_requests
    assert request.job_name == "health_job"
    # a cursor written before holds named their runs: its hold waited for any ingestion run
    old = json.dumps({"health_held_since": time.time()})
    assert evaluate(monitoring_sensor, env, old).run_requests


def test_a_daily_run_judges_only_the_days_due_for_each_asset(env):
    """A daily run spans every day due for drift or accuracy, but each asset judges only its
    own: here accuracy is due on 05-01 (its labels matured) and drift on 05-03 (its features
    are in), so the run covers 05-01..05-03, and 05-01's drift record (judged already, nothing
    newer served) stays as it was. A run launched without the sensor's config judges all."""
    from assets.monitoring import KEPT
    from tests.dagster_runs import execute

    monitoring_sensor = env.sensor("monitoring_sensor")
    log = PredictionLog(env.store, "test")
    for day in range(3):
        log.extend(rows(20, hour=10 + 24 * day, seed=day))
    log.flush()
    write_drift(env.store, "2018-05-01", 0.1)
    judged_before = env.store.get_bytes(record_key("drift", "2018-05-01"))
    for hour in range(24):
        env.instance.report_runless_asset_event(
            dg.AssetMaterialization("transaction_features", partition=f"2018-05-03-{hour:02d}:00")
        )
    matured = pd.Timestamp("2018-05-01") + pd.Timedelta(days=env.settings.label_delay_days)
    env.instance.report_runless_asset_event(
        dg.AssetMaterialization("raw_labels", partition=f"{matured:%Y-%m-%d}")
    )

    (request,) = evaluate(monitoring_sensor, env).run_requests
    assert request.job_name == "daily_monitoring_job"
    assert request.tags["dagster/asset_partition_range_start"] == "2018-05-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2018-05-03"

    def statuses(result) -> dict[tuple[str, str], str]:
        out = {}
        for event in result.get_asset_materialization_events():
            done = event.event_specific_data.materialization
            status = done.metadata.get("status")
            out[(done.asset_key.path[-1], done.partition)] = status.value if status else "judged"
        return out

    result = execute(env, request)
    assert result.success
    judged = {k: v for k, v in statuses(result).items() if v != KEPT}
    assert set(judged) == {("prediction_drift", "2018-05-03"), ("model_accuracy", "2018-05-01")}
    assert judged[("prediction_drift", "2018-05-03")] == "no features yet"  # none stored here
    assert env.store.get_bytes(record_key("drift", "2018-05-01")) == judged_before
    assert read_record(env.store, "accuracy", "2018-05-01") is not None
    assert read_record(env.store, "accuracy", "2018-05-03") is None
    # the checks count a missing record only where the run judged: drift's 05-03 (no features)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["accuracy_above_floor"].passed
    assert not checks["drift_within_threshold"].passed
    assert "no record for 2018-05-03" in checks["drift_within_threshold"].description

    # from the UI (no config): every day of the range, for both assets
    manual = env.job("daily_monitoring_job").execute_in_process(
        instance=env.instance, tags=request.tags, resources=env.resources
    )
    assert KEPT not in statuses(manual).values() and len(statuses(manual)) == 6
    assert read_record(env.store, "accuracy", "2018-05-03") is not None


def test_a_served_day_without_features_is_not_judged_yet(env):
    """Accuracy can be due before a day's features are in (features wait for the day's labels):
    drift of that day then says so instead of failing the run, and writes no record, so the
    day is due again once its features are."""
    from fraudloop.model.registry import ModelRegistry
    from fraudloop.monitoring.drift import day_drift
    from tests.dagster_runs import run

    log = PredictionLog(env.store, "test")
    log.extend(rows(20, hour=10))
    log.flush()
    policy = env.config.monitoring
    record, result = day_drift(env.store, ModelRegistry(env.store), "2018-05-01", policy)
    assert result is None and record["status"] == "no features yet"

    assert run(env, ["prediction_drift"], partition_key="2018-05-01").success
    assert read_record(env.store, "drift", "2018-05-01") is None


def test_prediction_health_asset_alerts_on_missing_predictions(env):
    from tests.dagster_runs import run

    log = PredictionLog(env.store, "test")
    log.extend(rows(30, hour=10))
    log.flush()
    from fraudloop.core import tables

    tables.write_partition(
        env.store,
        "transactions",
        "2018-05-01-11:00",
        pd.DataFrame(
            {
                "transaction_id": pd.Series(["a", "b"], dtype="string"),
                "tx_datetime": pd.to_datetime(["2018-05-01 11:00", "2018-05-01 11:30"], utc=True),
                "customer_id": pd.Series(["1", "2"], dtype="string"),
                "terminal_id": pd.Series(["1", "2"], dtype="string"),
                "amount": [1.0, 2.0],
            }
        ),
        [],
    )
    result = run(
        env,
        ["prediction_health", "serving_within_slo"],
        start="2018-05-01-10:00",
        end="2018-05-01-11:00",
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "missing predictions" in check.description
    alerts = read_events(env.store)
    assert [(a["title"], a["dedup_key"]) for a in alerts] == [
        ("serving unhealthy in 2018-05-01-11:00", "monitoring/health")
    ]
    record = read_record(env.store, "health", "2018-05-01-10:00")
    assert record["groups"][0]["requests"] == 30 and record["problems"] == []


def test_retraining_waits_until_its_data_reaches_the_signal():
    """A retraining before the failing day's features are in would train on production's own
    data again: it waits (and keeps the signal) instead."""
    day = signal("2018-05-07", source="accuracy")  # judged on 2018-05-07, ends 05-08 00:00
    common = {"last_trigger_at": None, "cooldown_hours": 24, "in_flight": None}
    production_end = pd.Timestamp("2018-05-05", tz="UTC")

    def decision(available: str | None, sig=day):
        at = pd.Timestamp(available, tz="UTC") if available else None
        data = retraining.TrainingData(at, production_end)
        return retraining.decide([sig], **common, data=data)

    nothing = decision(None)
    assert not nothing.fire and nothing.waiting and "no features" in nothing.reason
    same = decision("2018-05-05")
    assert same.waiting and "as production's did" in same.reason
    short = decision("2018-05-07 12:00")
    assert short.waiting and "2018-05-07 to be in the training data" in short.reason
    assert decision("2018-05-08").fire
    # drift the same: the drifted day's labels are what a candidate must learn from
    drift = signal("2018-05-07", source="drift")
    assert decision("2018-05-06", sig=drift).waiting
    assert decision("2018-05-08", sig=drift).fire
    # waiting never outranks cooling down or a run in flight (those drop the signal)
    busy = retraining.decide(
        [day],
        last_trigger_at=None,
        cooldown_hours=24,
        in_flight="run x is queued",
        data=retraining.TrainingData(None, None),
    )
    assert not busy.waiting and "run x is queued" in busy.reason


def test_retraining_waits_until_the_failing_day_can_be_trained_on_not_only_held_out():
    """The demo's wasted runs: a candidate whose training part ended before the drift was
    judged on the drifted holdout and held (v2), and the next signal started a run on the very
    same data (v3, the same model again)."""
    production_end = pd.Timestamp("2018-04-12", tz="UTC")
    signals = [signal("2018-04-14", source="accuracy"), signal("2018-04-15")]

    def decision(available: str, newest=None, sigs=signals, last_trigger=None):
        data = retraining.TrainingData(
            pd.Timestamp(available, tz="UTC"), production_end, holdout_days=2, newest=newest
        )
        return retraining.decide(
            sigs, last_trigger_at=last_trigger, cooldown_hours=24, in_flight=None, data=data
        )

    # data to 04-16: training to 04-14 00:00, 04-14 and 04-15 would be the holdout
    held_out = decision("2018-04-16")
    assert held_out.waiting and not held_out.fire
    assert "2018-04-14 to be in the training data" in held_out.reason
    assert "data up to 2018-04-14 00:00" in held_out.reason
    # data to 04-17: 04-14 can be learnt, 04-15 not yet: the retraining is for 04-14
    first = decision("2018-04-17")
    assert first.fire and first.signal.partition == "2018-04-14"
    assert first.run_key == "retrain:accuracy:2018-04-14"
    # that candidate was held; the same data again would rebuild it
    v2 = (2, pd.Timestamp("2018-04-17", tz="UTC"))
    again = decision("2018-04-17", newest=v2, last_trigger=first.signal.at - pd.Timedelta(days=1))
    assert again.waiting and "as v2 did" in again.reason
    later = decision("2018-04-18", newest=v2, last_trigger=first.signal.at - pd.Timedelta(days=1))
    assert later.fire and later.signal.partition == "2018-04-15"
    # the cooldown still counts from the last request: 04-14's request holds 04-14 back
    cooled = decision("2018-04-18", newest=v2, last_trigger=first.signal.at)
    assert cooled.fire and cooled.signal.partition == "2018-04-15"
    assert decision("2018-04-18", sigs=signals[:1], last_trigger=first.signal.at).reason.startswith(
        "cooling down"
    )


def test_accuracy_sensor_keeps_a_signal_until_the_features_of_its_day_are_in(tmp_path):
    """The demo's race: accuracy of a day failed before that day's features were computed, and
    the retraining it started got production's dataset again (an identical, held model)."""
    from fraudloop.model.registry import ModelRegistry
    from tests.dagster_runs import DagsterEnv

    with dg.instance_for_test() as instance:
        env = DagsterEnv.build(
            instance,
            {
                "FRAUDLOOP_HOME": str(tmp_path / "home"),
                "FRAUDLOOP_LABEL_DELAY_DAYS": "1",
                "FRAUDLOOP_HOLDOUT_DAYS": "1",
            },
        )
        registry = ModelRegistry(env.store)
        registry.register({"model.txt": b"tree\n"}, {}, actor="test", reason="placeholder")
        registry.promote(1, to="production", actor="test", reason="test")
        accuracy_sensor = env.sensor("accuracy_sensor")
        features_through(env.store, "2018-05-07-23:00")  # with a 1-day delay: data to 05-07
        write_failing_accuracy(env.store, "2018-05-07")
        waiting = evaluate(accuracy_sensor, env)
        assert not waiting.run_requests
        assert "2018-05-07 to be in the training data" in waiting.skip_reason.skip_message
        assert waiting.cursor is None  # the signal is looked at again
        # data to 05-08: 05-07 is in, as the holdout day only: it still waits
        features_through(env.store, "2018-05-08-23:00")
        held_out = evaluate(accuracy_sensor, env, waiting.cursor)
        assert not held_out.run_requests and held_out.cursor is None
        assert "hold out the 1 day(s) after it" in held_out.skip_reason.skip_message
        features_through(env.store, "2018-05-09-23:00")
        (request,) = evaluate(accuracy_sensor, env, waiting.cursor).run_requests
        assert request.run_key == "retrain:accuracy:2018-05-07"


def test_accuracy_under_floor_pages_only_when_it_outlives_automatic_retraining():
    policy = MonitoringPolicy(accuracy_page_after_days=3)

    def incident(*days, version=1):
        details = {"partition": days[0], "model_version": version}
        return {"status": "open", "failing": list(days), "details": details}

    assert accuracy_severity(None, "2018-04-14", 1, policy) == "warning"  # the loop retrains
    assert accuracy_severity(incident("2018-04-14"), "2018-04-15", 1, policy) == "warning"
    # the same failing day recomputed is not a new day
    assert accuracy_severity(incident("2018-04-14", "2018-04-15"), "2018-04-15", 1, policy) == (
        "warning"
    )
    three = incident("2018-04-14", "2018-04-15")
    assert accuracy_severity(three, "2018-04-16", 1, policy) == "critical"
    # the retrained model is under its floor too: retraining did not fix it
    assert accuracy_severity(incident("2018-04-14"), "2018-04-15", 2, policy) == "critical"
    # a closed incident is history: a new episode starts quiet again
    closed = {**three, "status": "resolved"}
    assert accuracy_severity(closed, "2018-04-30", 2, policy) == "warning"
