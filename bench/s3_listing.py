"""The stack's S3 (infra/docker/s3/journaled_moto.py) against moto as it ships, per request.

moto's dispatcher looks up a request's service by listing its own package directory under a
lock, and its listing scans and sorts every key of the bucket for every page, whatever the
prefix; the stack's server sends every request to moto's S3 app directly and serves listings
from a sorted index of key names (`KeyIndex`). Measured through the WSGI apps (path-style
requests, no sockets) on one bucket shaped like the stack test's at its end: 40,000 keys, 4,000
of them the prediction log (3 files an hour). The comparison is moto's dispatcher and scan, in
the same process, on the same bucket. Each listing follows a write (through the stack's
journal, which keeps the index current), as in the stack.

    .venv/bin/python bench/s3_listing.py [--quick] [--json PATH]
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Report, arguments

REPO = Path(__file__).resolve().parents[1]
BUCKET = "fraudloop"
HOST = {"Host": "127.0.0.1:9000"}
#: (keys in the bucket, of which prediction-log files)
FULL = (40_000, 4_000)
QUICK = (2_000, 300)


def _journaled_moto():
    path = REPO / "infra" / "docker" / "s3" / "journaled_moto.py"
    spec = importlib.util.spec_from_file_location("journaled_moto", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fill(client, backend, keys: int, predictions: int) -> str:
    """The bucket: prediction-log files 3 an hour, the rest spread over other prefixes. Returns
    an hour prefix of the log."""
    assert client.open(f"/{BUCKET}", method="PUT", headers=HOST).status_code == 200
    start = datetime(2018, 4, 1)
    hours = [f"{start + timedelta(hours=h):%Y-%m-%d-%H}:00" for h in range(-(-predictions // 3))]
    for n in range(predictions):
        backend.put_object(BUCKET, f"predictions/{hours[n // 3]}/r-{n % 3}.parquet", b"p")
    tables = ("transactions", "features", "labels", "landing", "quarantine", "state")
    for n in range(keys - predictions):
        backend.put_object(BUCKET, f"{tables[n % len(tables)]}/{n:06d}/part.parquet", b"d")
    return f"predictions/{hours[len(hours) // 2]}/"


def _list_all(client, prefix: str) -> tuple[int, int]:
    """Every key under `prefix`, page by page (1,000 a page, as boto3's paginator asks);
    (keys, pages)."""
    keys = pages = 0
    token = None
    while True:
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        if token:
            query["continuation-token"] = token
        body = client.open(f"/{BUCKET}", query_string=query, headers=HOST).get_data(as_text=True)
        keys += body.count("<Key>")
        pages += 1
        if "<IsTruncated>true</IsTruncated>" not in body:
            return keys, pages
        token = body.split("<NextContinuationToken>")[1].split("<")[0]


def _timed(fn, repeats: int) -> tuple[float, object]:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), out


def measure(client, hour: str, repeats: int) -> dict:
    key = f"/{BUCKET}/{hour}r-0.parquet"
    head_s, _ = _timed(
        lambda: [client.open(key, method="HEAD", headers=HOST) for _ in range(20)], repeats
    )
    written = iter(range(10**6))

    def after_a_write(prefix: str) -> tuple[int, int]:
        """A write, then the listing: the stack's bucket is written several times a second,
        so a listing rarely finds it as the one before left it."""
        client.open(f"/{BUCKET}/state/bench/{next(written)}", method="PUT", data=b"w", headers=HOST)
        return _list_all(client, prefix)

    hour_s, hour_keys = _timed(lambda: after_a_write(hour), repeats)
    log_s, (log_keys, log_pages) = _timed(lambda: after_a_write("predictions/"), repeats)
    return {
        "head_ms": head_s * 1e3 / 20,
        "hour_ms": hour_s * 1e3,
        "hour_keys": hour_keys[0],
        "log_s": log_s,
        "log_keys": log_keys,
        "log_pages": log_pages,
    }


def main() -> None:
    args = arguments(__doc__).parse_args()
    report = Report("s3_listing", args)
    keys, predictions = QUICK if args.quick else FULL
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    journaled = _journaled_moto()
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.s3.models import s3_backends
    from werkzeug.test import Client

    shipped = Client(DomainDispatcherApplication(create_backend_app))
    began = time.perf_counter()
    hour = _fill(shipped, s3_backends[DEFAULT_ACCOUNT_ID]["aws"], keys, predictions)
    filled = time.perf_counter() - began
    repeats = 3 if args.quick else 5
    scan = measure(shipped, hour, repeats)
    journaled.INDEX.install()
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        stack = journaled.JournaledApp(journaled.s3_app(), str(Path(tmp) / "journal.jsonl"))
        indexed = measure(Client(stack), hour, repeats)
    assert (indexed["hour_keys"], indexed["log_keys"]) == (scan["hour_keys"], scan["log_keys"])

    bucket = f"bucket of {keys:,} keys, the stack's S3 app"
    figures = (  # (figure, what, key of the measurement, unit, format)
        ("head_ms", f"HEAD of one object, {bucket}", "head_ms", "ms", "{:.2f} ms"),
        (
            "hour_list_ms",
            f"a write, then a listing of one hour of the prediction log ({indexed['hour_keys']} "
            f"keys), {bucket} and key index",
            "hour_ms",
            "ms",
            "{:.2f} ms",
        ),
        (
            "log_list_s",
            f"a write, then a listing of the whole prediction log ({indexed['log_keys']:,} keys, "
            f"{indexed['log_pages']} pages), {bucket} and key index",
            "log_s",
            "s",
            "{:.3f} s",
        ),
    )
    for name, what, key, unit, form in figures:
        report.figure(
            name,
            what,
            indexed[key],
            unit,
            text=form.format(indexed[key]),
            versus="moto as it ships (its dispatcher and scan), same bucket",
            versus_value=scan[key],
            versus_text=form.format(scan[key]),
            ratio_means="the stack's / moto's (lower is better)",
        )
    report.note(f"\nbucket filled in {filled:.1f} s; medians of {repeats} listings each")
    report.details.update(scan=scan, indexed=indexed, keys=keys, predictions=predictions)
    report.finish()


if __name__ == "__main__":
    main()
