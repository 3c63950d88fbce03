"""A read-only HTTP server for the reports in the object store, so the UI's report links open
in a browser in the local profile too (`make ui` starts it; `fraudloop reports` by hand).

Only keys under the report prefixes are served (never models, raw data or the prediction log),
GET and HEAD only, on the address given (loopback by default)."""

from __future__ import annotations

import html
import mimetypes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from fraudloop.core import keyspace
from fraudloop.core.store import ObjectNotFound, ObjectStore

SERVED_PREFIXES = (f"{keyspace.REPORTS}/", f"{keyspace.MONITORING}/")
TEXT_TYPES = {".md": "text/plain; charset=utf-8", ".json": "application/json"}


def _content_type(key: str) -> str:
    for suffix, kind in TEXT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def make_server(store: ObjectStore, host: str = "127.0.0.1", port: int = 3001):
    """A ThreadingHTTPServer (not started) serving the store's reports."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, kind: str, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-content-type-options", "nosniff")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            key = unquote(urlsplit(self.path).path).lstrip("/")
            if key in ("", "index.html"):
                return self._send(200, _index(store), "text/html; charset=utf-8", head)
            if ".." in key.split("/") or not key.startswith(SERVED_PREFIXES):
                return self._send(404, b"not a report\n", "text/plain", head)
            try:
                body = store.get_bytes(key)
            except (ObjectNotFound, ValueError):
                return self._send(404, b"no such report\n", "text/plain", head)
            return self._send(200, body, _content_type(key), head)

        def do_GET(self):
            self._answer(head=False)

        def do_HEAD(self):
            self._answer(head=True)

        def log_message(self, *args):
            pass

    return ThreadingHTTPServer((host, port), Handler)


def _index(store: ObjectStore) -> bytes:
    """The HTML reports, newest key last: what an engineer browses to without a link."""
    keys = [
        info.key
        for prefix in SERVED_PREFIXES
        for info in store.list(prefix)
        if info.key.endswith((".html", ".md"))
    ]
    items = "\n".join(f'<li><a href="/{html.escape(k)}">{html.escape(k)}</a></li>' for k in keys)
    page = f"<!doctype html><title>fraudloop reports</title><h1>Reports</h1><ul>{items}</ul>"
    return page.encode()
