"""Store faults end to end: an S3 endpoint that stalls, answers 503 or drops connections
(`tests/s3_faults.py`, a proxy in front of moto's server) under the store's own client and under
a real Dagster ingestion run. Transient faults heal by retries with short timeouts; an outage
longer than every retry fails the run with nothing half-written, and the rerun converges."""

from __future__ import annotations

import pytest
from botocore.exceptions import ReadTimeoutError

from fraudloop.core import tables
from fraudloop.core.store import S3ObjectStore
from tests.dagster_runs import run
from tests.factories import land_hour
from tests.s3_faults import FaultyS3Proxy

H5 = "2018-04-01-05:00"
INGEST = ["raw_transactions", "transactions_pass_expectations"]


def _store(proxy: FaultyS3Proxy, bucket: str, **client) -> S3ObjectStore:
    return S3ObjectStore(
        bucket, prefix="f", endpoint_url=proxy.url, region_name="us-east-1", **client
    )


def test_a_stalled_endpoint_costs_one_timeout_per_attempt_not_minutes(s3_endpoint, s3_bucket):
    with FaultyS3Proxy(s3_endpoint) as proxy:
        store = _store(proxy, s3_bucket, timeout_seconds=0.5, max_attempts=2)
        store.put_bytes("a/b.json", b"{}")
        proxy.fail("stall")
        with pytest.raises(ReadTimeoutError):  # the endpoint took the request, never answered
            store.get_bytes("a/b.json")
        assert proxy.refused == 2  # each attempt gave up at its timeout, and only two were made
        proxy.recover()
        assert store.get_bytes("a/b.json") == b"{}"


@pytest.mark.parametrize("mode", ["503", "drop", "stall"])
def test_a_transient_fault_is_healed_by_the_clients_retries(s3_endpoint, s3_bucket, mode):
    with FaultyS3Proxy(s3_endpoint) as proxy:
        store = _store(proxy, s3_bucket, timeout_seconds=0.5, max_attempts=4)
        proxy.fail(mode, count=2)  # the next two requests fail, then the endpoint is back
        store.put_bytes("a/b.json", b"{}")
        assert proxy.refused == 2 and store.get_bytes("a/b.json") == b"{}"


def _s3_env(env, proxy, bucket, attempts: int):
    return env.configure(
        FRAUDLOOP_STORE="s3",
        FRAUDLOOP_S3_BUCKET=bucket,
        FRAUDLOOP_S3_PREFIX="faults",
        FRAUDLOOP_S3_ENDPOINT_URL=proxy.url,
        FRAUDLOOP_S3_TIMEOUT_SECONDS="1",
        FRAUDLOOP_S3_MAX_ATTEMPTS=str(attempts),
        AWS_REGION="us-east-1",
    )


def test_an_outage_longer_than_the_clients_retries_is_healed_by_the_step_retry(
    env, s3_endpoint, s3_bucket
):
    """The ingestion step meets more failures than its S3 client retries: the step fails, the
    asset's RetryPolicy runs it again, and the run succeeds with the hour ingested once."""
    with FaultyS3Proxy(s3_endpoint) as proxy:
        env = _s3_env(env, proxy, s3_bucket, attempts=2)
        land_hour(env.store, H5, rows=30)
        proxy.fail("503", after=3, count=4)  # mid-step: more than two attempts can absorb
        result = run(env, INGEST, partition_key=H5)
        assert proxy.refused == 4
        assert result.success
        retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retried, "the client's retries absorbed it: the outage was too short to test"
        pointer = tables.read_pointer(env.store, "transactions", H5)
        assert pointer["status"] == "valid" and pointer["rows"] == 30


def test_a_long_outage_fails_the_run_cleanly_and_the_rerun_converges(env, s3_endpoint, s3_bucket):
    with FaultyS3Proxy(s3_endpoint) as proxy:
        env = _s3_env(env, proxy, s3_bucket, attempts=2)
        land_hour(env.store, H5, rows=30)
        landed = sorted(i.key for i in env.store.list(""))
        proxy.fail("drop", after=3)  # down for the rest of the run and its step retries
        result = run(env, INGEST, partition_key=H5)
        assert not result.success
        proxy.recover()
        # nothing half-written: no pointer, no raw object, no temp; the landed file intact
        assert tables.read_pointer(env.store, "transactions", H5) is None
        assert sorted(i.key for i in env.store.list("")) == landed
        again = run(env, INGEST, partition_key=H5)
        assert again.success
        pointer = tables.read_pointer(env.store, "transactions", H5)
        assert pointer["status"] == "valid" and pointer["rows"] == 30
        assert env.store.get_bytes(pointer["key"])  # the version verifies when read
