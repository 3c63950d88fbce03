"""The alerting resource: a file sink by default, the object store when `store` is set (the S3
profile: a file in a container is lost with it), a webhook (with retries) when configured."""

from __future__ import annotations

import dagster as dg

from fraudloop.core.alerts import Alert, FileAlertSink, StoreAlertSink, WebhookAlertSink
from resources.store import ObjectStoreResource


class AlertsResource(dg.ConfigurableResource):
    """Delivers alerts: to the object store when `store` is set, else to the JSON-lines file;
    and to the webhook when `webhook_url` is set (falling back to that durable sink)."""

    file_path: str
    webhook_url: str | None = None
    retries: int = 3
    store: ObjectStoreResource | None = None

    def durable_sink(self) -> FileAlertSink | StoreAlertSink:
        if self.store is not None:
            return StoreAlertSink(self.store.open())
        return FileAlertSink(self.file_path)

    def sink(self) -> FileAlertSink | StoreAlertSink | WebhookAlertSink:
        durable = self.durable_sink()
        if self.webhook_url:
            return WebhookAlertSink(self.webhook_url, fallback=durable, retries=self.retries)
        return durable

    def send(self, title: str, summary: str, severity: str = "warning", **details) -> Alert:
        alert = Alert(title=title, summary=summary, severity=severity, details=details)
        if self.store is not None and self.webhook_url:
            self.durable_sink().send(alert)  # the store keeps every alert, delivered or not
        self.sink().send(alert)
        return alert
