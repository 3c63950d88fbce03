"""The model CI loop in real Dagster runs: v1 passes on floors and is promoted; an identical
retrain is held (noise never promotes); a clearly worse model is rejected; production stays.
The deployment flags at a non-default threshold: the gate, the package and the canary's expected
flag rate all use it, and the evaluation travels from the run that made it."""

import json
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pytest

from fraudloop.core.alerts import read_events
from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import generate_day
from fraudloop.model.booster import load_model
from fraudloop.model.datasets import load_dataset
from fraudloop.model.registry import ModelRegistry
from fraudloop.model.training import reproduce
from tests.factories import store_history

START = date(2018, 4, 1)
DAYS = 36
CUTOFF = "2018-05-07T00:00:00+00:00"  # end of the history: holdout 04-24..04-30, train before
TRAINING = [
    "training_dataset",
    "candidate_model",
    "model_evaluation",
    "model_package",
    "package_passes_staging",
    "model_release",
]
THRESHOLD = 0.3  # not the default 0.5: every stage must flag at the deployment's threshold


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    population = make_population(seed=5, scale=0.2)
    return pd.concat(
        [generate_day(population, START + timedelta(days=d)) for d in range(DAYS)],
        ignore_index=True,
    )


@pytest.fixture
def stored(env, history):
    """A stored history (raw, labels, bi-temporal labels), then its features; the deployment
    flags at THRESHOLD."""
    env = env.configure(FRAUDLOOP_DECISION_THRESHOLD=str(THRESHOLD))
    first = pd.Timestamp(START, tz="UTC")
    hours = [(first + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24 * DAYS)]
    store_history(env.store, history, hours)
    compute_feature_hours(env.store, hours, history_start=str(START))
    return env


#: a modest first production (stumps): passes the floors, leaves room for a real improvement
MODEST = {"num_leaves": 2, "n_estimators": 40}


def train_run(env, **candidate):
    gate = {"floor_auc": 0.75, "floor_ap": 0.2, "n_boot": 300}
    config = {
        "ops": {
            "training_dataset": {"config": {"cutoff": CUTOFF, "window_days": 16}},
            "candidate_model": {"config": candidate},
            "model_evaluation": {"config": gate},
        }
    }
    return run_with_config(env, TRAINING, config)


def run_with_config(env, assets, config, selection=None):
    return dg.materialize(
        [env.resolve(a) for a in assets],
        instance=env.instance,
        resources=env.resources,
        run_config=config,
        selection=selection,
        raise_on_error=False,
    )


def decision_of(env, version: int) -> dict:
    return json.loads(env.store.get_bytes(f"reports/evaluations/v{version}.json"))


@pytest.mark.slow
def test_first_model_promoted_identical_retrain_held_worse_rejected(stored):
    env = stored
    registry = ModelRegistry(env.store)

    first = train_run(env, **MODEST)
    assert first.success
    assert registry.aliases()["production"] == 1
    assert decision_of(env, 1)["decision"]["decision"] == "promote"  # floors alone
    lineage = json.loads(registry.get_file(1, "lineage.json"))
    assert lineage["dataset"]["id"] and lineage["config"]["seed"] == 42
    report = env.store.get_bytes("reports/evaluations/v1.md").decode()
    assert "candidate v1" in report and "production (none)" in report

    same = train_run(env, **MODEST)  # the same data and config: the same model, no significant gain
    # a held candidate is the gate working: a green run, a yellow check, nothing packaged
    assert same.success
    assert not same.asset_materializations_for_node("model_package")
    started = {e.step_key for e in same.all_events if e.is_step_start}
    assert "model_release" not in started
    gate = {c.check_name: c for c in same.get_asset_check_evaluations()}
    beats = gate["candidate_beats_production"]
    assert not beats.passed and beats.severity == dg.AssetCheckSeverity.WARN
    assert beats.metadata["decision"].text == "hold"
    assert read_events(env.store) == []  # nobody is told about the loop working
    record = decision_of(env, 2)
    assert record["decision"]["decision"] == "hold" and record["production"] == 1
    assert registry.aliases()["production"] == 1
    assert (
        registry.show(2).files["model.txt"]["sha256"]
        == registry.show(1).files["model.txt"]["sha256"]
    )

    worse = train_run(env, n_estimators=2, num_leaves=2, early_stopping_rounds=1)
    assert worse.success and not worse.asset_materializations_for_node("model_package")
    assert decision_of(env, 3)["decision"]["decision"] == "reject"
    (rejected,) = read_events(env.store)  # under the floors: one warning, until a promotion
    assert rejected["dedup_key"] == "training/fraud/rejected"
    assert rejected["severity"] == "warning" and "v3 rejected" in rejected["title"]
    assert registry.aliases()["production"] == 1
    report = env.store.get_bytes("reports/evaluations/v3.md").decode()
    assert "candidate v3" in report and "production v1" in report

    production_changes = [e for e in registry.history() if e.get("alias") == "production"]
    assert [(e["to_version"], e["actor"]) for e in production_changes] == [
        (1, "dagster:model_release")
    ]
    evidence = production_changes[0]["evidence"]
    assert evidence["evaluation"]["decision"]["decision"] == "promote"
    assert evidence["staging"]["passed"] and evidence["staging"]["version"] == 1

    # a significantly better model: promoted by the gate, packaged, staged, and released as a
    # canary -- production does not move until the rollout controller says so
    better = train_run(env)
    assert better.success, decision_of(env, 4)["decision"]
    assert read_events(env.store)[-1]["action"] == "resolve"  # the rejection incident closes
    checks = better.get_asset_check_evaluations()
    staging = next(c for c in checks if c.check_name == "package_passes_staging")
    assert staging.passed and staging.metadata["max_abs_score_diff"].value <= 1e-9
    assert staging.metadata["stored_features_current"].value is True
    assert registry.aliases()["production"] == 1 and registry.aliases()["canary"] == 4
    state = json.loads(env.store.get_bytes("models/fraud/rollout.json"))
    assert state["status"] == "running" and state["canary_version"] == 4
    assert state["share"] == env.config.rollout.steps[0]

    # the threshold: evaluated at, packaged with, and expected on live traffic at THRESHOLD
    record = decision_of(env, 4)
    assert record["threshold"] == THRESHOLD
    spec = json.loads(env.store.get_bytes("models/fraud/packages/4/feature_spec.json"))
    assert spec["decision_threshold"] == THRESHOLD
    lineage = json.loads(registry.get_file(4, "lineage.json"))
    holdout = load_dataset(env.store, lineage["dataset"]).holdout
    scores = load_model(registry.get_file(4, "model.txt").decode()).predict(holdout)
    assert state["expected"]["flag_rate"] == pytest.approx(float((scores >= THRESHOLD).mean()))
    assert (scores >= THRESHOLD).mean() != (scores >= 0.5).mean()
    # the drift reference was registered with the model, not rebuilt by monitoring
    assert "drift_reference.parquet" in registry.show(4).files

    # the evaluation travels as evidence: a package built from the value this run produced,
    # whatever the `candidate` alias points at now
    registry.set_alias("candidate", 1, actor="test", reason="another run trained since")
    repackaged = run_with_config(env, TRAINING, {}, selection=["model_package"])
    assert repackaged.success
    packaged = repackaged.asset_materializations_for_node("model_package")[0]
    assert packaged.metadata["version"].value == 4

    result = reproduce(env.store, registry, 1)
    assert result.identical, result
