"""The Dagster UI as on-call sees it: a real `dagster-webserver` on a temporary instance,
driven by headless Chromium over the DevTools protocol.

Three valid hours land, then the last one is re-delivered broken (every amount negative: over the
rejected-share backstop); all three are ingested as one range run of `hourly_ingestion_job`, and
the rendered pages must show the assets, the blocking check's warning, the successful run and
the quarantined partition.

The ingestion runs in this process, with definitions built for the temporary store (settings
are read when definitions are built, not when modules are imported).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import dagster as dg
import httpx
import pytest
from dagster._core.instance.ref import InstanceRef

from fraudloop.core.ports import free_port
from fraudloop.core.processes import default_interrupts, stop_group
from fraudloop.core.store import LocalObjectStore
from pipelines.config import ProjectConfig
from pipelines.runner import run_partition_range
from tests.factories import csv_bytes, land_hour

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOURS = ["2018-04-01-00:00", "2018-04-01-01:00", "2018-04-01-02:00"]
BROKEN_HOUR = "2018-04-01-02:00"
JOB = "hourly_ingestion_job"
SERVER_TIMEOUT = 90.0
PAGE_TIMEOUT = 30.0
VIEWPORT = (1400, 900)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- the server --------------------------------------------------------------------------


@dataclass
class DagsterUI:
    url: str
    tmp: Path
    ingest: dict  # {"run_id": ..., "success": ...} of the range run

    def graphql(self, query: str, **variables) -> dict:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            timeout=30,
            trust_env=False,
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def land_feed(fraudloop_home: Path) -> None:
    """Three valid hours, then the last one re-delivered with every amount negative."""
    store = LocalObjectStore(fraudloop_home)
    for seed, hour in enumerate(HOURS):
        key, frame = land_hour(store, hour, rows=40, seed=seed)
        if hour == BROKEN_HOUR:
            store.put_bytes(key, csv_bytes(frame.assign(amount="-5.00")))


@contextlib.contextmanager
def dagster_ui(tmp: Path) -> Iterator[DagsterUI]:
    """A temporary instance holding the ingestion run, served by `dagster-webserver`."""
    dagster_home, fraudloop_home = tmp / "dagster_home", tmp / "fraudloop_home"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "infra/local/dagster.yaml", dagster_home / "dagster.yaml")
    land_feed(fraudloop_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDLOOP_")}
    env |= {
        "DAGSTER_HOME": str(dagster_home),
        "FRAUDLOOP_HOME": str(fraudloop_home),
        "FRAUDLOOP_STORE": "local",
    }
    # first the run, then the server: both would otherwise create the instance's SQLite
    # databases at once and race on their migrations
    # the local profile's storage lives in $DAGSTER_HOME, as the server's will
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(dagster_home)}):
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home)))
        try:
            result = run_partition_range(
                JOB,
                HOURS[0],
                HOURS[-1],
                dagster_instance=instance,
                config=ProjectConfig.from_env(env),
            )
        finally:
            instance.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "webserver.log"
    webserver_bin = Path(sys.executable).parent / "dagster-webserver"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [str(webserver_bin), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_interrupts,
        )
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            assert server.poll() is None, f"dagster-webserver exited:\n{_tail(log)}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/server_info", timeout=2, trust_env=False).is_success:
                    break
            assert time.monotonic() < deadline, (
                f"dagster-webserver did not answer /server_info within {SERVER_TIMEOUT:.0f} s:\n"
                f"{_tail(log)}"
            )
            time.sleep(0.25)
        ui = DagsterUI(
            url=url, tmp=tmp, ingest={"run_id": result.run_id, "success": result.success}
        )
        # the "join the community" dialog would cover every page; dismissed in this instance
        ui.graphql("mutation { setNuxSeen }")
        yield ui
    finally:
        stop_group(server, grace=15)


# --- the browser -------------------------------------------------------------------------


class Chromium:
    """Headless Chromium and a minimal Chrome DevTools protocol client for its one page."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.log = profile.parent / "chromium.log"
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        binary = shutil.which("chromium")
        if binary is None:
            pytest.fail(
                "chromium is not on PATH: the UI tests need Debian's chromium package; "
                "install it with `bash infra/system-deps.sh` (as root; `make test` runs it)",
                pytrace=False,
            )
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stack.enter_context(self.log.open("wb")),
            start_new_session=True,
        )
        self._stack.callback(stop_group, self.proc, 15)
        try:
            port_file = self.profile / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while len(lines := _read_lines(port_file)) < 2:
                assert self.proc.poll() is None, f"chromium exited:\n{_tail(self.log)}"
                assert time.monotonic() < deadline, f"no DevTools port:\n{_tail(self.log)}"
                time.sleep(0.1)
            targets = httpx.get(f"http://127.0.0.1:{lines[0]}/json/list", trust_env=False).json()
            page = next(t for t in targets if t["type"] == "page")
            self.ws = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], proxy=None, max_size=None)
            )
            width, height = VIEWPORT
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def call(self, method: str, **params):
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # skip events and stale replies
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        """Navigate; later waits see only the new document (the old one is marked stale)."""
        with contextlib.suppress(RuntimeError):
            self.js("window.__stale = true")
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = PAGE_TIMEOUT):
        """Poll a JS expression on the new page until it is truthy; fail with the page text."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError):  # mid-navigation: no context yet
                if value := self.js(f"window.__stale ? null : ({expression})"):
                    return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: not on {self.js('location.href')} after {timeout:.0f} s; "
                    f"rendered text:\n{self.text()[:3000]}"
                )
            time.sleep(0.25)

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *patterns: str | re.Pattern, timeout: float = PAGE_TIMEOUT) -> str:
        """The page's rendered text (innerText, not the HTML shell) once every pattern is in it:
        a str literally, a compiled regex by search. React renders in steps, so poll."""
        expression = "document.body && document.readyState !== 'loading' && document.body.innerText"
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(deadline - time.monotonic(), 1.0)
            text = self.wait_for(expression, "a rendered page", remaining)
            missing = [
                p.pattern if isinstance(p, re.Pattern) else p
                for p in patterns
                if not (p.search(text) if isinstance(p, re.Pattern) else p in text)
            ]
            if not missing:
                return text
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{missing} not on {self.js('location.href')} after {timeout:.0f} s; "
                    f"rendered text:\n{text[:3000]}"
                )
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


GRAPH_NODES_JS = (
    "Array.from(document.querySelectorAll('svg foreignObject'))"
    ".map(n => (n.firstElementChild ? n.firstElementChild.innerText : '').split('\\n')[0].trim())"
    ".filter(Boolean)"
)


def _nodes_shown(*names: str) -> str:
    return (
        f"(() => {{ const nodes = {GRAPH_NODES_JS};"
        f" return {json.dumps(list(names))}.every(a => nodes.includes(a)) ? nodes : null; }})()"
    )


def _group_toggle(group: str) -> str:
    """Where the expand/collapse toggle of a group box is (its top-right corner)."""
    return (
        "(() => { for (const fo of document.querySelectorAll('svg foreignObject')) {"
        " const el = fo.firstElementChild; if (!el) continue;"
        f" if (el.innerText.split('\\n')[0].trim() !== {json.dumps(group)}) continue;"
        " const r = el.getBoundingClientRect(); return [r.right - 18, r.top + 18]; }"
        " return null; })()"
    )


def open_asset_graph(browser: Chromium, ui: DagsterUI, group: str, *assets: str) -> list[str]:
    """The global lineage page with `group` expanded (a real mouse click on its toggle), once
    the graph (not only the sidebar) shows every one of `assets` as a node."""
    browser.goto(f"{ui.url}/asset-groups")
    x, y = browser.wait_for(_group_toggle(group), f"group box {group}")
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    nodes = browser.wait_for(_nodes_shown(*assets), f"graph nodes {list(assets)}")
    time.sleep(1.0)  # let the zoom-to-fit animation settle before a screenshot
    return nodes


# --- fixtures and tests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[DagsterUI]:
    with dagster_ui(tmp_path_factory.mktemp("ui")) as server:
        yield server


@pytest.fixture(scope="module")
def browser(ui) -> Iterator[Chromium]:
    profile = ui.tmp / "chromium-profile"
    profile.mkdir()
    with Chromium(profile) as chromium:
        yield chromium


ASSETS = [
    "candidate_model",
    "fraud_labels",
    "model_accuracy",
    "model_evaluation",
    "online_feature_store",
    "model_package",
    "model_release",
    "model_rollout",
    "prediction_drift",
    "prediction_health",
    "prediction_log",
    "raw_labels",
    "raw_transactions",
    "training_dataset",
    "transaction_features",
]


def test_catalog_and_lineage_graph_show_every_asset(ui, browser, tmp_path):
    browser.goto(f"{ui.url}/assets")
    browser.wait_for_text(*ASSETS, "ingestion", "features", "training", "deployment", "monitoring")

    browser.goto(f"{ui.url}/asset-groups")
    groups = browser.wait_for(_nodes_shown("ingestion", "features", "training"), "the group boxes")
    assert sorted(groups) == ["deployment", "features", "ingestion", "monitoring", "training"]
    nodes = open_asset_graph(browser, ui, "ingestion", "raw_transactions", "raw_labels")
    # the expanded group shows its assets as graph nodes (other groups may be scrolled away)
    assert {"ingestion", "raw_labels", "raw_transactions"} <= set(nodes)
    assert not {"fraud_labels", "transaction_features"} & set(nodes)  # still collapsed
    shot = browser.screenshot(tmp_path / "asset-graph.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_asset_page_shows_the_blocking_check_warning(ui, browser):
    browser.goto(f"{ui.url}/assets/raw_transactions?view=checks")
    browser.wait_for_text(
        "transactions_pass_expectations",
        "This is a blocking asset check.",
        re.compile(rf"Latest execution\s+[^\n]*{BROKEN_HOUR}"),  # the quarantined hour, named
        re.compile(r"Evaluation result\s+Failed"),
    )


def test_runs_page_shows_the_ingestion_run_succeeded(ui, browser):
    """A quarantined hour is handled: its check warns, the run is not red."""
    run_id = ui.ingest["run_id"]
    assert ui.ingest["success"] is True
    run = ui.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { jobName status } } }", id=run_id
    )["runOrError"]
    assert run == {"jobName": JOB, "status": "SUCCESS"}

    browser.goto(f"{ui.url}/runs")
    row = browser.wait_for(
        "Array.from(document.querySelectorAll('[class*=\"VirtualizedTable_row\"], tr'))"
        f".map(r => r.innerText).find(t => t.includes({json.dumps(run_id[:8])})) || null",
        f"the row of run {run_id[:8]}",
    )
    assert JOB in row
    assert "Success" in row, row


def test_quarantined_partition_metadata(ui, browser):
    query = """
    query($partitions: [String!]) {
      assetOrError(assetKey: {path: ["raw_transactions"]}) {
        ... on Asset {
          assetMaterializations(partitions: $partitions) {
            partition
            metadataEntries { label ... on TextMetadataEntry { text } }
          }
        }
      }
    }"""
    status = {}
    for hour in (HOURS[0], BROKEN_HOUR):
        (materialization,) = ui.graphql(query, partitions=[hour])["assetOrError"][
            "assetMaterializations"
        ]
        entries = {e["label"]: e.get("text") for e in materialization["metadataEntries"]}
        status[hour] = entries["status"]
    assert status == {HOURS[0]: "valid", BROKEN_HOUR: "quarantined"}

    # the partition's detail pane, below the partition list: its own `status` and `reason`
    browser.goto(f"{ui.url}/assets/raw_transactions?view=partitions&partition={BROKEN_HOUR}")
    browser.wait_for_text(
        re.compile(r"Latest materialization[\s\S]*\bstatus\s+quarantined\b"),
        re.compile(r"Latest materialization[\s\S]*\breason\s[\s\S]*\bamount\b"),  # markdown
        re.compile(rf"Latest materialization[\s\S]*quarantine/transactions/{BROKEN_HOUR}/"),
    )
