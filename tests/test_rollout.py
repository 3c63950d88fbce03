"""The canary rollout: analysis and decisions on prediction-log frames, the rollout document's
rules, and the controller end to end (real service, real traffic, the Dagster sensor): a good
canary walks its steps and is promoted, a bad one is rolled back and alerted."""

import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from fraudloop.core.alerts import read_events
from fraudloop.delivery import rollout
from fraudloop.delivery.package import PackageError, record_staging
from fraudloop.delivery.policy import RolloutPolicy
from fraudloop.delivery.prediction_log import read_predictions
from fraudloop.delivery.rollout import analyze, decide
from fraudloop.model.metrics import psi
from fraudloop.model.registry import ModelRegistry
from tests.servers import service_thread, wait_until
from tests.serving_home import requests_of

POLICY = RolloutPolicy(steps=(0.1, 0.5, 1.0), min_requests=100, bake_seconds=10, min_paired=50)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def doc(**over) -> dict:
    base = {
        "rollout_id": "r1",
        "canary_version": 3,
        "baseline_version": 1,
        "status": "running",
        "step": 0,
        "share": 0.1,
        "policy": POLICY.to_dict(),
        "started_at": T0.isoformat(),
        "step_started_at": T0.isoformat(),
        "decisions": [],
    }
    return {**base, **over}


def log_frame(
    n_canary: int,
    n_prod: int = 1000,
    *,
    shift: float = 0.0,
    fallbacks: int = 0,
    canary_ms: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Prediction-log rows after T0: canary rows with their control twins, production rows."""
    rng = np.random.default_rng(seed)
    rows = []
    served = pd.Timestamp(T0) + pd.Timedelta(seconds=1)

    def row(rid, role, version, score, ms, status="ok"):
        return {
            "request_id": rid,
            "transaction_id": f"t{rid}",
            "customer_id": f"card-{rid}",
            "served_at": served,
            "role": role,
            "model_version": version,
            "score": score,
            "decision": "review" if score >= 0.5 else "approve",
            "latency_ms": ms,
            "status": status,
        }

    for i in range(n_prod):
        rows.append(row(f"p{i}", "production", 1, float(rng.beta(1, 30)), 1.0))
    for i in range(n_canary):
        control = float(rng.beta(1, 30))
        score = min(control + shift, 1.0)
        status = "fallback" if i < fallbacks else "ok"
        rows.append(row(f"c{i}", "canary", 3, score, canary_ms, status))
        rows.append(row(f"c{i}", "control", 1, control, 0.1))
    return pd.DataFrame(rows)


def at(seconds: float) -> float:
    return (T0 + timedelta(seconds=seconds)).timestamp()


def test_psi_is_zero_for_equal_and_large_for_shifted_distributions():
    rng = np.random.default_rng(1)
    a = rng.beta(1, 30, 5000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.beta(1, 30, 5000)) < 0.05
    assert psi(a, np.minimum(a + 0.2, 1)) > 1.0
    assert np.isnan(psi(a, np.array([])))


def test_waits_for_requests_then_bake_time_then_advances():
    few = analyze(log_frame(30), doc(), POLICY)
    assert few.checks["requests"]["status"] == "pending"
    assert decide(doc(), few, POLICY, at(60)).action == "wait"
    enough = analyze(log_frame(300), doc(), POLICY)
    assert not enough.failed and not enough.pending, enough.checks
    assert decide(doc(), enough, POLICY, at(5)).action == "wait"  # baking
    step = decide(doc(), enough, POLICY, at(11))
    assert step.action == "advance" and step.next_share == 0.5
    last = decide(doc(step=2, share=1.0), enough, POLICY, at(11))
    assert last.action == "promote"


def test_rows_before_the_step_began_do_not_count():
    later = doc(step_started_at=(T0 + timedelta(minutes=5)).isoformat())
    analysis = analyze(log_frame(300), later, POLICY)
    assert analysis.canary_requests == 0 and analysis.checks["requests"]["status"] == "pending"


@pytest.mark.parametrize(
    ("frame", "failed"),
    [
        (log_frame(300, shift=0.5), {"score_psi", "flag_rate"}),  # every score far higher
        (log_frame(300, fallbacks=30), {"error_rate"}),  # 10 % of requests failed
        (log_frame(300, canary_ms=20.0), {"latency_p99"}),  # 20 ms against 1 ms
    ],
)
def test_a_failed_check_rolls_back_at_once(frame, failed):
    analysis = analyze(frame, doc(), POLICY)
    assert set(analysis.failed) == failed, analysis.checks
    decision = decide(doc(), analysis, POLICY, at(1))  # before the bake time: no waiting
    assert decision.action == "rollback"
    assert all(name in decision.reason for name in failed)


def test_at_full_share_latency_is_judged_against_the_absolute_bound():
    """At 100 % production answers no request, or a few dozen stragglers (too few for a p99):
    the canary's p99 is judged against the policy's absolute bound, not against a p99 measured
    under another load (a step before, or a quiet moment's stragglers)."""
    full = doc(step=2, share=1.0)
    for n_prod in (0, POLICY.min_requests - 1):
        frame = log_frame(300, n_prod=n_prod, canary_ms=4.0)
        frame.loc[frame["role"] == "production", "latency_ms"] = 0.3
        analysis = analyze(frame, full, POLICY)
        assert math.isnan(analysis.production_p99_ms)
        latency = analysis.checks["latency_p99"]
        assert latency["bound"] == POLICY.max_p99_ms and latency["status"] == "pass", latency
    slow = analyze(log_frame(300, n_prod=0, canary_ms=POLICY.max_p99_ms + 10), full, POLICY)
    assert slow.checks["latency_p99"]["status"] == "fail"


def test_a_step_with_production_s_full_sample_judges_latency_against_it():
    sampled = log_frame(300, n_prod=POLICY.min_requests, canary_ms=4.5)
    sampled.loc[sampled["role"] == "production", "latency_ms"] = 0.3
    own = analyze(sampled, doc(step=2, share=1.0), POLICY)
    assert own.production_p99_ms == pytest.approx(0.3)
    assert own.checks["latency_p99"]["bound"] == pytest.approx(1.5 * 0.3 + POLICY.p99_slack_ms)
    assert own.checks["latency_p99"]["status"] == "fail"  # 4.5 ms > 1.5 x 0.3 ms + 2 ms


def test_errors_roll_back_before_the_full_sample():
    analysis = analyze(log_frame(25, fallbacks=5), doc(), POLICY)
    assert analysis.checks["error_rate"]["status"] == "fail"
    assert decide(doc(), analysis, POLICY, at(1)).action == "rollback"


def test_policy_validation():
    with pytest.raises(ValueError, match="increasing"):
        RolloutPolicy(steps=(0.5, 0.25))
    with pytest.raises(ValueError):
        RolloutPolicy(steps=(0.0, 1.0))
    assert RolloutPolicy.from_dict(POLICY.to_dict()) == POLICY


def test_start_requires_a_staged_package_a_production_and_no_active_rollout(world):
    store, _ = world
    registry = ModelRegistry(store)
    with pytest.raises(rollout.RolloutError, match="no production"):
        rollout.start(store, registry, 3, actor="t", reason="r")
    registry.promote(1, to="production", actor="t", reason="r")
    with pytest.raises(rollout.RolloutError, match="already production"):
        rollout.start(store, registry, 1, actor="t", reason="r")
    # a failed staging record keeps a version away from traffic
    from fraudloop.delivery.package import load_package

    record_staging(
        store,
        load_package(store, "fraud", 2),
        {"passed": False, "checks": [{"name": "scores equal batch scores", "passed": False}]},
    )
    with pytest.raises(PackageError, match="failed its staging test"):
        rollout.start(store, registry, 2, actor="t", reason="r")
    state = rollout.start(store, registry, 3, actor="t", reason="r", policy=POLICY)
    assert state["share"] == 0.1 and registry.aliases()["canary"] == 3
    with pytest.raises(rollout.RolloutError, match="abort it first"):
        rollout.start(store, registry, 3, actor="t", reason="r")
    paused = rollout.set_share(store, "fraud", 0.4, actor="ops", reason="hold here")
    assert paused["status"] == "paused" and paused["share"] == 0.4
    assert rollout.tick(store, registry).decision is None  # the controller leaves it alone
    resumed = rollout.resume(store, "fraud", actor="ops", reason="go on")
    assert resumed["status"] == "running" and resumed["share"] == 0.1
    aborted = rollout.abort(store, registry, actor="ops", reason="not today")
    assert aborted["status"] == "aborted" and "canary" not in registry.aliases()
    assert [d["action"] for d in aborted["decisions"]] == ["set_share", "resume", "abort"]


def test_an_operator_rollback_during_a_rollout_aborts_it(world):
    store, _ = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="t", reason="r")
    registry.promote(2, to="production", actor="t", reason="r")
    rollout.start(store, registry, 3, actor="t", reason="r", policy=POLICY)
    registry.rollback(actor="ops", reason="incident")  # production 2 -> 1 under the rollout
    result = rollout.tick(store, registry)
    assert result.decision.action == "abort" and result.doc["status"] == "aborted"
    assert "canary" not in registry.aliases() and registry.aliases()["production"] == 1


class Killed(BaseException):
    """A controller process dying at this point (not an Exception: nothing may catch it)."""


def _die_at_document_write(monkeypatch):
    """The next rollout-document write kills the 'process' (the registry write before it
    happened): the crash window between the two writes of start/apply."""

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(rollout, "_write_state", die)


@pytest.mark.parametrize("decision", ["promote", "rollback"])
def test_a_controller_killed_after_the_registry_write_is_finished_not_aborted(
    world, monkeypatch, decision
):
    store, _ = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="t", reason="r")
    started = rollout.start(store, registry, 3, actor="t", reason="r", policy=POLICY)
    doc, etag = rollout.read_state(store, "fraud")
    analysis = analyze(log_frame(0), doc, POLICY)
    with monkeypatch.context() as m:
        _die_at_document_write(m)
        with pytest.raises(Killed):
            rollout.apply(
                store,
                registry,
                doc,
                etag,
                rollout.Decision(decision, "passed"),
                analysis,
                actor="rollout-controller",
            )
    assert rollout.read_state(store, "fraud")[0]["status"] == "running"  # the window
    after = rollout.tick(store, registry)  # the restarted controller
    expected = {"promote": "promoted", "rollback": "rolled_back"}[decision]
    assert after.doc["status"] == expected and after.decision.action == decision
    assert "already recorded" in after.decision.reason
    aliases = registry.aliases()
    assert "canary" not in aliases
    assert aliases["production"] == (3 if decision == "promote" else 1)
    assert after.doc["rollout_id"] == started["rollout_id"]
    assert rollout.tick(store, registry).decision is None  # settled: nothing more to do


def test_a_start_killed_before_its_canary_alias_is_finished_by_the_controller(world, monkeypatch):
    store, _ = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="t", reason="r")
    with monkeypatch.context() as m:
        m.setattr(registry, "set_alias", lambda *a, **k: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            rollout.start(store, registry, 3, actor="t", reason="r", policy=POLICY)
    assert "canary" not in registry.aliases()
    after = rollout.tick(store, registry)
    assert after.doc["status"] == "running" and after.decision.action == "wait"
    assert registry.aliases()["canary"] == 3
    assert "start was interrupted" in registry.history("canary")[-1]["reason"]


def test_an_operator_removing_the_canary_still_aborts_the_rollout(world):
    """Recovery reads the audit log: an operator's removal is not one of the controller's."""
    store, _ = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="t", reason="r")
    rollout.start(store, registry, 3, actor="t", reason="r", policy=POLICY)
    registry.remove_alias("canary", actor="ops", reason="not now")
    after = rollout.tick(store, registry)
    assert after.decision.action == "abort" and after.doc["status"] == "aborted"


def drive(store, traffic, resources, instance, *, rounds: int = 40) -> list:
    """Send traffic through a real service while evaluating rollout_sensor, as the daemon would,
    until the rollout ends; returns the sensor's materialization events."""
    from sensors.rollout import build

    rollout_sensor = build(interval_seconds=15)
    bodies = requests_of(traffic)
    events = []
    with service_thread(store) as (base, app), httpx.Client() as client:
        for i in range(rounds):
            start = (i * 250) % len(bodies)
            chunk = bodies[start : start + 250]
            for body in chunk[:20]:
                assert client.post(f"{base}/v1/score", json=body).status_code == 200
            response = client.post(f"{base}/v1/score/batch", json={"transactions": chunk[20:]})
            assert response.status_code == 200
            wait_until(lambda: app.state.service.offpath.idle, what="control scored")
            app.state.service.predlog.flush()
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                result = rollout_sensor(context)
            if isinstance(result, dg.SensorResult):
                events += result.asset_events

            state = rollout.read_state(store, "fraud")[0]
            if state["status"] not in rollout.ACTIVE:
                break
            share = state["share"]
            wait_until(lambda s=share: app.state.service.follower.deployment.canary_share == s)
    return events


def canary_of(version: int, world, env) -> tuple:
    """v1 in production, a canary of `version` driven by the controller to its end:
    (registry, the sensor's events, the final rollout document)."""
    store, traffic = world
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="t", reason="r")
    # latency has its own tests (analyze/decide above); a loaded test machine must not decide
    # this one, so its slack is wide
    policy = RolloutPolicy(
        steps=(0.25, 0.5, 1.0), min_requests=60, bake_seconds=0, min_paired=40, p99_slack_ms=25.0
    )
    rollout.start(store, registry, version, actor="test", reason="canary test", policy=policy)
    events = drive(store, traffic, resources_on(store), env.instance)
    return registry, events, rollout.read_state(store, "fraud")[0]


@pytest.mark.slow
def test_a_good_canary_walks_its_steps_and_is_promoted(world, env):
    store = world[0]
    registry, events, state = canary_of(3, world, env)
    assert state["status"] == "promoted", state["decisions"]
    assert [e.metadata["action"].value for e in events] == ["advance", "advance", "promote"]
    assert serving_aliases(registry) == {"production": 3, "previous": 1}
    promotion = registry.history("production")[-1]
    assert promotion["actor"] == "rollout-controller"
    analysis = promotion["evidence"]["analysis"]
    assert analysis["checks"]["score_psi"]["status"] == "pass" and analysis["psi"] < 0.25
    log = read_predictions(store)
    assert {"canary", "control", "production"} <= set(log["role"])


@pytest.mark.slow
def test_a_bad_canary_is_rolled_back_automatically_and_alerted(world, env):
    store = world[0]
    registry, events, state = canary_of(2, world, env)
    assert state["status"] == "rolled_back"
    assert [e.metadata["action"].value for e in events] == ["rollback"]
    assert "score_psi" in events[0].metadata["reason"].value
    assert serving_aliases(registry) == {"production": 1}
    entry = registry.history("canary")[-1]
    assert entry["action"] == "remove_alias" and entry["evidence"]["analysis"]["psi"] > 0.25
    (alert,) = read_events(store)  # one incident: the rollback
    assert alert["severity"] == "warning" and "rollback" in alert["title"]
    assert alert["dedup_key"] == "rollout/fraud" and alert["action"] == "trigger"


def serving_aliases(registry) -> dict[str, int]:
    """The aliases that decide what serves (`candidate` only names the newest trained one)."""
    return {k: v for k, v in registry.aliases().items() if k != "candidate"}


def resources_on(store) -> dict:
    """The project's resources on the world's store (alerts recorded in it)."""
    from pipelines.config import ProjectConfig
    from pipelines.resources import build_resources

    return build_resources(ProjectConfig.from_env({"FRAUDLOOP_HOME": str(store.root)}))


def test_a_shift_the_evaluation_predicted_is_tolerated():
    """A model retrained for a new fraud pattern scores that pattern differently: the holdout
    already showed the shift, so the canary is judged against it, not against zero."""
    shifted = log_frame(300, shift=0.5)
    plain = analyze(shifted, doc(), POLICY)
    assert {"score_psi", "flag_rate"} <= set(plain.failed)
    foreseen = doc(expected={"psi": plain.psi * 0.8, "flag_rate": plain.flag_rate * 0.8})
    accepted = analyze(shifted, foreseen, POLICY)
    assert not accepted.failed, accepted.checks
    # a shift beyond the tolerated multiple of the foreseen one is still a failure
    factor = POLICY.expected_shift_factor
    beyond = doc(
        expected={"psi": plain.psi / (factor + 1), "flag_rate": plain.flag_rate / (factor + 1)}
    )
    assert {"score_psi", "flag_rate"} <= set(analyze(shifted, beyond, POLICY).failed)


def concentrated(flagged_cards: int, flagged_requests: int, n: int = 300) -> pd.DataFrame:
    """Canary traffic where `flagged_requests` requests of `flagged_cards` cards score high
    (a new fraud pattern sits on a few cards), the rest of the traffic is ordinary."""
    frame = log_frame(n, seed=3)
    canary = frame.index[frame["role"].isin(["canary", "control"])]
    rows = frame.loc[canary]
    flagged = rows[rows["role"] == "canary"].index[:flagged_requests]
    frame.loc[flagged, ["score", "decision"]] = [0.9, "review"]
    card = {
        rid: f"card-{i % flagged_cards}" for i, rid in enumerate(frame.loc[flagged, "request_id"])
    }
    frame["customer_id"] = frame["request_id"].map(card).fillna(frame["customer_id"])
    return frame


def test_a_few_cards_do_not_roll_back_a_canary_a_broad_shift_does():
    """Traffic is routed by card: a burst on two cards is noise the by-card interval absorbs;
    the same excess spread over many cards is a real shift and rolls back."""
    few = analyze(concentrated(flagged_cards=2, flagged_requests=45), doc(), POLICY)
    assert few.flag_rate > POLICY.max_flag_rate  # the point estimate alone would roll back
    assert "flag_rate" not in few.failed and "score_psi" not in few.failed, few.checks
    low, high = few.checks["flag_rate"]["interval"]
    assert low <= POLICY.max_flag_rate < high
    broad = analyze(concentrated(flagged_cards=45, flagged_requests=45), doc(), POLICY)
    assert broad.flag_rate == pytest.approx(few.flag_rate)
    assert {"flag_rate", "score_psi"} <= set(broad.failed), broad.checks


def test_one_slow_request_is_not_a_slow_canary_a_slow_tail_is():
    """A step's p99 over a few hundred requests is its two or three slowest: one request behind a
    busy core must not roll back a good model; a tail of slow requests still does."""
    one = log_frame(150, canary_ms=1.0)
    one.loc[one.index[one["role"] == "canary"][:2], "latency_ms"] = 10.0
    analysis = analyze(one, doc(), POLICY)
    assert analysis.canary_p99_ms > analysis.checks["latency_p99"]["bound"]  # the point estimate
    assert analysis.checks["latency_p99"]["status"] == "pass", analysis.checks["latency_p99"]
    tail = log_frame(150, canary_ms=1.0)
    tail.loc[tail.index[tail["role"] == "canary"][:8], "latency_ms"] = 10.0  # 5 % slow
    slow = analyze(tail, doc(), POLICY).checks["latency_p99"]
    assert slow["status"] == "fail" and slow["interval"][0] > slow["bound"], slow


def test_a_burst_on_a_few_cards_weighs_as_those_cards_not_as_their_requests():
    """Card testing: ten cards make 40 % of the requests, and the retrained canary scores them
    far higher than production (under the review threshold here). Per request that is a PSI a
    broken model would show; per card it is ten cards out of ~190, and the step passes (a
    shift of every card still fails: test_a_failed_check_rolls_back_at_once)."""
    frame = log_frame(300, seed=5)
    canary = frame.index[frame["role"] == "canary"][:120]
    frame.loc[canary, "score"] = 0.3
    burst = {rid: f"tester-{i % 10}" for i, rid in enumerate(frame.loc[canary, "request_id"])}
    frame["customer_id"] = frame["request_id"].map(burst).fillna(frame["customer_id"])
    rows = frame[frame["role"] == "canary"].merge(
        frame[frame["role"] == "control"][["request_id", "score"]], on="request_id"
    )
    per_request = psi(rows["score_y"].to_numpy(), rows["score_x"].to_numpy())
    assert per_request > 1.0
    analysis = analyze(frame, doc(), POLICY)
    assert analysis.psi < per_request / 3 and not analysis.failed, analysis.checks
