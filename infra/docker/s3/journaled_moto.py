"""The stack's S3 where MinIO cannot be fetched: moto's S3 server plus a write-ahead journal.

moto keeps its state in memory, so a stopped moto forgets the bucket; MinIO, which the
production compose file runs, keeps it on a volume. To make `docker stop`/`start` of the S3
service mean what it means in production (an outage, not data loss), every successful mutating
request (PUT, POST, DELETE) is appended to a journal on the service's volume *before* the client
gets its answer, and replayed in order into a fresh moto when the server starts. Conditional
writes (If-None-Match / If-Match) replay to the same outcome: only successes are journaled, in
the order moto answered them, and the same bytes give the same ETags. Each write replays at the
time it was first made: an object keeps its LastModified across a restart, as on MinIO (replayed
at "now", every object looked freshly landed, and the landing sensor ingested the whole history
again after the stack test's S3 outage).

    python journaled_moto.py --host 127.0.0.1 --port 9000 --journal /data/journal.jsonl \
        --bucket fraudloop

Serves until SIGTERM. Listens only after the replay, so "port open" means "state restored".

This server answers S3 only, so requests go straight to moto's S3 app: moto's dispatcher finds
a request's service by listing its own package directory (~200 `isdir` calls) under a lock on
every request, which serialized the stack's S3 traffic (a py-spy profile of the stack test's S3
container: that lookup and the per-request access log were most of its busy time, the S3 work
itself a small part). The access log is off; errors still go to stderr.

Listings are served from a sorted index of the bucket's key names (`KeyIndex`): moto scans and
sorts every key of the bucket for every page of every listing, so a page cost ~0.3 s once the
stack test's bucket held 40,000 keys, whatever its prefix (a run reading 48 hours of the
prediction log made 48 such listings), and moto became the stack's busiest process. S3 and MinIO
answer a page in time that does not grow with the bucket; with the index moto does too.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import datetime
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import types

from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from moto.s3 import models as moto_s3
from werkzeug.serving import run_simple
from werkzeug.test import Client

MUTATING = {"PUT", "POST", "DELETE"}
SKIPPED_HEADERS = {"HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TRANSFER_ENCODING"}


class KeyIndex:
    """The sorted key names of each bucket: a listing reads only the keys under its prefix
    (bisect) instead of every key of the bucket. Built at a bucket's first listing, then kept
    up to date by `written`, which `JournaledApp` calls after every write and before the client
    gets its answer, so a listing that starts after a write was answered sees it
    (list-after-write, as on S3). Rebuilding it after every write instead cost a sort of the
    whole bucket's names per listing, and the stack writes several objects a second."""

    def __init__(self) -> None:
        self._names: dict[str, list[str]] = {}  # bucket name -> its key names, sorted
        self._buckets: dict[str, object] = {}  # bucket name -> moto's bucket
        # a build and a write's update take turns: a build that missed a write meanwhile is
        # mended by that write's update, which comes after it
        self._lock = threading.Lock()

    def names(self, bucket) -> list[str]:
        with self._lock:
            names = self._names.get(bucket.name)
            if names is None:
                names = self._names[bucket.name] = sorted(dict.keys(bucket.keys))
                self._buckets[bucket.name] = bucket
            return names

    def written(self, path: str) -> None:
        """After a write to ``/<bucket>/<key>`` (path-style): the key enters or leaves the index
        as it now is in moto. A write this cannot place (a bucket-level request such as a
        multi-object delete, a multipart part, a key spelt otherwise in moto) drops the
        bucket's index, rebuilt at its next listing."""
        name, _, key = path.lstrip("/").partition("/")
        with self._lock:
            self._update(name, key)

    def _update(self, name: str, key: str) -> None:
        names, bucket = self._names.get(name), self._buckets.get(name)
        if names is None or bucket is None:
            return
        present = dict.__contains__(bucket.keys, key)
        at = bisect.bisect_left(names, key)
        listed = at < len(names) and names[at] == key
        if key and present and not listed:
            names.insert(at, key)
        elif key and listed and not present:
            del names[at]
        elif not key or not (present or listed):
            del self._names[name]

    def under(self, bucket, prefix: str | None) -> dict:
        """{name: newest version} of the keys under `prefix`, as moto's scan would see them."""
        names = self.names(bucket)
        start = bisect.bisect_left(names, prefix or "")
        view = {}
        for name in names[start:]:
            if prefix and not name.startswith(prefix):
                break
            try:
                view[name] = bucket.keys[name]
            except KeyError:  # deleted since the slice was taken
                continue
        return view

    def install(self) -> None:
        """Route moto's listing scan through the index (same results, same pagination)."""
        scan = moto_s3.S3Backend.list_objects

        def list_objects(backend, bucket, prefix, delimiter, marker, max_keys):
            if type(bucket) is not moto_s3.FakeBucket:
                return scan(backend, bucket, prefix, delimiter, marker, max_keys)
            view = types.SimpleNamespace(keys=self.under(bucket, prefix))
            return scan(backend, view, prefix, delimiter, marker, max_keys)

        moto_s3.S3Backend.list_objects = list_objects


INDEX = KeyIndex()


def s3_app():
    """moto's S3 application alone (what its dispatcher would pick for every request here)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    return create_backend_app("s3")


class JournaledApp:
    def __init__(self, app, path: str):
        self.app = app
        self.path = path
        self.lock = threading.Lock()
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the server

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if method not in MUTATING or path.startswith("/moto-api"):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        body = stream.read(int(length)) if length.isdigit() else stream.read()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def recording_start_response(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        # One request at a time through the journal, so its order is the order moto applied them.
        with self.lock:
            written_at = moto_s3.utcnow()
            result = self.app(environ, recording_start_response)
            chunks = list(result)
            if hasattr(result, "close"):
                result.close()
            if captured.get("status", 500) < 300:
                entry = {
                    "method": method,
                    "path": path,
                    "query": environ.get("QUERY_STRING", ""),
                    "headers": {
                        key: value
                        for key, value in environ.items()
                        if (key.startswith("HTTP_") and key not in SKIPPED_HEADERS)
                        or key == "CONTENT_TYPE"
                    },
                    "body": base64.b64encode(body).decode("ascii"),
                    "at": written_at.isoformat(),
                }
                # flushed to the kernel before the client's answer: a stopped or killed
                # container keeps it (no fsync: a host crash is not what this server models)
                self.handle.write(json.dumps(entry) + "\n")
                self.handle.flush()
            INDEX.written(path)  # under the lock, before the client's answer
        return chunks


def _headers(environ_headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in environ_headers.items():
        if key == "CONTENT_TYPE":
            out["Content-Type"] = value
        else:
            out[key[5:].replace("_", "-").title()] = value
    return out


@contextlib.contextmanager
def _clock_at(iso: str | None):
    """moto's S3 clock (object LastModified, upload times) stopped at `iso` meanwhile."""
    if not iso:  # a journal written before the time was recorded
        yield
        return
    at = datetime.datetime.fromisoformat(iso)
    real = moto_s3.utcnow
    moto_s3.utcnow = lambda: at
    try:
        yield
    finally:
        moto_s3.utcnow = real


def replay(app, path: str) -> int:
    if not os.path.exists(path):
        return 0
    client = Client(app)
    count = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line: the client of that request never got an answer
            with _clock_at(entry.get("at")):
                response = client.open(
                    entry["path"],
                    method=entry["method"],
                    query_string=entry["query"],
                    headers=_headers(entry["headers"]),
                    data=base64.b64decode(entry["body"]),
                )
            if response.status_code >= 300:
                print(
                    f"replay: {entry['method']} {entry['path']} -> {response.status_code}",
                    file=sys.stderr,
                )
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--journal", default="/data/journal.jsonl")
    parser.add_argument("--bucket", action="append", default=[])
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    moto = s3_app()
    started = time.monotonic()
    client = Client(moto)
    for bucket in args.bucket:  # before the replay: the journal's writes go into it
        host = {"Host": f"{args.host}:{args.port}"}  # path-style, as the clients address it
        if client.open(f"/{bucket}", method="HEAD", headers=host).status_code == 404:
            created = client.open(f"/{bucket}", method="PUT", headers=host)
            if created.status_code >= 300:
                sys.exit(f"cannot create bucket {bucket}: {created.get_data(as_text=True)}")
    replayed = replay(moto, args.journal)
    print(
        f"journaled moto: replayed {replayed} writes in {time.monotonic() - started:.1f} s; "
        f"buckets {args.bucket}; listening on {args.host}:{args.port}",
        flush=True,
    )
    INDEX.install()
    app = JournaledApp(moto, args.journal)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
