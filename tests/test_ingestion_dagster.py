"""Ingestion through real Dagster runs on a temporary instance: versions, checks, quarantine,
range backfills, the new-data sensor and the hourly schedule."""

import urllib.request
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from fraudloop.core import tables
from fraudloop.core.alerts import read_events
from fraudloop.core.store import sha256_hex
from fraudloop.data.quarantine import list_quarantine
from pipelines.config import ProjectConfig
from pipelines.definitions import build_definitions
from resources.store import ObjectStoreResource
from tests.dagster_runs import execute, run
from tests.factories import csv_bytes, hour_frame, land_hour, land_labels

H5 = "2018-04-01-05:00"


def consumer(env, tolerant: bool = False) -> dg.AssetsDefinition:
    """A stand-in for the feature stage: reads raw partitions the way every reader must.
    ``tolerant`` skips a quarantined hour as the feature stage does (it marks it blocked)."""

    @dg.asset(
        partitions_def=env.partitions.hourly,
        deps=["raw_transactions"],
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def consumer(
        context: dg.AssetExecutionContext, store: ObjectStoreResource
    ) -> dg.MaterializeResult:
        rows, blocked = 0, []
        for key in context.partition_keys:
            try:
                rows += len(tables.read_partition(store.open(), "transactions", key))
            except tables.PartitionQuarantined:
                if not tolerant:
                    raise
                blocked.append(key)
        return dg.MaterializeResult(metadata={"rows": rows, "blocked": ",".join(blocked)})

    return consumer


INGEST = ["raw_transactions", "transactions_pass_expectations"]


def latest(env, key, partition):
    record = env.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    return record[0].asset_materialization if record else None


def test_definitions_load_and_every_asset_is_documented():
    defs = build_definitions(ProjectConfig.from_env({}))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.group_name in {
            "ingestion",
            "features",
            "training",
            "deployment",
            "monitoring",
        }, key
        assert node.kinds, key
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "hourly_ingestion_job",
        "daily_labels_job",
    }
    assert defs.resolve_sensor_def("new_data_sensor")
    assert defs.resolve_sensor_def("rollout_sensor")
    assert defs.resolve_schedule_def("hourly_refresh_schedule")


def test_valid_hour_is_versioned_by_content_hash(env):
    land_hour(env.store, H5, rows=40)
    result = run(env, INGEST, partition_key=H5)
    assert result.success
    pointer = tables.read_pointer(env.store, "transactions", H5)
    assert pointer["status"] == "valid" and pointer["rows"] == 40
    stored = env.store.get_bytes(pointer["key"])
    assert sha256_hex(stored) == pointer["sha256"]
    materialization = latest(env, "raw_transactions", H5)
    assert materialization.tags["dagster/data_version"] == pointer["sha256"]
    assert materialization.metadata["dagster/row_count"].value == 40
    assert materialization.metadata["status"].value == "valid"
    schema = materialization.metadata["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == [
        "transaction_id",
        "tx_datetime",
        "customer_id",
        "terminal_id",
        "amount",
    ]
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    # the partition's Great Expectations Data Docs, one click away (a file link locally)
    docs = materialization.metadata["data_docs"].value
    page = urllib.request.urlopen(docs).read().decode()
    assert "Data documentation compiled by Great Expectations" in page


def test_same_input_same_version_and_corrected_redelivery_new_version(env):
    key, frame = land_hour(env.store, H5, rows=30)
    run(env, INGEST, partition_key=H5)
    first = latest(env, "raw_transactions", H5).tags["dagster/data_version"]
    run(env, INGEST, partition_key=H5)
    assert latest(env, "raw_transactions", H5).tags["dagster/data_version"] == first
    corrected = frame.assign(amount=["12.34"] * len(frame))
    env.store.put_bytes(key, csv_bytes(corrected))
    run(env, INGEST, partition_key=H5)
    second = latest(env, "raw_transactions", H5).tags["dagster/data_version"]
    assert second != first
    assert tables.read_partition(env.store, "transactions", H5)["amount"].eq(12.34).all()


def test_quarantined_hour_is_a_successful_run_with_a_warning_and_later_reads_refuse_it(env):
    """A correctly quarantined file is a handled outcome: the run succeeds, the blocking check
    reports the quarantine with severity WARN (so it neither fails the run nor stops the
    downstream step), one alert names the file, and readers refuse the hour."""
    _, frame = land_hour(env.store, H5, rows=30)
    broken = csv_bytes(frame.assign(amount="-5.00"))  # every row: over the backstop
    bad_key = "landing/transactions/2018-04-01/05/part-0000.csv"
    env.store.put_bytes(bad_key, broken)

    result = run(env, [*INGEST, consumer(env, tolerant=True)], partition_key=H5)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["partitions_quarantined"].value == 1
    assert "2018-04-01-05:00" in evaluation.metadata["quarantined"].value
    assert evaluation.metadata["partitions_failed"].value == 0
    # WARN does not block: the downstream step ran in the same run and skipped the hour itself
    assert latest(env, "consumer", H5).metadata["blocked"].value == H5
    # the canonical copy was never written; the bytes wait in quarantine, untouched
    assert tables.read_pointer(env.store, "transactions", H5)["status"] == "quarantined"
    names = [i.key.rsplit("/", 1)[1] for i in env.store.list("raw/transactions/")]
    assert not [n for n in names if n.endswith(".parquet") and not n.startswith("_")]
    (record,) = list_quarantine(env.store, table="transactions")
    assert record["source_key"] == bad_key
    assert env.store.get_bytes(record["quarantine_key"]) == broken
    assert "amount is negative: 30" in record["summary"]
    materialization = latest(env, "raw_transactions", H5)
    assert materialization.metadata["rows_accepted"].value == 0
    assert materialization.metadata["rows_rejected"].value == 30
    # on-call was told once, about the file: no run-failure alert on top
    (alert,) = read_events(env.store)
    assert alert["title"] == f"transactions partition {H5} quarantined: part-0000.csv"
    assert alert["dedup_key"] == f"ingest/transactions/{H5}/part-0000.csv"
    assert alert["details"]["partition"] == H5 and alert["severity"] == "warning"
    # a later run of a strict downstream asset alone refuses the quarantined hour
    later = run(env, [consumer(env)], partition_key=H5)
    assert not later.success
    failure = next(e for e in later.all_events if e.event_type_value == "STEP_FAILURE")
    assert "quarantined" in str(failure.event_specific_data.error)


def test_rejected_rows_keep_the_hour_with_counts_and_one_alert_per_file(env):
    _, frame = land_hour(env.store, H5, rows=40)
    other = hour_frame(H5, rows=30, seed=5)
    env.store.put_bytes(
        "landing/transactions/2018-04-01/05/part-0000.csv",
        csv_bytes(frame.assign(amount=["0.00", "-3.00", *frame["amount"][2:]])),
    )
    env.store.put_bytes(
        "landing/transactions/2018-04-01/05/part-0001.csv",
        csv_bytes(other.assign(amount=["inf", *other["amount"][1:]])),
    )
    result = run(env, INGEST, partition_key=H5)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    materialization = latest(env, "raw_transactions", H5)
    assert materialization.metadata["rows_accepted"].value == 68  # the $0.00 row is kept
    assert materialization.metadata["rows_rejected"].value == 2
    files = materialization.metadata["files"].value
    assert [f["rows_rejected"] for f in files] == [1, 1]
    alerts = read_events(env.store)
    assert sorted(a["title"] for a in alerts) == [
        f"transactions partition {H5}: 1 row(s) of part-0000.csv rejected",
        f"transactions partition {H5}: 1 row(s) of part-0001.csv rejected",
    ]
    assert all(a["severity"] == "info" for a in alerts)  # recorded; nothing for anyone to do
    assert {a["dedup_key"] for a in alerts} == {
        f"ingest/transactions/{H5}/part-0000.csv/rows",
        f"ingest/transactions/{H5}/part-0001.csv/rows",
    }
    assert "amount is negative: 1" in alerts[0]["summary"] + alerts[1]["summary"]


def test_an_hour_with_nothing_written_still_fails_the_run(env):
    """Something actually broken is not a handled quarantine: the check fails with ERROR."""
    result = run(env, INGEST, partition_key=H5)  # nothing landed: no pointer is written
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "nothing was written" in evaluation.metadata["failures"].value


@pytest.mark.slow
def test_range_backfill_is_one_run_with_per_partition_metadata(env):
    keys = env.partitions.hourly.get_partition_keys_in_range(
        dg.PartitionKeyRange(H5, "2018-04-02-04:00")
    )
    assert len(keys) == 24
    for i, key in enumerate(keys):
        land_hour(env.store, key, rows=20 + i, seed=i)
    result = run(env, INGEST, start=keys[0], end=keys[-1])
    assert result.success
    assert len(env.instance.get_runs()) == 1
    shas = set()
    for i, key in enumerate(keys):
        materialization = latest(env, "raw_transactions", key)
        assert materialization.metadata["dagster/row_count"].value == 20 + i
        shas.add(materialization.metadata["sha256"].value)
    assert len(shas) == 24


def test_labels_are_checked_against_ingested_transactions(env):
    _, frame = land_hour(env.store, H5, rows=30)
    run(env, INGEST, partition_key=H5)
    land_labels(env.store, "2018-04-08", frame)
    assert run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-08").success
    pointer = tables.read_pointer(env.store, "labels", "2018-04-08")
    assert pointer["status"] == "valid" and pointer["rows"] == 30

    stranger = hour_frame("2018-04-01-06:00", rows=5, seed=9)  # never ingested
    land_labels(env.store, "2018-04-09", stranger)
    result = run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-09")
    assert result.success  # a handled quarantine
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    pointer = tables.read_pointer(env.store, "labels", "2018-04-09")
    assert pointer["status"] == "quarantined"
    assert "transaction" in pointer["reason"].lower()


def test_s3_backend_end_to_end(env, s3_endpoint, s3_bucket):
    """The same definitions on S3: settings are read when definitions are built, in process."""
    env = env.configure(
        FRAUDLOOP_STORE="s3",
        FRAUDLOOP_S3_BUCKET=s3_bucket,
        FRAUDLOOP_S3_PREFIX="e2e",
        FRAUDLOOP_S3_ENDPOINT_URL=s3_endpoint,
        AWS_REGION="us-east-1",
    )
    s3 = env.store
    land_hour(s3, H5, rows=25)
    assert run(env, INGEST, partition_key=H5).success
    pointer = tables.read_pointer(s3, "transactions", H5)
    assert pointer["status"] == "valid"
    assert s3.uri(pointer["key"]).startswith(f"s3://{s3_bucket}/e2e/raw/transactions/")
    # on S3 the Data Docs link is a presigned HTTPS GET a browser opens without credentials
    docs = latest(env, "raw_transactions", H5).metadata["data_docs"].value
    answer = httpx.get(docs)
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html"
    assert b"Great Expectations" in answer.content


# --- the new-data sensor -----------------------------------------------------------------


def tick(env, cursor=None):
    with dg.build_sensor_context(
        instance=env.instance, cursor=cursor, resources=env.resources
    ) as context:
        result = env.sensor("new_data_sensor")(context)
    return result, (result.cursor if isinstance(result, dg.SensorResult) else cursor)


def test_sensor_requests_each_file_version_exactly_once(env):
    key, frame = land_hour(env.store, H5)
    result, cursor = tick(env)
    (request,) = result.run_requests
    assert request.partition_key == H5
    assert request.run_key == f"{key}@{sha256_hex(env.store.get_bytes(key))}"
    assert request.job_name == "hourly_ingestion_job"

    again, cursor = tick(env, cursor)
    assert isinstance(again, dg.SkipReason)

    env.store.put_bytes(key, csv_bytes(frame.assign(amount="1.00")))  # corrected re-delivery
    changed, cursor = tick(env, cursor)
    (request2,) = changed.run_requests
    assert request2.partition_key == H5 and request2.run_key != request.run_key

    land_hour(env.store, "2018-04-01-01:00")  # late file for an old hour
    land_labels(env.store, "2018-04-08", frame)
    late, cursor = tick(env, cursor)
    # labels wait while transactions are being ingested in the same tick ...
    assert [(r.job_name, r.partition_key) for r in late.run_requests] == [
        ("hourly_ingestion_job", "2018-04-01-01:00"),
    ]
    # ... and are requested on the next one
    labels, cursor = tick(env, cursor)
    assert [(r.job_name, r.partition_key) for r in labels.run_requests] == [
        ("daily_labels_job", "2018-04-08"),
    ]

    land_hour(env.store, "2018-03-30-02:00")  # before the configured partitions start
    outside, cursor = tick(env, cursor)
    assert (
        not outside.run_requests
        and "none for a configured partition" in outside.skip_reason.skip_message
    )


def test_labels_wait_only_for_transactions_up_to_their_day(env):
    """With feeds landing continuously some ingestion is always running; labels of a day whose
    transactions are all in must not wait for later hours (they would starve)."""
    _, frame = land_hour(env.store, H5)
    _, cursor = tick(env)
    land_labels(env.store, "2018-04-08", frame)
    land_hour(env.store, "2018-04-09-03:00")  # a later hour lands in the same tick
    result, cursor = tick(env, cursor)
    assert sorted((r.job_name, r.partition_key) for r in result.run_requests) == [
        ("daily_labels_job", "2018-04-08"),
        ("hourly_ingestion_job", "2018-04-09-03:00"),
    ]
    land_hour(env.store, "2018-04-08-10:00")  # an hour of the labels' own day is in flight
    land_labels(env.store, "2018-04-08", frame, name="labels-2.csv")
    result, cursor = tick(env, cursor)
    assert [(r.job_name, r.partition_key) for r in result.run_requests] == [
        ("hourly_ingestion_job", "2018-04-08-10:00"),
    ]


def test_sensor_turns_a_landed_history_into_one_range_run(env):
    keys = env.partitions.hourly.get_partition_keys_in_range(
        dg.PartitionKeyRange(H5, "2018-04-01-16:00")
    )
    for i, key in enumerate(keys):
        land_hour(env.store, key, seed=i)
    result, _ = tick(env)
    (request,) = result.run_requests
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == keys[0]
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == keys[-1]
    assert request.tags["fraudloop/files"] == str(len(keys))


def test_hourly_schedule_targets_the_hour_that_just_ended_once_it_landed(env):
    schedule = env.defs.resolve_schedule_def("hourly_refresh_schedule")

    def tick_at_six_ten():
        with dg.build_schedule_context(
            scheduled_execution_time=datetime(2018, 4, 2, 6, 10, tzinfo=UTC),
            repository_def=env.defs.get_repository_def(),
            resources=env.resources,
        ) as context:
            return schedule.evaluate_tick(context)

    # a silent feed: no run to fail and page every hour (freshness owns silence)
    silent = tick_at_six_ten()
    assert not silent.run_requests
    assert "nothing landed for 2018-04-02-05:00" in silent.skip_message
    land_hour(env.store, "2018-04-02-05:00", rows=10)
    (request,) = tick_at_six_ten().run_requests
    assert request.partition_key == "2018-04-02-05:00"


def test_labels_of_a_quarantined_hour_are_not_rejected_for_the_transactions_fault(env):
    _, frame = land_hour(env.store, H5, rows=30)
    env.store.put_bytes(
        "landing/transactions/2018-04-01/05/part-0000.csv",
        csv_bytes(frame.assign(amount=["-1.00"] * len(frame))),
    )
    run(env, INGEST, partition_key=H5)
    assert tables.read_pointer(env.store, "transactions", H5)["status"] == "quarantined"
    land_labels(env.store, "2018-04-08", frame)
    assert run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-08").success
    assert tables.read_pointer(env.store, "labels", "2018-04-08")["status"] == "valid"


@pytest.mark.slow
def test_every_broken_delivery_goes_through_sensor_and_run_without_a_crash(env):
    """All corruption kinds land on one day (after a week of history for the row-count bound);
    the sensor and the runs handle every one, and every run succeeds: quarantined with the bytes
    intact, the bad rows alone rejected (the rest of the hour ingested), or accepted for the
    kinds that are valid by the documented rules."""
    from fraudloop.core.hours import hour_start
    from fraudloop.feeds.corruption import CORRUPTION_KINDS, corrupt_file
    from tests.test_bad_inputs import ACCEPTED, ROW_LEVEL

    kinds = sorted(CORRUPTION_KINDS)
    for day in range(1, 8):
        for hour in range(len(kinds)):
            land_hour(env.store, f"2018-04-0{day}-{hour:02d}:00", rows=50, seed=day * 100 + hour)
    delivered = {}
    for hour, kind in enumerate(kinds):
        key = f"2018-04-08-{hour:02d}:00"
        good = csv_bytes(hour_frame(key, rows=50, seed=hour))
        suffix, data = corrupt_file(kind, good, hour_start(key))
        landing_key = f"landing/transactions/2018-04-08/{hour:02d}/part-0000{suffix}"
        env.store.put_bytes(landing_key, data)
        delivered[key] = (kind, landing_key, data)

    result, _ = tick(env)
    requests = sorted(result.run_requests, key=lambda r: r.tags[ASSET_PARTITION_RANGE_START_TAG])
    assert len(requests) == 8  # one range run per day (the hours of a day are contiguous)
    for request in requests:
        outcome = execute(env, request)
        # a quarantine is handled: every run succeeds
        assert outcome.success

    records = {r["partition"]: r for r in list_quarantine(env.store, table="transactions")}
    for key, (kind, landing_key, data) in delivered.items():
        pointer = tables.read_pointer(env.store, "transactions", key)
        if kind in ACCEPTED:
            assert pointer["status"] == "valid", kind
            continue
        if kind in ROW_LEVEL:
            assert pointer["status"] == "valid", kind
            assert pointer["rows"] == 50 - ROW_LEVEL[kind][1], kind
            assert records[key]["rows_rejected"] == ROW_LEVEL[kind][1], kind
            assert env.store.get_bytes(records[key]["quarantine_key"]) == data, kind
            continue
        assert pointer["status"] == "quarantined", kind
        record = records[key]
        assert record["source_key"] == landing_key
        assert env.store.get_bytes(record["quarantine_key"]) == data, kind
        assert record["summary"], kind


def test_a_corrected_reimport_reaches_the_sensor_and_replaces_the_quarantined_hour(env, tmp_path):
    """The user's case: a broken export is imported and its hour quarantined; the corrected
    export is imported beside it; the sensor re-ingests and the hour is valid, each id once."""
    from fraudloop.feeds.importer import import_history

    frame = hour_frame(H5, rows=40, seed=3)
    broken, fixed = tmp_path / "v1.csv", tmp_path / "v2.csv"
    frame.assign(amount="-1.00").to_csv(broken, index=False)
    frame.to_csv(fixed, index=False)

    import_history(env.store, broken, fmt="csv")
    result, cursor = tick(env)
    (request,) = result.run_requests
    assert run(env, INGEST, partition_key=request.partition_key).success  # handled: WARN
    assert tables.read_pointer(env.store, "transactions", H5)["status"] == "quarantined"

    import_history(env.store, fixed, fmt="csv")
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert request.partition_key == H5
    assert run(env, INGEST, partition_key=request.partition_key).success
    pointer = tables.read_pointer(env.store, "transactions", H5)
    assert pointer["status"] == "valid" and pointer["rows"] == 40
    assert len(tables.read_partition(env.store, "transactions", H5)) == 40


def test_labels_held_for_an_unreadable_hour_are_let_in_when_the_sensor_sees_it_corrected(env):
    """Through the sensor and real runs: an hour delivered as junk is quarantined whole; the
    next label day is ingested except the labels of that hour (held, shown as `rows_held`);
    the corrected hour is ingested and the sensor then asks for the label day once more, which
    lets them in."""
    import pandas as pd

    h6 = "2018-04-01-06:00"
    _, good = land_hour(env.store, H5, rows=30)
    late_key, late = land_hour(env.store, h6, rows=20, seed=4)
    env.store.put_bytes(late_key, b"\x00\x9c\xff junk \xfe\n")
    result, cursor = tick(env)
    for request in result.run_requests:
        assert execute(env, request).success
    assert tables.read_pointer(env.store, "transactions", h6)["status"] == "quarantined"

    land_labels(env.store, "2018-04-08", pd.concat([good, late], ignore_index=True))
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert execute(env, request).success
    meta = latest(env, "raw_labels", "2018-04-08").metadata
    assert meta["status"].value == "valid"
    assert (meta["rows_accepted"].value, meta["rows_held"].value) == (30, 20)
    assert f"held until transactions hour {h6}" in meta["reason"].value
    again, cursor = tick(env, cursor)
    assert isinstance(again, dg.SkipReason)  # nothing to release: the hour is still junk

    env.store.put_bytes(late_key, csv_bytes(late))  # the corrected re-delivery
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert (request.job_name, request.partition_key) == ("hourly_ingestion_job", h6)
    assert execute(env, request).success
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert (request.job_name, request.partition_key) == ("daily_labels_job", "2018-04-08")
    assert request.run_key.startswith("held-labels/2018-04-08@")
    assert execute(env, request).success
    pointer = tables.read_pointer(env.store, "labels", "2018-04-08")
    assert pointer["status"] == "valid" and pointer["rows"] == 50
    assert latest(env, "raw_labels", "2018-04-08").metadata["rows_held"].value == 0
    done, cursor = tick(env, cursor)
    assert isinstance(done, dg.SkipReason)


def test_held_label_days_wait_for_the_ingestion_in_flight_then_go_in_one_run_each_stretch(env):
    """A label day holds rows for an hour that is not ingested yet (its run was killed and
    retried, say). While an ingestion covering that hour is in flight the day waits; it used to
    be released at every sensor tick as the retried run wrote hour after hour (the Docker
    stack's test: ten days released twice each, 20 runs, 4 minutes of the run queue). Once
    nothing ingests those hours, consecutive days go again in one range run."""
    import json

    from dagster._core.utils import make_new_run_id

    from fraudloop.data import held_labels

    h6 = "2018-04-01-06:00"
    land_hour(env.store, h6, rows=20)
    result, cursor = tick(env)
    (ingest,) = result.run_requests
    assert execute(env, ingest).success  # the hour is readable now
    days = ("2018-04-08", "2018-04-09", "2018-04-11")
    for day in days:
        record = {"day": day, "rows_held": 3, "waiting_for": [h6], "files": []}
        env.store.put_bytes(held_labels.held_key(day), json.dumps(record).encode())
    retried = dg.DagsterRun(  # the whole day's ingestion, started again
        job_name="hourly_ingestion_job",
        run_id=make_new_run_id(),
        status=dg.DagsterRunStatus.STARTED,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: "2018-04-01-00:00",
            ASSET_PARTITION_RANGE_END_TAG: "2018-04-01-23:00",
        },
    )
    env.instance.add_run(retried)
    waiting, cursor = tick(env, cursor)
    assert isinstance(waiting, dg.SkipReason), waiting.run_requests

    env.instance.report_run_failed(retried)  # over (no retry tag: nothing will run it again)
    result, cursor = tick(env, cursor)
    requests = sorted(result.run_requests, key=lambda r: r.run_key)
    assert [
        (
            r.job_name,
            r.partition_key,
            r.tags.get(ASSET_PARTITION_RANGE_START_TAG),
            r.tags.get(ASSET_PARTITION_RANGE_END_TAG),
        )
        for r in requests
    ] == [
        ("daily_labels_job", None, "2018-04-08", "2018-04-09"),
        ("daily_labels_job", "2018-04-11", None, None),
    ]
    assert requests[0].run_key.startswith("held-labels/2018-04-08..2018-04-09@")
    assert requests[1].run_key.startswith("held-labels/2018-04-11@")
    # the same state of the hours asks for the same runs (Dagster runs a run key once)
    again, _ = tick(env, cursor)
    assert sorted(r.run_key for r in again.run_requests) == [r.run_key for r in requests]
