"""The stack's S3 stand-in (infra/docker/s3/journaled_moto.py) keeps its objects across a
restart as MinIO does: same bytes, same ETag, same LastModified. The landing sensor's cursor
trusts LastModified: replayed at "now", every landed file looked new after the stack test's S3
outage and the whole history was ingested again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraudloop.core.ports import free_port
from tests.servers import stop_process, wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "docker" / "s3" / "journaled_moto.py"


def _start(port: int, journal: Path) -> subprocess.Popen:
    args = ["--port", str(port), "--journal", str(journal), "--bucket", "fraudloop"]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    import httpx

    def listening() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/fraudloop").status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None  # exited: reported below

    wait_until(listening, 60, "journaled moto to listen")
    assert proc.poll() is None, proc.stdout.read()
    return proc


@pytest.fixture
def server(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    port, journal = free_port(), tmp_path / "journal.jsonl"
    procs = [_start(port, journal)]

    def restart() -> None:
        stop_process(procs[-1])
        procs.append(_start(port, journal))

    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    yield client, restart, journal
    for proc in procs:
        stop_process(proc)


def _listing(client) -> dict[str, tuple]:
    objects = client.list_objects_v2(Bucket="fraudloop").get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"], o["Size"]) for o in objects}


def test_a_restart_keeps_objects_their_etags_and_their_write_times(server):
    client, restart, _ = server
    client.put_object(Bucket="fraudloop", Key="landing/a.csv", Body=b"first")
    time.sleep(1.1)  # LastModified has whole seconds: the two writes differ by one
    client.put_object(Bucket="fraudloop", Key="landing/b.csv", Body=b"second")
    client.put_object(Bucket="fraudloop", Key="landing/gone.csv", Body=b"x")
    client.delete_object(Bucket="fraudloop", Key="landing/gone.csv")
    before = _listing(client)
    assert set(before) == {"landing/a.csv", "landing/b.csv"}
    assert before["landing/a.csv"][1] < before["landing/b.csv"][1]

    time.sleep(1.1)  # replayed "now", the times would move by at least a second
    restart()

    assert _listing(client) == before
    body = client.get_object(Bucket="fraudloop", Key="landing/a.csv")
    assert body["Body"].read() == b"first"
    assert body["LastModified"] == before["landing/a.csv"][1]


def test_a_conditional_write_refused_before_is_refused_after_a_restart(server):
    client, restart, _ = server
    client.put_object(Bucket="fraudloop", Key="registry/lock", Body=b"mine", IfNoneMatch="*")
    restart()
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket="fraudloop", Key="registry/lock", Body=b"yours", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket="fraudloop", Key="registry/lock")["Body"].read() == b"mine"


def test_a_torn_last_journal_line_is_a_write_never_answered(server):
    client, restart, journal = server
    client.put_object(Bucket="fraudloop", Key="landing/kept.csv", Body=b"kept")
    with journal.open("a") as handle:
        handle.write('{"method": "PUT", "path": "/fraudloop/landing/torn.csv", "bo')
    restart()
    assert set(_listing(client)) == {"landing/kept.csv"}


def _keys(client, **kwargs) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="fraudloop", **kwargs)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_listings_through_the_key_index_page_by_prefix_and_see_every_write(server):
    client, restart, _ = server
    hours = [f"2018-04-0{d}-{h:02d}:00" for d in (1, 2) for h in range(24)]
    written = [f"predictions/{hour}/r-{n}.parquet" for hour in hours for n in range(3)]
    written += [f"landing/2018-04-01/{h:02d}.csv" for h in range(24)]
    for key in written:
        client.put_object(Bucket="fraudloop", Key=key, Body=b"x")
    predictions = sorted(k for k in written if k.startswith("predictions/"))
    # 144 keys in pages of 50, interleaved with another prefix: every key once, in order
    assert _keys(client, Prefix="predictions/", PaginationConfig={"PageSize": 50}) == predictions
    assert _keys(client, Prefix="predictions/2018-04-02-07:00/") == [
        f"predictions/2018-04-02-07:00/r-{n}.parquet" for n in range(3)
    ]
    assert _keys(client, Prefix="predictions/2018-04-03") == []
    top = client.list_objects_v2(Bucket="fraudloop", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["landing/", "predictions/"]
    # list-after-write: a listing made after a write was answered shows it
    client.delete_object(Bucket="fraudloop", Key=predictions[0])
    client.put_object(Bucket="fraudloop", Key="predictions/2018-04-01-00:00/r-9.parquet", Body=b"")
    after = _keys(client, Prefix="predictions/2018-04-01-00:00/")
    assert after == [*predictions[1:3], "predictions/2018-04-01-00:00/r-9.parquet"]
    # a v1 listing with a marker goes through the same index
    v1 = client.list_objects(
        Bucket="fraudloop", Prefix="landing/", Marker="landing/2018-04-01/21.csv"
    )
    assert [o["Key"] for o in v1["Contents"]] == [f"landing/2018-04-01/{h}.csv" for h in (22, 23)]
    restart()  # the index of a restarted server is built from the replayed journal
    assert _keys(client, Prefix="predictions/2018-04-01-00:00/") == after
