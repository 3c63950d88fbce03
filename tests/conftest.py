"""Shared fixtures: object stores on both backends, with S3 served by moto over real HTTP."""

from __future__ import annotations

import os
import threading
import uuid

import dagster as dg
import pytest

from fraudloop.core.ports import free_port
from fraudloop.core.store import LocalObjectStore, S3ObjectStore


class AtomicWrites:
    """moto checks a write's precondition (If-Match, If-None-Match) and then stores the object
    as two steps with nothing held between them, so under its threaded server two conditional
    PUTs racing on one key could both pass: CI saw two winners of six in
    `test_cross_process_cas_has_exactly_one_winner[s3]`. S3 and MinIO make a conditional write
    atomic, and the store's compare-and-swap relies on it; taking moto's writes one at a time
    gives it the same contract (the stack's journaled moto does, for its journal's order).
    Only writes wait for each other; the tests' uploads are small and local."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] not in {"PUT", "POST", "DELETE"}:
            return self.app(environ, start_response)
        with self.lock:
            result = self.app(environ, start_response)
            try:
                return list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port: a real HTTP endpoint, not in-process patching."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    app = AtomicWrites(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", free_port(), app, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def s3_bucket(s3_endpoint):
    import boto3

    name = f"fraudloop-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def s3_store(s3_endpoint, s3_bucket) -> S3ObjectStore:
    return S3ObjectStore(s3_bucket, prefix="fl", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request):
    """Runs a test once per backend: both must behave identically."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def env(tmp_path):
    """A temporary Dagster instance and the project's definitions on a local store in tmp_path
    (`env.configure(...)` rebuilds them with other settings)."""
    from tests.dagster_runs import DagsterEnv

    with dg.instance_for_test() as instance:
        yield DagsterEnv.build(instance, {"FRAUDLOOP_HOME": str(tmp_path / "home")})


@pytest.fixture(scope="session")
def deployable_world(tmp_path_factory):
    """Stored history, online state, three staged versions and live traffic (serving_home)."""
    from tests.serving_home import build_deployable_world

    root = tmp_path_factory.mktemp("deployable") / "home"
    traffic = build_deployable_world(root)[1]
    return root, traffic


@pytest.fixture
def world(deployable_world, tmp_path):
    """A private copy of the deployable world: (store, traffic)."""
    import shutil

    root, traffic = deployable_world
    shutil.copytree(root, tmp_path / "home")
    return LocalObjectStore(tmp_path / "home"), traffic


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory):
    """One real redis-server for the session (tests.servers.redis_server)."""
    from tests.servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture
def redis_url(redis_server_url):
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    return redis_server_url
