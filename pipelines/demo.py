"""`make demo`: the closed loop, told through the real Dagster daemon on the local profile.

1. simulate up to 60 days of card transactions into a *feed* outside the system
   (`.fraudloop-feed/`), with a new fraud pattern (card testing: bursts of small amounts on
   stolen cards) from day `drift_day`; two broken files in the history (a bad row each:
   the row is rejected, the rest of the hour ingested);
2. land the history; the daemon's sensors ingest it, build labels and features (range runs);
3. train v1 (`training_job`, launched into the daemon's queue): gate, package, staging test in a
   real service process, release to production;
4. start the scoring service (`fraudloop serve`) and replay the following days hour by hour as
   live traffic, landing each day's files after its traffic (as a payment switch's log would);
5. the monitoring sensors compute health, Evidently drift and accuracy on matured labels; the
   drift and accuracy sensors request retraining; a candidate that beats production goes through
   package, staging and a canary the rollout controller promotes;
6. print the timeline with the figures, and exit 0 once the retrained version serves 100 %.

Every run is in `./.dagster`, so `make ui` shows the whole history afterwards (the demo's
settings are kept in `.fraudloop/demo.env`, which `make ui` reads).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from fraudloop.core.ports import free_port
from fraudloop.core.processes import default_interrupts, stop_group

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = date(2018, 4, 1)


#: corruption kinds that cost a row, not the file (fraudloop.data's row-level policy)
ROW_DEFECTS = frozenset({"negative_amount", "nan_amount", "inf_amount", "null_ids"})


@dataclass
class DemoPlan:
    days: int = 60  # simulated (the replay stops once the retrained model serves 100 %)
    history_days: int = 12  # landed before v1: warm-up days, the window, the holdout, the delay
    drift_day: int = 13  # first day of the new fraud pattern (0-based from START)
    train_window_days: int = 6
    holdout_days: int = 2
    #: broken files in the history: (corruption kind, day, hour). Each loses its bad row only
    #: (row-level policy); a whole-file quarantine in the history would also quarantine the next
    #: day's labels for its transactions (see the README's known limits)
    corruptions: tuple[tuple[str, int, int], ...] = (
        ("negative_amount", 3, 14),
        ("nan_amount", 7, 9),
    )
    chunk_days: int = 2  # days replayed, then landed, at a time
    scale: float = 0.2
    seed: int = 7
    card_testing_cards: int = 10  # stolen cards tested per day once the drift starts
    pace_seconds: float = 10.0  # wall time over which a chunk's traffic is spread
    #: the traffic may run this many chunks ahead of the landed files; beyond, it slows to an
    #: hour per `slow_hour_seconds` (~2.4x slower): a canary still sees a steady stream, and a
    #: pipeline slower than the replay (the Docker stack on 2 cores) does not fall weeks behind
    max_lead_chunks: int = 2
    slow_hour_seconds: float = 0.5
    timeout_seconds: float = 900.0
    home: Path = field(default_factory=lambda: Path(".fraudloop").resolve())
    dagster_home: Path = field(default_factory=lambda: Path(".dagster").resolve())

    def day(self, n: int) -> date:
        return START + timedelta(days=n)

    @property
    def drift(self) -> str:
        """The new fraud pattern as a simulator drift spec."""
        return f"card_testing:{self.card_testing_cards}@{self.day(self.drift_day):%Y-%m-%d}"

    def broken_hour(self, day: int, hour: int) -> str:
        return f"{self.day(day):%Y-%m-%d}-{hour:02d}:00"

    @property
    def quarantined_hours(self) -> list[str]:
        """The hours the corruptions quarantine whole (the row-level ones keep their hour)."""
        return [self.broken_hour(d, h) for k, d, h in self.corruptions if k not in ROW_DEFECTS]

    def env(self) -> dict[str, str]:
        """The demo's settings: one-day label delay (the loop has to close within the
        replay), short sensor intervals, a compact canary, fixed partitions."""
        return {
            "FRAUDLOOP_HOME": str(self.home),
            "DAGSTER_HOME": str(self.dagster_home),
            "FRAUDLOOP_PARTITION_START": f"{START:%Y-%m-%d}-00:00",
            "FRAUDLOOP_PARTITION_END": f"{self.day(self.days):%Y-%m-%d}-00:00",
            "FRAUDLOOP_LABEL_DELAY_DAYS": "1",
            "FRAUDLOOP_TRAIN_WINDOW_DAYS": str(self.train_window_days),
            "FRAUDLOOP_HOLDOUT_DAYS": str(self.holdout_days),
            "FRAUDLOOP_SENSOR_INTERVAL_SECONDS": "3",
            "FRAUDLOOP_ROLLOUT_INTERVAL_SECONDS": "3",
            "FRAUDLOOP_ROLLOUT_STEPS": "0.25,0.5,1",
            "FRAUDLOOP_ROLLOUT_MIN_REQUESTS": "100",
            "FRAUDLOOP_ROLLOUT_BAKE_SECONDS": "3",
            "FRAUDLOOP_RETRAIN_COOLDOWN_HOURS": "24",
            "FRAUDLOOP_SERVE_POLL_SECONDS": "0.5",
            "FRAUDLOOP_SERVE_FLUSH_SECONDS": "1",
            # the local profile's (Makefile): one planned event per asset of a range run
            "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
        }


class Timeline:
    """Events as they happen, with wall time since the start and the data day they concern."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.events: list[tuple[float, str]] = []
        self.marks: dict[str, float] = {}
        self.epochs: dict[str, float] = {}
        self.first_alert: dict | None = None

    def now(self) -> float:
        return time.monotonic() - self.began

    def say(self, text: str) -> None:
        at = self.now()
        self.events.append((at, text))
        print(f"  [{at:6.1f} s] {text}", flush=True)

    def mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = self.now()
            self.epochs[name] = time.time()


class Watcher:
    """Polls the store and the instance for what the timeline reports: runs, alerts, alias
    changes and rollout decisions."""

    def __init__(self, store, instance, timeline: Timeline):
        from fraudloop.model.registry import ModelRegistry

        self.store = store
        self.instance = instance
        self.registry = ModelRegistry(store)
        self.timeline = timeline
        self.seen_runs: dict[str, str] = {}
        self.alert_events = 0
        self.audit = 0
        self.decisions = 0

    def poll(self) -> None:
        from dagster import RunsFilter

        from fraudloop.core.alerts import read_events

        t = self.timeline
        for run in self.instance.get_runs(RunsFilter(), limit=40)[::-1]:
            status = run.status.value
            if self.seen_runs.get(run.run_id) == status:
                continue
            self.seen_runs[run.run_id] = status
            if status not in ("SUCCESS", "FAILURE"):
                continue
            start = run.tags.get("dagster/asset_partition_range_start", "")
            end = run.tags.get("dagster/asset_partition_range_end", "")
            span = f" {start[:13]}..{end[:13]}" if start else ""
            why = run.tags.get("fraudloop/reason", "")
            t.say(
                f"run {run.job_name}{span} {status.lower()}"
                + (f" (trigger: {run.tags.get('fraudloop/trigger')}: {why[:90]})" if why else "")
            )
        events = read_events(self.store)
        for alert in events[self.alert_events :]:
            if alert["title"].startswith(("drift in", "accuracy under")):
                t.mark("first_detection")
                t.first_alert = t.first_alert or alert
            t.say(f"ALERT {alert['severity']}: {alert['title']}: {alert['summary'][:110]}")
        self.alert_events = len(events)
        history = self.registry.history()
        for entry in history[self.audit :]:
            if entry["action"] == "register":
                t.say(f"registry: v{entry['to_version']} registered")
            else:
                t.say(
                    f"registry: {entry['action']} {entry['alias']} -> "
                    f"v{entry.get('to_version')} ({entry['actor']}): {entry['reason'][:80]}"
                )
        self.audit = len(history)
        from fraudloop.delivery import rollout

        doc = rollout.read_state(self.store, "fraud")[0]
        if doc:
            for decision in doc.get("decisions", [])[self.decisions :]:
                t.say(f"rollout: {decision['action']}: {decision['reason'][:100]}")
            self.decisions = len(doc.get("decisions", []))

    def production(self) -> int | None:
        return self.registry.aliases().get("production")


def _copy_landing(feed, store, days: list[date]) -> int:
    """Land the feed's files of `days` (transactions of the day's hours, the day's label file)."""
    copied = 0
    for day in days:
        for prefix in (f"landing/transactions/{day:%Y-%m-%d}/", f"landing/labels/{day:%Y-%m-%d}/"):
            for info in feed.list(prefix):
                store.put_bytes(info.key, feed.get_bytes(info.key))
                copied += 1
    return copied


def _dagster(*args: str, env: dict) -> None:
    subprocess.run(
        [str(BIN / "dagster"), *args, "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def _wait(predicate, watcher: Watcher, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.poll()
        if predicate():
            return
        time.sleep(1.0)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def replay_hour(client, base: str, frame, day: date, hour: int, shed: Counter | None = None) -> int:
    """Score one simulated hour of transactions through the service, in time order. A 503 is
    retried as a client of the service should (`shed` counts them by reason)."""
    times = frame["tx_datetime"]
    rows = frame[(times.dt.date == day) & (times.dt.hour == hour)]
    body = [
        {
            "transaction_id": r.transaction_id,
            "tx_datetime": r.tx_datetime.isoformat(),
            "customer_id": r.customer_id,
            "terminal_id": r.terminal_id,
            "amount": float(r.amount),
        }
        for r in rows.sort_values(["tx_datetime", "transaction_id"]).itertuples()
    ]
    for start in range(0, len(body), 5000):  # an hour without transactions sends nothing
        _post_batch(client, f"{base}/v1/score/batch", body[start : start + 5000], shed)
    return len(body)


class Traffic:
    """The transactions the replay sends, a day at a time: the simulated feed's, and once the
    feed is spent, the simulator's following days (same population, same drift), which are
    sent but never land, as payments go on when a feed stops delivering.

    Until 2026-12-06 a spent feed sent its last day again, the same transactions: to the
    service each was a retry of one it had observed, which it counts in the card's own windows
    (`customer_secs_since_prev_tx` 0, one more in every count), and a model retrained on card
    testing, whose strongest feature that is, flagged 39-53 % of that traffic: the stack's
    canaries were rolled back on their flag rate and score shift whenever the loop fell behind
    enough to spend the feed."""

    def __init__(self, plan: DemoPlan, frame: pd.DataFrame):
        self.plan = plan
        days = frame["tx_datetime"].dt.date
        self._days = {day: rows for day, rows in frame.groupby(days.to_numpy())}
        self._population = None

    def day(self, day: date) -> pd.DataFrame:
        if day not in self._days:
            from fraudloop.feeds.population import make_population
            from fraudloop.feeds.scenarios import generate_day

            if self._population is None:
                self._population = make_population(self.plan.seed, self.plan.scale)
            self._days[day] = generate_day(self._population, day, drift=[self.plan.drift])
        return self._days[day]


def _post_batch(client, url: str, rows: list[dict], shed: Counter | None, attempts: int = 10):
    """POST a batch; a 503 (the service shed it, or its online store did not answer in time:
    nothing was decided, and a transaction observed twice is observed once) is sent again after
    its Retry-After, at most `attempts` times. Anything else that is not a 2xx raises with the
    service's own words."""
    import httpx

    for attempt in range(attempts):
        response = client.post(url, json={"transactions": rows})
        if response.status_code != 503 or attempt == attempts - 1:
            break
        if shed is not None:
            shed[response.text[:120]] += 1
        time.sleep(float(response.headers.get("retry-after", "1")))
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.status_code} from {url}: {response.text[:500]}",
            request=response.request,
            response=response,
        )


class Replay:
    """Live traffic, and the files landing behind it, chunk by chunk (`make demo` and the Docker
    stack's system test).

    The traffic never stops for the pipeline: a payment switch does not wait for a feature run,
    and a canary needs a steady stream to reach its steps' request counts (when the replay paused
    for the pipeline, a canary waited a minute of its 80 s for traffic; with the traffic at most
    two chunks ahead of the landed files, 50 s of 63 s). A chunk lands once its traffic is sent
    and the pipeline has the features up to the chunk before the previous one (one chunk in the
    pipeline, one landed behind it), so the pipeline trails the traffic as it would in real
    time, by its own latency. Once the feed is spent, the last day's traffic is sent again until
    the canary in progress is judged.

    `send_hour(day, hour, shed)` scores an hour's traffic (counting retried 503s in `shed`);
    `land(first, days)` puts a chunk's files in the landing zone; `production()` is the version
    in production; `poll()` watches whatever the caller reports.
    """

    def __init__(
        self,
        plan: DemoPlan,
        timeline: Timeline,
        store,
        send_hour: Callable[[date, int, Counter], int],
        land: Callable[[int, list[date]], None],
        production: Callable[[], int | None],
        poll: Callable[[], None] = lambda: None,
        max_land_wait: float = 120.0,
        timeout: float | None = None,
    ):
        self.plan, self.timeline, self.store = plan, timeline, store
        self.send_hour, self.land, self.production, self.poll = send_hour, land, production, poll
        self.first_version = production()
        #: a chunk lands after this long even if the features it waits for never come (a
        #: blocked hour): the loop goes on, and the timeline shows it
        self.max_land_wait = max_land_wait
        self.timeout = plan.timeout_seconds if timeout is None else timeout
        self.unlanded: list[tuple[int, list[date], float]] = []  # (first day, days, sent at)
        self.sent = 0
        self.slowed = False  # the timeline says when the traffic slows down for the files
        self.shed: Counter = Counter()  # requests answered 503 and sent again, by reason

    def promoted(self) -> int | None:
        """The retrained version once it serves 100 %."""
        version = self.production() or 0
        if version > (self.first_version or 0):
            self.timeline.mark("promoted")
            return version
        return None

    def chunks(self) -> list[tuple[int, list[date]]]:
        plan = self.plan
        return [
            (first, [plan.day(n) for n in range(first, min(first + plan.chunk_days, plan.days))])
            for first in range(plan.history_days, plan.days, plan.chunk_days)
        ]

    def land_ready(self) -> None:
        """Land the oldest chunks whose turn has come."""
        plan, t = self.plan, self.timeline
        while self.unlanded:
            first, days, sent_at = self.unlanded[0]
            before_previous = f"{plan.day(first - plan.chunk_days - 1):%Y-%m-%d}-23:00"
            waited = time.monotonic() - sent_at
            if not _featured(self.store, before_previous) and waited < self.max_land_wait:
                return
            if plan.drift_day in range(first, first + len(days)):
                t.mark("drift_landed")
            self.land(first, days)
            t.say(f"{days[0]}..{days[-1]} landed")
            self.unlanded.pop(0)

    def idle(self, seconds: float) -> None:
        """Wait, watching the loop (the promotion is marked within this poll, not at the next
        chunk: the delivery time is the loop's, not the replay's) and landing what may land."""
        deadline = time.monotonic() + seconds
        while True:
            self.poll()
            if self.promoted():
                return
            self.land_ready()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))

    def send(self, days: list[date], slow: bool = False) -> None:
        """The days' traffic hour by hour, spread over the plan's pace; an hour per
        `slow_hour_seconds` when asked to, and while the traffic is as far ahead as it may be."""
        plan, hours = self.plan, [(day, h) for day in days for h in range(24)]
        pace = plan.pace_seconds / len(hours)
        for day, h in hours:
            if "promoted" in self.timeline.marks:
                return
            self.sent += self.send_hour(day, h, self.shed)
            ahead = len(self.unlanded) >= plan.max_lead_chunks
            if ahead and not self.slowed:
                self.timeline.say(f"traffic {len(self.unlanded)} chunks ahead of the files: slower")
            self.slowed = ahead
            self.idle(max(plan.slow_hour_seconds, pace) if slow or ahead else pace)

    def run(self) -> int | None:
        """Replay until the retrained model serves 100 % or the time runs out; returns the
        version it promoted (None if none)."""
        plan, t = self.plan, self.timeline
        for first, days in self.chunks():
            if self.promoted() or t.now() > self.timeout:
                return self.promoted()
            if plan.drift_day in range(first, first + len(days)):
                t.say(f"-- {plan.day(plan.drift_day)}: the new fraud pattern begins --")
            self.send(days)
            t.say(f"{days[0]}..{days[-1]} replayed ({self.sent:,} requests)")
            self.unlanded.append((first, days, time.monotonic()))
            self.land_ready()
        spent = plan.days
        while not self.promoted() and t.now() < self.timeout:
            # the feed is spent: the days after it, as traffic only (`Traffic`)
            if spent == plan.days:
                t.say(f"the feed is spent: traffic goes on with {plan.day(spent)}.., never landed")
            self.send([plan.day(spent)], slow=True)
            spent += 1
        return self.promoted()


def run_demo(plan: DemoPlan | None = None) -> int:
    import warnings

    plan = plan or DemoPlan()
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    env = {**os.environ, **plan.env()}
    os.environ.update(plan.env())
    timeline = Timeline()
    print("fraudloop demo: the closed loop through the Dagster daemon (local profile)")
    print(f"  object store {plan.home}, Dagster instance {plan.dagster_home}")
    for path in (plan.home, plan.dagster_home, plan.home.with_name(".fraudloop-feed")):
        shutil.rmtree(path, ignore_errors=True)
    plan.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "infra" / "local" / "dagster.yaml", plan.dagster_home / "dagster.yaml")
    plan.home.mkdir(parents=True, exist_ok=True)
    (plan.home / "demo.env").write_text("".join(f"{k}={v}\n" for k, v in plan.env().items()))

    import httpx
    from dagster import DagsterInstance, RunsFilter

    from fraudloop.core.store import LocalObjectStore
    from fraudloop.features.pipeline import features_current
    from fraudloop.feeds.files import simulate
    from sensors.common import IN_FLIGHT

    feed = LocalObjectStore(plan.home.with_name(".fraudloop-feed"))
    store = LocalObjectStore(plan.home)
    drift = plan.drift
    print(f"1/6 simulating {plan.days} days at scale {plan.scale} with drift {drift}")
    summary = simulate(
        feed,
        START,
        plan.days,
        seed=plan.seed,
        scale=plan.scale,
        label_delay=timedelta(days=1),
        drift=[drift],
        corrupt=[(kind, plan.broken_hour(day, hour)) for kind, day, hour in plan.corruptions],
        keep_frame=True,
        progress=False,
    )
    traffic = Traffic(plan, summary.frame)
    timeline.say(f"simulated {summary.transactions:,} transactions, {summary.frauds:,} frauds")

    print("2/6 starting the daemon with every sensor on; landing the history")
    _dagster("sensor", "start", "--start-all", env=env)
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(plan.home / "daemon.log", "w"),  # noqa: SIM115 - lives as long as the daemon
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    service = None
    try:
        instance = DagsterInstance.get()
        watcher = Watcher(store, instance, timeline)
        history = [plan.day(d) for d in range(plan.history_days)]
        _copy_landing(feed, store, history)
        timeline.say(f"landed days {history[0]}..{history[-1]}")
        last_hour = f"{history[-1]:%Y-%m-%d}-23:00"

        label_days = [f"{d:%Y-%m-%d}" for d in history[1:]]  # labels land a day later

        def history_ready() -> bool:
            online = store.exists("featurestore/online/_current.json")
            busy = instance.get_runs(RunsFilter(statuses=IN_FLIGHT), limit=1)
            return features_current(store, last_hour, label_days) and online and not busy

        _wait(history_ready, watcher, plan.timeout_seconds, "the history's features")

        print("3/6 training v1 (gate, package, staging test, release)")
        _dagster(
            "job",
            "launch",
            "-j",
            "training_job",
            "--tags",
            json.dumps({"fraudloop/trigger": "demo", "fraudloop/reason": "first model"}),
            env=env,
        )
        _wait(lambda: watcher.production() is not None, watcher, 600, "v1 in production")

        print("4/6 starting the scoring service; replaying live traffic day by day")
        port = free_port()
        service = subprocess.Popen(
            [str(BIN / "fraudloop"), "serve", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(plan.home / "service.log", "w"),  # noqa: SIM115
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(base), watcher, 60, "the scoring service")
        print("5/6 replay: drift starts on", plan.day(plan.drift_day))
        with httpx.Client(timeout=60) as client:
            replay = Replay(
                plan,
                timeline,
                store,
                send_hour=lambda day, h, shed: replay_hour(
                    client, base, traffic.day(day), day, h, shed
                ),
                land=lambda _first, days: _copy_landing(feed, store, days),
                production=watcher.production,
                poll=watcher.poll,
            )
            promoted = replay.run() is not None
        first_version, sent = replay.first_version, replay.sent
        if replay.shed:
            timeline.say(f"503s retried by the replay: {dict(replay.shed)}")
        print("6/6 timeline summary")
        return _summarize(plan, store, instance, timeline, first_version, promoted, sent)
    finally:
        for proc in (service, daemon):
            if proc is not None:
                stop_group(proc)  # with the daemon's code servers and run workers


def _die_with_parent() -> None:
    """In the child, before exec: have the kernel send SIGTERM when the demo's process dies,
    however it dies (a SIGKILL skips the `finally` that stops the daemon and the service, and an
    orphaned daemon would go on launching runs for hours); SIGTERM must not be ignored there."""
    default_interrupts()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _featured(store, hour: str) -> bool:
    from fraudloop.core import tables

    pointer = tables.read_pointer(store, "transaction_features", hour)
    return bool(pointer and pointer.get("status") == "valid")


def _ready(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _summarize(plan, store, instance, timeline, first_version, promoted, sent) -> int:
    from fraudloop.model.registry import ModelRegistry
    from pipelines.run_phases import describe, phases_between, totals

    registry = ModelRegistry(store)
    production = registry.aliases().get("production")
    print(f"    requests replayed: {sent:,}; production: v{first_version} -> v{production}")
    marks = timeline.marks
    if "drift_landed" in marks and "first_detection" in marks:
        alert = timeline.first_alert
        day = pd.Timestamp(alert["details"]["partition"], tz="UTC")
        # what the alert needed: the whole day (drift), and its labels too (accuracy)
        needs_labels = alert["title"].startswith("accuracy")
        ready = day + pd.Timedelta(days=2 if needs_labels else 1)
        began = pd.Timestamp(plan.day(plan.drift_day), tz="UTC")
        hours = (ready - began) / pd.Timedelta(hours=1)
        print(
            f"    detection: '{alert['title']}' used data up to {hours:.0f} h after the drift "
            f"began (the day had to end{' and its labels arrive' if needs_labels else ''}); "
            f"{marks['first_detection'] - marks['drift_landed']:.0f} s wall after it landed"
        )
    figures: dict = {"promoted": promoted, "first_version": first_version}
    if promoted and "drift_landed" in marks:
        delivery = marks["promoted"] - marks["drift_landed"]
        figures["delivery_s"] = round(delivery, 1)
        print(f"    first drifted day landed -> v{production} serving 100 %: {delivery:.0f} s wall")
        window = phases_between(
            instance, timeline.epochs["drift_landed"], timeline.epochs["promoted"]
        )
        figures["delivery_runs"] = totals(window)
        print(f"    runs created in that window (overlapping): {describe(window)}")
        _print_ap(plan, store, registry, first_version, production)
    _print_alerts(store)
    every = phases_between(instance)
    figures["runs"] = totals(every)
    figures["runs_by_job"] = {
        job: totals(p for p in every if p.job_name == job)
        for job in sorted({p.job_name for p in every})
    }
    print(f"    every run of the demo: {describe(every)}")
    figures["demo_s"] = round(timeline.now(), 1)
    (plan.home / "demo-summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"done in {timeline.now():.0f} s; `make ui` shows every run, check and plot")
    return 0 if promoted else 1


def _print_alerts(store) -> None:
    """How loud the demo was: notifications per incident, repeats held back, pages."""
    from fraudloop.core.alerts import tally

    counts = tally(store)
    severities = ", ".join(f"{n} {s}" for s, n in counts["by_severity"].items() if n)
    print(
        f"    alerts: {counts['notifications']} notification(s) for {counts['openings']} "
        f"incident opening(s) and {counts['escalations']} escalation(s) "
        f"({severities or 'none'}; at most "
        f"{counts['most_notifications_per_key']} per incident key), "
        f"{counts['repeats_suppressed']} repeat(s) counted, not sent; "
        f"pages: {len(counts['pages'])}{' ' + str(counts['pages']) if counts['pages'] else ''}"
    )


def _print_ap(plan, store, registry, v1: int, v2: int) -> None:
    """AP of the old and the new production on the drifted days the new one never saw (after
    its dataset's cutoff), with the labels known now."""
    from fraudloop.core.hours import hours_of_day
    from fraudloop.features.feature_store import read_offline
    from fraudloop.model.booster import load_model
    from fraudloop.model.evaluation import evaluate, read_evaluation
    from fraudloop.monitoring.accuracy import labels_known

    lineage = json.loads(registry.get_file(v2, "lineage.json"))
    spec = lineage["dataset"]["spec"]
    cutoff = pd.Timestamp(spec["cutoff"])
    gate = read_evaluation(store, v2)
    if gate is not None and gate.production_metrics:
        print(
            f"    the gate's holdout ({spec['holdout_start'][:10]}.."
            f"{pd.Timestamp(spec['end']) - pd.Timedelta(days=1):%Y-%m-%d}, after "
            f"v{v2}'s training window): AP of v{v2} {gate.candidate_metrics['ap']:.3f} vs "
            f"v{gate.production} {gate.production_metrics['ap']:.3f}"
        )
    days = [  # labelled and featured (the replay runs ahead of the pipeline)
        plan.day(n).strftime("%Y-%m-%d")
        for n in range(plan.drift_day, plan.days)
        if pd.Timestamp(plan.day(n), tz="UTC") >= cutoff.floor("D")
        and store.exists(f"raw/labels/{plan.day(n):%Y-%m-%d}/_current.json")
        and _featured(store, f"{plan.day(n):%Y-%m-%d}-23:00")
    ]
    if not days:
        print(f"    (no day after v{v2}'s cutoff {cutoff:%Y-%m-%d} labelled and featured yet)")
        return
    hours = [h for d in days for h in hours_of_day(d)]
    features = read_offline(store, hours)
    labels = labels_known(store, [*days, plan.day(plan.days).strftime("%Y-%m-%d")])
    frame = features.merge(
        labels[["transaction_id", "is_fraud"]].astype({"transaction_id": "string"}),
        on="transaction_id",
    )
    if frame.empty:
        return
    cols = ["transaction_id", "tx_datetime", "customer_id", "is_fraud"]
    for version in (v1, v2):
        model = load_model(registry.get_file(version, "model.txt").decode())
        ap = evaluate(frame[cols].assign(score=model.predict(frame)))["ap"]
        print(
            f"    AP of v{version} on {days[0]}..{days[-1]} (drifted, after v{v2}'s training "
            f"data; {len(frame):,} tx with labels): {ap:.3f}"
        )
