"""Prometheus: the alert rules pass Debian's promtool (syntax and the unit tests of what must
and must not fire), and a real Prometheus scrapes a running scoring service with them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from fraudloop.core.ports import free_port
from fraudloop.core.store import LocalObjectStore
from tests.servers import service_thread, wait_until

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "infra" / "prometheus"


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def test_the_config_and_rules_are_valid():
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 12 rules found" in checked.stdout


def test_the_rules_fire_on_what_must_fire_and_only_on_that():
    tested = promtool("test", "rules", "rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_rule_that_would_page_on_noise_fails_its_unit_test(tmp_path):
    """The unit tests can fail: a fast-burn threshold lowered to 1 % pages on the 5 % case."""
    loose = (RULES / "rules.yml").read_text().replace("14.4 * 0.01", "0.01")
    (tmp_path / "rules.yml").write_text(loose)
    shutil.copy(RULES / "rules.test.yml", tmp_path / "rules.test.yml")
    tested = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "FraudloopLatencyBudgetFastBurn, time: 1h10m" in tested.stdout + tested.stderr


@pytest.fixture
def prometheus(tmp_path):
    """A real Prometheus on a free loopback port; `configure(target)` writes its config."""
    port = free_port()
    config = tmp_path / "prometheus.yml"

    def start(target: str) -> str:
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES / "rules.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "fraudloop-serving",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(f"{base}/-/ready"), timeout=60, what="prometheus ready")
        return base

    processes: list[subprocess.Popen] = []
    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _query(base: str, expr: str) -> list:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _up(base: str) -> str | None:
    result = _query(base, 'up{job="fraudloop-serving"}')
    return result[0]["value"][1] if result else None


def test_prometheus_scrapes_the_service_and_loads_the_rules(tmp_path, prometheus):
    with service_thread(LocalObjectStore(tmp_path / "store"), ready=False) as (url, _app):
        target = url.removeprefix("http://")
        base = prometheus(target)
        wait_until(lambda: _up(base) == "1", timeout=60, what="the service scraped")
        series = _query(base, 'count({__name__=~"fraudloop_.+", job="fraudloop-serving"})')
        assert int(series[0]["value"][1]) >= 5
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in rules} == {
            "fraudloop-serving-slo",
            "fraudloop-serving-errors",
            "fraudloop-serving-availability",
        }
        assert all(r["health"] in ("ok", "unknown") for g in rules for r in g["rules"])
    # the service stopped: Prometheus sees the replica down (the alert waits its 2 minutes)
    wait_until(lambda: _up(base) == "0", timeout=60, what="the replica seen down")
    pending = _query(base, 'ALERTS{alertname="FraudloopReplicaDown"}')
    assert [a["metric"]["alertstate"] for a in pending] in ([], ["pending"])
