"""Alerts as incidents (fraudloop.core.alerts) delivered through each receiver's own contract
(fraudloop.core.alert_channels), against real HTTP receivers on loopback."""

from __future__ import annotations

import threading

import pytest

from fraudloop.core.alert_channels import PagerDutyChannel, SlackChannel, WebhookChannel
from fraudloop.core.alerts import Alert, Alerter, ChannelError, read_events, tally
from fraudloop.core.ports import free_port
from fraudloop.core.store import LocalObjectStore
from tests.alert_receivers import receiver

ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # 32 characters, as PagerDuty requires
FAST = {"retries": 3, "backoff_seconds": 0.01}


def channel(kind: str, url: str, tls=None, **overrides):
    options = {**FAST, "tls": tls, **overrides}
    if kind == "slack":
        return SlackChannel(url, min_severity="info", **options)
    if kind == "pagerduty":
        key = options.pop("routing_key", ROUTING_KEY)
        return PagerDutyChannel(key, base_url=url, min_severity="info", **options)
    return WebhookChannel(url, **options)


def alert(key: str = "ingest/transactions/2018-04-02-13:00", **overrides) -> Alert:
    fields = {
        "title": "transactions partition quarantined",
        "summary": "3 rows with a bad id",
        "severity": "warning",
    }
    return Alert(dedup_key=key, **{**fields, **overrides})


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "store")


def test_one_incident_is_one_notification_and_one_resolve(store):
    with receiver("webhook") as hook:
        alerter = Alerter(store, [channel("webhook", hook.url)])
        outcomes = [alerter.trigger(alert()) for _ in range(3)]
        assert [o.notified for o in outcomes] == [True, False, False]
        assert len(hook.received) == 1
        incident = alerter.incident(alert().dedup_key)
        assert incident["status"] == "open" and incident["count"] == 3

        resolved = alerter.resolve(alert().dedup_key, "re-delivered and ingested")
        assert resolved.notified and resolved.alert.action == "resolve"
        assert [a["action"] for a in hook.received] == ["trigger", "resolve"]
        assert hook.received[1]["details"]["repeats"] == 2
        assert alerter.resolve(alert().dedup_key, "again") is None  # nothing open: silent
        assert len(hook.received) == 2

        reopened = alerter.trigger(alert())  # the same condition again: a new incident
        assert reopened.notified and reopened.incident["history"] == 1
        assert len(hook.received) == 3

    events = read_events(store)  # the durable record holds every event, with its delivery
    assert [e["action"] for e in events] == ["trigger", "resolve", "trigger"]
    assert all(e["deliveries"] == {"webhook": "delivered"} for e in events)

    alerter.trigger(alert())  # a repeat of the reopened incident
    alerter.trigger(alert("run/training_job", severity="critical"))
    counts = tally(store)
    assert counts["incidents"] == 2 and counts["openings"] == 3
    assert counts["notifications"] == 3 and counts["most_notifications_per_key"] == 2
    assert counts["repeats_suppressed"] == 3  # two before the resolve, one after the reopening
    assert counts["by_severity"] == {"info": 0, "warning": 2, "critical": 1}
    assert counts["pages"] == ["run/training_job"]
    assert counts["open"] == ["ingest/transactions/2018-04-02-13:00", "run/training_job"]
    assert tally(store, page_severity="warning")["pages"][0] == alert().dedup_key


def test_an_older_partition_does_not_resolve_a_newer_incident(store):
    alerter = Alerter(store)
    alerter.trigger(alert("monitoring/accuracy", details={"partition": "2018-04-20"}))
    assert alerter.resolve("monitoring/accuracy", "healthy", after="2018-04-19") is None
    assert alerter.incident("monitoring/accuracy")["status"] == "open"
    assert alerter.resolve("monitoring/accuracy", "healthy", after="2018-04-21").notified
    assert alerter.open_incidents() == {}


def test_a_wavering_condition_is_one_incident_until_it_stays_healthy(store):
    """Hysteresis: a day above the floor between two under it does not close the incident (and
    so the next dip does not notify again); two healthy days after the last failing one do."""
    key = "monitoring/accuracy"
    with receiver("webhook") as hook:
        alerter = Alerter(store, [channel("webhook", hook.url)])

        def fail(day):
            return alerter.trigger(alert(key, details={"partition": day}))

        def healthy(day):
            return alerter.resolve(key, f"healthy in {day}", after=day, healthy_needed=2)

        assert fail("2018-04-14").notified
        assert healthy("2018-04-15") is None  # one healthy day: recorded, still open
        assert alerter.incident(key)["healthy"] == ["2018-04-15"]
        assert healthy("2018-04-15") is None  # the same day again counts once
        assert not fail("2018-04-16").notified  # the dip: a repeat, and the streak restarts
        assert alerter.incident(key)["healthy"] == []
        assert healthy("2018-04-15") is None  # older than the last failing day: ignored
        assert healthy("2018-04-17") is None
        assert alerter.incident(key)["status"] == "open"
        assert healthy("2018-04-18").notified
    assert [a["action"] for a in hook.received] == ["trigger", "resolve"]
    doc = alerter.incident(key)
    assert doc["status"] == "resolved" and doc["failing"] == ["2018-04-14", "2018-04-16"]
    assert tally(store)["notifications"] == 1


def test_an_open_incident_that_gets_worse_notifies_once_at_its_new_severity(store):
    key = "monitoring/accuracy"
    with receiver("webhook") as hook:
        alerter = Alerter(store, [channel("webhook", hook.url, min_severity="info")])
        first = alerter.trigger(alert(key, severity="warning", details={"partition": "d1"}))
        repeat = alerter.trigger(alert(key, severity="warning", details={"partition": "d2"}))
        worse = alerter.trigger(alert(key, severity="critical", details={"partition": "d3"}))
        again = alerter.trigger(alert(key, severity="critical", details={"partition": "d4"}))
        lower = alerter.trigger(alert(key, severity="warning", details={"partition": "d5"}))
        assert [o.notified for o in (first, repeat, worse, again, lower)] == [
            True,
            False,
            True,
            False,
            False,
        ]
        assert worse.alert.title.startswith("escalated to critical: ")
        assert alerter.incident(key)["severity"] == "critical"  # never lowered while open
        resolved = alerter.resolve(key, "healthy")
    assert resolved.alert.severity == "critical"  # the pager that was told hears the end
    assert [a["severity"] for a in hook.received] == ["warning", "critical", "critical"]
    counts = tally(store)
    assert counts["notifications"] == counts["openings"] + counts["escalations"] == 2
    assert counts["pages"] == [key]


def test_concurrent_triggers_open_one_incident(store):
    with receiver("webhook") as hook:
        alerter = Alerter(store, [channel("webhook", hook.url)])
        barrier = threading.Barrier(8)
        outcomes = []

        def fire():
            barrier.wait()
            outcomes.append(alerter.trigger(alert()))

        threads = [threading.Thread(target=fire) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(o.notified for o in outcomes) == 1
    assert len(hook.received) == 1
    assert alerter.incident(alert().dedup_key)["count"] == 8


def test_slack_gets_text_and_blocks_for_trigger_and_resolve(store):
    with receiver("slack") as slack:
        alerter = Alerter(store, [channel("slack", slack.url)])
        alerter.trigger(alert(severity="critical"))
        alerter.resolve(alert().dedup_key, "ingested on re-delivery")
    trigger, resolve = slack.received
    assert "transactions partition quarantined" in trigger["text"]
    assert ":rotating_light:" in trigger["text"] and trigger["blocks"][0]["type"] == "section"
    assert resolve["text"].startswith(":white_check_mark:") and "resolved" in resolve["text"]
    assert alert().dedup_key in resolve["blocks"][-1]["elements"][0]["text"]


def test_pagerduty_incident_follows_trigger_and_resolve_by_dedup_key(store):
    with receiver("pagerduty") as pd:
        alerter = Alerter(store, [channel("pagerduty", pd.url, pd.tls)])
        key = "run/training_job"
        alerter.trigger(alert(key, severity="critical", details={"run_id": "abc"}))
        alerter.trigger(alert(key, severity="critical"))  # a repeat: not sent again
        assert pd.incidents == {key: "open"}
        alerter.resolve(key, "run def succeeded")
    trigger, resolve = pd.received
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == key
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"] == {"run_id": "abc"}
    assert resolve == {"event_action": "resolve", "dedup_key": key, "routing_key": ROUTING_KEY}
    assert pd.incidents == {key: "resolved"}


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "webhook"])
def test_transient_failures_are_retried(store, kind):
    with receiver(kind) as rx:
        rx.fail_next = 2  # 503, 503, then accepted
        channel(kind, rx.url, rx.tls).deliver(alert())
        assert rx.attempts == 3 and len(rx.received) == 1


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "webhook"])
def test_a_refused_payload_is_final_and_on_record(store, kind):
    with receiver(kind) as rx:
        rx.fail_next, rx.fail_status = 1, 400
        with pytest.raises(ChannelError) as refused:
            channel(kind, rx.url, rx.tls).deliver(alert())
        assert refused.value.final and rx.attempts == 1  # a 4xx is not retried

        rx.fail_next = 1
        outcome = Alerter(store, [channel(kind, rx.url, rx.tls)]).trigger(alert())
    assert outcome.notified and outcome.incident["status"] == "open"
    (event,) = read_events(store)
    assert event["deliveries"][kind].startswith("failed:")


def test_pagerduty_contract_is_enforced_on_our_payloads(store):
    with receiver("pagerduty") as pd, pytest.raises(ChannelError, match="routing_key") as refused:
        channel("pagerduty", pd.url, pd.tls, routing_key="short").deliver(alert())
    assert refused.value.final


def test_a_receiver_whose_certificate_is_not_trusted_is_not_sent_the_alert(store):
    with receiver("pagerduty") as pd:
        with pytest.raises(ChannelError, match="CERTIFICATE_VERIFY_FAILED"):
            channel("pagerduty", pd.url, retries=0).deliver(alert())  # the system trust only
        assert pd.received == []


@pytest.mark.parametrize("kind", ["slack", "pagerduty", "webhook"])
def test_a_receiver_that_is_down_fails_after_retries_and_the_store_keeps_the_alert(store, kind):
    scheme = "https" if kind == "pagerduty" else "http"
    url = f"{scheme}://127.0.0.1:{free_port()}"  # nothing listens there
    alerter = Alerter(store, [channel(kind, url, retries=1)])
    assert alerter.trigger(alert()).notified
    (event,) = read_events(store)
    assert event["title"] == alert().title and event["deliveries"][kind].startswith("failed:")


def test_each_channel_gets_the_severities_it_asked_for(store):
    with receiver("slack") as slack, receiver("pagerduty") as pd:
        channels = [
            SlackChannel(slack.url, min_severity="warning", **FAST),
            PagerDutyChannel(
                ROUTING_KEY, base_url=pd.url, min_severity="critical", tls=pd.tls, **FAST
            ),
        ]
        alerter = Alerter(store, channels)
        alerter.trigger(alert("a", severity="info"))
        alerter.trigger(alert("b", severity="warning"))
        alerter.trigger(alert("c", severity="critical"))
    assert [m["text"].split("]")[0] for m in slack.received] == [
        ":warning: [warning",
        ":rotating_light: [critical",
    ]
    assert [e["dedup_key"] for e in pd.received] == ["c"]
    assert len(read_events(store)) == 3  # every event is on record, sent or not


@pytest.mark.parametrize(
    "fields",
    [{"severity": "urgent"}, {"action": "acknowledge"}, {"dedup_key": ""}, {"dedup_key": "/a"}],
)
def test_malformed_alerts_are_refused(fields):
    with pytest.raises(ValueError):
        Alert(**{"title": "t", "summary": "s", "dedup_key": "k", **fields})


def test_a_freshness_window_dagster_cannot_evaluate_is_refused_at_load():
    from fraudloop.core.errors import ConfigError
    from pipelines.config import ProjectConfig
    from pipelines.definitions import build_definitions

    config = ProjectConfig.from_env({"FRAUDLOOP_FRESH_FEED_HOURS": "0.01"})  # 36 s
    with pytest.raises(ConfigError, match=r"transaction_feed.*FRAUDLOOP_FRESH_"):
        build_definitions(config)
