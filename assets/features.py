"""Point-in-time features: bi-temporal labels, the hourly feature table, the online store.

Thin: `fraudloop.features.pipeline` does the incremental computation (daily state checkpoints,
leak-free label use), `fraudloop.features.feature_store` publishes the online state; these
assets call them for the partitions of the run and report per partition.
"""

import time
from datetime import timedelta

import dagster as dg
import numpy as np

from assets import keys
from assets.common import RETRY, check_partitions, lookback_dep, range_data_version, run_summary
from fraudloop.core import tables
from fraudloop.core.hours import hour_start
from fraudloop.features import pipeline as feature_pipeline
from fraudloop.features.compute import feature_code_hash
from fraudloop.features.feature_store import load_online, publish_online_from
from fraudloop.features.labels import TransactionLookup, build_fraud_labels
from fraudloop.features.validation import validate_features
from pipelines.partitions import Partitions
from resources.features import FeatureStoreResource
from resources.ingestion import IngestionResource
from resources.store import ObjectStoreResource


class _Blocked:
    """A partition whose inputs could not be used (an Outcome for the shared summaries)."""

    def __init__(self, reason: str):
        self.status, self.sha256, self.rows, self.reason = "blocked", None, 0, reason


class _Valid:
    def __init__(self, sha256: str, rows: int):
        self.status, self.sha256, self.rows, self.reason = "valid", sha256, rows, None


def _feature_metadata(s, result) -> dict:
    """Per-partition UI metadata: size, hash, and summary statistics an on-call can eyeball."""
    meta = {"status": result.status, "dagster/row_count": result.rows}
    if result.status != "valid":
        meta["reason"] = result.reason
        return meta
    meta["sha256"] = result.sha256
    meta["uri"] = dg.MetadataValue.url(s.uri(result.key))
    meta["null_values"] = result.null_values
    if result.rows:
        stats = result.summary
        meta["mean_amount"] = float(stats.loc["amount", "mean"])
        meta["mean_terminal_risk_7d"] = float(stats.loc["terminal_risk_7d", "mean"])
        meta["share_new_terminal"] = float(stats.loc["customer_terminal_novelty", "mean"])
        meta["summary"] = dg.MetadataValue.md(stats.round(4).to_markdown())
    meta["sources"] = dg.MetadataValue.json(result.sources)
    return meta


def _validate_features(s, pointers: dict[str, dict]) -> list[str]:
    frames = {k: tables.read_partition(s, "transaction_features", k) for k in pointers}
    expected = {
        k: int((tables.read_pointer(s, "transactions", k) or {}).get("rows", -1)) for k in pointers
    }
    return [p.message for p in validate_features(frames, expected).problems]


def _online_probe_p99_us(online, state_hour: str) -> float:
    """p99 of one transaction's online features, as the service will compute them."""
    probe = {
        "transaction_id": "probe",
        "tx_datetime": hour_start(state_hour) + timedelta(minutes=90),
        "customer_id": "probe",
        "terminal_id": "probe",
        "amount": 10.0,
    }
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        online.features(probe)
        timings.append(time.perf_counter() - started)
    return round(float(np.percentile(timings, 99)) * 1e6, 1)


def build(partitions: Partitions, label_lookback_days: int) -> list:
    """The feature stage's assets and checks for these partitions."""

    @dg.asset(
        key=keys.FRAUD_LABELS,
        partitions_def=partitions.daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="features",
        kinds={"pandas", "parquet"},
        owners=["team:data-science"],
        retry_policy=RETRY,
        deps=[
            keys.RAW_LABELS,
            lookback_dep(keys.RAW_TRANSACTIONS, label_lookback_days),
        ],
        description=(
            "Bi-temporal fraud labels of one day: `transaction_id`, `is_fraud`, `known_at` (when "
            "the label became known) joined with the transaction's time, customer and terminal, "
            "so any computation 'as of T' uses exactly the labels with known_at <= T."
        ),
    )
    def fraud_labels(
        context: dg.AssetExecutionContext,
        store: ObjectStoreResource,
        ingestion: IngestionResource,
    ) -> dg.MaterializeResult:
        s = store.open()
        lookback = ingestion.policy().label_lookback_days
        lookup = TransactionLookup(s)
        outcomes = {}
        for day in context.partition_keys:
            try:
                result = build_fraud_labels(s, day, lookback, lookup)
            except tables.TableError as error:
                tables.mark_quarantined(s, "fraud_labels", day, f"raw labels unusable: {error}")
                outcomes[day] = _Blocked(str(error))
                context.add_asset_metadata(
                    {"status": "blocked", "reason": str(error)}, partition_key=day
                )
                continue
            outcomes[day] = _Valid(result.sha256, result.rows)
            context.add_asset_metadata(
                {
                    "status": "valid",
                    "changed": result.created,
                    "dagster/row_count": result.rows,
                    "frauds": result.frauds,
                    "unplaced_labels": result.unplaced,
                    "sha256": result.sha256,
                    "uri": dg.MetadataValue.url(s.uri(result.key)),
                },
                partition_key=day,
            )
        return dg.MaterializeResult(
            metadata=run_summary(outcomes), data_version=range_data_version(outcomes)
        )

    @dg.asset(
        key=keys.TRANSACTION_FEATURES,
        partitions_def=partitions.hourly,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="features",
        kinds={"pandas", "parquet", "numpy"},
        owners=["team:data-science"],
        retry_policy=RETRY,
        code_version=feature_code_hash()[:16],
        # runs that advance the feature state share its daily checkpoints: one at a time
        pool="feature_state",
        deps=[
            keys.RAW_TRANSACTIONS,
            dg.AssetDep(keys.FRAUD_LABELS, partition_mapping=dg.TimeWindowPartitionMapping()),
        ],
        description=(
            "One row per valid transaction of the hour with every feature of "
            "`fraudloop/features/compute.py` (customer spending windows, terminal risk from "
            "matured labels, card-testing signals), computed incrementally from daily state "
            "checkpoints; identical to a full rebuild and to the online store. An hour whose "
            "transactions are quarantined is blocked (and recomputed when the feed is fixed)."
        ),
    )
    def transaction_features(
        context: dg.AssetExecutionContext,
        store: ObjectStoreResource,
        feature_store: FeatureStoreResource,
    ) -> dg.MaterializeResult:
        s = store.open()
        run = feature_pipeline.compute_feature_hours(
            s,
            context.partition_keys,
            label_delay=feature_store.label_delay,
            history_start=feature_store.history_start,
        )
        outcomes = {r.hour: r for r in run.hours}
        for result in run.hours:
            context.add_asset_metadata(_feature_metadata(s, result), partition_key=result.hour)
        latest = feature_pipeline.publish_latest_state(s, run.state, run.state_hour)
        swept = {}
        if run.checkpoints_written:  # once a day: the pieces that day's publishes left behind
            swept = feature_pipeline.sweep_state_pieces(s, feature_store.sweep_grace_hours)
        summary = run_summary(outcomes)
        summary.update(
            {
                "compute_seconds": round(run.seconds, 3),
                "checkpoints_written": dg.MetadataValue.json(run.checkpoints_written),
                "latest_state_hour": latest.get("state_hour"),
                # what the publish wrote: the pieces not stored yet (an hour's chunks)
                "state_pieces_written": latest.get("pieces_written", 0),
                "state_bytes_written": latest.get("bytes_written", 0),
                **{f"sweep_{k}": v for k, v in swept.items()},
                "feature_code_hash": feature_code_hash(),
            }
        )
        return dg.MaterializeResult(metadata=summary, data_version=range_data_version(outcomes))

    @dg.asset_check(
        asset=transaction_features,
        blocking=True,
        partitions_def=partitions.hourly,
        description=(
            "Great Expectations suites `transaction_features` (every feature present, not null, "
            "finite and in its range; unique transaction_id; rows inside their hour) and "
            "`transaction_features_rows` (one row per valid transaction of each hour). Hours "
            "blocked by a quarantined input are listed, not failed: their input's check failed."
        ),
    )
    def features_pass_expectations(
        context: dg.AssetCheckExecutionContext, store: ObjectStoreResource
    ) -> dg.AssetCheckResult:
        return check_partitions(
            context, store, "transaction_features", _validate_features, fail_on_blocked=False
        )

    @dg.asset(
        key=keys.ONLINE_FEATURE_STORE,
        group_name="features",
        kinds={"numpy"},
        owners=["team:ml-platform"],
        deps=[keys.TRANSACTION_FEATURES],
        retry_policy=RETRY,
        description=(
            "The online feature store: the latest per-entity feature state, published to "
            "`featurestore/online/` with its sha256, which the scoring service loads into memory "
            "to compute a new transaction's features with the same code as the offline table."
        ),
    )
    def online_feature_store(
        context: dg.AssetExecutionContext, store: ObjectStoreResource
    ) -> dg.MaterializeResult:
        s = store.open()
        published = publish_online_from(s, feature_pipeline.LATEST_PREFIX)
        online, manifest = load_online(s)  # what the service will do: load and verify
        return dg.MaterializeResult(
            metadata={
                "state_hour": manifest["state_hour"],
                "sha256": manifest["sha256"],
                "bytes": manifest["bytes"],
                "customers": manifest["customers"],
                "terminals": manifest["terminals"],
                "feature_code_hash": manifest["feature_code_hash"],
                "probe_p99_us": _online_probe_p99_us(online, manifest["state_hour"]),
                "uri": dg.MetadataValue.url(s.uri(published["key"])),
            },
            data_version=dg.DataVersion(manifest["sha256"]),
        )

    return [fraud_labels, transaction_features, features_pass_expectations, online_feature_store]
