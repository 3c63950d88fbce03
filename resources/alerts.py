"""The alerting resource: a file sink by default, a webhook (with retries) when configured."""

from __future__ import annotations

import dagster as dg

from fraudloop.core.alerts import Alert, FileAlertSink, WebhookAlertSink


class AlertsResource(dg.ConfigurableResource):
    """Delivers alerts; `webhook_url` unset means the JSON-lines file is the only sink."""

    file_path: str
    webhook_url: str | None = None
    retries: int = 3

    def sink(self) -> FileAlertSink | WebhookAlertSink:
        file_sink = FileAlertSink(self.file_path)
        if self.webhook_url:
            return WebhookAlertSink(self.webhook_url, fallback=file_sink, retries=self.retries)
        return file_sink

    def send(self, title: str, summary: str, severity: str = "warning", **details) -> Alert:
        alert = Alert(title=title, summary=summary, severity=severity, details=details)
        self.sink().send(alert)
        return alert
