"""Reports one click away: links a browser opens (the report server's, or a presigned S3 URL
fetched over real HTTP from moto's server), and a server that serves reports and nothing else."""

from __future__ import annotations

import threading

import httpx
import pytest

from fraudloop.core.report_links import browser_link
from fraudloop.core.report_server import make_server
from fraudloop.core.store import LocalObjectStore

DRIFT = "monitoring/drift/2018-04-20.html"
PAGE = b"<!doctype html><title>drift</title><p>amount drifted</p>"


@pytest.fixture
def served(tmp_path):
    store = LocalObjectStore(tmp_path / "home")
    store.put_bytes(DRIFT, PAGE)
    store.put_bytes("reports/evaluations/v2.md", b"# candidate v2\n")
    store.put_bytes("models/fraud/versions/2/model.txt", b"tree=...")
    store.put_bytes("predictions/2018-04-20-10:00/a-1.parquet", b"PAR1")
    server = make_server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_report_link_opens_the_report(served):
    store, base = served
    link = browser_link(store, DRIFT, base_url=base)
    answer = httpx.get(link)
    assert answer.status_code == 200 and answer.content == PAGE
    assert answer.headers["content-type"] == "text/html"
    md = httpx.get(browser_link(store, "reports/evaluations/v2.md", base_url=base))
    assert md.text == "# candidate v2\n" and md.headers["content-type"].startswith("text/plain")
    index = httpx.get(base + "/").text
    assert DRIFT in index and "v2.md" in index and "model.txt" not in index


@pytest.mark.parametrize(
    "path",
    [
        "/models/fraud/versions/2/model.txt",  # not a report
        "/predictions/2018-04-20-10:00/a-1.parquet",  # card data stays private
        "/monitoring/../models/fraud/versions/2/model.txt",
        "/monitoring/%2e%2e/models/fraud/versions/2/model.txt",
        "/monitoring/drift/missing.html",
    ],
)
def test_nothing_but_reports_is_served(served, path):
    _store, base = served
    answer = httpx.get(base + path)
    assert answer.status_code == 404 and b"tree=" not in answer.content


def test_without_a_base_url_a_local_link_is_the_file(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert browser_link(store, DRIFT) == (tmp_path / DRIFT).resolve().as_uri()


def test_on_s3_the_link_is_presigned_and_opens_without_credentials(s3_store):
    s3_store.put_bytes(DRIFT, PAGE)
    link = browser_link(s3_store, DRIFT)
    assert "Signature=" in link and link.startswith(s3_store.endpoint_url)
    answer = httpx.get(link)  # a browser: no AWS credentials, only the URL
    assert answer.status_code == 200 and answer.content == PAGE
    assert answer.headers["content-type"] == "text/html"  # shown, not downloaded
