"""The system test: the whole loop through the Docker stack, with faults.

The stack (infra/docker-compose.yaml + infra/docker-compose.stack.yaml: PostgreSQL, S3, the
code-location gRPC server, webserver, daemon, two scoring replicas sharing Redis behind HAProxy;
host networking on 127.0.0.1)
is built and started here; the Docker engine too when none runs (as root). Then, as a user
would drive it:

1. the simulated feed is written into S3 by the CLI in the code-location container, in two
   deliveries; the daemon's sensors launch every run as its own container (DockerRunLauncher);
   * a run container is killed mid-run: the run is marked failed and retried by the run-retry
     policy, and the retry writes the same content hashes (as an ingestion outside the stack);
   * the daemon container is killed while a run is in flight and the second delivery lands
     meanwhile; once it is back, run monitoring resolves the run and the sensor cursor picks up
     every landed file;
2. v1 is trained (launched through the webserver's GraphQL, like the UI's Launch button), gated,
   packaged, staging-tested and released;
   * PostgreSQL is restarted: the webserver and the daemon reconnect;
3. the scoring replicas follow the aliases in S3 and answer through the balancer; the
   following days are replayed as live traffic through it, which never pauses, and landed by
   the CLI behind it (`pipelines.demo.Replay`, as in `make demo`);
   * S3 is stopped for 30 s during an ingestion run: retries, then success, no half partition;
4. the new fraud pattern is detected, alerts land in S3 and at a webhook receiver, v2 is trained
   and canaried to 100 %.

Then it drains the stack as an operator would (automation off, queued runs canceled, running
ones terminated: each must end CANCELED with its container stopped) and asserts where
everything went (runs and events as rows in PostgreSQL, artifacts in S3 and nothing on a
container's disk, runs and checks in the UI's GraphQL, step logs readable after the run
container is gone) and prints the figures. Every container it started is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from pipelines.demo import Replay, Timeline, Traffic, Watcher, replay_hour
from tests.stack_harness import DOCKER, Stack, WebhookReceiver, docker, wait_for

START = date(2018, 4, 1)
DOCKER_TAG = "docker/container_id"
LAUNCH_EVENT = re.compile(r"\[DockerRunLauncher\] Launching run in a new container ([0-9a-f]{64})")
LONG = bool(os.environ.get("FRAUDLOOP_STACK_LONG"))
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


class Plan:
    """`make demo`'s plan (pipelines/demo.py: DemoPlan: up to 60 simulated days at scale 0.2, a
    new fraud pattern from day 13, two broken files, the demo's settings), delivered to the stack
    in pieces by the CLI instead of copied into a directory."""

    def __init__(self) -> None:
        from pipelines.demo import DemoPlan

        self.demo = DemoPlan()
        self.days = self.demo.days
        self.history_days = self.demo.history_days
        self.drift_day = self.demo.drift_day
        self.chunk_days = self.demo.chunk_days
        self.drift = self.demo.drift
        self.corrupt = [
            f"{kind}@{self.day(day)}T{hour:02d}" for kind, day, hour in self.demo.corruptions
        ]
        self.broken = [self.demo.broken_hour(day, hour) for _, day, hour in self.demo.corruptions]

    def day(self, n: int) -> date:
        return START + timedelta(days=n)

    def settings(self, webhook_url: str) -> dict[str, str]:
        env = {
            k: v for k, v in self.demo.env().items() if k not in ("FRAUDLOOP_HOME", "DAGSTER_HOME")
        }
        env["FRAUDLOOP_ALERT_WEBHOOK_URL"] = webhook_url
        # row-count bounds from the same hour of the 2 previous days (not 7): 5 fewer pointer
        # reads per ingested hour
        env["FRAUDLOOP_ROW_COUNT_HISTORY_DAYS"] = "2"
        # every sensor tick lists S3 prefixes over HTTP here (a directory scan in the demo)
        env["FRAUDLOOP_SENSOR_INTERVAL_SECONDS"] = "5"
        # the staging test measures the package's p99 in a run container that shares 2 cores
        # with ~10 others (load 10-15): at the default 25 ms budget, three candidates the gate
        # had passed (AP +0.80 over production) were held for 34 ms, and the retrained model
        # reached production 800 s later. The budget is a deployment's setting, sized to its
        # hardware; every other staging check (scores equal batch, schema, 4xx) stays as is.
        env["FRAUDLOOP_STAGING_P99_MS"] = "250"
        # the canary's latency check, likewise: here it compares p99s of 1-4 ms at load 10-15.
        # At the default bound (1.5 x production's p99 + 2 ms) a retrained model that passed
        # the gate was rolled back at 3.5 ms against 3.2 ms (make test, 2026-12-06; the check
        # now judges the low end of a bootstrap interval of the p99, which absorbs one slow
        # request but not a host this loaded), and the next retraining reached 100 % 220 s
        # later. At 4x a real regression (a model several times slower) still fails the step.
        env["FRAUDLOOP_ROLLOUT_MAX_P99_RATIO"] = "4"
        return env

    def simulate_args(self, first: int, count: int) -> list[str]:
        """The CLI call that lands days [first, first + count): the same bytes as a simulation
        of the whole period (labels of the chunk's last day included, one day later)."""
        args = [
            "simulate", "--start", str(self.day(first)), "--days", str(count),
            "--scale", str(self.demo.scale), "--seed", str(self.demo.seed),
            "--label-delay", "1d", "--labels-until", str(self.day(first + count)),
            "--drift", self.drift, "--quiet",
        ]  # fmt: skip
        for spec in self.corrupt:
            if first <= (date.fromisoformat(spec.split("@")[1][:10]) - START).days < first + count:
                args += ["--corrupt", spec]
        return args

    def frame(self, directory: Path) -> pd.DataFrame:
        """The transactions as a frame, for the replayed traffic (same seed, same bytes)."""
        from fraudloop.core.store import LocalObjectStore
        from fraudloop.feeds.files import simulate

        summary = simulate(
            LocalObjectStore(directory),
            START,
            self.days,
            seed=self.demo.seed,
            scale=self.demo.scale,
            label_delay=timedelta(days=1),
            drift=[self.drift],
            keep_frame=True,
            progress=False,
        )
        return summary.frame


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def plan():
    return Plan()


@pytest.fixture(scope="module")
def stack(plan, webhook):
    stack = Stack.create(plan.settings(webhook.url))
    print(f"\nfraudloop stack system test: project {stack.project}, ports {stack.ports}")
    stack.ensure_engine()
    if orphans := stack.remove_orphaned_stacks():
        print(f"  removed {len(orphans)} containers of test stacks whose test process is gone")
    # the engine's facts, for a run on another machine: its storage driver decides what a
    # container start costs (overlay2 mounts the image's layers; vfs copies them whole)
    engine = docker("info", "--format", "{{.ServerVersion}} {{.Driver}} {{.NCPU}} CPUs")
    print(f"  Docker engine {engine}; load average {os.getloadavg()[0]:.1f}")
    if " vfs " in f" {engine} ":
        print("  WARNING: the vfs storage driver copies an image's every layer for each container")
        print("  (1.45 GB per run container here): expect this test to run several times slower")
    try:
        seconds, cold = stack.build()
        stack.figures["build_seconds"] = seconds
        stack.figures["build_cold"] = float(cold)
        print(f"  images built in {seconds:.0f} s ({'cold' if cold else 'warm'})")
        stack.figures["rebuild_seconds"] = stack.build()[0]  # nothing changed: every layer cached
        print(f"  rebuilt (nothing changed) in {stack.figures['rebuild_seconds']:.0f} s")
        stack.figures["up_seconds"] = stack.up()
        yield stack
    finally:
        _teardown(stack)


def _teardown(stack: Stack) -> None:
    if os.environ.get("FRAUDLOOP_STACK_KEEP"):  # debugging: leave it up, say how to remove it
        print(
            f"stack kept: FRAUDLOOP_STACK_DIR={stack.directory} "
            f"FRAUDLOOP_STACK_PROJECT={stack.project} infra/stack.sh down"
        )
        return
    leftovers = stack.run_containers()
    try:
        stack.down()
    finally:
        for container in leftovers:
            docker("rm", "-f", container, check=False)
        stack.stop_engine_if_started()


# ------------------------------------------------------------------------------------- helpers


def runs(instance, **filters) -> list:
    from dagster import RunsFilter

    return instance.get_runs(RunsFilter(**filters), limit=1000)


def in_flight(instance) -> list:
    from dagster import DagsterRunStatus

    return runs(instance, statuses=[DagsterRunStatus(s) for s in IN_FLIGHT])


def step_started(instance, run_id: str) -> bool:
    from dagster import DagsterEventType

    return bool(instance.all_logs(run_id, of_type=DagsterEventType.STEP_START))


def finished(instance, run_id: str) -> bool:
    return instance.get_run_by_id(run_id).status.value not in IN_FLIGHT


def completed(instance, run_id: str) -> bool:
    """The run did its work: SUCCESS, or failed only on a blocking data check (a quarantined
    hour in its range fails `..._pass_expectations` by design, after the assets are written)."""
    from dagster import DagsterEventType, DagsterRunStatus

    run = instance.get_run_by_id(run_id)
    if run.status == DagsterRunStatus.SUCCESS:
        return True
    if run.status != DagsterRunStatus.FAILURE:
        return False
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    successes = instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)
    return (
        bool(failures)
        and all(e.step_key.endswith("_pass_expectations") for e in failures)
        and bool(successes)
    )


def pointer(store, table: str, key: str) -> dict | None:
    from fraudloop.core import tables

    return tables.read_pointer(store, table, key)


def hours(days: list[date]) -> list[str]:
    return [f"{d:%Y-%m-%d}-{h:02d}:00" for d in days for h in range(24)]


def launch(stack: Stack, job: str, tags: dict[str, str]) -> str:
    data = stack.graphql(
        """mutation Launch($params: ExecutionParams!) {
             launchRun(executionParams: $params) {
               __typename
               ... on LaunchRunSuccess { run { runId } }
               ... on PythonError { message }
             }
           }""",
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "fraudloop",
                    "repositoryName": "__repository__",
                    "jobName": job,
                },
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        },
    )
    result = data["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def production(store) -> int | None:
    from fraudloop.model.registry import ModelRegistry

    return ModelRegistry(store).aliases().get("production")


def wait_idle(instance, timeout: float, what: str) -> None:
    wait_for(lambda: not in_flight(instance), timeout, what, poll=2)


def kill_run_container_mid_run(stack, instance, timeline, predicate, what: str, written=None):
    """Waits for a run matching `predicate` to be executing its step, kills its container."""

    def executing():
        for run in runs(instance):
            if (
                predicate(run)
                and run.status.value == "STARTED"
                and step_started(instance, run.run_id)
            ):
                return run
        return None

    run = wait_for(executing, 300, what, poll=0.5)
    if written is not None:  # mid-run: some of its partitions are written, not all
        wait_for(lambda: written() >= 3, 120, "the run's first partitions", poll=0.3)
    container = run.tags["docker/container_id"]
    docker("kill", container)
    timeline.say(f"FAULT: killed the container of run {run.run_id[:8]} ({run.job_name}) mid-run")
    return run


# ------------------------------------------------------------------------------------- the test


@pytest.mark.slow
@pytest.mark.stack
# 13.5-22 min here; on CI's machine it once ran past 50 min (cause unknown: make test now puts
# the timeline, with every run, alert and rollout decision, into the failure report)
@pytest.mark.timeout(3900)
def test_the_loop_runs_through_the_docker_stack_with_faults(stack, plan, webhook, tmp_path):
    from dagster import DagsterRunStatus

    from fraudloop.core.alerts import read_events

    timeline = Timeline()
    store = stack.store()
    instance = stack.instance()
    traffic = Traffic(plan.demo, plan.frame(tmp_path / "feed"))
    figures = stack.figures
    print(f"stack up and healthy in {figures['up_seconds']:.0f} s; UI {stack.web}")

    # The scoring image carries neither Dagster nor Great Expectations nor Evidently.
    for module in ("dagster", "great_expectations", "evidently"):
        probe = subprocess.run(
            [DOCKER, "run", "--rm", "--network", "none", "--entrypoint", "python",
             "fraudloop-serve:latest", "-c", f"import {module}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module

    # ---- 1. history, in two deliveries through the CLI in the code-location container ----
    history = [plan.day(n) for n in range(plan.history_days)]
    part_a, part_b = history[:-2], history[-2:]
    stack.cli(*plan.simulate_args(0, len(part_a)))
    timeline.say(f"the CLI in the code-location container landed {part_a[0]}..{part_a[-1]} in S3")

    # FAULT: a run container killed mid-run -> failed, retried by the run-retry policy.
    killed = kill_run_container_mid_run(
        stack,
        instance,
        timeline,
        lambda r: (
            r.job_name == "hourly_ingestion_job"
            and r.tags.get("dagster/asset_partition_range_start", "").startswith(str(plan.day(0)))
        ),
        "the first history ingestion run to execute",
        written=lambda: sum(
            1
            for info in store.list(f"raw/transactions/{plan.day(0)}-")
            if info.key.endswith("_current.json")
        ),
    )
    before = {
        key: p["sha256"]
        for key in hours([plan.day(n) for n in range(10)])
        if (p := pointer(store, "transactions", key)) and p.get("status") == "valid"
    }
    retry = wait_for(
        lambda: next(
            (r for r in runs(instance) if r.tags.get("dagster/parent_run_id") == killed.run_id),
            None,
        ),
        180,
        "the run-retry policy to retry the killed run",
    )
    killed_status = instance.get_run_by_id(killed.run_id).status
    assert killed_status == DagsterRunStatus.FAILURE, killed_status
    wait_for(lambda: finished(instance, retry.run_id), 900, "the retried run to finish", poll=2)
    assert completed(instance, retry.run_id), "the retried run did not complete its work"
    exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", killed.tags["docker/container_id"])
    assert exit_code == "137", exit_code  # SIGKILL
    delivered = hours(part_a)
    after = wait_for(
        lambda: (
            found
            if all((found := {k: pointer(store, "transactions", k) for k in delivered}).values())
            else None
        ),
        900,
        "every hour of the first delivery to be ingested",
        poll=5,
    )
    assert all(p["status"] in ("valid", "quarantined") for p in after.values())
    assert {k: after[k]["sha256"] for k in before} == before, "a retried hour changed content"
    sample = [*sorted(after)[:12], *(k for k in plan.broken if k in after), f"{part_a[-1]}-23:00"]
    reference = _reference_hashes(store, tmp_path / "reference", sample)
    for key, sha in reference.items():
        assert after[key]["sha256"] == sha, key
    timeline.say(
        f"killed run {killed.run_id[:8]} failed, retry {retry.run_id[:8]} succeeded; "
        f"{len(before)} hours written before the kill kept their hashes"
    )
    figures["run_kill_written_before"] = len(before)

    # FAULT: the daemon killed while a run is in flight; the rest of the history lands while
    # it is down.
    down = _kill_daemon_mid_run(stack, instance, timeline)
    stack.cli(*plan.simulate_args(len(part_a), len(part_b)))
    timeline.say(f"landed {part_b[0]}..{part_b[-1]} while the daemon is down")
    time.sleep(5)
    _daemon_back(stack, store, instance, timeline, down, part_b)
    last_hour = f"{history[-1]:%Y-%m-%d}-23:00"

    label_days = [f"{d:%Y-%m-%d}" for d in history[1:]]

    def history_ready() -> bool:
        from fraudloop.features.pipeline import features_current

        online = store.exists("featurestore/online/_current.json")
        current = features_current(store, last_hour, label_days)
        return current and online and not in_flight(instance)

    wait_for(history_ready, 900, "the history's features", poll=3)
    missing = [k for k in hours(history) if not pointer(store, "transactions", k)]
    assert not missing, f"the sensor lost landed hours: {missing[:5]}"
    assert all(pointer(store, "labels", d) for d in label_days), "landed label days were lost"
    quarantined = sorted(
        k for k in hours(history) if pointer(store, "transactions", k)["status"] != "valid"
    )
    assert quarantined == plan.demo.quarantined_hours, quarantined
    timeline.say("history ingested, labelled and featured; the broken file's hour quarantined")
    timeline.mark("history_ready")

    # ---- 2. v1: trained, gated, packaged, staging-tested, released ----
    launch(
        stack,
        "training_job",
        {"fraudloop/trigger": "stack-test", "fraudloop/reason": "first model"},
    )
    timeline.say("training_job launched through the webserver's GraphQL")
    v1 = wait_for(lambda: production(store), 900, "v1 in production", poll=3)
    timeline.say(f"v{v1} released to production")
    timeline.mark("v1_released")

    # FAULT: PostgreSQL restarted: the webserver and the daemon reconnect. The daemons'
    # heartbeats (every 30 s) are awaited beside the replay, not before it: waited for first,
    # they held the replay 40-58 s with the stack idle.
    checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fault-check")
    postgres = stack.container("postgres")
    started = time.monotonic()
    docker("restart", "-t", "10", postgres)
    wait_for(lambda: stack.psql("SELECT 1") == [(1,)], 120, "postgres back")
    wait_for(lambda: stack.graphql("{ runsOrError(limit: 1) { __typename } }"), 120, "webserver")
    timeline.say("FAULT: PostgreSQL restarted; webserver back")
    postgres_fault = checks.submit(_daemons_reconnected, instance, timeline, started, time.time())

    # ---- 3. the scoring replicas follow the aliases in S3; traffic through the balancer ----
    timeline.mark("replay_began")
    for name, replica in stack.replicas.items():
        wait_for(lambda r=replica: httpx.get(f"{r}/readyz").status_code == 200, 120, name)
        status = httpx.get(f"{replica}/v1/deployment").json()
        assert status["deployment"].get("production") == v1, (name, status)
    served: dict[str, int] = {}

    def count_replica(response: httpx.Response) -> None:
        name = response.headers.get("x-served-by", "(not the balancer)")
        served[name] = served.get(name, 0) + 1

    s3_fault: list[Future] = []

    def land(first_day: int, days: list[date]) -> None:
        stack.cli(*plan.simulate_args(first_day, len(days)))
        if not s3_fault:  # S3 goes away while the first drifted days are being ingested
            run = _s3_outage(stack, store, instance, timeline, days)
            # the ingestion's recovery is checked beside the replay: held until then, the
            # replay landed the next days ~60 s late, and v2 came that much later
            s3_fault.append(
                checks.submit(_s3_recovery, store, instance, timeline, run, days, figures)
            )

    watcher = Watcher(store, instance, timeline)
    with contextlib.redirect_stdout(io.StringIO()):
        watcher.poll()  # what happened before the replay is in the timeline already
    watched = [0.0]

    def watch() -> None:
        # what `make demo` reports (finished runs, alerts, alias changes, rollout decisions
        # with their reasons), every 5 s: each poll reads S3 and PostgreSQL over HTTP/TCP
        if time.monotonic() - watched[0] >= 5:
            watched[0] = time.monotonic()
            watcher.poll()

    with httpx.Client(timeout=60, event_hooks={"response": [count_replica]}) as client:
        replay = Replay(
            plan.demo,
            timeline,
            store,
            send_hour=lambda day, h, shed: replay_hour(
                client, stack.scoring, traffic.day(day), day, h, shed
            ),
            land=land,
            production=lambda: production(store),
            poll=watch,
            # land at the pipeline's pace: a chunk lands once the features of the chunk before
            # the previous one are in (in the stack a chunk's ingestion -> labels -> features
            # takes ~5-6 min at load 8-14). At 180 s the replay outran it and flooded the
            # 3-slot run queue with ingestion, labels and monitoring runs that the retraining's
            # features runs waited behind (run 2: 1,852 s of queueing in the delivery window).
            max_land_wait=600.0,
            timeout=2700.0,  # timeline seconds: then it fails with what it saw
        )
        promoted_to = replay.run()
    assert s3_fault, "the replay landed no drifted day: the S3 outage never ran"
    s3_fault[0].result(timeout=900)  # its assertions fail here, in the test's thread
    figures["postgres_recovery_seconds"] = postgres_fault.result(timeout=300)
    checks.shutdown()
    sent = replay.sent
    assert promoted_to and promoted_to > v1, f"no retrained version reached production (v{v1})"
    timeline.say(f"v{promoted_to} serves 100 % ({sent:,} transactions replayed)")
    figures["requests_shed_and_retried"] = float(sum(replay.shed.values()))  # reasons: timeline
    if replay.shed:
        timeline.say(
            f"503s retried by the replay: {sum(replay.shed.values())}: {dict(replay.shed)}"
        )
    for name, replica in stack.replicas.items():
        wait_for(
            lambda r=replica: (
                httpx.get(f"{r}/v1/deployment").json()["deployment"].get("production")
                == promoted_to
            ),
            30,
            f"{name} to follow the new production alias",
        )
    body = {
        "transaction_id": "stack-probe-1",
        "tx_datetime": f"{plan.day(plan.days - 1)}T12:00:00+00:00",
        "customer_id": "1",
        "terminal_id": "1",
        "amount": 12.5,
    }
    answer = httpx.post(f"{stack.scoring}/v1/score", json=body).json()
    assert answer["model_version"] == promoted_to, answer
    _assert_replicas_share_redis_behind_haproxy(stack, served)

    # ---- 4. where everything went ----
    # the sensors would keep starting runs for the days the replay landed last (the pipeline
    # trails the traffic by minutes here): the operator turns automation off in the UI,
    # cancels what is queued and terminates what runs
    stopped, terminated, canceled = _drain(stack, instance)
    timeline.say(
        f"automation off ({len(stopped)} sensors and schedules); {len(canceled)} queued run(s) "
        f"canceled, {len(terminated)} running run(s) terminated"
    )
    wait_idle(instance, 600, "the terminated runs to end")
    timeline.say("no run in flight")
    _assert_runs_were_containers_in_postgres(stack, instance, terminated + canceled)
    timeline.say("checked: every run a container, runs and events in PostgreSQL, no SQLite")
    _assert_artifacts_in_s3_not_on_disk(stack, store, instance)
    timeline.say("checked: artifacts in S3, no container wrote a local store")
    _assert_graphql_lists_runs_and_checks(stack, instance)
    timeline.say("checked: the UI's GraphQL lists every run and the asset checks")
    alerts = read_events(store)
    titles = [a["title"] for a in alerts]
    print("alerts, as they landed in S3:\n  " + "\n  ".join(titles))
    assert any(t.startswith(("accuracy under floor", "drift in")) for t in titles), titles
    assert f"v{promoted_to} promoted to production" in titles, titles
    assert {a["alert_id"] for a in webhook.alerts} == {a["alert_id"] for a in alerts}
    per_incident = {}
    for a in alerts:
        per_incident.setdefault((a["dedup_key"], a["action"]), []).append(a["title"])
    repeated = {k: v for k, v in per_incident.items() if len(v) > 1 and k[1] == "trigger"}
    print(f"{len(alerts)} alert events for {len(per_incident)} incident events")
    # one notification per incident opening (an incident may reopen after a resolve)
    assert all(len(v) <= 2 for v in repeated.values()), repeated
    training = runs(instance, job_name="training_job")
    triggers = {r.tags.get("fraudloop/trigger") for r in training}
    assert triggers & {"drift_sensor", "accuracy_sensor"}, triggers
    _assert_step_logs_outlive_the_container(stack, instance, training)
    timeline.mark("checked")
    _print_figures(stack, instance, timeline, figures, v1, promoted_to)


def _drain(stack: Stack, instance) -> tuple[list[str], list[str], list[str]]:
    """Turns every sensor and schedule off through the webserver's GraphQL (the UI's toggles),
    after checking they were on (the stack starts them), then cancels the queued runs and
    terminates the running ones (the UI's Terminate: the DockerRunLauncher stops their
    containers). Waiting for them instead cost ~2-3 min of routine runs for the newest days.
    Returns the instigators stopped, the running runs terminated and the queued ones canceled."""
    from dagster import DagsterRunStatus

    selector = {"repositoryLocationName": "fraudloop", "repositoryName": "__repository__"}
    data = stack.graphql(
        """query Automation($selector: RepositorySelector!) {
             sensorsOrError(repositorySelector: $selector) {
               ... on Sensors { results { name sensorState { id status } } } }
             schedulesOrError(repositorySelector: $selector) {
               ... on Schedules { results { name scheduleState { id status } } } } }""",
        {"selector": selector},
    )
    instigators = [
        (s["name"], s["sensorState"], "stopSensor") for s in data["sensorsOrError"]["results"]
    ] + [
        (s["name"], s["scheduleState"], "stopRunningSchedule")
        for s in data["schedulesOrError"]["results"]
    ]
    assert len(instigators) >= 5, instigators
    for name, state, mutation in instigators:
        assert state["status"] == "RUNNING", f"{name} was {state['status']} in the stack"
        result = stack.graphql(
            f"""mutation Stop($id: String!) {{ {mutation}(id: $id) {{ __typename
                  ... on PythonError {{ message }} }} }}""",
            {"id": state["id"]},
        )[mutation]
        assert result["__typename"] != "PythonError", (name, result)

    # The UI's Terminate, until no run is queued or running. Dagster terminates a QUEUED run
    # (canceled at once) or a STARTED one (its container stopped), and refuses a run still
    # NOT_STARTED or STARTING ("could not be terminated due to having status STARTING"), as the
    # UI does: the operator clicks again once it runs. A run that finished between the listing
    # and the click is refused too. Once CI counted a refused STARTING run as terminated; it
    # ran to SUCCESS and its container was still exiting when inspected.
    terminated: list[str] = []
    canceled: list[str] = []  # queued when Terminate was sent: canceled, never started
    waiting = ("NOT_STARTED", "STARTING")

    def terminate_what_runs() -> bool:
        pending = runs(
            instance,
            statuses=[DagsterRunStatus(s) for s in ("QUEUED", *waiting, "STARTED")],
        )
        if not pending:
            return True
        ids = [r.run_id for r in pending]
        result = stack.graphql(
            """mutation Cancel($ids: [String!]!) {
                 terminateRuns(runIds: $ids) { __typename
                   ... on TerminateRunsResult { terminateRunResults { __typename
                     ... on TerminateRunFailure { message } } } } }""",
            {"ids": ids},
        )["terminateRuns"]
        assert result["__typename"] == "TerminateRunsResult", result
        for run, answer in zip(pending, result["terminateRunResults"], strict=True):
            if answer["__typename"] == "TerminateRunSuccess":
                (canceled if run.status == DagsterRunStatus.QUEUED else terminated).append(
                    run.run_id
                )
                continue
            assert answer["__typename"] == "TerminateRunFailure", (run.run_id, answer)
            # the status the refusal names, not the one read after it: a STARTING run refused
            # can be STARTED by the time it is read (CI, once)
            refused = re.search(r"having status (\w+)", answer.get("message", ""))
            status = instance.get_run_by_id(run.run_id).status.value
            assert (refused and refused.group(1) in waiting) or finished(instance, run.run_id), (
                status,
                answer,
            )
            print(f"  run {run.run_id[:8]} refused its Terminate ({status}): {answer['message']}")
        return False

    deadline = time.monotonic() + 300  # a refusal that is no wait fails at once, not here
    while not terminate_what_runs():
        assert time.monotonic() < deadline, "runs still queued or running after 300 s"
        time.sleep(2)
    return [name for name, _, _ in instigators], terminated, canceled


# ------------------------------------------------------------------------------------- faults


def _reference_hashes(store, directory: Path, keys: list[str]) -> dict[str, str]:
    """The content hash each hour gets when ingested outside the stack, from the same files."""
    from fraudloop.core.store import LocalObjectStore
    from fraudloop.data.ingest import ingest_transactions_hour, landed_files

    local = LocalObjectStore(directory)
    out = {}
    for key in keys:
        outcome = ingest_transactions_hour(local, key, landed_files(store, "transactions", key), [])
        if outcome.sha256:
            out[key] = outcome.sha256
    return out


def _kill_daemon_mid_run(stack, instance, timeline):
    """Kills the daemon container while a run executes (whichever the sensors started)."""
    run = wait_for(
        lambda: next((r for r in runs(instance) if r.status.value == "STARTED"), None),
        300,
        "a run in flight to kill the daemon under",
        poll=0.5,
    )
    daemon = stack.container("daemon")
    docker("kill", daemon)
    timeline.say(f"FAULT: daemon container killed while run {run.run_id[:8]} ({run.job_name}) runs")
    return daemon, run


def _daemons_reconnected(instance, timeline, restarted: float, after: float) -> float:
    """Seconds from the PostgreSQL restart (monotonic ``restarted``) until every daemon has
    heartbeated since the webserver was back (``after``, epoch)."""

    def back() -> bool:
        heartbeats = instance.get_daemon_heartbeats()
        return bool(heartbeats) and all(h.timestamp > after for h in heartbeats.values())

    wait_for(back, 180, "every daemon to heartbeat again after the PostgreSQL restart", poll=2)
    seconds = time.monotonic() - restarted
    timeline.say(f"every daemon heartbeated again {seconds:.0f} s after the PostgreSQL restart")
    return seconds


def _daemon_back(stack, store, instance, timeline, down, landed_days) -> None:
    """Starts the killed daemon: run monitoring resolves the run that ran meanwhile, and the
    sensor's cursor picks up the files that landed while it was down."""

    daemon, run = down
    docker("start", daemon)
    timeline.say("daemon container started again")
    wait_for(lambda: finished(instance, run.run_id), 900, "the run in flight to be resolved")
    assert completed(instance, run.run_id), f"run {run.run_id} did not survive the daemon's death"
    wait_for(
        lambda: (
            all(pointer(store, "transactions", k) for k in hours(landed_days))
            and all(pointer(store, "labels", f"{d:%Y-%m-%d}") for d in landed_days)
        ),
        600,
        "the files landed while the daemon was down to be ingested",
        poll=3,
    )
    timeline.say(
        f"run {run.run_id[:8]} resolved: SUCCESS; every file landed while the daemon was down "
        "was ingested"
    )


def _s3_outage(stack, store, instance, timeline, days):
    """S3 stopped for 30 s while an ingestion run of `days` executes (the scoring service stays
    up); returns the run once S3 answers again."""

    start = f"{days[0]:%Y-%m-%d}"

    def executing():
        for run in runs(instance, job_name="hourly_ingestion_job"):
            if run.tags.get("dagster/asset_partition_range_start", "").startswith(start) and (
                run.status.value == "STARTED" and step_started(instance, run.run_id)
            ):
                return run
        return None

    run = wait_for(executing, 300, "the ingestion run of the replayed days", poll=0.5)
    s3 = stack.container("s3")
    docker("stop", "-t", "5", s3)
    stopped = time.monotonic()
    timeline.say(f"FAULT: S3 stopped during ingestion run {run.run_id[:8]}")
    assert httpx.get(f"{stack.scoring}/healthz").status_code == 200  # serving stays up
    time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
    docker("start", s3)
    timeline.say("S3 started again after 30 s")
    wait_for(lambda: store.exists("featurestore/online/_current.json"), 120, "S3 back", poll=1)
    return run


def _s3_recovery(store, instance, timeline, run, days, figures) -> None:
    """The ingestion run that S3 went away under retried and succeeded, and no partition of
    its days is visible half-written."""

    def finished():
        current = instance.get_run_by_id(run.run_id)
        retries = [r for r in runs(instance) if r.tags.get("dagster/parent_run_id") == run.run_id]
        done = [current, *retries]
        return done if all(r.status.value not in IN_FLIGHT for r in done) else None

    outcome = wait_for(finished, 600, "the ingestion run through the outage", poll=2)
    assert any(completed(instance, r.run_id) for r in outcome), [r.status for r in outcome]
    retried = [
        e
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value in ("STEP_UP_FOR_RETRY",)
    ]
    figures["s3_outage_step_retries"] = len(retried)
    # the sensor may have split the landing into more than one run (a tick saw part of the
    # files): every hour of the days is judged once all of them are ingested
    wait_for(
        lambda: all(pointer(store, "transactions", key) for key in hours(days)),
        600,
        "every hour of the outage's days ingested",
        poll=2,
    )
    for key in hours(days):
        p = pointer(store, "transactions", key)
        assert p and p["status"] == "valid", (key, p)
        data = store.get_bytes(p["key"])
        assert hashlib.sha256(data).hexdigest() == p["sha256"], f"{key}: half-written partition"
    timeline.say(
        f"ingestion through the S3 outage: {len(retried)} step retries, run "
        f"{outcome[-1].status.value.lower()}; every hour of {days[0]}..{days[-1]} whole"
    )


# ------------------------------------------------------------------------------------- checks


def _assert_runs_were_containers_in_postgres(stack, instance, terminated: list[str]) -> None:
    """Every run that started was launched as its own container by the DockerRunLauncher (the
    launch event names the container the run is tagged with). A run may also end without ever
    starting: one the daemon could not launch (PostgreSQL down) is failed and retried by the
    run-retry policy. Such runs are listed, and each must have a retry that did start; a retry
    inherits its parent's tags, container id included, so the tag alone proves nothing. A run
    terminated from the UI ended CANCELED (or finished first) and its container is stopped."""
    from dagster import DagsterEventType, DagsterRunStatus
    from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG

    all_runs = runs(instance)
    assert len(all_runs) >= 10
    never_started = []
    for run in all_runs:
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event]
        # the launcher's engine event: "[DockerRunLauncher] Launching run in a new container
        # <id> with image ..." (Dagster keeps it in the event's message, not the user message)
        launched = [
            found.group(1)
            for e in events
            if e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
            and (found := LAUNCH_EVENT.search(e.dagster_event.message or ""))
        ]
        started = any(e.dagster_event.event_type == DagsterEventType.RUN_START for e in events)
        if not started:
            never_started.append((run, [e.user_message for e in events]))
            continue
        if not launched:  # say what the run's record holds before failing on it
            print(f"  run {run.run_id} ({run.job_name}): {run.status.value}, tags {run.tags}")
            for e in events:
                stamp = time.strftime("%H:%M:%S", time.gmtime(e.timestamp))
                kind = e.dagster_event.event_type.value
                print(f"    {stamp} {kind}: {(e.dagster_event.message or '')[:160]}")
        assert launched, f"run {run.run_id} ({run.job_name}) started without a container launch"
        assert run.tags.get("docker/container_id") == launched[-1], (run.run_id, launched)
    for run, messages in never_started:
        print(
            f"  run {run.run_id[:8]} ({run.job_name}) never started: {run.status.value}; "
            f"{' | '.join(m for m in messages if m)[:300]}"
        )
        assert run.status in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE), run.status
        if run.status == DagsterRunStatus.FAILURE:
            retry = run.tags.get(AUTO_RETRY_RUN_ID_TAG)
            assert retry, f"run {run.run_id} failed before it started and was not retried"
    for run_id in terminated:
        run = instance.get_run_by_id(run_id)
        assert run.status in (DagsterRunStatus.CANCELED, DagsterRunStatus.SUCCESS), (
            f"run {run_id} ({run.job_name}) terminated from the UI ended {run.status.value}"
        )
        container = run.tags.get(DOCKER_TAG)
        if container:
            # a run records its end before its process exits (a run that finished as it was
            # terminated still uploads its step logs; one terminated while STARTING, before its
            # container was tagged, cancels itself once it starts): the container must stop
            # soon after, not at once (CI once inspected one still exiting)
            wait_for(
                lambda c=container: (
                    docker("inspect", "-f", "{{.State.Running}}", c, check=False) != "true"
                ),
                120,
                f"the container of terminated run {run_id[:8]} ({run.status.value}) to stop",
                poll=1,
            )
    ids = {r.run_id for r in all_runs}
    rows = dict(stack.psql("SELECT run_id, status FROM runs"))
    assert ids <= set(rows), "runs missing from PostgreSQL"
    counted = dict(stack.psql("SELECT run_id, count(*) FROM event_logs GROUP BY run_id"))
    assert all(counted.get(run_id, 0) > 3 for run_id in ids)
    checks = stack.psql("SELECT count(*) FROM asset_check_executions")[0][0]
    assert checks > 0
    assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
    # no SQLite anywhere in the Dagster containers (find exits 1 on the directories the
    # containers' unprivileged user may not read: what it lists is the answer)
    for service in ("daemon", "webserver", "code-location"):
        listing = docker(
            "exec", stack.container(service), "sh", "-c",
            "find / -xdev \\( -name '*.db' -o -name '*.sqlite' \\) -newer /etc/hostname "
            "2>/dev/null || true",
        )  # fmt: skip
        assert listing == "", f"{service}: {listing}"


def _assert_replicas_share_redis_behind_haproxy(stack, served: dict[str, int]) -> None:
    """The replayed traffic went through HAProxy (Debian's, fraudloop-haproxy) to both
    replicas, and the replicas share their online features in Redis (Debian's redis-server,
    fraudloop-redis): each reports the same count of observed transactions, which two
    in-process stores, each seeing about half of the traffic, would not."""
    print(f"batch requests per replica, as the balancer answered them: {served}")
    assert served.get("replica-1") and served.get("replica-2"), served
    assert stack.inspect("balancer", "{{.Config.Image}}") == "fraudloop-haproxy:latest"
    assert stack.inspect("redis", "{{.Config.Image}}") == "fraudloop-redis:latest"
    for service in ("scoring", "scoring-2"):
        env = stack.inspect(service, "{{range .Config.Env}}{{println .}}{{end}}").splitlines()
        assert "FRAUDLOOP_ONLINE_STORE=redis" in env, (service, env)
    observed = {
        name: httpx.get(f"{url}/v1/deployment").json()["observed_transactions"]
        for name, url in stack.replicas.items()
    }
    assert len(set(observed.values())) == 1 and observed["replica-1"] > 0, observed
    keys = docker(
        "exec", stack.container("redis"), "redis-cli", "-p", str(stack.ports["redis"]), "dbsize"
    )  # fmt: skip
    assert int(keys) > 0, keys


def _top_level_prefixes(store) -> set[str]:
    """The bucket's top-level prefixes in one delimited request, not every object in pages of
    1,000 keys: 12 s for 40,000 keys against 0.04 s delimited from moto's own server (quiet,
    2026-12-06, before the stack's key index), and the stack's bucket is larger."""
    response = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix, Delimiter="/")
    assert not response.get("IsTruncated"), "more than 1,000 top-level prefixes"
    return {
        found["Prefix"][len(store.prefix) :].rstrip("/")
        for found in response.get("CommonPrefixes", [])
    }


def _assert_artifacts_in_s3_not_on_disk(stack, store, instance) -> None:
    prefixes = _top_level_prefixes(store)
    expected = {
        "landing", "raw", "quarantine", "features", "featurestore", "models", "predictions",
        "monitoring", "alerts", "dagster",
    }  # fmt: skip
    assert expected <= prefixes, f"missing in S3: {expected - prefixes}"
    logs = store.client.list_objects_v2(
        Bucket=store.bucket, Prefix=f"{store.prefix}dagster/compute-logs/", MaxKeys=1
    )
    assert logs.get("KeyCount", 0) > 0, "no step logs in S3"
    # nothing under a local store: neither the long-running containers nor any run container
    # wrote into FRAUDLOOP_HOME (stopped containers keep their writes too)
    containers = [stack.container(s) for s in ("code-location", "daemon", "webserver")]
    # (a run queued since the runs settled has no container yet: the check above covers runs)
    containers += [r.tags["docker/container_id"] for r in runs(instance) if DOCKER_TAG in r.tags]
    for container, written in _writes_under(containers, "/opt/dagster/fraudloop").items():
        assert not written, f"container {container[:12]} wrote a local store: {written[:5]}"


def _writes_under(containers: list[str], path: str) -> dict[str, list[str]]:
    """What each container wrote under `path`: its overlay2 upper layer (the container's own
    writes, kept after it stops) read from the host, all containers in one `docker inspect`;
    one `docker diff` per container (six at a time) kept the S3 and local-store check at 78-84 s
    for ~60 containers at the stack's load; this way it takes ~1 s.
    `docker diff` where the upper layer cannot be read (another storage driver, not root)."""
    lines = docker(
        "inspect", "-f", "{{.Id}} {{.GraphDriver.Name}} {{.GraphDriver.Data.UpperDir}}",
        *containers,
    ).splitlines()  # fmt: skip
    out = {}
    for container, line in zip(containers, lines, strict=True):
        _, driver, upper = [*line.split(" ", 2), "", ""][:3]
        if driver == "overlay2" and upper and os.access(upper, os.R_OK | os.X_OK):
            root = Path(upper) / path.strip("/")
            out[container] = [f"{path}/{f.relative_to(root)}" for f in root.rglob("*")]
        else:
            diff = docker("diff", container, check=False).splitlines()
            out[container] = [entry for entry in diff if f"{path}/" in entry]
    return out


def _assert_graphql_lists_runs_and_checks(stack, instance) -> None:
    data = stack.graphql(
        "{ runsOrError(limit: 1000) { ... on Runs { results { runId jobName status } } } }"
    )
    listed = {r["runId"] for r in data["runsOrError"]["results"]}
    assert {r.run_id for r in runs(instance)} <= listed
    nodes = stack.graphql(
        """{ assetNodes { assetKey { path }
             assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""
    )["assetNodes"]
    checks = {
        check["name"]
        for node in nodes
        for check in (node["assetChecksOrError"].get("checks") or [])
    }
    expected = {
        "transactions_pass_expectations", "labels_pass_expectations",
        "features_pass_expectations", "accuracy_above_floor", "drift_within_threshold",
    }  # fmt: skip
    assert expected <= checks, expected - checks
    executions = stack.graphql(
        """{ assetCheckExecutions(assetKey: {path: ["raw_transactions"]},
               checkName: "transactions_pass_expectations", limit: 10000) { runId status } }"""
    )["assetCheckExecutions"]
    statuses = {e["status"] for e in executions}
    # passed hours, and those of the run container killed mid-run: its planned checks end as
    # EXECUTION_FAILED, where the UI shows them
    assert {"SUCCEEDED", "EXECUTION_FAILED"} <= statuses, statuses


def _assert_step_logs_outlive_the_container(stack, instance, training) -> None:
    run = next(r for r in training if r.status.value == "SUCCESS")
    container = run.tags["docker/container_id"]
    docker("rm", "-f", container)
    events = stack.graphql(
        """query Logs($runId: ID!) { logsForRun(runId: $runId, limit: 5000) {
             ... on EventConnection { events { __typename
               ... on LogsCapturedEvent { fileKey stepKeys } } } } }""",
        {"runId": run.run_id},
    )["logsForRun"]["events"]
    captured = [e for e in events if e["__typename"] == "LogsCapturedEvent"]
    assert captured, "no captured step logs"
    text = ""
    for event in captured:
        logs = stack.graphql(
            """query Captured($key: [String!]!) { capturedLogs(logKey: $key) { stdout stderr } }""",
            {"key": [run.run_id, "compute_logs", event["fileKey"]]},
        )["capturedLogs"]
        text += (logs["stdout"] or "") + (logs["stderr"] or "")
    assert "candidate_model" in text or "training_dataset" in text, text[:2000]


# ------------------------------------------------------------------------------------- figures


def _print_figures(stack, instance, timeline, figures, v1, v2) -> None:
    delivery = timeline.marks["promoted"] - timeline.marks["drift_landed"]
    per_job: dict[str, list[float]] = {}  # job -> [runs, queued, launching, in steps]
    from dagster import DagsterEventType

    for run in runs(instance):
        record = instance.get_run_record_by_id(run.run_id)
        if not record or record.create_timestamp.timestamp() < timeline.epochs["drift_landed"]:
            continue
        if record.create_timestamp.timestamp() > timeline.epochs["promoted"]:
            continue
        times = {}
        for event in instance.all_logs(run.run_id):
            if event.dagster_event is None:
                continue
            kind = event.dagster_event.event_type
            if kind in (DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START):
                times.setdefault(kind, event.timestamp)
        stats = instance.get_run_step_stats(run.run_id)
        # (a step of a run terminated by the drain has no end)
        in_steps = sum(s.end_time - s.start_time for s in stats if s.start_time and s.end_time)
        job = per_job.setdefault(run.job_name, [0, 0.0, 0.0, 0.0])
        job[0] += 1
        job[3] += in_steps
        if DagsterEventType.RUN_STARTING in times and DagsterEventType.RUN_START in times:
            job[1] += times[DagsterEventType.RUN_STARTING] - record.create_timestamp.timestamp()
            job[2] += times[DagsterEventType.RUN_START] - times[DagsterEventType.RUN_STARTING]
    queue, launch, steps = (sum(job[i] for job in per_job.values()) for i in (1, 2, 3))
    total = launch + queue + steps
    figures.update(delivery_seconds=delivery, launch_seconds=launch, steps_seconds=steps)
    print("\nfigures (the stack on this machine):")
    print(
        f"  images built in {figures['build_seconds']:.0f} s "
        f"({'cold' if figures['build_cold'] else 'warm'})"
    )
    print(f"  stack up to healthy: {figures['up_seconds']:.0f} s")
    print(f"  first drifted day landed -> v{v2} serving 100 %: {delivery:.0f} s (v{v1} before)")
    if total:
        print(
            f"  runs created in that window: {queue:.0f} s queued, {launch:.0f} s launching run "
            f"containers (container start to run start), {steps:.0f} s in steps: "
            f"launching = {launch / total:.0%} of their time"
        )
    for name, (count, queued, launched, in_steps) in sorted(per_job.items()):
        print(
            f"    {name}: {count:.0f} runs, per run {queued / count:.0f} s queued, "
            f"{launched / count:.0f} s launching, {in_steps / count:.0f} s in steps"
        )
    back = figures["postgres_recovery_seconds"]
    print(f"  PostgreSQL restart -> webserver and daemon back: {back:.0f} s")
    # where the test's wall time went (the fixture's build and up come before the timeline)
    marks = timeline.marks
    phases = [
        ("images built", figures["build_seconds"]),
        ("rebuilt, nothing changed", figures["rebuild_seconds"]),
        ("stack up to healthy", figures["up_seconds"]),
        ("history landed -> ingested, labelled, featured (2 faults)", marks["history_ready"]),
        ("v1 trained -> production", marks["v1_released"] - marks["history_ready"]),
        ("PostgreSQL restart", marks["replay_began"] - marks["v1_released"]),
        (
            "replay until the first drifted days land",
            marks["drift_landed"] - marks["replay_began"],
        ),
        ("drift landed -> v2 at 100 %", delivery),
        ("final checks (drain, Postgres, S3, GraphQL)", marks["checked"] - marks["promoted"]),
    ]
    figures.update({f"phase_{i}_seconds": seconds for i, (_, seconds) in enumerate(phases)})
    print("  where the wall time went:")
    for name, seconds in phases:
        print(f"    {seconds:7.0f} s  {name}")
    print(f"    {sum(s for _, s in phases):7.0f} s  total")
    print(json.dumps({k: round(v, 1) for k, v in figures.items()}))
