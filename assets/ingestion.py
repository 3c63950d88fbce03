"""Ingestion: landed feed files become validated, content-addressed raw tables.

Thin on purpose: the work (reading, Great Expectations validation, quarantine, versioned
writes) lives in `fraudloop.data.ingest`; these assets loop over the partitions of the run, call it,
and put what an on-call engineer needs into the Dagster UI.

Validation happens *before* the canonical copy is written: invalid rows are rejected one by
one, a file past the rejected-share backstop or structurally broken is quarantined with its
hour, never written. The blocking checks then report the verdict per run: a quarantined
partition is a handled outcome (severity WARN: the run succeeds, there is one alert per file,
and downstream steps refuse that partition through its `_current.json` pointer), while a
partition with nothing written fails the check (ERROR) and stops downstream steps.
"""

import itertools

import dagster as dg

from assets import keys
from assets.common import RETRY, check_partitions, lookback_dep, range_data_version, run_summary
from fraudloop.core import tables
from fraudloop.core.hours import day_start
from fraudloop.data import ingest
from pipelines.partitions import Partitions
from resources.alerts import AlertsResource
from resources.ingestion import IngestionResource
from resources.reports import ReportsResource
from resources.store import ObjectStoreResource


class LabelIngestConfig(dg.Config):
    """A manual re-ingest may accept a day whose labels partly refer to transactions never
    ingested (unset: every label must refer to one, the ingestion policy's default)."""

    known_ids_mostly: float | None = None


def _partition_metadata(outcome: ingest.IngestOutcome, store, reports: ReportsResource) -> dict:
    """What the UI shows for one partition: enough to act on without opening a file."""
    valid = outcome.status == "valid"
    meta = {
        "status": outcome.status,
        # False for a re-ingest of identical content: derived stages have nothing to redo
        "changed": not valid or outcome.created,
        "dagster/row_count": outcome.rows,
        # rows kept vs lost: a quarantined partition loses every row it delivered
        "rows_accepted": outcome.rows if valid else 0,
        "rows_rejected": outcome.rows_rejected if valid else outcome.rows,
        # labels waiting for an unreadable transactions hour: ingested once it is
        "rows_held": outcome.rows_held,
        "sources": dg.MetadataValue.json(outcome.sources),
        "compute_seconds": round(outcome.seconds, 3),
    }
    if outcome.files:
        meta["files"] = dg.MetadataValue.json(
            [{k: v for k, v in f.items() if k != "rejected"} for f in outcome.files]
        )
    if outcome.sha256:
        meta["sha256"] = outcome.sha256
        meta["raw_uri"] = dg.MetadataValue.url(store.uri(outcome.key))
        meta["bytes"] = outcome.bytes
        pointer = tables.read_pointer(store, outcome.table, outcome.partition_key) or {}
        declared = tables.spec(outcome.table).columns
        meta["dagster/column_schema"] = dg.TableSchema(
            columns=[
                dg.TableColumn(name, declared.get(name, "string (extra feed column)"))
                for name in pointer.get("columns", declared)
            ]
        )
    if outcome.min_timestamp:
        meta["min_timestamp"] = outcome.min_timestamp
        meta["max_timestamp"] = outcome.max_timestamp
    if outcome.data_docs_key:
        meta["data_docs"] = dg.MetadataValue.url(reports.link(outcome.data_docs_key))
    if not valid or outcome.rows_rejected or outcome.rows_held:
        meta["reason"] = dg.MetadataValue.md(ingest.reason_markdown(outcome))
        meta["quarantine"] = dg.MetadataValue.json(outcome.quarantine_keys)
    return meta


def _alert_quarantine(alerts: AlertsResource, table: str, key: str, outcome, open_incidents):
    """One incident per file that was quarantined (warning: the hour is not used until it is
    re-delivered) or lost rows (info: recorded, nothing to do usually), one for the partition
    when no file is to blame (a partition-level check); each resolved when a later delivery of
    the partition is ingested without it. A *missing* partition (nothing landed) is not an
    incident of its own: a silent feed is one freshness incident (assets/freshness.py), not one
    alert per scheduled hour."""
    if outcome.status == "missing":
        return
    prefix = f"ingest/{table}/{key}"
    current = set()
    for file in outcome.files:
        if file.get("status") not in ("quarantined", "rows_rejected"):
            continue
        name = file["key"].rsplit("/", 1)[-1]
        whole = file["status"] == "quarantined"
        incident = f"{prefix}/{name}" if whole else f"{prefix}/{name}/rows"
        current.add(incident)
        alerts.send(
            title=(
                f"{table} partition {key} quarantined: {name}"
                if whole
                else f"{table} partition {key}: {file['rows_rejected']:,} row(s) of {name} rejected"
            ),
            summary=outcome.reason if whole else file["summary"],
            dedup_key=incident,
            severity="warning" if whole else "info",
            table=table,
            partition=key,
            file=file["key"],
            quarantine=[file["quarantine_key"]] if file.get("quarantine_key") else [],
        )
    if not current and outcome.status != "valid":
        current.add(prefix)
        alerts.send(
            title=f"{table} partition {key} {outcome.status}",
            summary=outcome.reason,
            dedup_key=prefix,
            severity="warning",
            table=table,
            partition=key,
            quarantine=outcome.quarantine_keys,
        )
    for incident in open_incidents:
        if (incident == prefix or incident.startswith(prefix + "/")) and incident not in current:
            alerts.resolve(incident, f"{table} partition {key} ingested", partition=key)


def _ingest_partitions(
    context,
    s,
    alerts: AlertsResource,
    reports: ReportsResource,
    table: str,
    ingest_group,
    group_of=lambda key: key,
):
    """Ingest every partition of the run, `ingest_group([(key, files), ...])` taking the
    partitions of one `group_of(key)` at a time; report each one to the UI and alert on the bad
    ones."""
    outcomes: dict[str, ingest.IngestOutcome] = {}
    open_incidents = alerts.open_incidents(f"ingest/{table}/")  # one listing for the run
    batches = [
        ingest_group([(key, ingest.landed_files(s, table, key)) for key in keys])
        for _, keys in itertools.groupby(context.partition_keys, key=group_of)
    ]
    for outcome in (outcome for batch in batches for outcome in batch):
        key = outcome.partition_key
        outcomes[key] = outcome
        context.add_asset_metadata(_partition_metadata(outcome, s, reports), partition_key=key)
        if outcome.status != "valid" or outcome.rows_rejected or outcome.rows_held:
            context.log.warning(f"{key}: {outcome.status}: {outcome.reason or ''}")
        _alert_quarantine(alerts, table, key, outcome, open_incidents)
    return dg.MaterializeResult(
        metadata=run_summary(outcomes), data_version=range_data_version(outcomes)
    )


def build(partitions: Partitions, label_lookback_days: int) -> list:
    """The ingestion stage's assets and checks for these partitions; labels may refer to
    transactions up to `label_lookback_days` old."""

    @dg.asset(
        key=keys.RAW_TRANSACTIONS,
        partitions_def=partitions.hourly,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"pandas", "parquet", "great_expectations"},
        owners=["team:data-platform"],
        retry_policy=RETRY,
        description=(
            "Card transactions of one UTC hour: every file landed under "
            "`landing/transactions/<day>/<hour>/`, normalised to the canonical schema, validated "
            "with Great Expectations and stored as immutable Parquet keyed by its sha256 (the "
            "data version). A failing hour is quarantined with its bytes and a reason, never "
            "written. Each partition links its Great Expectations Data Docs page (`data_docs`)."
        ),
    )
    def raw_transactions(
        context: dg.AssetExecutionContext,
        store: ObjectStoreResource,
        ingestion: IngestionResource,
        alerts: AlertsResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        s, limits = store.open(), ingestion.policy()

        def ingest_day(hours) -> list[ingest.IngestOutcome]:
            return ingest.ingest_transactions_hours(s, hours, limits=limits)

        return _ingest_partitions(
            context, s, alerts, reports, "transactions", ingest_day, group_of=lambda key: key[:10]
        )

    @dg.asset(
        key=keys.RAW_LABELS,
        partitions_def=partitions.daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"pandas", "parquet", "great_expectations"},
        owners=["team:data-platform"],
        retry_policy=RETRY,
        deps=[lookback_dep(keys.RAW_TRANSACTIONS, label_lookback_days)],
        description=(
            "Delayed fraud labels that became known on one UTC day (`landing/labels/<day>/`): "
            "bi-temporal (`known_at`), validated with Great Expectations, including that every "
            "label refers to an ingested transaction of the lookback window. Labels that may "
            "belong to a transactions hour quarantined as unreadable are held (`rows_held`) "
            "and ingested once that hour is."
        ),
    )
    def raw_labels(
        context: dg.AssetExecutionContext,
        config: LabelIngestConfig,
        store: ObjectStoreResource,
        ingestion: IngestionResource,
        alerts: AlertsResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        s, limits = store.open(), ingestion.policy()
        ids_by_hour: dict = {}

        def ingest_day(days) -> list[ingest.IngestOutcome]:
            ((key, files),) = days
            window = (s, day_start(key), limits.label_lookback_days)
            known = tables.known_transaction_ids(*window, cache=ids_by_hour)
            unreadable = tables.unreadable_hours(*window, cache=ids_by_hour)
            outcome = ingest.ingest_labels_day(
                s,
                key,
                files,
                known,
                limits,
                mostly=config.known_ids_mostly,
                unreadable_hours=unreadable,
            )
            return [outcome]

        return _ingest_partitions(context, s, alerts, reports, "labels", ingest_day)

    @dg.asset_check(
        asset=raw_transactions,
        blocking=True,
        partitions_def=partitions.hourly,
        description=(
            "Great Expectations suite `transactions` passed for the hour's accepted rows: "
            "required columns and types, no null keys, unique transaction_id, 0 <= amount <= "
            "cap, timestamps inside the hour, row count within bounds of the same hour on "
            "previous days. A quarantined hour is reported with severity WARN (handled: the run "
            "succeeds); an hour with nothing written fails."
        ),
    )
    def transactions_pass_expectations(
        context: dg.AssetCheckExecutionContext, store: ObjectStoreResource
    ) -> dg.AssetCheckResult:
        return check_partitions(context, store, "transactions", quarantine_warns=True)

    @dg.asset_check(
        asset=raw_labels,
        blocking=True,
        partitions_def=partitions.daily,
        description=(
            "Great Expectations suite `labels` passed for the day: required columns, no null "
            "keys, unique transaction_id, is_fraud in {0, 1}, known_at inside the day, and every "
            "label refers to an ingested transaction. A quarantined day is reported with "
            "severity WARN."
        ),
    )
    def labels_pass_expectations(
        context: dg.AssetCheckExecutionContext, store: ObjectStoreResource
    ) -> dg.AssetCheckResult:
        return check_partitions(context, store, "labels", quarantine_warns=True)

    return [raw_transactions, raw_labels, transactions_pass_expectations, labels_pass_expectations]
