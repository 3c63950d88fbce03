"""One key space for every artifact, on a local directory or on S3.

Both backends give the same guarantees, because readers elsewhere rely on them:
- a write is atomic: a reader sees the old object or the new one, never half of one
  (temp file + rename locally, a single PUT on S3);
- compare-and-swap: ``put_bytes(..., if_none_match=True)`` creates only if absent and
  ``put_bytes(..., if_match=etag)`` replaces only the version the caller read, so two writers
  can never silently overwrite each other (a lock around check-and-replace locally, conditional
  PUT on S3, which AWS, MinIO and moto's server mode enforce).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudloop.core.errors import StoreError

TEMP_PREFIX = ".tmp-"
LOCK_DIR = ".locks"
DIGEST_XATTR = "user.fraudloop.sha256"  # the local etag, recorded when the store writes


class ObjectNotFound(StoreError, KeyError):
    """The key does not exist in the store."""


class PreconditionFailed(StoreError, RuntimeError):
    """A conditional write lost: the object exists (create) or changed since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: float = 0.0  # epoch seconds the object was last written (ctime locally)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid object key {key!r}: must be relative and name an object")
    parts = key.split("/")
    if (
        any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts)
        or parts[0] == LOCK_DIR
    ):
        raise ValueError(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    """The interface every stage uses; see the module docstring for the guarantees."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write atomically, return the new etag; PreconditionFailed when a condition fails."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where a human or another tool finds the object (file:// or s3://)."""

    @abstractmethod
    def location(self) -> dict[str, Any]:
        """Where this store is, as plain values (``backend`` plus its parameters): what another
        process or a Dagster resource needs to open the same store. Never credentials."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def sweep_temp_files(self, prefix: str = "", max_age_seconds: float | None = None) -> int:
        """Remove what killed writers left under `prefix`; returns how many objects.

        Nothing to do by default: a backend whose write is one request (S3's PUT) leaves no
        partial object behind."""
        return 0

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Bytes and the etag to pass as `if_match` for a safe read-modify-write."""
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(key)
        data = self.get_bytes(key)
        # Re-check so the etag belongs to the bytes returned (a writer may slip in between).
        after = self.head(key)
        if after is None or after.etag != info.etag:
            return self.get_with_etag(key)
        return data, info.etag

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create an immutable object; False if it already exists (content-addressed keys)."""
        try:
            self.put_bytes(key, data, if_none_match=True)
        except PreconditionFailed:
            return False
        return True


class LocalObjectStore(ObjectStore):
    """A directory tree; the embedded default (``FRAUDLOOP_HOME``).

    Durability: a write is a temp file (fsynced) that is renamed or hard-linked into place, and
    then the *directory* is fsynced too. The rename lives in the directory's entry table, not in
    the file, so without the directory fsync a power loss can undo a commit that readers already
    acted on (an alias pointing at a version whose manifest is gone). Directories created for a
    key are fsynced into their parents for the same reason.

    Etags are the sha256 of the object's bytes. The stat-based alternative (mtime, size, inode)
    is not unique: a replaced file's inode is reused at once, and on a filesystem with coarse
    timestamps (ext3, FAT, NFS, some overlays: 1 s or 2 s) a replacement of the same size written
    within the same tick has the same mtime, so a writer holding a stale etag would win a
    compare-and-swap it must lose. A generation counter would have to live inside the object (its
    bytes are the caller's) or beside it (a second file that can be out of step after a crash).
    A content hash cannot collide with a different state, needs no extra file, and matches S3,
    whose ETag of a single PUT is the MD5 of the bytes: the same bytes are the same version on
    both backends (and rewriting the very bytes a writer read is no change, so its etag stays
    good: the state it decided on is the state it replaces). The digest is computed once, when
    the store writes the object, and kept in an extended attribute of the temp file (it moves
    with the rename), so ``head`` and ``list`` cost a ``getxattr``, not a read (listing 200
    files of 2 MiB: ~1 s hashing each, 6 ms with the recorded digest). A file without the
    attribute (dropped in by another tool, or a filesystem without user xattrs) is hashed.
    The compare-and-swap itself and :meth:`get_with_etag` always hash the bytes they see, so
    even a file edited in place behind the store's back cannot make a stale swap succeed.

    Temp files (``.tmp-*``) of a writer killed mid-write are swept by :meth:`sweep_temp_files`
    (registration, alias changes, partition writes and packaging call it for the prefix they
    write). A live writer holds an exclusive ``flock`` on its temp file until it is renamed, so
    the sweep never removes a file a live writer is still using, whatever its age.
    """

    def __init__(self, root: str | os.PathLike[str], temp_max_age_seconds: float = 600.0):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_max_age_seconds = temp_max_age_seconds

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _etag_of(data: bytes) -> str:
        return f"sha256:{sha256_hex(data)}"

    def _file_etag(self, path: Path) -> str:
        """The sha256 of the file's bytes, read now (authoritative)."""
        with open(path, "rb") as handle:
            return f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"

    def _recorded_etag(self, path: Path) -> str:
        """The digest recorded when the store wrote the file; hashed when there is none."""
        try:
            return f"sha256:{os.getxattr(path, DIGEST_XATTR).decode()}"
        except OSError:
            return self._file_etag(path)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock_dir = self.root / LOCK_DIR
        lock_dir.mkdir(exist_ok=True)
        lock_path = lock_dir / hashlib.sha1(key.encode()).hexdigest()
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and any missing parents, each fsynced into its parent."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            # made here or by a concurrent writer that may not have fsynced it yet: fsync anyway
            path.mkdir(exist_ok=True)
            fsync_dir(path.parent)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """One read: the etag is the hash of exactly the bytes returned."""
        data = self.get_bytes(key)
        return data, self._etag_of(data)

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        path = self._path(key)
        self._make_dirs(path.parent)
        tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        digest = sha256_hex(data)
        # The flock marks the temp file as in use until it is renamed (see sweep_temp_files).
        with open(tmp, "wb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(data)
                handle.flush()
                _record_digest(handle.fileno(), digest)
                os.fsync(handle.fileno())
                if if_none_match:
                    try:
                        os.link(tmp, path)  # atomic create-if-absent
                    except FileExistsError:
                        raise PreconditionFailed(f"{key} already exists") from None
                elif if_match is not None:
                    with self._lock(key):
                        try:
                            current = self._file_etag(path)
                        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                            current = None
                        if current != if_match:
                            raise PreconditionFailed(f"{key} changed since it was read")
                        os.replace(tmp, path)
                        fsync_dir(path.parent)  # committed before the lock lets others read
                else:
                    os.replace(tmp, path)
                if if_none_match or if_match is None:
                    fsync_dir(path.parent)
            finally:
                tmp.unlink(missing_ok=True)
        return f"sha256:{digest}"

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                return None
            etag = self._recorded_etag(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, etag, st.st_ctime)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir
        if not start.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != LOCK_DIR]
                rel_dir = ""
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    info = self.head(key)
                    if info is not None:  # deleted or replaced by a directory meanwhile
                        found.append(info)
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def sweep_temp_files(self, prefix: str = "", max_age_seconds: float | None = None) -> int:
        """Remove temp files left by killed writers under `prefix`; returns how many.

        Only files older than `max_age_seconds` (default: the store's
        ``temp_max_age_seconds``) whose writer no longer holds their lock are removed: a live
        writer keeps its temp file locked, so a slow write is never swept from under it.
        """
        max_age = self.temp_max_age_seconds if max_age_seconds is None else max_age_seconds
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir
        if not start.is_dir():
            return 0
        cutoff = time.time() - max_age
        removed = 0
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != LOCK_DIR]
            for name in filenames:
                if name.startswith(TEMP_PREFIX) and _remove_abandoned(Path(dirpath) / name, cutoff):
                    removed += 1
        return removed

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def location(self) -> dict[str, Any]:
        return {"backend": "local", "root": str(self.root)}

    def local_path(self, key: str) -> Path:
        """The file behind a key, for tools that want a path (reports opened in a browser)."""
        return self._path(key)


def _record_digest(fd: int, digest: str) -> None:
    """Keep the sha256 with the file (see LocalObjectStore); skipped where xattrs are not
    supported, and then head/list hash the bytes instead."""
    with suppress(OSError):
        os.setxattr(fd, DIGEST_XATTR, digest.encode())


def fsync_dir(directory: Path) -> None:
    """Make the entries of `directory` (a rename, a link, a new file) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned(path: Path, cutoff: float) -> bool:
    """Delete a temp file last modified before `cutoff` that no writer holds locked."""
    try:
        if path.stat().st_mtime >= cutoff:
            return False
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live writer still owns it
            path.unlink()
    except FileNotFoundError:
        return False  # its writer renamed it, or another sweep removed it
    fsync_dir(path.parent)
    return True


class S3ObjectStore(ObjectStore):
    """A bucket (and optional prefix) on S3 or any S3-compatible endpoint (MinIO, moto).

    Credentials come from boto3's usual environment chain, never from configuration files.
    Every attempt has `timeout_seconds` to connect and between reads (boto's default is 60 s,
    so one stalled connection would hold a run step or a sync for minutes); `max_attempts`
    bounds boto's own retries of throttling, 5xx and dropped connections.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client=None,
        timeout_seconds: float = 10.0,
        max_attempts: int = 5,
    ):
        import boto3  # lazy: the local profile never pays for it
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.timeout_seconds, self.max_attempts = float(timeout_seconds), int(max_attempts)
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region_name or None,
            config=Config(
                connect_timeout=self.timeout_seconds,
                read_timeout=self.timeout_seconds,
                # total attempts, the first included (boto's "max_attempts" counts retries)
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            ),
        )

    def _k(self, key: str) -> str:
        return self.prefix + _check_key(key)

    @staticmethod
    def _is(error, *codes: str) -> bool:
        err = getattr(error, "response", {}).get("Error", {})
        status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in codes or str(status) in codes

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except ClientError as error:
            if self._is(error, "NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise

    def put_bytes(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        from botocore.exceptions import ClientError

        kwargs = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        elif if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._k(key), Body=data, **kwargs
            )
        except ClientError as error:
            if self._is(error, "PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise PreconditionFailed(f"{key}: conditional write refused") from None
            raise
        return response["ETag"]

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as error:
            if self._is(error, "NoSuchKey", "NotFound", "404"):
                return None
            raise
        return ObjectInfo(
            key, response["ContentLength"], response["ETag"], response["LastModified"].timestamp()
        )

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                found.append(
                    ObjectInfo(
                        item["Key"][len(self.prefix) :],
                        item["Size"],
                        item["ETag"],
                        item["LastModified"].timestamp(),
                    )
                )
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._k(key)}"

    def location(self) -> dict[str, Any]:
        return {
            "backend": "s3",
            "bucket": self.bucket,
            "prefix": self.prefix.rstrip("/"),
            "endpoint_url": self.endpoint_url,
            "region_name": self.region_name,
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
        }


class IntegrityError(StoreError, RuntimeError):
    """Stored bytes do not match the sha256 their pointer records (tampered or half-written)."""


def publish_blob(
    store: ObjectStore, prefix: str, data: bytes, metadata: dict, keep: int = 2
) -> dict:
    """Store `data` as ``<prefix>/<sha256>.bin`` and point ``<prefix>/_current.json`` at it.

    The blob is written before the pointer, so a reader following the pointer never finds a
    half object; older blobs beyond the newest `keep` are removed after the pointer moved.
    """

    sha = sha256_hex(data)
    key = f"{prefix}/{sha}.bin"
    store.put_if_absent(key, data)
    pointer = {
        **metadata,
        "sha256": sha,
        "key": key,
        "bytes": len(data),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    pointer_key = f"{prefix}/_current.json"
    previous = load_pointer(store, prefix)
    history = [key] + [k for k in (previous or {}).get("history", []) if k != key]
    pointer["history"] = history[:keep]
    store.put_bytes(pointer_key, json.dumps(pointer, indent=2, sort_keys=True).encode())
    for stale in history[keep:]:
        store.delete(stale)
    return pointer


def load_pointer(store: ObjectStore, prefix: str) -> dict | None:

    try:
        return json.loads(store.get_bytes(f"{prefix}/_current.json"))
    except ObjectNotFound:
        return None


def load_blob(store: ObjectStore, prefix: str) -> tuple[bytes, dict] | None:
    """The current blob under `prefix` and its pointer, verified; None if nothing was published."""
    pointer = load_pointer(store, prefix)
    if pointer is None:
        return None
    try:
        data = store.get_bytes(pointer["key"])
    except ObjectNotFound:
        raise IntegrityError(f"{pointer['key']} is gone but {prefix} points at it") from None
    if sha256_hex(data) != pointer["sha256"]:
        raise IntegrityError(f"{pointer['key']}: sha256 does not match {prefix}/_current.json")
    return data, pointer
