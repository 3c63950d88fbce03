"""The object store as a Dagster resource: one interface, a local and an S3 flavour.

Assets ask for `store: ObjectStoreResource` and never know which backend they got; the
Dagster-free core (`fraudloop.core.store`) does the work, so the CLI and the scoring service
share exactly the same code path. Which flavour is decided once, by `Settings.open_store()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg

from fraudloop.core.store import LocalObjectStore, ObjectStore, S3ObjectStore


class ObjectStoreResource(dg.ConfigurableResource, ABC):
    """Where every artifact lives (see `fraudloop.core.keyspace`)."""

    @abstractmethod
    def open(self) -> ObjectStore:
        """The core store object the fraudloop/ functions take."""

    @staticmethod
    def of(store: ObjectStore) -> ObjectStoreResource:
        """The resource that opens the same store as `store` (credentials stay in the env)."""
        location = dict(store.location())
        flavour = {"local": LocalObjectStoreResource, "s3": S3ObjectStoreResource}
        return flavour[location.pop("backend")](**location)


class LocalObjectStoreResource(ObjectStoreResource):
    """A directory on this machine: the embedded default (``FRAUDLOOP_HOME``)."""

    root: str

    def open(self) -> ObjectStore:
        return LocalObjectStore(self.root)


class S3ObjectStoreResource(ObjectStoreResource):
    """A bucket on S3 or an S3-compatible endpoint (MinIO); credentials from the AWS env chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    timeout_seconds: float = 10.0
    max_attempts: int = 5

    def open(self) -> ObjectStore:
        return S3ObjectStore(
            self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
        )
