"""The channels alerts reach people through, each speaking its receiver's own contract through
the receiver's maintained client library rather than a hand-built payload:

- Slack incoming webhooks (`slack_sdk.webhook.WebhookClient`): a `text` fallback plus blocks;
  a resolve is a follow-up message naming the incident (webhooks cannot edit a message).
- PagerDuty Events API v2 (`pagerduty.EventsApiV2Client`): `trigger` with the dedup key as
  PagerDuty's own `dedup_key`, so a repeat never opens a second incident there either, and
  `resolve` with the same key.
- A generic webhook: the alert's JSON, for anything else (a log shipper, a bridge).

Transient failures (network errors, 429, 5xx) are retried with backoff inside each channel;
a 4xx is final (the receiver refused the payload, retrying cannot help). Either way the
`Alerter` records the outcome next to the alert in the store, so nothing is lost.
"""

from __future__ import annotations

import ssl
import time

import httpx
import pagerduty
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

from fraudloop.core.alerts import Alert, ChannelError

TRANSIENT = (429, 500, 502, 503, 504)
SLACK_ICON = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}
PAGERDUTY_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The trust every channel verifies its receiver with: the system's, or a CA bundle (an
    internal receiver, a TLS-intercepting proxy)."""
    return ssl.create_default_context(cafile=ca_bundle)


def _is_final(status: int) -> bool:
    return 400 <= status < 500 and status != 429


class SlackChannel:
    """A Slack incoming webhook."""

    name = "slack"

    def __init__(
        self,
        url: str,
        min_severity: str = "warning",
        retries: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: int = 5,
        tls: ssl.SSLContext | None = None,
    ):
        backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_seconds)
        self.min_severity = min_severity
        self.client = WebhookClient(
            url,
            timeout=timeout_seconds,
            ssl=tls or tls_context(),
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
                ServerErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
                RateLimitErrorRetryHandler(max_retry_count=retries),
            ],
        )

    @staticmethod
    def message(alert: Alert) -> dict:
        """The webhook body: `text` (what notifications and old clients show) plus blocks."""
        icon = {
            "info": ":information_source:",
            "warning": ":warning:",
            "critical": ":rotating_light:",
        }
        mark = ":white_check_mark:" if alert.action == "resolve" else icon[alert.severity]
        text = f"{mark} [{alert.severity}] {alert.title}"
        context = f"`{alert.dedup_key}` · {alert.source} · {alert.raised_at[:19]}Z"
        return {
            "text": f"{text}: {alert.summary}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": alert.summary[:2900]}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        }

    def deliver(self, alert: Alert) -> None:
        try:
            response = self.client.send(**self.message(alert))
        except Exception as error:  # the client raises its transport's errors after retrying
            raise ChannelError(f"{type(error).__name__}: {error}") from error
        if response.status_code >= 300:
            raise ChannelError(
                f"HTTP {response.status_code}: {response.body[:200]}",
                final=_is_final(response.status_code),
            )


class PagerDutyChannel:
    """PagerDuty Events API v2 (an integration's routing key); `base_url` for a test receiver
    or a regional endpoint."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        base_url: str = "https://events.pagerduty.com",
        min_severity: str = "critical",
        retries: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ):
        self.min_severity = min_severity
        # the client requires https:// (a routing key never travels in clear)
        self.client = pagerduty.EventsApiV2Client(
            routing_key, base_url=base_url, verify=tls or tls_context()
        )
        # the library retries 429 forever by default and nothing else: bound it, add 5xx
        self.client.retry = {status: retries for status in TRANSIENT}
        self.client.max_http_attempts = retries
        self.client.max_network_attempts = retries
        self.client.sleep_timer = backoff_seconds
        self.client.timeout = timeout_seconds

    def deliver(self, alert: Alert) -> None:
        try:
            if alert.action == "resolve":
                self.client.resolve(alert.dedup_key)
            else:
                self.client.trigger(
                    summary=f"{alert.title}: {alert.summary}"[:1024],
                    source=alert.source,
                    dedup_key=alert.dedup_key,
                    severity=alert.severity,  # PagerDuty's own scale includes these three
                    custom_details={k: str(v) for k, v in alert.details.items()},
                )
        except pagerduty.Error as error:
            status = getattr(getattr(error, "response", None), "status_code", 0) or 0
            cause = f" ({error.__cause__})" if error.__cause__ else ""  # the network's reason
            raise ChannelError(f"{error}{cause}"[:400], final=_is_final(status)) from error


class WebhookChannel:
    """POSTs the alert's JSON (see `Alert.to_dict`) to any receiver."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        min_severity: str = "info",
        retries: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ):
        self.url = url
        self.tls = tls or tls_context()
        self.min_severity = min_severity
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds

    def deliver(self, alert: Alert) -> None:
        last_error = "no attempt made"
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(
                    self.url,
                    content=alert.to_json(),
                    headers={"content-type": "application/json"},
                    timeout=self.timeout_seconds,
                    verify=self.tls,
                )
                if response.status_code < 300:
                    return
                last_error = f"HTTP {response.status_code}"
                if _is_final(response.status_code):
                    raise ChannelError(last_error, final=True)
            except httpx.HTTPError as error:
                last_error = f"{type(error).__name__}: {error}"
            if attempt < self.retries:
                time.sleep(self.backoff_seconds * 2**attempt)
        raise ChannelError(f"{last_error} after {self.retries + 1} attempts")
