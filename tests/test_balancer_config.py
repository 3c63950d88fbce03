"""The balancer's config and its wiring: HAProxy itself accepts infra/haproxy/haproxy.cfg with the
addresses the tests give it, the config keeps the settings the replica-kill test depends on,
and both compose deployments run two replicas behind it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import yaml

from tests.balancer import CONFIG, haproxy_env
from tests.test_production_profile import COMPOSE_PRODUCTION, COMPOSE_STACK, _compose


def test_haproxy_accepts_the_config_and_refuses_it_without_replica_addresses():
    binary = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    assert binary, "haproxy not found: install it with `bash infra/system-deps.sh` as root"
    env = {**os.environ, **haproxy_env(["127.0.0.1:1", "127.0.0.1:2"], 18080, 18081)}
    ok = subprocess.run([binary, "-c", "-f", str(CONFIG)], env=env, capture_output=True)
    assert ok.returncode == 0, ok.stderr.decode()
    env.pop("LB_BIND")
    bad = subprocess.run([binary, "-c", "-f", str(CONFIG)], env=env, capture_output=True)
    assert bad.returncode != 0


def test_the_config_retries_safely_and_routes_on_readiness():
    text = re.sub(r"#.*", "", CONFIG.read_text())
    assert re.search(r"retry-on\s+conn-failure empty-response response-timeout", text)
    assert "option redispatch" in text
    # an L7 retry replays the buffered request: without this a request in flight on a killed
    # replica is dropped, not retried
    assert "option http-buffer-request" in text
    assert "option httpchk GET /readyz" in text and "http-check expect status 200" in text
    replicas = text.split("\nbackend replicas\n")[1].split("\nbackend ")[0]
    assert len(re.findall(r"^\s*server .* check", replicas, re.M)) == 2
    # no replica ready at all (a shared cause): the live ones answer rather than none
    assert "use_backend replicas_alive if { nbsrv(replicas) eq 0 }" in text


def test_both_deployments_run_two_replicas_behind_the_balancer():
    for override in (COMPOSE_PRODUCTION, COMPOSE_STACK):
        services = _compose(override)["services"]
        assert {"scoring", "scoring-2", "balancer", "redis"} <= set(services)
        one, two = services["scoring"], services["scoring-2"]
        assert one["image"] == two["image"] and one["environment"] == two["environment"]
        assert "FRAUDLOOP_SCORING_2_PORT" in " ".join(two["command"])
        balancer = services["balancer"]
        assert any("haproxy/haproxy.cfg" in v for v in balancer["volumes"])
        env = balancer["environment"]
        assert "FRAUDLOOP_SCORING_PORT" in env["LB_REPLICA_1"]
        assert "FRAUDLOOP_SCORING_2_PORT" in env["LB_REPLICA_2"]
        assert set(balancer["depends_on"]) >= {"scoring", "scoring-2"}
    production = _compose(COMPOSE_PRODUCTION)["services"]
    assert production["balancer"]["ports"] == ["127.0.0.1:8080:8080"]
    assert yaml.safe_load(COMPOSE_STACK.read_text())["services"]["balancer"]["image"].startswith(
        "fraudloop-haproxy:"
    )
