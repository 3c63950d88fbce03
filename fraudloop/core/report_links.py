"""Links a browser opens, for the reports the pipeline writes (Evidently drift HTML, evaluation
reports, records): the UI shows them as metadata links, and `file://` or `s3://` would not open
from a browser.

- With a reports base URL (`FRAUDLOOP_REPORTS_URL`: the report server `make ui` starts, or any
  proxy/CDN in front of the store) the link is that base plus the key.
- Without one, on S3, a presigned HTTPS GET of the object, valid for `expires_seconds` (at most a
  week, SigV4's limit; each materialization writes a fresh one). The URL asks S3 to answer with
  the content type of the key's extension: objects are written without one, and a browser would
  download an `application/octet-stream` HTML report instead of showing it.
- Otherwise the store's own URI.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from fraudloop.core.store import ObjectStore, S3ObjectStore

WEEK_SECONDS = 7 * 24 * 3600


def browser_link(
    store: ObjectStore, key: str, base_url: str | None = None, expires_seconds: int = WEEK_SECONDS
) -> str:
    if base_url:
        return f"{base_url.rstrip('/')}/{quote(key)}"
    if isinstance(store, S3ObjectStore):
        params = {"Bucket": store.bucket, "Key": store.prefix + key}
        content_type = mimetypes.guess_type(key)[0]
        if content_type:
            params["ResponseContentType"] = content_type
        return store.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=min(expires_seconds, WEEK_SECONDS)
        )
    return store.uri(key)
