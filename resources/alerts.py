"""The alerting resource: incidents in the object store (every profile), delivered to Slack,
PagerDuty and/or a generic webhook when configured. Secrets (webhook URLs, the routing key)
reach it as `dg.EnvVar`, so the UI shows their names only."""

from __future__ import annotations

import dagster as dg

from fraudloop.core.alerts import Alert, Alerter, Outcome
from resources.store import ObjectStoreResource


class AlertsResource(dg.ConfigurableResource):
    """Opens an incident per dedup key (one notification), counts repeats, resolves it when
    the condition clears; see `fraudloop.core.alerts`."""

    store: ObjectStoreResource
    webhook_url: str | None = None
    slack_webhook_url: str | None = None
    slack_min_severity: str = "warning"
    pagerduty_routing_key: str | None = None
    pagerduty_url: str = "https://events.pagerduty.com"
    pagerduty_min_severity: str = "critical"
    ca_bundle: str | None = None
    retries: int = 3
    backoff_seconds: float = 0.5

    def channels(self) -> list:
        # imported when an alert goes out, not when the code location loads: the channels'
        # client libraries (httpx, slack_sdk, pagerduty) cost every run worker ~0.4 s otherwise
        from fraudloop.core.alert_channels import (
            PagerDutyChannel,
            SlackChannel,
            WebhookChannel,
            tls_context,
        )

        retry = {
            "retries": self.retries,
            "backoff_seconds": self.backoff_seconds,
            "tls": tls_context(self.ca_bundle),
        }
        channels = []
        if self.slack_webhook_url:
            channels.append(
                SlackChannel(self.slack_webhook_url, min_severity=self.slack_min_severity, **retry)
            )
        if self.pagerduty_routing_key:
            channels.append(
                PagerDutyChannel(
                    self.pagerduty_routing_key,
                    base_url=self.pagerduty_url,
                    min_severity=self.pagerduty_min_severity,
                    **retry,
                )
            )
        if self.webhook_url:
            channels.append(WebhookChannel(self.webhook_url, **retry))
        return channels

    def alerter(self) -> Alerter:
        return Alerter(self.store.open(), self.channels())

    def send(
        self, title: str, summary: str, dedup_key: str, severity: str = "warning", **details
    ) -> Outcome:
        """Trigger the incident `dedup_key` (notifies only when it was not already open)."""
        alert = Alert(
            title=title, summary=summary, dedup_key=dedup_key, severity=severity, details=details
        )
        return self.alerter().trigger(alert)

    def resolve(
        self,
        dedup_key: str,
        summary: str,
        after: str | None = None,
        healthy_needed: int = 1,
        **details,
    ):
        """Resolve the incident if open (once `healthy_needed` partitions from `after` on are
        healthy; see `Alerter.resolve`)."""
        return self.alerter().resolve(
            dedup_key, summary, after=after, healthy_needed=healthy_needed, **details
        )

    def incident(self, dedup_key: str) -> dict | None:
        return self.alerter().incident(dedup_key)

    def open_incidents(self, prefix: str = "") -> dict[str, dict]:
        return self.alerter().open_incidents(prefix)
