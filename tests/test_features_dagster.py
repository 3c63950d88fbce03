"""The feature stage through real Dagster runs on a temporary instance: per-partition metadata
and checks of range runs, incremental == full rebuild, online/offline parity through the
published store, quarantined hours, the features sensor, and late data seen as stale."""

from __future__ import annotations

import json
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from assets import keys as asset_keys
from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT, hour_start
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.feature_store import load_online
from fraudloop.features.pipeline import TX_COLUMNS, rebuild_features
from fraudloop.feeds.population import make_population
from fraudloop.feeds.scenarios import generate_day
from tests.dagster_runs import execute, run
from tests.factories import csv_bytes, land_hour, land_labels

pytestmark = pytest.mark.slow

DAYS = 10
START = date(2018, 4, 1)
LABEL_DELAY = timedelta(days=7)  # the simulator's and the settings' default
FEATURES = ["transaction_features", "features_pass_expectations", "online_feature_store"]
INGEST = ["raw_transactions", "transactions_pass_expectations"]
RISK = [n for n in FEATURE_NAMES if n.startswith("terminal_risk_")]


def hours(first: str, last: str) -> list[str]:
    return [
        k.strftime("%Y-%m-%d-%H:%M")
        for k in pd.date_range(hour_start(first), hour_start(last), freq="h")
    ]


def day_hours(day: str) -> list[str]:
    return hours(f"{day}-00:00", f"{day}-23:00")


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """Ten simulated days (~2,000 transactions a day, frauds included)."""
    population = make_population(seed=11, scale=0.2)
    days = [generate_day(population, START + timedelta(days=d)) for d in range(DAYS)]
    return pd.concat(days, ignore_index=True)


def write_raw_transactions(store, history: pd.DataFrame) -> list[str]:
    """Raw hourly partitions written directly (ingestion has its own tests); returns the keys."""
    keys = hours(f"{START}-00:00", f"{START + timedelta(days=DAYS - 1)}-23:00")
    tx = history[TX_COLUMNS]
    of_hour = tx["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    for key in keys:
        tables.write_partition(store, "transactions", key, tx[of_hour == key], [])
    return keys


def label_frame(history: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": history["transaction_id"],
            "is_fraud": history["is_fraud"].astype("int8"),
            "known_at": history["tx_datetime"] + LABEL_DELAY,
        }
    )


def write_raw_labels(store, history: pd.DataFrame, days: list[str]) -> None:
    labels = label_frame(history)
    label_day = labels["known_at"].dt.strftime("%Y-%m-%d")
    for day in days:
        tables.write_partition(store, "labels", day, labels[label_day == day], [])


def materializations(env, asset: str) -> dict[str, dg.AssetMaterialization]:
    """The latest materialization of every partition of `asset`."""
    records = env.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=10_000, ascending=True
    ).records
    return {r.partition_key: r.asset_materialization for r in records}


def stored_features(store, keys: list[str]) -> pd.DataFrame:
    frames = [tables.read_partition(store, "transaction_features", k) for k in keys]
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values("transaction_id").reset_index(drop=True)


def assert_same_features(got: pd.DataFrame, want: pd.DataFrame, columns=FEATURE_NAMES) -> None:
    assert got["transaction_id"].tolist() == want["transaction_id"].tolist()
    np.testing.assert_allclose(
        got[list(columns)].to_numpy(dtype=float),
        want[list(columns)].to_numpy(dtype=float),
        rtol=0,
        atol=1e-9,
    )


def tick(env, cursor=None):
    with dg.build_sensor_context(
        instance=env.instance, cursor=cursor, resources=env.resources
    ) as context:
        result = env.sensor("features_sensor")(context)
    return result, (result.cursor if isinstance(result, dg.SensorResult) else cursor)


def range_of(request: dg.RunRequest) -> tuple[str, str]:
    return (
        request.tags[ASSET_PARTITION_RANGE_START_TAG],
        request.tags[ASSET_PARTITION_RANGE_END_TAG],
    )


# --- 1. a multi-day range: metadata, check, online store, rebuild equality -----------------------


def test_range_run_has_per_partition_metadata_and_equals_the_full_rebuild(env, history):
    every_hour = write_raw_transactions(env.store, history)
    label_days = ["2018-04-08", "2018-04-09", "2018-04-10"]
    write_raw_labels(env.store, history, label_days)

    labels = run(env, ["fraud_labels"], start=label_days[0], end=label_days[-1])
    assert labels.success
    for day, materialization in materializations(env, "fraud_labels").items():
        assert materialization.metadata["status"].value == "valid", day
        assert materialization.metadata["dagster/row_count"].value > 0, day

    # the three days with labels (the first run rebuilds its starting state from raw history)
    keys = hours(f"{label_days[0]}-00:00", f"{label_days[-1]}-23:00")
    result = run(env, FEATURES, start=keys[0], end=keys[-1])
    assert result.success
    assert len(env.instance.get_runs()) == 2  # one run per range, not one per partition

    per_hour = materializations(env, "transaction_features")
    assert sorted(per_hour) == keys
    tx_hours = history["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    counts = tx_hours.value_counts()
    for key in keys:
        meta = per_hour[key].metadata
        pointer = tables.read_pointer(env.store, "transaction_features", key)
        assert meta["status"].value == "valid", key
        assert meta["dagster/row_count"].value == int(counts.get(key, 0)) == pointer["rows"], key
        assert meta["sha256"].value == pointer["sha256"], key
        assert meta["null_values"].value == 0, key
        if pointer["rows"]:
            assert "terminal_risk_7d" in meta["summary"].value, key

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert evaluation.metadata["partitions_checked"].value == len(keys)
    assert "blocked_upstream" not in evaluation.metadata

    (published,) = [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == asset_keys.ONLINE_FEATURE_STORE
    ]
    online, manifest = load_online(env.store)
    assert manifest["state_hour"] == keys[-1] == published.metadata["state_hour"].value
    assert published.metadata["sha256"].value == manifest["sha256"]
    assert online.first_hour is not None

    incremental = stored_features(env.store, keys)
    rebuilt = rebuild_features(env.store, every_hour, label_delay=LABEL_DELAY)
    rebuilt = rebuilt[rebuilt["transaction_id"].isin(incremental["transaction_id"])]
    rebuilt = rebuilt.sort_values("transaction_id").reset_index(drop=True)
    assert len(incremental) == int(counts[keys].sum()) > 0
    assert_same_features(incremental, rebuilt)
    # the matured labels really reach the features (otherwise the equality proves little)
    assert incremental["terminal_risk_7d"].max() > 0


# --- 2. online/offline parity through the published store ---------------------------------------


def serve(online, transactions: pd.DataFrame) -> pd.DataFrame:
    """Score then observe every transaction in (time, id) order, as the service does."""
    ordered = transactions.sort_values(["tx_datetime", "transaction_id"])
    rows = []
    for tx in ordered[TX_COLUMNS].to_dict("records"):
        rows.append({"transaction_id": tx["transaction_id"], **online.features(tx)})
        online.observe(tx)
    return pd.DataFrame(rows).sort_values("transaction_id").reset_index(drop=True)


def test_online_store_published_after_day_n_minus_1_serves_the_offline_features(env, history):
    """The real timeline: at the end of day N-1 the features up to 23:00 are materialized and
    the online store is published; day N's transactions are scored online hour after hour, and
    the offline partitions of those hours are materialized before day N's labels exist (they land
    after the day). The two must agree on every feature of every transaction.

    Day N's labels can never be in the store published after day N-1: `compute_feature_hours`
    feeds the labels of day D at D's first hour, so the state after N-1 23:00 holds labels up to
    day N-1 only, whether or not fraud_labels of day N was materialized before. When day N's labels
    arrive later and the hours are recomputed, hour 00 is unchanged (a label counts from the first
    hour starting at or after its known_at, and a label known at N 00:00 sharp concerns a
    transaction not yet inside the delayed terminal window), while later hours may gain terminal
    risk from labels that became known during day N: only those may then differ."""
    write_raw_transactions(env.store, history)
    day_n = str(START + timedelta(days=DAYS - 1))  # 2018-04-10
    before = ["2018-04-08", "2018-04-09"]
    write_raw_labels(env.store, history, before)
    assert run(env, ["fraud_labels"], start=before[0], end=before[-1]).success
    previous_day = day_hours(before[-1])  # its starting state is rebuilt from raw history
    assert run(env, FEATURES, start=previous_day[0], end=previous_day[-1]).success
    last_of_previous = previous_day[-1]

    online, manifest = load_online(env.store)
    assert manifest["state_hour"] == last_of_previous
    first_hours = day_hours(day_n)[:6]
    of_hour = history["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    todays = history[of_hour.isin(first_hours)]
    assert len(todays) > 20 and todays["terminal_id"].nunique() > 10
    served = serve(online, todays)
    assert online.observed == len(todays)

    assert run(env, FEATURES, start=first_hours[0], end=first_hours[-1]).success
    offline = stored_features(env.store, first_hours)
    assert_same_features(served, offline)
    # the served terminal risk is not trivially zero: labels of day N-1 and before are in the store
    assert served["terminal_risk_30d"].max() > 0

    # day N's labels land later; the recomputed hours differ only where they can (with this
    # seed no transaction of these hours actually moves; over the whole of day N two do)
    write_raw_labels(env.store, history, [day_n])
    assert run(env, ["fraud_labels"], partition_key=day_n).success
    assert run(env, FEATURES, start=first_hours[0], end=first_hours[-1]).success
    relabelled = stored_features(env.store, first_hours)
    assert_same_features(served, relabelled, [n for n in FEATURE_NAMES if n not in RISK])
    hour_of = todays.set_index("transaction_id")["tx_datetime"].dt.floor("h")
    zero = relabelled["transaction_id"].map(hour_of) == hour_start(first_hours[0])
    assert zero.sum() > 0
    assert_same_features(served[zero.to_numpy()], relabelled[zero.to_numpy()])
    labels_n = label_frame(history)
    labels_n = labels_n[labels_n["known_at"].dt.strftime("%Y-%m-%d") == day_n]
    frauds_n = history.set_index("transaction_id").loc[
        labels_n.loc[labels_n["is_fraud"] == 1, "transaction_id"], "terminal_id"
    ]
    moved = ~np.isclose(served[RISK], relabelled[RISK], rtol=0, atol=1e-9).all(axis=1)
    terminal = relabelled["transaction_id"].map(todays.set_index("transaction_id")["terminal_id"])
    assert set(terminal[moved]) <= set(frauds_n)


# --- 3. a quarantined raw hour -------------------------------------------------------------------


def test_quarantined_hour_blocks_only_its_feature_partition(env):
    """Real ingestion of six hours, one of them broken; the sensor's features run over the range
    blocks that hour alone, the check passes listing it, the hours after it are valid."""
    keys = hours("2018-04-01-05:00", "2018-04-01-10:00")
    bad = keys[2]
    for i, key in enumerate(keys):
        landing, frame = land_hour(env.store, key, rows=30, seed=i)
        if key == bad:
            env.store.put_bytes(landing, csv_bytes(frame.assign(amount="-5.00")))
    ingest = run(env, INGEST, start=keys[0], end=keys[-1])
    assert ingest.success  # a quarantined hour is handled: the check warns, the run succeeds
    assert tables.read_pointer(env.store, "transactions", bad)["status"] == "quarantined"

    result, _ = tick(env)
    (request,) = result.run_requests
    assert request.job_name == "features_job"
    assert range_of(request) == (keys[0], keys[-1])
    features = execute(env, request)
    assert features.success

    per_hour = materializations(env, "transaction_features")
    assert sorted(per_hour) == keys
    blocked = per_hour[bad].metadata
    assert blocked["status"].value == "blocked"
    assert "quarantined" in blocked["reason"].value
    assert blocked["dagster/row_count"].value == 0
    assert "sha256" not in blocked
    for key in (k for k in keys if k != bad):
        assert per_hour[key].metadata["status"].value == "valid", key
        assert per_hour[key].metadata["dagster/row_count"].value == 30, key
    assert [k for k in keys if k > bad]  # the chain goes on after the blocked hour
    assert tables.read_pointer(env.store, "transaction_features", bad)["status"] == "quarantined"
    with pytest.raises(tables.PartitionQuarantined):
        tables.read_partition(env.store, "transaction_features", bad)

    (evaluation,) = features.get_asset_check_evaluations()
    assert evaluation.check_name == "features_pass_expectations"
    assert evaluation.passed
    assert evaluation.metadata["partitions_failed"].value == 0
    assert evaluation.metadata["partitions_checked"].value == len(keys)
    listed = evaluation.metadata["blocked_upstream"].value
    assert bad in listed and "quarantined" in listed
    assert not any(k in listed for k in keys if k != bad)
    _, manifest = load_online(env.store)  # published after the check passed
    assert manifest["state_hour"] == keys[-1]


# --- 4. the features sensor ----------------------------------------------------------------------


def test_features_sensor_requests_each_change_once_in_the_right_range(env):
    nothing, cursor = tick(env)
    assert isinstance(nothing, dg.SkipReason)
    run_keys = []

    def only_request(result, job_name):
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests
        assert request.job_name == job_name
        run_keys.append(request.run_key)
        return request

    first = hours("2018-04-01-05:00", "2018-04-01-07:00")
    frames = {k: land_hour(env.store, k, rows=20, seed=i)[1] for i, k in enumerate(first)}
    assert run(env, INGEST, start=first[0], end=first[-1]).success
    result, cursor = tick(env, cursor)
    assert range_of(only_request(result, "features_job")) == (first[0], first[-1])
    again, same = tick(env, cursor)
    assert isinstance(again, dg.SkipReason) and same == cursor  # handled exactly once

    # a late file for an older hour: from that hour to the newest ingested one, not to itself
    land_hour(env.store, "2018-04-01-02:00", rows=20, seed=7)
    assert run(env, INGEST, partition_key="2018-04-01-02:00").success
    result, cursor = tick(env, cursor)
    assert range_of(only_request(result, "features_job")) == ("2018-04-01-02:00", first[-1])

    # re-ingesting identical bytes changes nothing: no recompute, but the cursor moves on
    assert run(env, INGEST, partition_key="2018-04-01-02:00").success
    unchanged, cursor = tick(env, cursor)
    assert not unchanged.run_requests and "nothing changed" in unchanged.skip_reason.skip_message

    newest = "2018-04-02-03:00"
    land_hour(env.store, newest, rows=20, seed=8)
    assert run(env, INGEST, partition_key=newest).success
    result, cursor = tick(env, cursor)
    assert range_of(only_request(result, "features_job")) == (newest, newest)

    # new raw labels: only fraud_labels for that day (no new transactions, no new fraud labels)
    land_labels(env.store, "2018-04-02", frames[first[0]])
    assert run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-02").success
    result, cursor = tick(env, cursor)
    request = only_request(result, "fraud_labels_job")
    assert range_of(request) == ("2018-04-02", "2018-04-02")
    assert execute(env, request).success

    # fraud labels of day D: features from D-00:00 (terminal risk changes from there on)
    result, cursor = tick(env, cursor)
    assert range_of(only_request(result, "features_job")) == ("2018-04-02-00:00", newest)
    again, same = tick(env, cursor)
    assert isinstance(again, dg.SkipReason) and same == cursor

    # labels of a day after the newest ingested hour: fraud_labels yes, no features range
    land_labels(env.store, "2018-04-03", frames[first[1]])
    assert run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-03").success
    result, cursor = tick(env, cursor)
    assert execute(env, only_request(result, "fraud_labels_job")).success
    result, cursor = tick(env, cursor)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    again, _ = tick(env, cursor)
    assert isinstance(again, dg.SkipReason)

    assert len(set(run_keys)) == len(run_keys) == 6  # a new run key on every tick


def in_flight(env, job_name: str, tags=None):
    """A run of `job_name` the instance sees as running (the daemon's view of it); `tags` as a
    sensor request's run carries them (its run key and range)."""
    return env.instance.create_run_for_job(
        dg.GraphDefinition(name="g", node_defs=[]).to_job(name=job_name),
        status=dg.DagsterRunStatus.STARTED,
        tags=tags,
    )


def test_features_wait_for_upstream_runs_and_then_run_once_over_everything(env):
    """New hours and their labels landing together give one features run, not one for the hours
    and another when the labels' fraud_labels are in: the features run waits for the ingestion,
    label and fraud-label runs in flight when the hours showed up and for the label days landed
    then (the cursor keeps the hours), then covers both. The wait is bounded: runs that start
    during it do not prolong it, and no hold outlasts MAX_HOLD_SECONDS."""
    from sensors import common

    cursor = None
    first = hours("2018-04-02-05:00", "2018-04-02-07:00")
    frames = {k: land_hour(env.store, k, rows=20, seed=i)[1] for i, k in enumerate(first)}
    assert run(env, INGEST, start=first[0], end=first[-1]).success

    # a labels run is going, and the day's label file landed, its ingestion not requested yet
    # (new_data_sensor holds label files while transactions are being ingested): the new hours
    # wait for both
    labels_run = in_flight(env, "daily_labels_job")
    land_labels(env.store, "2018-04-02", frames[first[0]])
    held, cursor = tick(env, cursor)
    assert not held.run_requests and "daily_labels_job" in held.skip_reason.skip_message
    assert json.loads(cursor)["held"]["days"] == ["2018-04-02"]
    again, cursor = tick(env, cursor)  # still held: the hours are not consumed
    assert not again.run_requests
    env.instance.report_run_canceled(labels_run)
    held, cursor = tick(env, cursor)
    assert not held.run_requests and "2018-04-02 landed" in held.skip_reason.skip_message

    # an ingestion run that started after the hold began is not waited for ...
    later_ingestion = in_flight(env, "hourly_ingestion_job")
    assert run(env, ["raw_labels", "labels_pass_expectations"], partition_key="2018-04-02").success
    # ... but the fraud labels of a day the hold waits for are: new hours and new raw labels,
    # fraud labels first, features wait for them
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert request.job_name == "fraud_labels_job"
    fraud_labels = in_flight(
        env, "fraud_labels_job", tags={**request.tags, "dagster/run_key": request.run_key}
    )
    held, cursor = tick(env, cursor)
    assert not held.run_requests and "fraud_labels_job" in held.skip_reason.skip_message
    env.instance.report_run_canceled(fraud_labels)
    assert execute(env, request).success

    # one run (the ingestion run that started later still going): from the label day's first
    # hour (terminal risk) to the newest hour
    result, cursor = tick(env, cursor)
    (features,) = result.run_requests
    assert features.job_name == "features_job"
    assert range_of(features) == ("2018-04-02-00:00", first[-1])
    again, cursor = tick(env, cursor)
    assert isinstance(again, dg.SkipReason)

    # a hold that outlasted MAX_HOLD_SECONDS lets the run go although upstream is still busy
    later = "2018-04-02-09:00"
    land_hour(env.store, later, rows=20, seed=9)
    assert run(env, INGEST, partition_key=later).success
    held, cursor = tick(env, cursor)
    assert not held.run_requests
    state = json.loads(cursor)
    assert state["held"]["runs"] == [later_ingestion.run_id]
    state["held"]["since"] -= common.MAX_HOLD_SECONDS
    result, cursor = tick(env, json.dumps(state))
    (features,) = result.run_requests
    assert range_of(features) == (later, later)
    assert "held" not in json.loads(cursor)


def test_a_label_day_ingested_by_its_job_builds_its_fraud_labels_in_the_same_run(env):
    """`daily_labels_job` (what new_data_sensor starts) ingests a label day and joins its fraud
    labels in one run: the features sensor then asks for the features from the day's first hour,
    and no separate fraud-labels run. A re-execution of `raw_labels` alone from that job (a
    subset without `fraud_labels`) still gets its fraud labels from the sensor."""
    first = hours("2018-04-02-05:00", "2018-04-02-07:00")
    frames = {k: land_hour(env.store, k, rows=20, seed=i)[1] for i, k in enumerate(first)}
    assert run(env, INGEST, start=first[0], end=first[-1]).success
    _, cursor = tick(env)
    land_labels(env.store, "2018-04-02", frames[first[0]])
    labels_run = env.job("daily_labels_job").execute_in_process(
        instance=env.instance, resources=env.resources, partition_key="2018-04-02"
    )
    assert labels_run.success
    built = materializations(env, "fraud_labels")
    assert built["2018-04-02"].metadata["status"].value == "valid"
    result, cursor = tick(env, cursor)
    (features,) = result.run_requests
    assert features.job_name == "features_job"
    assert range_of(features) == ("2018-04-02-00:00", first[-1])

    land_labels(env.store, "2018-04-02", frames[first[1]], name="late.csv")  # the day changes
    subset = env.job("daily_labels_job").get_subset(asset_selection={asset_keys.RAW_LABELS})
    assert subset.execute_in_process(
        instance=env.instance, resources=env.resources, partition_key="2018-04-02"
    ).success
    result, cursor = tick(env, cursor)
    assert [r.job_name for r in result.run_requests] == ["fraud_labels_job"]


# --- 5. late data through data versions ----------------------------------------------------------


def stale_status(env, partition_key: str):
    resolver = CachingStaleStatusResolver(
        env.instance, env.defs.resolve_asset_graph(), LoadingContextForTest(env.instance)
    )
    return (
        resolver.get_status(asset_keys.TRANSACTION_FEATURES, partition_key),
        resolver.get_stale_causes(asset_keys.TRANSACTION_FEATURES, partition_key),
    )


def test_corrected_raw_hour_makes_its_feature_partition_stale(env):
    """Dagster computes staleness per partition for this dependency shape (hourly -> hourly
    identity): the features of a re-ingested hour are STALE exactly when its raw data version
    changed, with that raw partition as the cause.

    The hours are ingested one run each on purpose. A range run can record only one data version
    per output, so `range_data_version` gives every partition of a range the same range hash;
    re-ingesting such an hour alone, even with identical bytes, then yields its own sha256 as a
    new data version and Dagster marks its features STALE although nothing changed."""
    keys = hours("2018-04-01-05:00", "2018-04-01-08:00")
    landed = {k: land_hour(env.store, k, rows=25, seed=i) for i, k in enumerate(keys)}
    for key in keys:  # one run per hour: each data version is that hour's content hash
        assert run(env, INGEST, partition_key=key).success
    result, cursor = tick(env)
    (request,) = result.run_requests
    assert execute(env, request).success
    assert {k: stale_status(env, k)[0] for k in keys} == dict.fromkeys(keys, StaleStatus.FRESH)

    # the same bytes delivered again: same data version, nothing is stale
    unchanged = keys[2]
    assert run(env, INGEST, partition_key=unchanged).success
    assert stale_status(env, unchanged) == (StaleStatus.FRESH, [])

    # a corrected file for an hour whose features exist: a new data version, that hour stale
    late = keys[1]
    landing, frame = landed[late]
    env.store.put_bytes(landing, csv_bytes(frame.assign(amount="12.34")))
    before = materializations(env, "raw_transactions")[late].tags["dagster/data_version"]
    assert run(env, INGEST, partition_key=late).success
    after = materializations(env, "raw_transactions")[late].tags["dagster/data_version"]
    assert after != before
    status, causes = stale_status(env, late)
    assert status == StaleStatus.STALE
    (cause,) = causes
    assert cause.dependency.asset_key == asset_keys.RAW_TRANSACTIONS
    assert cause.dependency.partition_key == late
    assert "new dependency data version" in cause.reason
    for key in (k for k in keys if k != late):
        assert stale_status(env, key)[0] == StaleStatus.FRESH, key

    # the sensor recomputes from the earliest re-ingested hour; afterwards the hour is fresh
    result, cursor = tick(env, cursor)
    (request,) = result.run_requests
    assert range_of(request) == (late, keys[-1])
    assert execute(env, request).success
    assert stale_status(env, late) == (StaleStatus.FRESH, [])
    recomputed = tables.read_partition(env.store, "transaction_features", late)
    assert recomputed["amount"].eq(12.34).all()
    sources = materializations(env, "transaction_features")[late].metadata["sources"].value
    assert sources[0]["sha256"] == tables.read_pointer(env.store, "transactions", late)["sha256"]
