"""The stack's S3 where MinIO cannot be fetched: moto's S3 server plus a write-ahead journal.

moto keeps its state in memory, so a stopped moto forgets the bucket; MinIO, which the
production compose file runs, keeps it on a volume. To make `docker stop`/`start` of the S3
service mean what it means in production (an outage, not data loss), every successful mutating
request (PUT, POST, DELETE) is appended to a journal on the service's volume *before* the client
gets its answer, and replayed in order into a fresh moto when the server starts. Conditional
writes (If-None-Match / If-Match) replay to the same outcome: only successes are journaled, in
the order moto answered them, and the same bytes give the same ETags.

    python journaled_moto.py --host 127.0.0.1 --port 9000 --journal /data/journal.jsonl \
        --bucket fraudloop

Serves until SIGTERM. Listens only after the replay, so "port open" means "state restored".
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple
from werkzeug.test import Client

MUTATING = {"PUT", "POST", "DELETE"}
SKIPPED_HEADERS = {"HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TRANSFER_ENCODING"}


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
                }
                # flushed to the kernel before the client's answer: a stopped or killed
                # container keeps it (no fsync: a host crash is not what this server models)
                self.handle.write(json.dumps(entry) + "\n")
                self.handle.flush()
        return chunks


def _headers(environ_headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in environ_headers.items():
        if key == "CONTENT_TYPE":
            out["Content-Type"] = value
        else:
            out[key[5:].replace("_", "-").title()] = value
    return out


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

    moto = DomainDispatcherApplication(create_backend_app)
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
    app = JournaledApp(moto, args.journal)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
