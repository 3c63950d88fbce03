"""Links to reports that a browser opens from the UI (see `fraudloop.core.report_links`)."""

from __future__ import annotations

import dagster as dg

from fraudloop.core.report_links import browser_link
from resources.store import ObjectStoreResource


class ReportsResource(dg.ConfigurableResource):
    """`base_url`: where the reports are served over HTTP (`FRAUDLOOP_REPORTS_URL`; `make ui`
    starts a report server and sets it); unset on S3, links are presigned HTTPS URLs."""

    store: ObjectStoreResource
    base_url: str | None = None

    def link(self, key: str) -> str:
        return browser_link(self.store.open(), key, self.base_url)
