"""Settings decide the backend; a misconfiguration fails loudly at start-up, not mid-run."""

from __future__ import annotations

import pytest

from fraudloop.core.settings import Settings
from fraudloop.core.store import LocalObjectStore
from pipelines.resources import build_resources
from resources.object_store import LocalObjectStoreResource, S3ObjectStoreResource


def test_local_is_the_default(tmp_path):
    settings = Settings.from_env({"FRAUDLOOP_HOME": str(tmp_path)})
    assert isinstance(settings.open_store(), LocalObjectStore)
    assert settings.alert_path == str(tmp_path / "alerts" / "alerts.jsonl")
    resources = build_resources(settings)
    assert isinstance(resources["store"], LocalObjectStoreResource)
    assert resources["store"].root == str(tmp_path)


def test_s3_backend_round_trip(s3_endpoint, s3_bucket):
    settings = Settings.from_env(
        {
            "FRAUDLOOP_STORE": "s3",
            "FRAUDLOOP_S3_BUCKET": s3_bucket,
            "FRAUDLOOP_S3_PREFIX": "team/",
            "FRAUDLOOP_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": "us-east-1",
        }
    )
    store = settings.open_store()
    store.put_bytes("k", b"v")
    assert store.uri("k") == f"s3://{s3_bucket}/team/k"
    resource = build_resources(settings)["store"]
    assert isinstance(resource, S3ObjectStoreResource)
    assert resource.open().get_bytes("k") == b"v"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUDLOOP_STORE": "s3"}, "FRAUDLOOP_S3_BUCKET"),
        ({"FRAUDLOOP_STORE": "gcs"}, "'local' or 's3'"),
    ],
)
def test_misconfigured_backend_is_refused(env, message):
    settings = Settings.from_env(env)
    with pytest.raises(ValueError, match=message):
        settings.open_store()
    with pytest.raises(ValueError, match=message):
        build_resources(settings)
