"""Quarantine: rejected feed files, kept byte for byte, each with a reason a human can act on.

Layout::

    quarantine/<table>/<partition>/<file name>               the original bytes, unchanged
    quarantine/<table>/<partition>/<file name>.reason.json   why, and what to do about it

A quarantined file is never overwritten with different bytes: if the key already holds other
content (an earlier bad delivery of the same file name), the new copy is stored as
``<stem>.<sha256[:12]><suffix>`` instead. Re-quarantining the same bytes reuses the key and
refreshes its reason.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fraudloop.core.store import ObjectStore, sha256_hex

REASON_SUFFIX = ".reason.json"


def quarantine_prefix(table: str | None = None, partition_key: str | None = None) -> str:
    if table is None:
        return "quarantine/"
    if partition_key is None:
        return f"quarantine/{table}/"
    return f"quarantine/{table}/{partition_key}/"


def _problem_dict(problem: Any) -> dict[str, Any]:
    if hasattr(problem, "to_dict"):
        return problem.to_dict()
    return dict(problem)


def summarise(table: str, partition_key: str, problems: Sequence[Any]) -> str:
    """One line: what was rejected and the first problem, plus how many more there are."""
    dicts = [_problem_dict(p) for p in problems]
    if not dicts:
        return f"{table} {partition_key} rejected"
    first = dicts[0]
    where = f" in {posixpath.basename(first['source'])}" if first.get("source") else ""
    more = f" (+{len(dicts) - 1} more problem{'s' if len(dicts) > 2 else ''})"
    return f"{table} {partition_key} rejected{where}: {first['message']}" + (
        more if len(dicts) > 1 else ""
    )


def _alt_key(key: str, sha: str) -> str:
    folder, name = posixpath.split(key)
    stem, dot, suffix = name.partition(".")
    alt = f"{stem}.{sha[:12]}.{suffix}" if dot else f"{name}.{sha[:12]}"
    return posixpath.join(folder, alt)


def _store_copy(store: ObjectStore, key: str, data: bytes, sha: str) -> str:
    """Put the bytes at ``key`` unless different bytes are there; then at the sha-suffixed key."""
    for candidate in (key, _alt_key(key, sha)):
        if store.put_if_absent(candidate, data):
            return candidate
        if sha256_hex(store.get_bytes(candidate)) == sha:
            return candidate  # the same bytes were quarantined before
    raise RuntimeError(f"{key}: both the name and its sha-suffixed name hold other bytes")


def quarantine_files(
    store: ObjectStore,
    table: str,
    partition_key: str,
    files: Sequence[tuple[str, bytes]],
    problems: Sequence[Any],
    *,
    reason_summary: str,
) -> list[str]:
    """Copy every file of a rejected partition to quarantine with a ``.reason.json`` each.

    ``files`` are ``(landing key or name, bytes)``; ``problems`` are Problem objects (or dicts).
    All files are quarantined together because the partition is rejected as a whole; a problem
    that belongs to one file names it in ``source``. Returns the quarantine keys of the copies.
    """
    detected_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    problem_dicts = [_problem_dict(p) for p in problems]
    prefix = quarantine_prefix(table, partition_key)
    placed: list[tuple[str, str, str, int]] = []
    for source, data in files:
        sha = sha256_hex(data)
        key = _store_copy(store, prefix + posixpath.basename(source), data, sha)
        placed.append((source, key, sha, len(data)))
    keys = [key for _, key, _, _ in placed]
    for source, key, sha, size in placed:
        own = [p for p in problem_dicts if p.get("source") == source]
        reason = {
            "table": table,
            "partition": partition_key,
            "source_key": source,
            "quarantine_key": key,
            "sha256": sha,
            "size": size,
            "detected_at": detected_at,
            "summary": reason_summary,
            "problem_scope": (
                "this file"
                if own
                else "the partition as a whole (all its files together)"
                if all(p.get("source") is None for p in problem_dicts)
                else "another file of the same partition; this file is held back with it"
            ),
            "problems_in_this_file": len(own),
            "problems": problem_dicts,
            "quarantined_with": [k for k in keys if k != key],
            "what_to_do": (
                "Ask the feed to re-deliver this partition (same file name under the landing "
                "folder), then re-run the ingestion of this partition; the quarantined copy "
                "stays here unchanged for evidence."
            ),
        }
        body = json.dumps(reason, indent=2, sort_keys=False, allow_nan=False).encode()
        store.put_bytes(key + REASON_SUFFIX, body)
    return keys


def list_quarantine(store: ObjectStore, table: str | None = None) -> list[dict[str, Any]]:
    """Every quarantine record (the parsed ``.reason.json``), oldest detection first."""
    records = []
    for info in store.list(quarantine_prefix(table)):
        if info.key.endswith(REASON_SUFFIX):
            record = json.loads(store.get_bytes(info.key))
            record["reason_key"] = info.key
            records.append(record)
    return sorted(records, key=lambda r: (r.get("detected_at", ""), r["reason_key"]))
