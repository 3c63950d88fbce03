"""The model registry: immutable numbered versions, movable aliases, and an audit trail.

Layout in the object store (identical on the local and the S3 backend)::

    models/<name>/versions/<n>/<file>          artifacts of version n (immutable)
    models/<name>/versions/<n>/_claim.json     who reserved number n (written first)
    models/<name>/versions/<n>/manifest.json   commit point: file -> sha256/size, metadata
    models/<name>/aliases.json                 {"production": 7, "previous": 6, ...}
    models/<name>/audit.log                    JSON lines, one entry per change

Why it is built this way:

- **Versions are committed by creating ``manifest.json`` with create-if-absent.** A reader only
  trusts a version whose manifest exists, and the manifest records every file's sha256, so a
  version is either fully there and verifiable or not there at all. Before writing artifacts a
  writer *claims* the number with a create-if-absent ``_claim.json``; two writers that pick the
  same number never write into the same directory (without the claim the loser would overwrite
  the winner's artifacts before finding out it lost). A crashed writer leaves a claim and no
  manifest: that number stays unused (a gap), which is harmless.
- **Aliases live in one small JSON document updated with compare-and-swap.** Moving
  ``production`` and ``previous`` together is then a single atomic write, so rollback is one
  pointer swap and no reader ever sees production moved but previous not. A writer that loses
  the race re-reads and re-applies its change (the change is expressed relative to the fresh
  state), unless it pinned what it saw (``expected_etag`` / ``expect``), in which case it gets
  :class:`ConcurrentUpdateError`: a decision taken on stale state must be re-taken by whoever
  took it, never silently applied.
- **The audit log is append-only JSON lines, appended with the same CAS loop** (on S3 an append
  is read-modify-write, so a plain PUT would lose concurrent entries). Every alias change gets a
  ``revision`` number inside ``aliases.json``, and ``aliases.json`` also carries its most recent
  changes; whoever appends makes sure all earlier revisions are in the log first. So the log is
  in revision order even when writers finish out of order, every change appears exactly once,
  and a writer that crashed between moving an alias and appending its entry is repaired by the
  next writer (and :meth:`ModelRegistry.history` already shows it).

This module must not import dagster: the scoring service imports it.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fraudloop.core.errors import ModelError
from fraudloop.core.store import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    sha256_hex,
)

__all__ = [
    "ALIAS_PATTERN",
    "AliasError",
    "ConcurrentUpdateError",
    "IntegrityError",
    "LoadedVersion",
    "ModelRegistry",
    "ModelVersion",
    "NoPreviousVersionError",
    "RegistryError",
    "UnknownAliasError",
    "UnknownVersionError",
]

# Lower-case, starts with a letter: an alias can never be mistaken for a version number.
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# File names inside a version: plain path segments, nothing that could escape the directory.
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MANIFEST = "manifest.json"
CLAIM = "_claim.json"
RESERVED_FILES = frozenset({MANIFEST, CLAIM})
# How many recent alias changes aliases.json carries so that the next writer can repair a log
# entry lost to a crash and keep the log in revision order.
RECENT_CHANGES = 20
MAX_ATTEMPTS = 64  # CAS retries before giving up (only reached under pathological contention)


class RegistryError(ModelError, RuntimeError):
    """Base class for every registry error."""


class UnknownVersionError(RegistryError, LookupError):
    """The version number was never committed."""


class AliasError(RegistryError, ValueError):
    """An alias name that does not match :data:`ALIAS_PATTERN`."""


class UnknownAliasError(RegistryError, LookupError):
    """A valid alias name that currently points at no version."""


class UnknownFileError(RegistryError, LookupError):
    """The version exists but has no file of that name."""


class NoPreviousVersionError(RegistryError):
    """Rollback asked for while no ``previous`` version is recorded."""


class ConcurrentUpdateError(RegistryError):
    """Another writer changed the aliases after the caller read them and the caller pinned them."""


@dataclass(frozen=True)
class ModelVersion:
    """A committed version as its manifest describes it."""

    name: str
    version: int
    created_at: str
    files: dict[str, dict[str, Any]]  # file name -> {"sha256": ..., "size": ...}
    metadata: dict[str, Any]
    actor: str
    reason: str

    @property
    def prefix(self) -> str:
        return f"models/{self.name}/versions/{self.version}"

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelVersion:
        return cls(
            name=manifest["name"],
            version=int(manifest["version"]),
            created_at=manifest["created_at"],
            files=manifest["files"],
            metadata=manifest.get("metadata", {}),
            actor=manifest.get("actor", ""),
            reason=manifest.get("reason", ""),
        )


@dataclass(frozen=True)
class LoadedVersion:
    """A version with the bytes of every file, each verified against the manifest."""

    info: ModelVersion
    files: dict[str, bytes] = field(repr=False)
    alias: str | None = None  # the alias it was loaded through, if any

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def _json_safe(value: Any, what: str) -> Any:
    """Fail early with a clear message instead of half-way through a commit."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serialisable: {error}") from None


def _backoff(attempt: int) -> None:
    # Jittered, growing but short: contention on a registry is a handful of writers.
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise AliasError(
            f"invalid alias name {alias!r}: use lower-case letters, digits, '-' or '_', "
            "starting with a letter (e.g. production, canary, shadow, previous)"
        )
    return alias


class ModelRegistry:
    """Versions, aliases and audit log of one model (``name``) in an :class:`ObjectStore`.

    Safe to use from several threads and processes at once, on both backends, because every
    mutation is a conditional write; there is no in-process lock to rely on.
    """

    def __init__(self, store: ObjectStore, name: str = "fraud"):
        if not MODEL_NAME_PATTERN.match(name):
            raise ValueError(f"invalid model name {name!r}")
        self.store = store
        self.name = name
        self.root = f"models/{name}"
        self.aliases_key = f"{self.root}/aliases.json"
        self.audit_key = f"{self.root}/audit.log"

    # ------------------------------------------------------------------ versions

    def _version_prefix(self, version: int) -> str:
        return f"{self.root}/versions/{version}"

    def _used_numbers(self) -> set[int]:
        """Every number some writer claimed or committed (gaps from crashed writers included)."""
        used = set()
        base = f"{self.root}/versions/"
        for info in self.store.list(base):
            head = info.key[len(base) :].split("/", 1)[0]
            if head.isdigit():
                used.add(int(head))
        return used

    def register(
        self,
        files: Mapping[str, bytes],
        metadata: Mapping[str, Any],
        actor: str,
        reason: str,
    ) -> ModelVersion:
        """Store a new immutable version and return it; the number is 1 + the highest used.

        Order of writes: claim the number (create-if-absent), artifacts (create-if-absent),
        then the manifest (create-if-absent) as the commit point. A writer that finds the
        number taken moves on to the next one; nothing it wrote can collide with another
        writer's files because it only writes after winning the claim.
        """
        if not files:
            raise ValueError("a model version needs at least one file")
        for fname, data in files.items():
            if not isinstance(fname, str) or not FILE_NAME_PATTERN.match(fname):
                raise ValueError(f"invalid file name {fname!r} in a model version")
            if fname in RESERVED_FILES:
                raise ValueError(f"file name {fname!r} is reserved by the registry")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"file {fname!r} must be bytes, got {type(data).__name__}")
        metadata = _json_safe(dict(metadata), "metadata")
        if not actor:
            raise ValueError("actor is required: the audit log must say who registered a version")

        self.store.sweep_temp_files(f"{self.root}/")  # what killed writers left
        candidate = max(self._used_numbers(), default=0) + 1
        for _ in range(MAX_ATTEMPTS):
            claim_key = f"{self._version_prefix(candidate)}/{CLAIM}"
            claim = {"actor": actor, "claimed_at": _now(), "writer": uuid.uuid4().hex}
            try:
                self.store.put_bytes(claim_key, _dumps(claim), if_none_match=True)
            except PreconditionFailed:
                candidate = max(max(self._used_numbers(), default=0), candidate) + 1
                continue
            return self._commit(candidate, files, metadata, actor, reason)
        raise ConcurrentUpdateError(
            f"could not reserve a version number for {self.name!r} after {MAX_ATTEMPTS} attempts"
        )

    def _commit(
        self,
        version: int,
        files: Mapping[str, bytes],
        metadata: dict[str, Any],
        actor: str,
        reason: str,
    ) -> ModelVersion:
        prefix = self._version_prefix(version)
        entries = {}
        for fname, data in sorted(files.items()):
            data = bytes(data)
            # Create-only: even a bug elsewhere cannot overwrite a file of a claimed version.
            self.store.put_bytes(f"{prefix}/{fname}", data, if_none_match=True)
            entries[fname] = {"sha256": sha256_hex(data), "size": len(data)}
        manifest = {
            "name": self.name,
            "version": version,
            "created_at": _now(),
            "actor": actor,
            "reason": reason,
            "files": entries,
            "metadata": metadata,
        }
        # The claim guarantees nobody else writes this manifest; if_none_match is the guard
        # that keeps "versions are immutable" true regardless.
        self.store.put_bytes(f"{prefix}/{MANIFEST}", _dumps(manifest), if_none_match=True)
        info = ModelVersion.from_manifest(manifest)
        self._append_audit(
            [
                {
                    "id": f"register-{version}",
                    "timestamp": manifest["created_at"],
                    "model": self.name,
                    "actor": actor,
                    "action": "register",
                    "alias": None,
                    "from_version": None,
                    "to_version": version,
                    "reason": reason,
                    "evidence": {"files": entries},
                }
            ]
        )
        return info

    def show(self, version: int) -> ModelVersion:
        """The manifest of a committed version; :class:`UnknownVersionError` otherwise."""
        version = self._as_number(version)
        try:
            raw = self.store.get_bytes(f"{self._version_prefix(version)}/{MANIFEST}")
        except ObjectNotFound:
            known = [v.version for v in self.list_versions()]
            raise UnknownVersionError(
                f"model {self.name!r} has no version {version} (committed: {known or 'none'})"
            ) from None
        return ModelVersion.from_manifest(json.loads(raw))

    def version_numbers(self) -> list[int]:
        """The committed version numbers, oldest first, from one listing (no manifest read)."""
        base = f"{self.root}/versions/"
        return sorted(
            int(rest.split("/", 1)[0])
            for info in self.store.list(base)
            if (rest := info.key[len(base) :]).endswith(f"/{MANIFEST}")
            and rest.split("/", 1)[0].isdigit()
            and rest.count("/") == 1
        )

    def list_versions(self) -> list[ModelVersion]:
        """Every committed version, oldest first (claimed-but-uncommitted numbers excluded)."""
        versions = []
        for n in self.version_numbers():
            raw = self.store.get_bytes(f"{self._version_prefix(n)}/{MANIFEST}")
            versions.append(ModelVersion.from_manifest(json.loads(raw)))
        return versions

    def get_file(self, version: int | str, name: str) -> bytes:
        """One file of a version (or alias), verified against the manifest's sha256."""
        info = self.show(self.resolve(version))
        return self._read_verified(info, name)

    def _read_verified(self, info: ModelVersion, name: str) -> bytes:
        entry = info.files.get(name)
        if entry is None:
            raise UnknownFileError(
                f"version {info.version} of {self.name!r} has no file {name!r} "
                f"(files: {sorted(info.files)})"
            )
        key = f"{info.prefix}/{name}"
        try:
            data = self.store.get_bytes(key)
        except ObjectNotFound:
            raise IntegrityError(
                f"file {name!r} of {self.name!r} version {info.version} is missing ({key})"
            ) from None
        if len(data) != entry["size"] or sha256_hex(data) != entry["sha256"]:
            raise IntegrityError(
                f"file {name!r} of {self.name!r} version {info.version} does not match its "
                f"manifest sha256 (tampered or corrupted: {self.store.uri(key)})"
            )
        return data

    def load(self, version_or_alias: int | str) -> LoadedVersion:
        """Every file of a version, verified; accepts a number or an alias name.

        Resolving the alias and reading the files are separate reads, but versions are
        immutable, so what is returned is always one consistent version.
        """
        alias = version_or_alias if self._is_alias_ref(version_or_alias) else None
        info = self.show(self.resolve(version_or_alias))
        files = {fname: self._read_verified(info, fname) for fname in sorted(info.files)}
        return LoadedVersion(info=info, files=files, alias=alias)

    def diff(self, a: int | str, b: int | str) -> dict[str, Any]:
        """What differs between two versions: metadata keys (flattened) and file hashes."""
        va, vb = self.show(self.resolve(a)), self.show(self.resolve(b))
        fa, fb = _flatten(va.metadata), _flatten(vb.metadata)
        metadata = {
            key: {"a": fa.get(key), "b": fb.get(key)}
            for key in sorted(set(fa) | set(fb))
            if fa.get(key) != fb.get(key)
        }
        files = {
            fname: {
                "a": va.files.get(fname, {}).get("sha256"),
                "b": vb.files.get(fname, {}).get("sha256"),
            }
            for fname in sorted(set(va.files) | set(vb.files))
            if va.files.get(fname, {}).get("sha256") != vb.files.get(fname, {}).get("sha256")
        }
        return {"a": va.version, "b": vb.version, "metadata": metadata, "files": files}

    # ------------------------------------------------------------------ aliases

    @staticmethod
    def _is_alias_ref(ref: int | str) -> bool:
        return isinstance(ref, str) and not ref.isdigit()

    @staticmethod
    def _as_number(version: int | str) -> int:
        if isinstance(version, bool):
            raise TypeError("a version number must be an int")
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if not isinstance(version, int) or version < 1:
            raise UnknownVersionError(f"invalid version number {version!r}: must be >= 1")
        return version

    def resolve(self, version_or_alias: int | str) -> int:
        """A version number from a number, a digit string or an alias name."""
        if not self._is_alias_ref(version_or_alias):
            return self._as_number(version_or_alias)
        alias = _check_alias(version_or_alias)
        current = self.aliases()
        if alias not in current:
            raise UnknownAliasError(
                f"alias {alias!r} of model {self.name!r} is not set "
                f"(set: {', '.join(f'{k}=v{v}' for k, v in sorted(current.items())) or 'none'})"
            )
        return current[alias]

    def _read_aliases_doc(self) -> tuple[dict[str, Any], str | None]:
        try:
            raw, etag = self.store.get_with_etag(self.aliases_key)
        except ObjectNotFound:
            return {"model": self.name, "revision": 0, "aliases": {}, "recent_changes": []}, None
        return json.loads(raw), etag

    def aliases(self) -> dict[str, int]:
        """Alias name -> version number, as of now."""
        return dict(self._read_aliases_doc()[0]["aliases"])

    def aliases_with_etag(self) -> tuple[dict[str, int], str | None]:
        """The aliases and the etag to pass as ``expected_etag`` (None: no aliases yet)."""
        doc, etag = self._read_aliases_doc()
        return dict(doc["aliases"]), etag

    def set_alias(
        self,
        alias: str,
        version: int,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        expected_etag: str | None = None,
        expect: Mapping[str, int | None] | None = None,
    ) -> dict[str, int]:
        """Point `alias` at `version`; returns the aliases as written.

        `expected_etag` (from :meth:`aliases_with_etag`) pins the whole document and `expect`
        pins particular aliases (``{"production": 3}``: "only if production is still v3";
        ``None`` as a value means "unset"). Either turns a lost race into
        :class:`ConcurrentUpdateError` instead of a re-applied change.
        """
        alias = _check_alias(alias)
        version = self._verified_target(version)

        def mutate(current: dict[str, int]) -> dict[str, int]:
            return {**current, alias: version}

        return self._update_aliases(
            "set_alias", alias, mutate, actor, reason, evidence, expected_etag, expect
        )

    def remove_alias(
        self,
        alias: str,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        expected_etag: str | None = None,
        expect: Mapping[str, int | None] | None = None,
    ) -> dict[str, int]:
        """Unset an alias (e.g. the canary once a rollout ends); error if it is not set."""
        alias = _check_alias(alias)

        def mutate(current: dict[str, int]) -> dict[str, int]:
            if alias not in current:
                raise UnknownAliasError(f"alias {alias!r} of model {self.name!r} is not set")
            return {k: v for k, v in current.items() if k != alias}

        return self._update_aliases(
            "remove_alias", alias, mutate, actor, reason, evidence, expected_etag, expect
        )

    def promote(
        self,
        version: int,
        to: str = "production",
        *,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        expected_etag: str | None = None,
        expect: Mapping[str, int | None] | None = None,
        clear: tuple[str, ...] = (),
    ) -> dict[str, int]:
        """Point `to` at `version`; promoting to production moves the old one to ``previous``.

        Both pointers move in the same atomic write, so rollback always has a target.
        Promoting the version production already points at changes nothing and logs nothing.
        `clear` unsets other aliases in the same write (e.g. ``("canary",)`` when a canary
        becomes production).
        """
        to = _check_alias(to)
        for name in clear:
            _check_alias(name)
        if to == "previous":
            raise AliasError("'previous' is maintained by promote/rollback; use set_alias")
        version = self._verified_target(version)

        def mutate(current: dict[str, int]) -> dict[str, int]:
            new = {k: v for k, v in current.items() if k not in clear}
            old = current.get(to)
            if to == "production" and old is not None and old != version:
                new["previous"] = old
            new[to] = version
            return new

        return self._update_aliases(
            "promote", to, mutate, actor, reason, evidence, expected_etag, expect
        )

    def rollback(
        self,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        expected_etag: str | None = None,
    ) -> dict[str, int]:
        """Swap ``production`` and ``previous`` in one write.

        The rollback is pinned to the pair it first saw: re-applying a swap after someone
        else already rolled back would silently undo their rollback, so a concurrent change
        to either alias raises :class:`ConcurrentUpdateError` instead.
        """
        current = self.aliases()
        if "previous" not in current:
            raise NoPreviousVersionError(
                f"cannot roll back model {self.name!r}: no previous version is recorded "
                f"(production={current.get('production')})"
            )
        if "production" not in current:
            raise UnknownAliasError(f"cannot roll back model {self.name!r}: production is not set")
        pinned = {"production": current["production"], "previous": current["previous"]}
        self._verified_target(current["previous"])

        def mutate(cur: dict[str, int]) -> dict[str, int]:
            return {**cur, "production": cur["previous"], "previous": cur["production"]}

        return self._update_aliases(
            "rollback", "production", mutate, actor, reason, evidence, expected_etag, pinned
        )

    def _verified_target(self, version: int) -> int:
        """The number of a committed version whose every file verifies, before an alias may
        point at it: a tampered or half-copied version must not replace a good production
        (:class:`UnknownVersionError` or :class:`IntegrityError`, and no alias moves)."""
        return self.load(version).version

    def _update_aliases(
        self,
        action: str,
        alias: str,
        mutate: Callable[[dict[str, int]], dict[str, int]],
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None,
        expected_etag: str | None,
        expect: Mapping[str, int | None] | None,
    ) -> dict[str, int]:
        """The CAS loop every alias change goes through (see the module docstring)."""
        if not actor:
            raise ValueError("actor is required: the audit log must say who changed an alias")
        evidence = _json_safe(dict(evidence), "evidence") if evidence is not None else None
        # a writer killed mid-update leaves temp files beside aliases.json and audit.log
        self.store.sweep_temp_files(f"{self.root}/")
        for name in expect or {}:
            _check_alias(name)
        for attempt in range(MAX_ATTEMPTS):
            doc, etag = self._read_aliases_doc()
            current = dict(doc["aliases"])
            if expected_etag is not None and etag != expected_etag:
                raise ConcurrentUpdateError(
                    f"aliases of {self.name!r} changed since they were read "
                    f"(expected etag {expected_etag}, now {etag}); now: {current}"
                )
            for name, want in (expect or {}).items():
                if current.get(name) != want:
                    raise ConcurrentUpdateError(
                        f"{action} {alias!r} refused: expected {name}={want}, but it is now "
                        f"{current.get(name)} (another writer changed the aliases); now: {current}"
                    )
            new = mutate(current)
            if new == current:
                return current  # nothing to change: no write, no audit entry
            revision = int(doc.get("revision", 0)) + 1
            changes = {
                name: {"from": current.get(name), "to": new.get(name)}
                for name in sorted(set(current) | set(new))
                if current.get(name) != new.get(name)
            }
            entry = {
                "id": f"aliases-{revision}",
                "revision": revision,
                "timestamp": _now(),
                "model": self.name,
                "actor": actor,
                "action": action,
                "alias": alias,
                "from_version": current.get(alias),
                "to_version": new.get(alias),
                "reason": reason,
                "evidence": evidence,
                "changes": changes,
            }
            recent = [*doc.get("recent_changes", []), entry][-RECENT_CHANGES:]
            new_doc = {
                "model": self.name,
                "revision": revision,
                "aliases": new,
                "updated_at": entry["timestamp"],
                "recent_changes": recent,
            }
            try:
                if etag is None:
                    self.store.put_bytes(self.aliases_key, _dumps(new_doc), if_none_match=True)
                else:
                    self.store.put_bytes(self.aliases_key, _dumps(new_doc), if_match=etag)
            except PreconditionFailed:
                if expected_etag is not None:
                    raise ConcurrentUpdateError(
                        f"aliases of {self.name!r} changed while {action} {alias!r} was being "
                        "written; re-read and decide again"
                    ) from None
                _backoff(attempt)
                continue  # re-read and re-apply (expect, if given, is re-checked)
            # Earlier revisions first: keeps the log in revision order whoever finishes first.
            self._append_audit(recent)
            return dict(new)
        raise ConcurrentUpdateError(
            f"gave up {action} {alias!r} on {self.name!r} after {MAX_ATTEMPTS} conflicting writes"
        )

    # ------------------------------------------------------------------ audit log

    def _read_audit(self) -> tuple[list[dict[str, Any]], bytes, str | None]:
        try:
            raw, etag = self.store.get_with_etag(self.audit_key)
        except ObjectNotFound:
            return [], b"", None
        entries = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        return entries, raw, etag

    def _append_audit(self, entries: list[dict[str, Any]]) -> None:
        """Append entries not yet in the log (by id), with CAS so no concurrent entry is lost.

        Alias-change entries are only appended if they are newer than the newest alias entry
        already logged, so the log never goes back in revision order.
        """
        for attempt in range(MAX_ATTEMPTS):
            logged, raw, etag = self._read_audit()
            ids = {e.get("id") for e in logged}
            top = max((e.get("revision", 0) for e in logged if "revision" in e), default=0)
            missing = [
                e
                for e in entries
                if e["id"] not in ids and ("revision" not in e or e["revision"] > top)
            ]
            if not missing:
                return
            body = raw
            if body and not body.endswith(b"\n"):
                body += b"\n"
            body += b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in missing)
            try:
                if etag is None:
                    self.store.put_bytes(self.audit_key, body, if_none_match=True)
                else:
                    self.store.put_bytes(self.audit_key, body, if_match=etag)
                return
            except PreconditionFailed:
                _backoff(attempt)
        raise ConcurrentUpdateError(
            f"could not append to {self.audit_key} after {MAX_ATTEMPTS} conflicting writes"
        )

    def history(self, alias: str | None = None) -> list[dict[str, Any]]:
        """Audit entries, oldest first; with `alias`, only changes that moved that alias.

        Includes an alias change whose log append was interrupted (it is recorded in
        aliases.json), so the history never misses a change that took effect.
        """
        logged = self._read_audit()[0]
        top = max((e.get("revision", 0) for e in logged if "revision" in e), default=0)
        doc = self._read_aliases_doc()[0]
        logged += [e for e in doc.get("recent_changes", []) if e["revision"] > top]
        if alias is None:
            return logged
        alias = _check_alias(alias)
        return [e for e in logged if alias in (e.get("changes") or {})]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"metrics": {"ap": 0.7}}`` -> ``{"metrics.ap": 0.7}``, so diffs name the exact key."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}
