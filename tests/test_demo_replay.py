"""The replay client of `make demo` and the stack test: a shed request (503 + Retry-After) is sent
again, anything else that fails stops the replay with the service's own words."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pandas as pd
import pytest

from pipelines.demo import _post_batch


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the statuses of `script`, in order (then 200)."""

    script: ClassVar[list[int]] = []
    seen: ClassVar[list[int]] = []

    def do_POST(self):
        length = int(self.headers["content-length"])
        rows = json.loads(self.rfile.read(length))["transactions"]
        self.seen.append(len(rows))
        status = self.script.pop(0) if self.script else 200
        body = {503: b"too many scoring requests in progress", 422: b"tx_datetime too old"}
        payload = body.get(status, b'{"answers": []}')
        self.send_response(status)
        if status == 503:
            self.send_header("retry-after", "0")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Scripted.script, Scripted.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/score/batch"
    httpd.shutdown()
    httpd.server_close()


def test_a_shed_batch_is_sent_again_and_counted(server):
    Scripted.script = [503, 503]
    shed = Counter()
    with httpx.Client() as client:
        _post_batch(client, server, [{"transaction_id": "1"}], shed)
    assert Scripted.seen == [1, 1, 1]
    assert shed == Counter({"too many scoring requests in progress": 2})


def test_a_rejected_batch_stops_the_replay_with_the_reason(server):
    Scripted.script = [422]
    with httpx.Client() as client, pytest.raises(httpx.HTTPStatusError, match="too old"):
        _post_batch(client, server, [{"transaction_id": "1"}], Counter())
    assert Scripted.seen == [1]  # not retried


def test_a_service_that_keeps_shedding_is_given_up_on(server):
    Scripted.script = [503] * 5
    with httpx.Client() as client, pytest.raises(httpx.HTTPStatusError, match="503"):
        _post_batch(client, server, [{"transaction_id": "1"}], Counter(), attempts=3)
    assert Scripted.seen == [1, 1, 1]


class FakeClock:
    """`time` for the replay: sleeping advances it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_traffic_slows_while_it_is_chunks_ahead_of_a_slow_pipeline(monkeypatch):
    """A pipeline slower than the traffic (the Docker stack) must not be left weeks behind it:
    once two chunks wait to land, the hours are sent at the slow gap; when they land, at the
    plan's pace again; once the feed is spent, the days after it at the slow gap."""
    import pipelines.demo as demo

    clock = FakeClock()
    monkeypatch.setattr(demo, "time", clock)
    plan = demo.DemoPlan(days=22)  # history 12 days, then 5 chunks of 2 days: days 12..21
    featured = {f"{plan.day(d):%Y-%m-%d}-23:00" for d in range(plan.history_days)}
    monkeypatch.setattr(demo, "_featured", lambda _store, hour: hour in featured)
    sends: list[tuple[float, int, int]] = []  # (clock, day number, hour)
    landed: list[tuple[float, int]] = []

    def send_hour(day, hour, _shed):
        n = (day - plan.day(0)).days
        sends.append((clock.now, n, hour))
        if (n, hour) == (20, 11):  # the pipeline catches up with days 13..17
            featured.update(f"{plan.day(d):%Y-%m-%d}-23:00" for d in range(12, 18))
        return 1

    timeline = demo.Timeline()
    replay = demo.Replay(
        plan,
        timeline,
        store=None,
        send_hour=send_hour,
        land=lambda first, _days: landed.append((clock.now, first)),
        production=lambda: 2 if len(sends) > 5 * 48 + 30 else 1,
        max_land_wait=1e9,
        timeout=1e6,
    )
    assert replay.run() == 2

    pace, slow = plan.pace_seconds / 48, plan.slow_hour_seconds
    gaps = {a[1:]: round(b[0] - a[0], 6) for a, b in itertools.pairwise(sends[: 5 * 48 + 1])}
    assert [first for _, first in landed] == [12, 14, 16, 18, 20]
    # chunks 12-13, 14-15 land at once; 16-17 waits for day 13's features, 18-19 behind it
    assert {gaps[(n, h)] for n in range(12, 20) for h in range(24)} == {round(pace, 6)}
    # two chunks unlanded: day 20 goes slowly until they land (after hour 11), then at pace
    assert {gaps[(20, h)] for h in range(12)} == {slow}
    assert {gaps[(20, h)] for h in range(12, 24)} | {gaps[(21, h)] for h in range(23)} == {
        round(pace, 6)
    }
    # the feed is spent: the following days (traffic only), slowly, until the promotion
    after = sends[5 * 48 :]
    assert [(n, h) for _, n, h in after] == [(22 + i // 24, i % 24) for i in range(len(after))]
    assert len(after) > 24  # into a second day after the feed
    assert {round(b[0] - a[0], 6) for a, b in itertools.pairwise(after)} == {slow}
    assert max(first for _, first in landed) == 20  # nothing after the feed lands
    said = [text for _, text in timeline.events]
    assert f"the feed is spent: traffic goes on with {plan.day(22)}.., never landed" in said
    assert "traffic 2 chunks ahead of the files: slower" in said


def test_traffic_after_the_feed_is_new_transactions_of_the_same_simulation(tmp_path):
    """Once the feed is spent the replay sends the simulator's next days: the same population
    and drift (a feed day regenerated equals the landed one), new transaction ids, never the
    feed's transactions again (each would be a retry to the service, scored as one)."""
    import pipelines.demo as demo
    from fraudloop.core.store import LocalObjectStore
    from fraudloop.feeds.files import simulate

    plan = demo.DemoPlan(days=3, drift_day=1, scale=0.05)
    summary = simulate(
        LocalObjectStore(tmp_path),
        plan.day(0),
        plan.days,
        seed=plan.seed,
        scale=plan.scale,
        label_delay=timedelta(days=1),
        drift=[plan.drift],
        keep_frame=True,
        progress=False,
    )
    traffic = demo.Traffic(plan, summary.frame)
    last = traffic.day(plan.day(2))
    assert len(last) and set(last["tx_datetime"].dt.date) == {plan.day(2)}
    regenerated = demo.Traffic(plan, summary.frame.iloc[:0]).day(plan.day(2))
    pd.testing.assert_frame_equal(
        regenerated.reset_index(drop=True)[list(last.columns)], last.reset_index(drop=True)
    )
    after = traffic.day(plan.day(3))
    assert len(after) and set(after["tx_datetime"].dt.date) == {plan.day(3)}
    assert not set(after["transaction_id"]) & set(summary.frame["transaction_id"])
    assert (after["scenario"] == 4).any()  # the drift goes on: card testing
