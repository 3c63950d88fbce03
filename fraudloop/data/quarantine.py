"""Quarantine: rejected feed files, kept byte for byte, each with a reason a human can act on.

Layout::

    quarantine/<table>/<partition>/<file name>               the original bytes, unchanged
    quarantine/<table>/<partition>/<file name>.reason.json   why, and what to do about it

A file whose hour was accepted but some of its rows were not is quarantined the same way (bytes
kept whole), with ``<file name>.rejected.jsonl``: one line per rejected row (row number, line
number in the file, reasons, the row's original text); its ``.reason.json`` has the counts by
reason. A file over the rejected-share backstop gets the same ``.rejected.jsonl``.

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
REJECTED_SUFFIX = ".rejected.jsonl"
EXAMPLE_ROWS = 10


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


def _identity(
    table: str, partition_key: str, source: str, key: str, sha: str, size: int
) -> dict[str, Any]:
    """What every quarantine record starts with: which file, where its bytes are now."""
    return {
        "table": table,
        "partition": partition_key,
        "source_key": source,
        "quarantine_key": key,
        "sha256": sha,
        "size": size,
    }


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
    detected_at = _now()
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
            **_identity(table, partition_key, source, key, sha, size),
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_rejected_rows(store: ObjectStore, quarantine_key: str, rows: Sequence[dict]) -> str:
    """Every rejected row of a file, one JSON object a line (row number, line number, reasons,
    the original text), beside the file's quarantined bytes."""
    key = quarantine_key + REJECTED_SUFFIX
    body = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
    store.put_bytes(key, body.encode())
    return key


def quarantine_rows(
    store: ObjectStore,
    table: str,
    partition_key: str,
    source: str,
    data: bytes,
    rows: Sequence[dict],
    *,
    rows_total: int,
    rejected_by_reason: dict[str, int],
    summary: str,
    value_problems: Sequence[Any] = (),
) -> str:
    """Quarantine the rejected rows of a file whose other rows were ingested.

    The file's bytes are kept whole (the evidence, and what a re-delivery replaces), with
    ``.rejected.jsonl`` listing every rejected row and ``.reason.json`` the counts by reason and
    the first rows. Returns the quarantine key of the file's copy.
    """
    sha = sha256_hex(data)
    key = _store_copy(
        store, quarantine_prefix(table, partition_key) + posixpath.basename(source), data, sha
    )
    rejected_key = write_rejected_rows(store, key, rows)
    reason = {
        **_identity(table, partition_key, source, key, sha, len(data)),
        "detected_at": _now(),
        "summary": summary,
        "problem_scope": "some rows of this file; its other rows were ingested",
        "rows_total": rows_total,
        "rows_rejected": len(rows),
        "rows_accepted": rows_total - len(rows),
        "rejected_by_reason": rejected_by_reason,
        "rejected_rows_key": rejected_key,
        "first_rejected_rows": list(rows[:EXAMPLE_ROWS]),
        "value_problems": [_problem_dict(p) for p in value_problems],
        "what_to_do": (
            "Nothing is blocked: the hour holds the file's valid rows. If the rejected rows "
            "matter, ask the feed to re-deliver the file corrected and re-run the ingestion of "
            "this partition."
        ),
    }
    body = json.dumps(reason, indent=2, allow_nan=False).encode()
    store.put_bytes(key + REASON_SUFFIX, body)
    return key


def list_quarantine(store: ObjectStore, table: str | None = None) -> list[dict[str, Any]]:
    """Every quarantine record (the parsed ``.reason.json``), oldest detection first."""
    records = []
    for info in store.list(quarantine_prefix(table)):
        if info.key.endswith(REASON_SUFFIX):
            record = json.loads(store.get_bytes(info.key))
            record["reason_key"] = info.key
            records.append(record)
    return sorted(records, key=lambda r: (r.get("detected_at", ""), r["reason_key"]))
