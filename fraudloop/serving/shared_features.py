"""The service's online features in Redis (``FRAUDLOOP_ONLINE_STORE=redis``), shared by replicas.

Same interface as the in-process :class:`~fraudloop.serving.live.LiveFeatures` (``ready``,
``state_hour``, ``first_hour``, ``observed``, ``refresh``, ``features_and_observe_many``,
``features_and_observe_matrix``), on
:class:`~fraudloop.features.redis_store.RedisOnlineStore`: every replica reads and updates the
same aggregates, so any replica computes the same features for a card.

``refresh`` (the follower's poll) reads the served version from Redis, and when the published
state is not the one Redis serves, loads it (one replica at a time; the others keep serving the
old version until the switch). Redis calls have short timeouts (a broken connection is retried once,
a timeout never); a replica whose last Redis call failed is not ready (``/readyz`` 503, so a
balancer takes it out) and scoring answers 503 at once, without calling Redis, until the next
poll reaches it again. No call blocks the event loop: a single request's script call is
awaited on an asyncio client (the loop serves other requests during the round trip), batches
call Redis from the service's batch worker, the poll from the follower's thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from fraudloop.core.store import ObjectStore, load_pointer
from fraudloop.features.feature_store import load_online
from fraudloop.features.redis_store import RedisOnlineStore, namespace
from fraudloop.features.retries import DEFAULT_SECONDS

log = logging.getLogger(__name__)
#: loading a state writes big pipelines: its calls get this much time at least
LOAD_TIMEOUT_SECONDS = 30.0


class OnlineStoreUnavailable(RuntimeError):
    """Redis did not answer in time (the request gets 503; the replica is not ready)."""


def redis_client(url: str, timeout: float, asynchronous: bool = False):
    """A client with ``timeout`` s connect/read timeouts and one immediate retry on a broken
    connection only (a pooled connection a Redis restart closed is replaced once); a timeout is
    not retried: it would double the wait, and a script that did run would run twice.
    ``asynchronous``: a ``redis.asyncio`` client (its connections belong to the event loop that
    first uses them)."""
    import redis
    from redis.backoff import NoBackoff

    if asynchronous:
        import redis.asyncio
        from redis.asyncio.retry import Retry

        factory: Any = redis.asyncio.Redis
    else:
        from redis.retry import Retry

        factory = redis.Redis
    return factory.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=0,
    )


class RedisFeatures:
    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        url: str,
        timeout: float,
        max_observed: int = 2_000_000,
        retry_answer_seconds: float = DEFAULT_SECONDS,
    ):
        import redis

        self.store = store
        self.prefix = prefix
        self.url, self.timeout = url, timeout
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        #: an asyncio client and its scoring script, made on the event loop at its first
        #: single request (:meth:`features_and_observe_one`)
        self._async_client: Any = None
        self._async_score: Any = None
        self.shared = RedisOnlineStore(
            redis_client(url, timeout), namespace(prefix), max_observed, retry_answer_seconds
        )
        self._loader = RedisOnlineStore(
            redis_client(url, max(timeout, LOAD_TIMEOUT_SECONDS)), namespace(prefix), max_observed
        )
        self.current: dict[str, str] = {}
        self.healthy = False
        self.reloads = 0
        self._observed = 0
        self._lock = threading.Lock()

    # ---- the interface the service reads
    @property
    def ready(self) -> bool:
        return self.healthy and bool(self.current)

    @property
    def state_hour(self) -> str | None:
        return self.current.get("state_hour") or None

    @property
    def first_hour(self) -> int | None:
        value = self.current.get("first_hour")
        return int(value) if value else None

    @property
    def observed(self) -> int:
        """Transactions in the shared overlay (as of the last poll)."""
        return self._observed

    def refresh(self) -> bool:
        """Load the published state into Redis if Redis serves another one; True when the
        version this replica serves changed."""
        try:
            with self._lock:
                before = self.current.get("version")
                current = self.shared.current()
                pointer = load_pointer(self.store, self.prefix)
                if (
                    pointer is not None
                    and pointer.get("sha256") != current.get("sha256")
                    and current.get("state_hour", "") <= pointer.get("state_hour", "")
                ):
                    self._load()
                    current = self.shared.current()
                self.current = current
                self._observed = self.shared.observed()
                self.healthy = True
        except self._errors as error:
            self.healthy = False
            raise OnlineStoreUnavailable(f"Redis: {error}") from error
        changed = self.current.get("version") != before
        if changed:
            self.reloads += 1
            log.info("online features (Redis) now at state hour %s", self.state_hour)
        return changed

    def _load(self) -> None:
        online, pointer = load_online(self.store, self.prefix)  # verified, code hash checked
        outcome = self._loader.load(online, pointer)
        log.info("loading state %s into Redis: %s", pointer.get("state_hour"), outcome)

    def features_and_observe(self, tx: dict[str, Any]) -> dict[str, float]:
        return self.features_and_observe_many([tx])[0]

    def features_and_observe_matrix(self, txs: list[dict[str, Any]]) -> np.ndarray:
        """The (transactions x ``FEATURE_NAMES``) features of ``txs`` (time order), each
        observed before the next is read (a batch in few script calls, as arrays)."""
        if not self.healthy:  # fail fast (see features_and_observe_many)
            raise OnlineStoreUnavailable("Redis did not answer; retried by the next poll")
        try:
            return self.shared.features_and_observe_matrix(txs)
        except self._errors as error:
            self.healthy = False
            raise OnlineStoreUnavailable(f"Redis: {error}") from error

    def features_and_observe_many(self, txs: list[dict[str, Any]]) -> list[dict[str, float]]:
        if not self.healthy:  # fail fast: one timeout per poll period (the next refresh) is
            # all a hung Redis may cost, not one per request
            raise OnlineStoreUnavailable("Redis did not answer; retried by the next poll")
        try:
            return self.shared.features_and_observe(txs)
        except self._errors as error:
            self.healthy = False
            raise OnlineStoreUnavailable(f"Redis: {error}") from error

    async def features_and_observe_one(self, tx: dict[str, Any]) -> np.ndarray:
        """The (1 x ``FEATURE_NAMES``) features of one transaction, observed, its script call
        awaited (on the event loop that calls this; fails fast as the others)."""
        if not self.healthy:
            raise OnlineStoreUnavailable("Redis did not answer; retried by the next poll")
        if self._async_score is None:
            self._async_client = redis_client(self.url, self.timeout, asynchronous=True)
            self._async_score = self.shared.scoring_script(self._async_client)
        try:
            return await self.shared.features_and_observe_async(self._async_score, tx)
        except self._errors as error:
            self.healthy = False
            raise OnlineStoreUnavailable(f"Redis: {error}") from error

    async def aclose(self) -> None:
        """Close the asyncio client's connections (on the event loop that made them)."""
        client, self._async_client, self._async_score = self._async_client, None, None
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        self.shared.close()
        self.shared.client.close()
        self._loader.client.close()


def open_features(store: ObjectStore, config) -> Any:
    """The service's online features as ``config.online_store`` says."""
    from fraudloop.serving.live import LiveFeatures

    if config.online_store == "redis":
        return RedisFeatures(
            store,
            config.features_prefix,
            config.redis_url,
            config.redis_timeout_seconds,
            config.max_observed,
            config.retry_answer_seconds,
        )
    return LiveFeatures(
        store, config.features_prefix, config.max_observed, config.retry_answer_seconds
    )
