"""What the service holds live: the online features and the deployed model slots.

Both are swapped while requests keep flowing. A swap builds the new object completely (loaded,
verified, warmed) in a background thread, then replaces one reference; a request reads the
reference once at its start, so it runs entirely on the old or entirely on the new object and
never fails because of a swap.

Online features: a newly published feature state replaces the loaded one, and the transactions
the service has scored since that state's hour are replayed into it, so velocity windows never
lose what the service itself has seen. Each (transaction id, content) is observed once: a client
retry does not count twice (and gets its first features: :mod:`fraudloop.features.retries`), and a
request that reuses a known id with other content (a forged or corrupted one) cannot stop the real
transaction from being observed: both are recorded. The overlay is bounded in time (the service
refuses transactions older than the state or later than now + the clock skew, and a new state
drops what it already contains) and in size (beyond ``max_observed`` the oldest observations are
forgotten).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.store import ObjectStore, load_pointer
from fraudloop.delivery.package import Package
from fraudloop.features import online_batch
from fraudloop.features.compute import FEATURE_NAMES, feature_code_hash
from fraudloop.features.feature_store import load_online
from fraudloop.features.online import (
    NotLoaded,
    OnlineFeatureStore,
    identity,
    tx_time_ns,
)
from fraudloop.features.retries import DEFAULT_SECONDS, RecentAnswers, settle
from fraudloop.serving.one_row import OneRowPredictor, one_row_predictor

log = logging.getLogger(__name__)

WARMUP_ROWS = 64
#: from this many transactions on, a request's features are computed as arrays
#: (:mod:`fraudloop.features.online_batch`); fewer go row by row (cheaper for a handful)
VECTOR_MIN_ROWS = 16


class LiveFeatures:
    """The in-process online feature store of the service (``FRAUDLOOP_ONLINE_STORE=memory``),
    reloaded when a newer state is published. :class:`~fraudloop.serving.shared_features.
    RedisFeatures` is the same interface on Redis, shared by replicas."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        max_observed: int = 2_000_000,
        retry_answer_seconds: float = DEFAULT_SECONDS,
    ):
        self.store = store
        self.prefix = prefix
        self.max_observed = max_observed
        self.answers = RecentAnswers(retry_answer_seconds)  # a retry's features: its first ones
        self._online: OnlineFeatureStore | None = None
        self.pointer: dict[str, Any] = {}
        self._lock = threading.Lock()  # scoring + observe vs. swap-with-replay
        self._observed: deque[dict[str, Any]] = deque()
        self._seen: set[str] = set()
        self.reloads = 0
        self.forgotten = 0
        self._arrays: online_batch.StoreArrays | None = None

    @property
    def ready(self) -> bool:
        return self._online is not None

    @property
    def state_hour(self) -> str | None:
        return self.pointer.get("state_hour")

    def refresh(self) -> bool:
        """Load the published state if it is newer than the loaded one; True if swapped."""

        pointer = load_pointer(self.store, self.prefix)
        if pointer is None or pointer.get("sha256") == self.pointer.get("sha256"):
            return False
        online, pointer = load_online(self.store, self.prefix)  # verified, code hash checked
        # The store is millions of small Python objects; without this, every full collection of
        # the cyclic GC walks them all (~100 ms pauses on the request path, measured). They hold
        # no cycles, so refcounting still frees an old store once it is swapped out.
        gc.collect()
        gc.freeze()
        arrays = online_batch.StoreArrays(online)  # the batch path's view, built off the path
        with self._lock:
            self._arrays = arrays
            first = online.first_hour
            for tx in self._observed:
                if first is None or tx_time_ns(tx["tx_datetime"]) // HOUR_NS >= first:
                    online.observe(tx)
            self._online, self.pointer = online, pointer
            self._prune(first)
        self.reloads += 1
        log.info("online features now at state hour %s", pointer.get("state_hour"))
        return True

    def _prune(self, first_hour: int | None) -> None:
        if first_hour is None:
            return
        while (
            self._observed and tx_time_ns(self._observed[0]["tx_datetime"]) // HOUR_NS < first_hour
        ):
            self._seen.discard(identity(self._observed.popleft()))

    @property
    def observed(self) -> int:
        """Transactions held in the overlay (replayed into the next state)."""
        return len(self._observed)

    @property
    def first_hour(self) -> int | None:
        """The earliest hour the loaded state can score (None: empty state or not loaded)."""
        online = self._online
        return None if online is None else online.first_hour

    def features_and_observe(self, tx: dict[str, Any]) -> dict[str, float]:
        """Features of ``tx``, then record it so later transactions see it (once per id)."""
        return self.features_and_observe_many([tx])[0]

    def features_and_observe_many(self, txs: list[dict[str, Any]]) -> list[dict[str, float]]:
        """:meth:`features_and_observe` of each transaction, in order."""
        matrix = self.features_and_observe_matrix(txs)
        return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in matrix.tolist()]

    def features_and_observe_matrix(
        self, txs: online_batch.Rows | list[dict[str, Any]]
    ) -> np.ndarray:
        """The (transactions x ``FEATURE_NAMES``) features of ``txs`` (in time order; columns
        or dicts), each observed before the next is read: a batch as arrays, a handful row by
        row."""
        with self._lock:
            online = self._online
            if online is None:
                raise NotLoaded("online features are not loaded")
            if len(txs) < VECTOR_MIN_ROWS:
                dicts = txs.dicts() if isinstance(txs, online_batch.Rows) else txs
                keys = [identity(tx) for tx in dicts]
                fresh = self._fresh(keys)
                matrix = np.array(self._one_by_one(online, dicts, keys), dtype=np.float64)
            else:
                rows = online_batch.as_rows(txs)
                keys = rows.identities()
                fresh = self._fresh(keys)
                matrix = self._vectorised(online, rows, keys, fresh)
            matrix = matrix.reshape(len(keys), len(FEATURE_NAMES))
            return settle(matrix, keys, fresh, self.answers.exchange)

    def _fresh(self, keys: list[str]) -> np.ndarray:
        """Which rows are the first sight of their identity (the others are retries)."""
        fresh = np.zeros(len(keys), dtype=bool)
        seen, batch_seen = self._seen, set()
        for i, key in enumerate(keys):
            if key not in seen and key not in batch_seen:
                fresh[i] = True
                batch_seen.add(key)
        return fresh

    def _one_by_one(
        self, online: OnlineFeatureStore, txs: list[dict[str, Any]], keys: list[str]
    ) -> list[list]:
        out = []
        for tx, key in zip(txs, keys, strict=True):
            out.append(list(online.features(tx).values()))
            self._observe(online, tx, key)
        return out

    def _observe(self, online: OnlineFeatureStore, tx: dict[str, Any], key: str) -> None:
        if key in self._seen:
            return
        online.observe(tx)
        self._seen.add(key)
        self._observed.append(tx)
        while len(self._observed) > self.max_observed:
            oldest = self._observed.popleft()
            self._seen.discard(identity(oldest))
            first = online.first_hour  # an older one was never replayed into this state
            if first is None or tx_time_ns(oldest["tx_datetime"]) // HOUR_NS >= first:
                online.forget(oldest)
            self.forgotten += 1

    def _vectorised(
        self,
        online: OnlineFeatureStore,
        rows: online_batch.Rows,
        keys: list[str],
        fresh: np.ndarray,
    ) -> np.ndarray:
        """:meth:`_one_by_one` as arrays (``keys``: the rows' identities, ``fresh``: which are
        first sights, :meth:`_fresh`). What the arrays do not model goes row by row: a
        transaction older than the state (TooOld at its row, as before) and an overlay that
        would overflow ``max_observed`` within the batch (forgetting between rows)."""
        seen = self._seen
        first = online.first_hour
        too_old = first is not None and int(rows.t.min()) // HOUR_NS < first
        if too_old or len(self._observed) + int(fresh.sum()) > self.max_observed:
            return np.array(self._one_by_one(online, rows.dicts(), keys), dtype=np.float64)
        if self._arrays is None or self._arrays.online is not online:
            self._arrays = online_batch.StoreArrays(online)
        entities = online_batch.Entities.of(rows.cids, rows.tids)
        inputs = online_batch.gather(self._arrays, rows, entities, fresh)
        if (
            online_batch.pair_count(inputs.cu, inputs.fresh, inputs.c_obs_n)
            > (online_batch.MAX_PAIRS)
            and len(rows) >= 2 * VECTOR_MIN_ROWS
        ):  # a few hot cards: halves, in order
            half = len(rows) // 2
            return np.vstack(
                (
                    self._vectorised(online, rows.part(0, half), keys[:half], fresh[:half]),
                    self._vectorised(online, rows.part(half, len(rows)), keys[half:], fresh[half:]),
                )
            )
        matrix = online_batch.features(inputs)
        at = np.flatnonzero(fresh)
        online_batch.observe(online, rows, at)
        fresh_at = at.tolist()
        seen.update(keys[i] for i in fresh_at)
        self._observed.extend(rows.dicts(fresh_at))
        return matrix

    def close(self) -> None:
        """Nothing to release (the Redis store closes its connections)."""

    async def aclose(self) -> None:
        """Nothing to release (the Redis store closes its asyncio client here)."""


@dataclass(frozen=True)
class Slot:
    """One deployed version in one role, ready to predict."""

    role: str
    version: int
    package_sha256: str
    threshold: float
    features: tuple[str, ...]
    booster: Any = field(repr=False)
    loaded_at: float = field(default_factory=time.time)
    # derived from the booster (a slot copied with another booster gets its own)
    one_row: OneRowPredictor | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "one_row", one_row_predictor(self.booster, len(self.features)))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if self.one_row is not None and matrix.shape[0] == 1:
            scores = self.one_row.predict(matrix)
            if scores is not None:
                return scores
        return self.booster.predict(matrix, num_threads=1)


def load_slot(package: Package, role: str) -> Slot:
    """A slot from a verified package: the feature code must be the service's own (otherwise its
    features would not be what the model was trained on), then a warm-up prediction."""
    import lightgbm as lgb

    spec = package.spec
    if spec["feature_code_hash"] != feature_code_hash():
        raise ValueError(
            f"v{package.version} was trained on feature code {spec['feature_code_hash'][:12]}, "
            f"this service computes {feature_code_hash()[:12]}: deploy a matching service"
        )
    booster = lgb.Booster(model_str=package.model_text)
    names = tuple(booster.feature_name())
    if list(names) != spec["features"]:
        raise ValueError(f"v{package.version}: model features differ from its feature spec")
    booster.predict(np.zeros((WARMUP_ROWS, len(names))), num_threads=1)  # warm caches and pages
    return Slot(
        role=role,
        version=package.version,
        package_sha256=package.sha256,
        threshold=float(spec["decision_threshold"]),
        features=names,
        booster=booster,
    )


@dataclass(frozen=True)
class Deployment:
    """What serves right now; replaced as a whole, never mutated."""

    production: Slot | None = None
    canary: Slot | None = None
    shadow: Slot | None = None
    canary_share: float = 0.0
    revision: int = 0

    def versions(self) -> dict[str, int]:
        return {
            role: slot.version
            for role in ("production", "canary", "shadow")
            if (slot := getattr(self, role)) is not None
        }


def bucket(customer_id: str, salt: int) -> float:
    """A stable position in [0, 1) for a customer: the same card always lands on the same side
    of the canary split, on every replica and across restarts (salted by the canary version so
    each rollout exposes a different set of customers)."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def feature_hash(values: list[float]) -> str:
    """Short hash of the exact feature values a decision used (audits, skew checks)."""
    return hashlib.blake2b(
        np.asarray(values, dtype=np.float64).tobytes(), digest_size=8
    ).hexdigest()
