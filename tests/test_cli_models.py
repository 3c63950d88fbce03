"""`fraudloop models ...` and `fraudloop score`: the registry and batch scoring from the shell.

A small stored history (raw partitions, fraud labels, features, online state) and two
registered versions are built once per module, directly with `fraudloop.model.training`
(no Dagster); each test works on its own copy of that home.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest

from fraudloop.core import tables
from fraudloop.core.errors import DeliveryError, ModelError, StoreError
from fraudloop.core.hours import hour_start
from fraudloop.core.store import LocalObjectStore
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.feature_store import publish_online
from fraudloop.features.pipeline import compute_feature_hours
from fraudloop.model.booster import TrainConfig, load_model
from fraudloop.model.datasets import DatasetSpec, build_dataset
from fraudloop.model.registry import ModelRegistry
from pipelines.cli import main
from tests.factories import hour_keys, register, simulated_history, store_history

pytestmark = pytest.mark.slow  # trains two versions on a stored history

START = date(2018, 4, 1)
TX_DAYS = 10
SPEC = DatasetSpec(
    cutoff=pd.Timestamp("2018-04-10 23:00", tz="UTC"),
    window_days=5,
    holdout_days=2,
    label_delay_days=2,
)
CONFIG = TrainConfig(
    n_estimators=40, min_child_samples=20, early_stopping_rounds=10, validation_share=0.3
)
CONFIG_V2 = replace(CONFIG, num_leaves=7)
TX_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulated_history(START, TX_DAYS, seed=11, scale=0.1)


@pytest.fixture(scope="module")
def base_home(tmp_path_factory, history):
    root = tmp_path_factory.mktemp("cli_models") / "home"
    store = LocalObjectStore(root)
    store_history(
        store,
        history,
        hour_keys(START, TX_DAYS),
        label_delay=timedelta(days=2),
        all_label_days=True,
    )
    run = compute_feature_hours(store, hour_keys(START, TX_DAYS), history_start=str(START))
    publish_online(store, run.state, run.state_hour)
    dataset = build_dataset(store, SPEC)
    registry = ModelRegistry(store)
    register(registry, dataset, CONFIG)
    register(registry, dataset, CONFIG_V2)
    return root


@pytest.fixture
def home(base_home, tmp_path, monkeypatch) -> LocalObjectStore:
    root = tmp_path / "home"
    shutil.copytree(base_home, root)
    monkeypatch.setenv("FRAUDLOOP_HOME", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("FRAUDLOOP_GIT_COMMIT", "test")
    return LocalObjectStore(root)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_promote_rollback_and_history(home, capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    lines = [line.split() for line in out.splitlines()[1:]]
    assert [line[0] for line in lines] == ["1", "2"]
    assert [line[-1] for line in lines] == ["-", "candidate"]  # only the newest candidate

    assert run(capsys, "models", "promote", "1", "--to", "production")[0] == 0
    code, out, _ = run(capsys, "models", "promote", "2", "--to", "production", "--reason", "better")
    assert code == 0 and "previous=v1" in out and "production=v2" in out
    rows = json.loads(run(capsys, "models", "list", "--json")[1])
    assert {r["version"]: r["aliases"] for r in rows} == {
        1: ["previous"],
        2: ["candidate", "production"],
    }
    assert all(r["metrics"]["auc"] > 0.5 for r in rows)
    code, out, _ = run(capsys, "models", "list")
    assert "previous" in out.splitlines()[1] and "production" in out.splitlines()[2]

    code, out, _ = run(capsys, "models", "rollback", "--reason", "incident 42")
    assert code == 0 and "production=v1" in out and "previous=v2" in out
    assert ModelRegistry(home).aliases() == {"production": 1, "previous": 2, "candidate": 2}

    entries = json.loads(run(capsys, "models", "history", "--alias", "production", "--json")[1])
    assert [(e["action"], e["to_version"]) for e in entries] == [
        ("promote", 1),
        ("promote", 2),
        ("rollback", 1),
    ]
    assert entries[-1]["actor"] == "cli:alice" and entries[-1]["reason"] == "incident 42"
    code, out, _ = run(capsys, "models", "history")
    assert code == 0 and "rollback" in out and "cli:alice" in out and "register" in out


def test_actor_without_user(home, capsys, monkeypatch):
    monkeypatch.delenv("USER")
    code, _, err = run(capsys, "models", "promote", "2", "--to", "production")
    assert code == 0 and "has no package" in err  # allowed, with a warning
    assert ModelRegistry(home).history("production")[-1]["actor"] == "cli:unknown"


def test_canary_and_shadow_need_a_staged_package(home, capsys):
    refused = DeliveryError.exit_code  # a delivery refusal: one line, the delivery stage's code
    code, _, err = run(capsys, "models", "promote", "2", "--to", "shadow")
    assert code == refused and "has no package" in err
    code, _, err = run(capsys, "models", "promote", "2", "--to", "canary")
    assert code == refused and "has no package" in err
    assert run(capsys, "models", "package", "2")[0] == 0
    code, _, err = run(capsys, "rollout", "start", "2")
    assert code == refused and "not been staging-tested" in err
    assert "canary" not in ModelRegistry(home).aliases()


def test_rollback_without_previous_is_a_clear_error(home, capsys):
    code, _, err = run(capsys, "models", "rollback")
    assert code == ModelError.exit_code
    assert "fraudloop models rollback: error:" in err and "previous" in err


def test_diff_and_show(home, capsys):
    code, out, _ = run(capsys, "models", "diff", "1", "2")
    assert code == 0 and "params.num_leaves" in out and "31 -> 7" in out
    assert "metrics.auc" in out and "file model.txt" in out
    diff = json.loads(run(capsys, "models", "diff", "1", "2", "--json")[1])
    assert diff["metadata"]["params.num_leaves"] == {"a": 31, "b": 7}
    assert "lineage.json" in diff["files"] and "params.seed" not in diff["metadata"]

    code, out, _ = run(capsys, "models", "show", "1")
    assert code == 0 and "version 1" in out and "(verified)" in out and "seed      42" in out
    shown = json.loads(run(capsys, "models", "show", "2", "--json")[1])
    assert shown["version"] == 2 and shown["lineage"]["config"]["num_leaves"] == 7
    assert shown["lineage"]["dataset_id"] == shown["metadata"]["dataset_id"]

    code, out, err = run(capsys, "models", "show", "9")
    assert code == ModelError.exit_code and out == ""
    assert "fraudloop models show: error:" in err and "no version 9" in err and "[1, 2]" in err
    code, _, err = run(capsys, "models", "show", "production")
    assert code == ModelError.exit_code and "alias 'production'" in err and "not set" in err


def test_reproduce_identical_then_tampered(home, capsys):
    code, out, _ = run(capsys, "models", "reproduce", "1")
    assert code == 0, out
    assert "identical" in out and "seconds" in out
    recorded = next(line for line in out.splitlines() if line.startswith("recorded"))
    rebuilt = next(line for line in out.splitlines() if line.startswith("rebuilt"))
    assert recorded.split()[-1] == rebuilt.split()[-1]

    # a version whose lineage does not describe its model file does not reproduce: exit 1
    registry = ModelRegistry(home)
    mixed = registry.register(
        files={
            "model.txt": registry.get_file(2, "model.txt"),
            "lineage.json": registry.get_file(1, "lineage.json"),
        },
        metadata={},
        actor="test",
        reason="mismatched on purpose",
    )
    code, out, _ = run(capsys, "models", "reproduce", str(mixed.version))
    assert code == 1 and "NOT identical" in out

    key = "models/fraud/versions/1/model.txt"
    home.put_bytes(key, home.get_bytes(key).replace(b"tree", b"TREE", 1))
    for argv in (["models", "reproduce", "1"], ["models", "show", "1"]):
        code, out, err = run(capsys, *argv)
        assert code == StoreError.exit_code, (argv, out, err)
        assert "model.txt" in err and "tampered" in err and "Traceback" not in err
    assert run(capsys, "models", "show", "2")[0] == 0  # the other version is untouched


def test_score_offline_and_online(home, history, tmp_path, capsys):
    registry = ModelRegistry(home)
    registry.promote(2, actor="test", reason="t")
    hour = "2018-04-09-14:00"
    stored = tables.read_partition(home, "transaction_features", hour)
    known = stored.head(15)
    last = history.sort_values("tx_datetime").iloc[-1]
    state_hour = hour_keys(START, TX_DAYS)[-1]
    new = pd.DataFrame(
        {
            "transaction_id": ["new-1", "new-2"],
            "tx_datetime": [
                (hour_start(state_hour) + timedelta(minutes=m)).isoformat() for m in (70, 75)
            ],
            "customer_id": [last["customer_id"]] * 2,
            "terminal_id": [last["terminal_id"]] * 2,
            "amount": [12.5, 300.0],
        }
    )
    feed = pd.concat(
        [
            new.iloc[[1]],
            known[TX_COLUMNS].assign(tx_datetime=known["tx_datetime"].astype(str)),
            new.iloc[[0]],
        ],
        ignore_index=True,
    )
    source = tmp_path / "tx.csv"
    feed.astype(str).to_csv(source, index=False)

    for output in (tmp_path / "scores.csv", tmp_path / "out" / "scores.parquet"):
        code, out, err = run(
            capsys,
            "score",
            "--model",
            "production",
            "--input",
            str(source),
            "--output",
            str(output),
        )
        assert code == 0, err
        assert "offline features 15" in out and "online 2" in out
        scored = pd.read_parquet(output) if output.suffix == ".parquet" else pd.read_csv(output)
        assert list(scored.columns) == [
            "transaction_id",
            "score",
            "model_version",
            "feature_source",
        ]
        assert len(scored) == len(feed)
        assert scored["transaction_id"].astype(str).tolist() == feed["transaction_id"].tolist()
        assert set(scored["model_version"]) == {2}

        model = load_model(registry.get_file(2, "model.txt").decode())
        offline = scored[scored["feature_source"] == "offline"].set_index("transaction_id")
        assert sorted(offline.index) == sorted(known["transaction_id"])
        expected = pd.Series(model.predict(known), index=known["transaction_id"].astype(str))
        ids = [str(i) for i in offline.index]
        assert offline["score"].to_numpy() == pytest.approx(expected.loc[ids].to_numpy(), rel=1e-12)
        online = scored[scored["feature_source"] == "online"]
        assert sorted(online["transaction_id"]) == ["new-1", "new-2"]
        assert online["score"].between(0, 1).all()

    # the online rows are computed in time order, new-1 observed before new-2
    from fraudloop.features.feature_store import load_online

    store, _ = load_online(home)
    rows = new.assign(tx_datetime=pd.to_datetime(new["tx_datetime"], utc=True))
    first = store.features_and_observe(rows.iloc[0].to_dict())
    second = store.features(rows.iloc[1].to_dict())
    want = model.predict(pd.DataFrame([first, second], columns=list(FEATURE_NAMES)))
    got = scored.set_index("transaction_id").loc[["new-1", "new-2"], "score"].to_numpy()
    assert got == pytest.approx(want, rel=1e-12)


def test_score_errors(home, tmp_path, capsys):
    source = tmp_path / "tx.csv"
    pd.DataFrame({"transaction_id": ["a"], "amount": ["1"]}).to_csv(source, index=False)
    code, _, err = run(
        capsys, "score", "--model", "1", "--input", str(source), "--output", str(tmp_path / "o.csv")
    )
    assert code == 2 and "fraudloop score: error:" in err and "lacks columns" in err
    code, _, err = run(
        capsys, "score", "--model", "7", "--input", str(source), "--output", str(tmp_path / "o.csv")
    )
    assert code == ModelError.exit_code and "no version 7" in err
