"""`make demo`: the story so far, told through real Dagster runs on the local profile.

1. the simulator lands a few days of hourly transaction files and daily label files, two of
   them deliberately broken;
2. `new_data_sensor` is evaluated against the instance and its run requests are executed
   (the whole history landed at once, so the sensor asks for one range run per table);
3. a summary: partitions ingested, rows, data versions, and what was quarantined and why.

Every run lands in ``$DAGSTER_HOME`` (./.dagster), so `make ui` shows them afterwards.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

DEMO_START = date(2018, 4, 1)


def _corruptions(start: date) -> list[tuple[str, str]]:
    """Two broken deliveries an on-call engineer should find in the UI."""
    day3 = start + timedelta(days=2)
    day4 = start + timedelta(days=3)
    return [
        ("negative_amount", f"{day3:%Y-%m-%d}-14:00"),
        ("wrong_delimiter", f"{day4:%Y-%m-%d}-09:00"),
    ]


def _tick_and_run(sensor, instance, resources, cursors: dict, run_keys: set) -> list:
    """One daemon tick of `sensor`, done here: evaluate it with its stored cursor, execute each
    new run request in process (a run key runs once), keep the new cursor."""
    import dagster as dg

    from pipelines.definitions import defs

    with dg.build_sensor_context(
        instance=instance, resources=resources, cursor=cursors.get(sensor.name)
    ) as context:
        result = sensor(context)
    if getattr(result, "cursor", None) is not None:
        cursors[sensor.name] = result.cursor
    runs = []
    for request in getattr(result, "run_requests", None) or []:
        if request.run_key in run_keys:
            continue
        run_keys.add(request.run_key)
        tags = {**request.tags, "dagster/sensor_name": sensor.name}
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        print(f"  {sensor.name} -> {request.job_name} {_describe(request)}")
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        run = defs.resolve_job_def(request.job_name).execute_in_process(
            run_config=quiet,
            instance=instance,
            tags=tags,
            resources=resources,
            raise_on_error=False,
        )
        runs.append((request.job_name, run))
    return runs


def _describe(request) -> str:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    start = request.tags.get(ASSET_PARTITION_RANGE_START_TAG)
    end = request.tags.get(ASSET_PARTITION_RANGE_END_TAG)
    return f"{start} .. {end}" if start else str(request.partition_key)


def run_demo(days: int = 10, scale: float = 0.5, seed: int = 7) -> int:
    import warnings

    import dagster as dg

    from fraudloop import raw
    from fraudloop.quarantine import list_quarantine
    from fraudloop.settings import Settings
    from fraudloop.simulate import simulate
    from pipelines.resources import build_resources
    from pipelines.runner import ensure_dagster_home as dagster_instance_home
    from pipelines.runner import instance as dagster_instance
    from sensors.features import features_sensor
    from sensors.new_data import new_data_sensor

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    began = time.perf_counter()
    settings = Settings.from_env()
    store = settings.open_store()
    where = settings.home if settings.store_backend == "local" else f"s3://{settings.s3_bucket}"
    print(f"fraudloop demo: object store {where}, Dagster instance {dagster_instance_home()}")
    print(f"1/3 simulating {days} days from {DEMO_START} at scale {scale} (seed {seed})")
    summary = simulate(
        store,
        DEMO_START,
        days,
        seed=seed,
        scale=scale,
        corrupt=_corruptions(DEMO_START),
        feed_start=DEMO_START,
        progress=True,
    )
    print(f"    {summary.transactions:,} transactions, {summary.frauds:,} frauds")

    print("2/3 sensors -> runs (Dagster, in process, recorded in the instance)")
    instance = dagster_instance()
    resources = build_resources(settings)
    runs, cursors, run_keys = [], {}, set()
    # What the daemon does, tick by tick, until neither sensor has anything left to ask for.
    for _ in range(8):
        new = _tick_and_run(new_data_sensor, instance, resources, cursors, run_keys)
        new += _tick_and_run(features_sensor, instance, resources, cursors, run_keys)
        if not new:
            break
        runs += new
    if not runs:
        print("    nothing new in the landing zone (already ingested)")

    print("3/3 summary")
    hours = [
        f"{DEMO_START + timedelta(days=d):%Y-%m-%d}-{h:02d}:00"
        for d in range(days)
        for h in range(24)
    ]
    pointers = {k: raw.read_pointer(store, "transactions", k) for k in hours}
    valid = {k: p for k, p in pointers.items() if p and p.get("status") == "valid"}
    rows = sum(int(p.get("rows", 0)) for p in valid.values())
    print(f"    transactions: {len(valid)}/{len(hours)} hourly partitions valid, {rows:,} rows")
    for key in sorted(valid)[:3]:
        print(f"      {key}  data version {valid[key]['sha256'][:16]}  rows {valid[key]['rows']}")
    label_days = [f"{DEMO_START + timedelta(days=d):%Y-%m-%d}" for d in range(days)]
    label_ptrs = {d: raw.read_pointer(store, "labels", d) for d in label_days}
    label_valid = {d: p for d, p in label_ptrs.items() if p and p.get("status") == "valid"}
    print(
        f"    labels: {len(label_valid)} daily partitions valid, "
        f"{sum(int(p.get('rows', 0)) for p in label_valid.values()):,} labels"
    )
    records = list_quarantine(store)
    print(f"    quarantined files: {len(records)}")
    for record in records:
        print(f"      {record.get('partition')}  {record.get('source_key')}")
        print(f"        why: {record.get('summary')}")
    features = [raw.read_pointer(store, "transaction_features", k) for k in hours]
    print(
        f"    features: {sum(1 for p in features if p and p['status'] == 'valid')}/{len(hours)} "
        f"hourly partitions, {sum(int(p.get('rows', 0)) for p in features if p):,} rows; "
        "blocked hours are the quarantined ones"
    )
    for job_name, run in runs:
        verdict = "success" if run.success else "failed: a blocking check stopped it"
        print(f"    run {run.run_id[:8]} {job_name:22s} {verdict}")
    print(f"done in {time.perf_counter() - began:.1f} s; `make ui` shows runs, checks and metadata")
    # The demo passes when the pipeline did what it promises: exactly the broken hours were
    # quarantined, every other hour and every label day was ingested.
    expected_bad = {key for _, key in _corruptions(DEMO_START)}
    quarantined = {k for k, p in pointers.items() if p and p.get("status") == "quarantined"}
    ok = quarantined == expected_bad and len(valid) == len(hours) - len(expected_bad)
    if not ok:
        print(f"UNEXPECTED: quarantined {sorted(quarantined)}, expected {sorted(expected_bad)}")
    return 0 if ok else 1
