"""Freshness through the real daemon: a feed that stops delivering goes stale under Dagster's
own freshness policy and raises one alert, however many ticks see it stale; a new delivery
makes it fresh and resolves the incident."""

from __future__ import annotations

import time

import pytest

from fraudloop.core.alerts import Alerter, read_events
from fraudloop.core.store import LocalObjectStore
from tests.daemon import daemon_env, running_daemon, wait_for
from tests.factories import land_hour

WINDOW_SECONDS = 60  # the shortest window Dagster accepts


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    env = daemon_env(
        tmp_path,
        FRAUDLOOP_SENSOR_INTERVAL_SECONDS="2",
        FRAUDLOOP_FRESH_FEED_HOURS=str(WINDOW_SECONDS / 3600),
        FRESHNESS_DAEMON_INTERVAL_SECONDS="2",
    )
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with running_daemon(env, ["new_data_sensor", "freshness_alert_sensor"]):
        yield LocalObjectStore(env["FRAUDLOOP_HOME"])


def _feed_state():
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.get() as instance:
        record = instance.get_freshness_state_records([AssetKey("transaction_feed")])
    found = record.get(AssetKey("transaction_feed"))
    return found.freshness_state.value if found else None


@pytest.mark.slow
def test_a_silent_feed_alerts_once_and_resolves_on_the_next_delivery(daemon):
    store = daemon
    land_hour(store, "2018-04-01-05:00", seed=1)
    wait_for(lambda: _feed_state() == "PASS", 120, "the delivery to make the feed fresh")
    fresh_at = time.monotonic()

    wait_for(lambda: _feed_state() == "FAIL", 180, "the silent feed to fail freshness")
    wait_for(lambda: read_events(store), 60, "the stale-feed alert")
    alerted_after = time.monotonic() - fresh_at
    time.sleep(8)  # several more ticks of the alert sensor see the feed stale
    (alert,) = read_events(store)
    assert alert["dedup_key"] == "freshness/transaction_feed"
    assert alert["severity"] == "critical" and alert["title"] == "transaction_feed is stale"
    assert alerted_after >= WINDOW_SECONDS - 5  # not before the window ran out
    print(f"silent feed -> alert after {alerted_after:.1f} s (window {WINDOW_SECONDS} s)")

    land_hour(store, "2018-04-01-06:00", seed=2)
    wait_for(lambda: len(read_events(store)) == 2, 120, "the resolve on the next delivery")
    assert read_events(store)[1]["action"] == "resolve"
    assert "freshness/transaction_feed" not in Alerter(store).open_incidents()
