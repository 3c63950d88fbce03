"""Follows the registry: which version serves in which role, with how much canary traffic.

Every ``poll_seconds`` (and on ``POST /admin/reload``) it reads the aliases and the rollout
document; a role whose version changed gets a new slot, built from the version's *verified*
package (and, for canary and shadow, only if that package passed its staging test), warmed, and
then swapped in with the rest of the deployment in one reference assignment (blue-green). A
version that cannot be loaded leaves the role as it was (production) or empty (canary, shadow),
counted and reported on ``/readyz``; the service never swaps to something it could not verify.
A slot is reused across roles, so promoting the canary to production is instant.

Every package is also checked against the registry version it claims (model bytes, decision
threshold: :mod:`fraudloop.serving.integrity`), since a package's own manifest can be rewritten
with it. Readiness is the current state, not the start-up one: the service is ready while the
last successful sync (aliases and features read) is younger than ``ready_max_sync_age_seconds``,
and becomes ready again by itself when the store comes back.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from fraudloop.core.store import ObjectStore
from fraudloop.delivery import rollout
from fraudloop.delivery.package import load_package, load_package_dir, require_staged
from fraudloop.model.registry import ModelRegistry
from fraudloop.serving.config import ServeConfig
from fraudloop.serving.integrity import check_against_registry
from fraudloop.serving.live import Deployment, Slot, load_slot
from fraudloop.serving.prometheus import ServiceMetrics
from fraudloop.serving.shared_features import open_features

log = logging.getLogger(__name__)
ROLES = ("production", "canary", "shadow")


class Follower:
    def __init__(self, store: ObjectStore, config: ServeConfig, metrics: ServiceMetrics):
        self.store = store
        self.config = config
        self.metrics = metrics
        self.registry = ModelRegistry(store, config.model_name)
        self.features = open_features(store, config)
        self.deployment = Deployment()
        self.errors: dict[str, str] = {}
        self.synced_at: float | None = None  # time.monotonic() of the last successful sync
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._static: Slot | None = None

    # ---- what should serve
    def _desired(self) -> tuple[dict[str, int | None], dict[str, Any] | None]:
        aliases = self.registry.aliases()
        doc, _ = rollout.read_state(self.store, self.registry.name)
        return {role: aliases.get(role) for role in ROLES}, doc

    def _load(self, role: str, version: int) -> Slot:
        if role == "production":
            package = load_package(self.store, self.registry.name, version)
        else:
            package = require_staged(self.store, self.registry.name, version)
        check_against_registry(self.store, self.registry, package)
        return load_slot(package, role)

    def _static_deployment(self) -> Deployment:
        if self._static is None:
            if self.config.package_dir:
                package = load_package_dir(self.config.package_dir)
            else:
                package = load_package(self.store, self.registry.name, self.config.pin_version)
                check_against_registry(self.store, self.registry, package)
            self._static = load_slot(package, "production")
            self.metrics.swaps.labels("production").inc()
        return Deployment(production=self._static, revision=1)

    def sync(self) -> Deployment:
        """Bring the deployment in line with the registry; returns what serves now. A failure
        is recorded under ``errors["sync"]`` (and re-raised) until a later sync succeeds."""
        with self._sync_lock:
            features_ok = True
            try:
                if self.features.refresh():
                    self.metrics.feature_reloads.inc()
            except Exception as error:
                features_ok = False
                self.errors["features"] = f"{type(error).__name__}: {error}"
                log.warning("online features not refreshed: %s", error)
            else:
                self.errors.pop("features", None)
            try:
                if self.config.package_dir or self.config.pin_version is not None:
                    new = self._static_deployment()
                else:
                    new = self._follow()
            except Exception as error:
                self.errors["sync"] = f"{type(error).__name__}: {error}"
                raise
            self.errors.pop("sync", None)
            if features_ok:
                self.synced_at = time.monotonic()
            if new != self.deployment:
                self.deployment = new  # the swap: one reference assignment
                for role in ROLES:
                    slot = getattr(new, role)
                    self.metrics.deployed.labels(role).set(slot.version if slot else 0)
                self.metrics.canary_share.set(new.canary_share)
                log.info("deployment now %s, canary share %.2f", new.versions(), new.canary_share)
            return self.deployment

    def _follow(self) -> Deployment:
        desired, doc = self._desired()
        current = self.deployment
        loaded = {s.version: s for s in (current.production, current.canary, current.shadow) if s}
        slots: dict[str, Slot | None] = {}
        for role in ROLES:
            want = desired[role]
            have = getattr(current, role)
            if want is None:
                slots[role] = None
                self.errors.pop(role, None)
                continue
            if have is not None and have.version == want:
                slots[role] = have
                continue
            try:
                if want in loaded:
                    if role != "production":  # a slot moving into canary/shadow is re-gated
                        require_staged(self.store, self.registry.name, want)
                    slot = dataclasses.replace(loaded[want], role=role)
                else:
                    slot = self._load(role, want)
            except Exception as error:
                self.metrics.swap_failures.labels(role).inc()
                self.errors[role] = f"v{want}: {type(error).__name__}: {error}"
                log.error("cannot deploy v%s as %s: %s", want, role, error)
                slots[role] = have if role == "production" else None
                continue
            self.errors.pop(role, None)
            self.metrics.swaps.labels(role).inc()
            slots[role] = slot
        canary = slots["canary"]
        share = rollout.canary_share(doc, canary.version if canary else None)
        if canary is None or slots["production"] is None:
            share = 0.0
        changed = any(slots[r] is not getattr(current, r) for r in ROLES)
        if not changed and share == current.canary_share:
            return current
        return Deployment(**slots, canary_share=share, revision=current.revision + 1)

    # ---- background polling
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.sync()
            except Exception as error:
                log.error("alias follower tick failed (retrying): %s", error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.features.close()

    @property
    def sync_age(self) -> float | None:
        """Seconds since the last successful sync (None: never)."""
        return None if self.synced_at is None else time.monotonic() - self.synced_at

    @property
    def ready(self) -> bool:
        age = self.sync_age
        return (
            self.deployment.production is not None
            and self.features.ready
            and age is not None
            and age <= self.config.ready_max_sync_age_seconds
        )
