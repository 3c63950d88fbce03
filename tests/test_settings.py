"""Settings decide the backend; a misconfiguration fails loudly at start-up, not mid-run; every
setting is declared once and read by one reader."""

from __future__ import annotations

import dataclasses
import os

import pytest

from fraudloop.core.errors import ConfigError
from fraudloop.core.settings import Settings, declared, from_env
from fraudloop.core.store import LocalObjectStore
from fraudloop.delivery.policy import RolloutPolicy
from pipelines.config import SETTINGS_CLASSES, ProjectConfig
from pipelines.resources import build_resources
from resources.store import LocalObjectStoreResource, S3ObjectStoreResource


def test_local_is_the_default(tmp_path):
    config = ProjectConfig.from_env({"FRAUDLOOP_HOME": str(tmp_path)})
    assert isinstance(config.settings.open_store(), LocalObjectStore)
    resources = build_resources(config)
    assert isinstance(resources["store"], LocalObjectStoreResource)
    assert resources["store"].root == str(tmp_path)


def test_s3_backend_round_trip(s3_endpoint, s3_bucket):
    config = ProjectConfig.from_env(
        {
            "FRAUDLOOP_STORE": "s3",
            "FRAUDLOOP_S3_BUCKET": s3_bucket,
            "FRAUDLOOP_S3_PREFIX": "team/",
            "FRAUDLOOP_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": "us-east-1",
        }
    )
    store = config.settings.open_store()
    store.put_bytes("k", b"v")
    assert store.uri("k") == f"s3://{s3_bucket}/team/k"
    resource = build_resources(config)["store"]
    assert isinstance(resource, S3ObjectStoreResource)
    assert resource.open().get_bytes("k") == b"v"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUDLOOP_STORE": "s3"}, "FRAUDLOOP_S3_BUCKET"),
        ({"FRAUDLOOP_STORE": "gcs"}, "'local' or 's3'"),
        ({"FRAUDLOOP_LABEL_DELAY_DAYS": "a week"}, "FRAUDLOOP_LABEL_DELAY_DAYS='a week'"),
        ({"FRAUDLOOP_ROLLOUT_STEPS": "0.5,0.25"}, "increasing shares"),
        ({"FRAUDLOOP_DECISION_THRESHOLD": "1.5"}, r"threshold must be in \(0, 1\)"),
    ],
)
def test_misconfiguration_is_refused_with_the_variable_to_fix(env, message):
    with pytest.raises(ConfigError, match=message):
        ProjectConfig.from_env(env)


def test_every_setting_is_read_from_its_variable_and_defaults_are_the_dataclasses():
    defaults = ProjectConfig.from_env({})
    assert defaults.rollout == RolloutPolicy()
    config = ProjectConfig.from_env(
        {
            "FRAUDLOOP_ROLLOUT_STEPS": "0.1, 1",
            "FRAUDLOOP_ROLLOUT_BAKE_SECONDS": "5",
            "FRAUDLOOP_MAX_FILE_MB": "8",
            "FRAUDLOOP_TRAIN_WINDOW_DAYS": "14",
            "FRAUDLOOP_ACCURACY_MIN_RATIO": "0.5",
            "FRAUDLOOP_LABEL_DELAY_DAYS": "1",
            "FRAUDLOOP_PARTITION_START": "2018-05-01-00:00",
        }
    )
    assert config.rollout.steps == (0.1, 1.0) and config.rollout.bake_seconds == 5.0
    assert config.ingest.max_file_bytes == 8 * 1024 * 1024
    assert config.model.train_window_days == 14
    assert config.monitoring.accuracy_min_ratio == 0.5
    # the staging test rebuilds state with the deployment's label delay and history
    assert config.staging.label_delay_days == 1 and config.staging.history_start == "2018-05-01"


def test_resources_carry_the_values_and_hand_the_core_its_policies(tmp_path):
    config = ProjectConfig.from_env(
        {"FRAUDLOOP_HOME": str(tmp_path), "FRAUDLOOP_ROLLOUT_STEPS": "0.2,1"}
    )
    resources = build_resources(config)
    assert resources["rollout"].policy() == config.rollout
    assert resources["monitoring"].policy() == config.monitoring
    assert resources["ingestion"].policy() == config.ingest
    assert resources["training"].policy() == config.model
    assert resources["settings"].label_delay_days == config.settings.label_delay_days


def test_secrets_never_become_plain_resource_values(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDLOOP_ALERT_WEBHOOK_URL", "https://hooks.example/T0/k3y-9f3a")
    config = ProjectConfig.from_env({**os.environ, "FRAUDLOOP_HOME": str(tmp_path)})
    resources = build_resources(config)
    assert "k3y-9f3a" not in repr(resources["settings"])
    assert "k3y-9f3a" not in repr(config.settings)
    webhook = resources["alerts"].webhook_url
    assert (
        type(webhook).__name__ == "EnvVar" and webhook.env_var_name == "FRAUDLOOP_ALERT_WEBHOOK_URL"
    )


def test_each_variable_is_declared_once():
    names = [n for cls in SETTINGS_CLASSES for f in declared(cls) for n in f.metadata["env"]]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for cls in SETTINGS_CLASSES:
        for field in declared(cls):
            assert field.metadata["help"], (cls.__name__, field.name)
            assert field.default is not dataclasses.MISSING, (cls.__name__, field.name)


def test_from_env_keeps_defaults_for_unset_and_empty_variables():
    assert from_env(Settings, {"FRAUDLOOP_PARTITION_END": ""}).partition_end is None
    assert from_env(Settings, {}).label_delay_days == Settings.label_delay_days
