"""What every partitioned stage reports the same way: range data versions, run summaries and
the blocking check over the partition pointers of the run."""

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import dagster as dg

from fraudloop.core import tables
from resources.store import ObjectStoreResource

# Storage steps ride out a short object-store outage: 4 retries after 3, 9, 21 and 45 s (Dagster's
# exponential backoff is delay x (2^n - 1)), on top of boto3's own retries. The Docker stack's
# system test stops S3 for 30 s mid-ingestion: with 2 retries (2 s, 6 s) the run failed ~20 s
# into the outage, and with 3 (33 s of waiting in all) it failed at load 30, where the restarted
# S3 server took longer than the remaining seconds to answer again (2026-12-05).
RETRY = dg.RetryPolicy(max_retries=4, delay=3, backoff=dg.Backoff.EXPONENTIAL)


class Outcome(Protocol):
    status: str
    sha256: str | None
    rows: int
    reason: str | None


def range_data_version(outcomes: Mapping[str, Outcome]) -> dg.DataVersion:
    """One partition: its content hash. A range run can carry only one data version per output
    in Dagster, so it records a hash over the range's per-partition hashes (stable for the same
    content); each partition's own hash is in its `sha256` metadata."""
    if len(outcomes) == 1:
        only = next(iter(outcomes.values()))
        return dg.DataVersion(only.sha256 or only.status)
    joined = "\n".join(f"{k}={o.sha256 or o.status}" for k, o in sorted(outcomes.items()))
    return dg.DataVersion(hashlib.sha256(joined.encode()).hexdigest())


def run_summary(outcomes: Mapping[str, Outcome]) -> dict[str, Any]:
    bad = {k: o for k, o in outcomes.items() if o.status != "valid"}
    meta: dict[str, Any] = {
        "partitions": len(outcomes),
        "rows_total": sum(o.rows for o in outcomes.values()),
        "partitions_not_valid": len(bad),
    }
    if bad:
        meta["not_valid"] = dg.MetadataValue.md(
            "\n".join(f"- `{k}` ({o.status}): {o.reason}" for k, o in sorted(bad.items()))
        )
    return meta


def run_partition_keys(context) -> list[str]:
    return (
        list(context.partition_keys) if context.has_partition_key_range else [context.partition_key]
    )


def check_partitions(
    context,
    store: ObjectStoreResource,
    table: str,
    validate: Callable[[Any, dict[str, dict]], list[str]] | None = None,
    fail_on_blocked: bool = True,
    quarantine_warns: bool = False,
) -> dg.AssetCheckResult:
    """Pass only if every partition of the run holds a valid version and, with `validate`,
    those versions pass it (`validate(store, {key: pointer})` returns failure sentences).

    `fail_on_blocked=False` is for derived tables: a partition blocked because its input was
    quarantined is listed but does not fail this check (the input's own check already failed).
    `quarantine_warns=True` is for the raw tables: a quarantined partition was handled (bytes
    kept, reason written, alert sent, readers refuse it), so the check reports it with severity
    WARN, which neither fails the run nor stops downstream steps (they refuse the partition
    themselves); a partition with nothing written, or an unknown status, still fails it.
    """
    s = store.open()
    failed: dict[str, str] = {}
    blocked: dict[str, str] = {}
    quarantined: dict[str, str] = {}
    valid: dict[str, dict] = {}
    for key in run_partition_keys(context):
        pointer = tables.read_pointer(s, table, key)
        if pointer is not None and pointer.get("status") == "valid":
            valid[key] = pointer
            continue
        reason = (pointer or {}).get("reason", "nothing was written for this partition")
        if quarantine_warns and pointer is not None and pointer.get("status") == "quarantined":
            quarantined[key] = reason
            continue
        (failed if fail_on_blocked else blocked)[key] = reason
    problems = validate(s, valid) if validate is not None and valid else []
    metadata: dict[str, Any] = {
        "partitions_checked": len(valid) + len(failed) + len(blocked) + len(quarantined),
        "partitions_failed": len(failed),
    }
    if quarantine_warns:
        metadata["partitions_quarantined"] = len(quarantined)
    if quarantined:
        metadata["quarantined"] = dg.MetadataValue.md(
            "\n".join(f"- `{k}`: {reason}" for k, reason in sorted(quarantined.items()))
        )
    evaluated = sum(int(p.get("expectations_evaluated", 0)) for p in valid.values())
    if evaluated:
        metadata["expectations_evaluated"] = evaluated
    if failed:
        metadata["failures"] = dg.MetadataValue.md(
            "\n".join(f"- `{k}`: {reason}" for k, reason in sorted(failed.items()))
        )
    if blocked:
        metadata["blocked_upstream"] = dg.MetadataValue.md(
            "\n".join(f"- `{k}`: {reason}" for k, reason in sorted(blocked.items()))
        )
    if problems:
        metadata["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))
    passed = not failed and not problems and not quarantined
    if passed:
        description = "every partition of the run passed"
    elif failed:
        description = f"{len(failed)} partition(s) failed: " + ", ".join(sorted(failed)[:5])
    elif problems:
        description = "; ".join(problems)[:500]
    else:
        description = (
            f"{len(quarantined)} partition(s) quarantined (handled: bytes kept with a reason, "
            "alert sent, readers refuse them): " + ", ".join(sorted(quarantined)[:5])
        )
    handled = quarantined and not failed and not problems
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN if handled else dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=description,
    )


def run_config(source: type, name: str, doc: str, exclude: tuple[str, ...] = ()) -> type:
    """A Dagster run config (`dg.Config`) with the fields and defaults of a core dataclass, so
    the launchpad shows the defaults the core uses and there is one place for each of them.
    Dagster config has no unions: a field typed ``str | float`` is taken as text."""
    hints = typing.get_type_hints(source)
    annotations, defaults = {}, {}
    for f in dataclasses.fields(source):
        if f.name in exclude or f.default is dataclasses.MISSING:
            continue
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (types.UnionType, typing.Union) and len(args) > 1:
            kind = str
        annotations[f.name], defaults[f.name] = kind, f.default
    namespace = {"__annotations__": annotations, "__doc__": doc, "__module__": __name__, **defaults}
    return type(name, (dg.Config,), namespace)


def lookback_dep(key: dg.AssetKey, days: int) -> dg.AssetDep:
    """A daily asset's dependency on the `days` before it of `key` (labels refer to transactions
    up to that old)."""
    return dg.AssetDep(
        key, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-days, end_offset=0)
    )
