"""The scoring service's HTTP API (FastAPI).

``POST /v1/score`` and ``POST /v1/score/batch`` answer with a score, a decision, the model version
and a request id. Features come from the online feature store; each scored transaction is then
observed, so the next transaction of the same card sees it in its velocity windows.

A valid single transaction skips FastAPI's routing and dependency layers
(:mod:`fraudloop.serving.fast_path`; anything else is FastAPI's) and is scored on the event loop
thread: it is CPU work of tens of microseconds,
and running it inline keeps the order of observations equal to the order of requests (what the
batch feature definition assumes). A batch (up to 10,000 rows) is scored in one worker
thread, one batch at a time, from its raw JSON to the JSON answer (parsing, validation and
encoding cost as much as the scoring), as columns: its online features as one matrix
(:mod:`fraudloop.features.online_batch`: what its rows one by one in time order give), one model
call per role, answers, prediction-log rows and metrics a column at a time (the metrics updated
once per request). Single requests keep being answered meanwhile (the
service shortens Python's GIL switch interval for that: ``FRAUDLOOP_SERVE_GIL_SWITCH_MS``).
Everything that is not the answer runs elsewhere: shadow and control scoring in the off-path
worker, the prediction log's spool writer and flush, the registry polling and every store call
in threads.

The answer is sent once its decision is fsync'd to the prediction-log spool (group commit,
``FRAUDLOOP_SERVE_SPOOL_SYNC``), so a crash after an answer loses no logged decision.

Failure behaviour: a body over the limit is 413, a body that does not arrive in time 408, an
invalid field 422 naming it (pydantic's ``loc``), a transaction older than the loaded feature
state or later than now + the clock skew 422 on ``tx_datetime``, more scoring requests in
progress than allowed 503 with ``Retry-After``, no verified model (or no online features) 503
with ``Retry-After``; a failing canary falls
back to production (counted), never a 500; an online store (Redis) that does not answer within
its timeout 503 with ``Retry-After``. With ``FRAUDLOOP_SCORE_TOKEN`` set, scoring needs
that bearer token (401 otherwise): scoring writes the online features other cards' decisions
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.store import ObjectStore
from fraudloop.delivery import rollout
from fraudloop.delivery.contract import BatchRequest, BatchResponse, Score, Transaction
from fraudloop.delivery.prediction_log import Block, PredictionLog, Pseudonyms
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.online import NotLoaded, TooOld
from fraudloop.features.online_batch import Rows
from fraudloop.serving import batch_body
from fraudloop.serving.config import ServeConfig
from fraudloop.serving.fast_path import FastScore
from fraudloop.serving.follower import Follower
from fraudloop.serving.guards import BodyDeadline, InFlightLimit, bearer_matches, send_json
from fraudloop.serving.live import Deployment, Slot, bucket, feature_hash
from fraudloop.serving.prometheus import ServiceMetrics, observe_many
from fraudloop.serving.shared_features import OnlineStoreUnavailable
from fraudloop.serving.spool import claim_spool

log = logging.getLogger(__name__)
#: pseudonym key when FRAUDLOOP_LOG_PSEUDONYM_KEY is unset: public, so no protection (demo only)
DEMO_PSEUDONYM_KEY = b"fraudloop-demo-not-a-secret"
#: pseudonyms remembered (card and terminal ids), then forgotten all at once
PSEUDONYM_MEMO = 500_000
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


class BodyLimit:
    """413 for bodies over ``limit`` bytes, by Content-Length or while streaming (chunked)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await send_json(send, 413, {"detail": self._message(int(value))})
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message(received))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.limit} bytes"


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json")


class OffPath:
    """Shadow and control scoring off the response path: a bounded queue and one thread.

    A full queue drops the job (counted) rather than slow down answers; :meth:`close` drains
    what is queued, so a graceful shutdown logs every shadow decision that was accepted.
    """

    _STOP = object()

    def __init__(self, predlog: PredictionLog | None, metrics: ServiceMetrics, size: int):
        self.predlog = predlog
        self.metrics = metrics
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.failures = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="off-path", daemon=True)
        self._thread.start()

    def submit(self, job: tuple) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.metrics.shadow_dropped.inc()

    def _run(self) -> None:
        while (job := self.queue.get()) is not self._STOP:
            try:
                self._score(*job)
            except Exception as error:
                self.failures += 1
                if self.failures % 1000 == 1:  # the metric counts each; the log samples
                    log.warning(
                        "off-path %s scoring failed (%d so far): %s", job[0], self.failures, error
                    )
                self.metrics.errors.labels(str(job[1].version), job[0]).inc()
            finally:
                self.queue.task_done()

    @property
    def idle(self) -> bool:
        """Nothing queued or being scored (tests and shutdown wait for it)."""
        return self.queue.unfinished_tasks == 0

    def _score(self, role: str, slot: Slot, block: Block, matrix: np.ndarray) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        x = slot_matrix(slot, matrix)
        scores = slot.predict(x)
        per_row_ms = (time.perf_counter() - started) * 1000 / max(block.n, 1)
        cpu_ms = (time.thread_time() - cpu) * 1000 / max(block.n, 1)
        self.metrics.predictions.labels(str(slot.version), role).inc(block.n)
        out = block._replace(
            model_version=slot.version,
            role=role,
            score=scores.tolist(),
            decision=["review" if s >= slot.threshold else "approve" for s in scores.tolist()],
            threshold=slot.threshold,
            latency_ms=per_row_ms,
            cpu_ms=cpu_ms,
            feature_hash=row_hashes(x),
            status="ok",
        )
        if self.predlog is not None:
            self.predlog.extend(out)

    def close(self) -> None:
        if self._thread is not None:
            self.queue.put(self._STOP)  # after everything already queued
            self._thread.join(timeout=60)
            self._thread = None


#: the OpenAPI security scheme of the protected endpoints (so clients and fuzzers see which
#: need a token); the header itself is checked by guards.bearer_token, stricter than HTTPBearer
BearerDeclared = Annotated[
    HTTPAuthorizationCredentials | None,
    Security(HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")),
]


class _Begun(NamedTuple):
    """A scoring request past its checks: what it is served with, its id and clocks."""

    dep: Deployment
    request_id: str
    started: float  # perf_counter
    cpu: float  # thread_time
    served_ns: int


class Decisions(NamedTuple):
    """A request's answers as columns (input order); ``thresholds``, ``versions``, ``roles`` and
    ``fallback`` are lists, or one value for every row (production answered all)."""

    request_id: str
    transaction_ids: list[str]
    scores: list[float]
    decisions: list[str]
    thresholds: list[float] | float
    versions: list[int] | int
    roles: list[str] | str
    fallback: list[bool] | bool

    def _columns(self) -> list[list]:
        n = len(self.transaction_ids)
        shared = (self.thresholds, self.versions, self.roles, self.fallback)
        return [v if isinstance(v, list) else [v] * n for v in shared]

    def dicts(self) -> list[dict[str, Any]]:
        return [
            {
                "request_id": self.request_id,
                "transaction_id": tid,
                "score": score,
                "decision": decision,
                "threshold": threshold,
                "model_version": version,
                "role": role,
                "fallback": fallback,
            }
            for tid, score, decision, threshold, version, role, fallback in zip(
                self.transaction_ids, self.scores, self.decisions, *self._columns(), strict=True
            )
        ]

    def json(self) -> bytes:
        """``{"request_id": ..., "scores": [...]}`` as ``json.dumps`` writes it, by string
        formatting (ids are ``[A-Za-z0-9._:-]`` by the contract: nothing to escape; anything
        else goes through ``json.dumps``). Values every row shares are formatted once."""
        rid = self.request_id
        ids = self.transaction_ids
        if not _plain_ids(ids):
            return json.dumps({"request_id": rid, "scores": self.dicts()}).encode()
        head = '{"request_id": "' + rid + '", "transaction_id": "%s", "score": %s, "decision": "'
        scores = float_texts(self.scores)
        if any(isinstance(v, list) for v in (self.thresholds, self.versions, self.roles)) or (
            self.fallback is not False
        ):
            row = head + (
                '%s", "threshold": %r, "model_version": %d, "role": "%s", "fallback": %s}'
            )
            thresholds, versions, roles, fallback = self._columns()
            flags = ["true" if f else "false" for f in fallback]
            values = zip(
                ids, scores, self.decisions, thresholds, versions, roles, flags, strict=True
            )
            body = ", ".join([row % v for v in values])
        else:  # one threshold, version and role: two templates, by decision
            tail = (
                f'", "threshold": {self.thresholds!r}, "model_version": {int(self.versions)}, '
                f'"role": "{self.roles}", "fallback": false}}'
            )
            by = {d: head + d.replace("%", "%%") + tail for d in ("approve", "review")}
            body = ", ".join(
                [by[d] % (i, s) for i, s, d in zip(ids, scores, self.decisions, strict=True)]
            )
        return ('{"request_id": "' + rid + '", "scores": [' + body + "]}").encode()


def _in_time_order(rows: Rows) -> bool:
    """Already in (time, id) order (the usual batch): nothing to sort."""
    steps = np.diff(rows.t)
    if (steps < 0).any():
        return False
    ids = rows.ids
    return all(ids[i] <= ids[i + 1] for i in np.flatnonzero(steps == 0).tolist())


def float_texts(values: list[float]) -> list[str]:
    """``repr`` of each float (what ``json.dumps`` writes), from msgspec's encoder (~15x
    faster): its text equals ``repr`` for 0 and for magnitudes in [1e-4, 1] (checked on
    millions of values), where neither uses an exponent; the rest (a score under 1e-4) go
    through ``repr``."""
    texts = msgspec.json.encode(values)[1:-1].decode().split(",") if values else []
    a = np.abs(np.asarray(values, dtype=np.float64))
    for i in np.flatnonzero(((a < 1e-4) & (a != 0)) | (a > 1)).tolist():
        texts[i] = repr(values[i])
    return texts


def _plain_ids(ids: list[str]) -> bool:
    """No id needs escaping in JSON (printable ASCII, no quote or backslash)."""
    joined = "".join(ids)
    return joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined


def slot_matrix(slot: Slot, matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (columns ``FEATURE_NAMES``) with the slot's model's columns, C-contiguous."""
    if slot.features == FEATURE_NAMES:
        return np.ascontiguousarray(matrix)
    return np.ascontiguousarray(matrix[:, [FEATURE_INDEX[name] for name in slot.features]])


def row_hashes(x: np.ndarray) -> list[str]:
    """:func:`~fraudloop.serving.live.feature_hash` of each row of a float64 matrix."""
    data = np.ascontiguousarray(x, dtype=np.float64)
    width = data.shape[1] * 8
    if not width:
        return [feature_hash([])] * len(data)
    raw, blake = memoryview(data.tobytes()), hashlib.blake2b
    return [blake(raw[k : k + width], digest_size=8).hexdigest() for k in range(0, len(raw), width)]


class TrafficChange(BaseModel):
    canary_share: float = Field(ge=0, le=1, description="Share of customers for the canary.")
    reason: str = Field(min_length=1, max_length=500)


class ScoringService:
    """The app's state: follower, logs, metrics, and the scoring path itself."""

    def __init__(self, store: ObjectStore, config: ServeConfig):
        self.store = store
        self.config = config
        self.metrics = ServiceMetrics()
        self.follower = Follower(store, config, self.metrics)
        self.pseudonym = Pseudonyms((config.log_pseudonym_key or "").encode() or DEMO_PSEUDONYM_KEY)
        self._pseudonym_memo: dict[str, str] = {}
        self.predlog: PredictionLog | None = None
        self.offpath = OffPath(None, self.metrics, config.shadow_queue)
        #: batches are scored here, one at a time, off the event loop
        self.batch_worker = ThreadPoolExecutor(1, thread_name_prefix="batch-scoring")
        #: the online features are in Redis: a single request awaits its script call
        #: (:meth:`decide_one`), which on the event loop would hold every other request
        #: (health, metrics, the next transactions) for its round trip, or its timeout
        self.awaits_features = config.online_store == "redis"
        self.started_at = time.time()

    def _open_log(self) -> PredictionLog | None:
        if not self.config.log_predictions:
            return None
        if not self.config.log_pseudonym_key:
            log.warning(
                "FRAUDLOOP_LOG_PSEUDONYM_KEY is unset: card and terminal ids in the prediction "
                "log are hashed with a public demo key (no protection); set it in production"
            )
        spool = None
        if (self.config.spool_dir or "").lower() != "off":
            spool = claim_spool(
                self.config.spool_dir or default_spool_dir(self.store, self.config.model_name),
                self.config.instance,
                commit_seconds=self.config.spool_commit_ms / 1000,
            )
        return PredictionLog(
            self.store,
            self.config.instance,
            flush_rows=self.config.flush_rows,
            flush_seconds=self.config.flush_seconds,
            spool=spool,
            retention_hours=self.config.log_retention_hours,
        )

    # ---- lifecycle
    def start(self) -> None:
        self.predlog = self.offpath.predlog = self._open_log()
        try:
            self.follower.sync()
        except Exception as error:
            log.error("initial deployment sync failed (retrying in the background): %s", error)
        # What start-up made (the imports: fastapi, pydantic, lightgbm, pandas; the models) is
        # ~160,000 objects that live as long as the process: frozen, the cyclic GC's full
        # collections stop walking them, each a ~100 ms pause of the event loop otherwise (the
        # 60-220 ms tail of a Redis replica at 500 req/s; the in-process store freezes its own
        # state when it loads it).
        gc.collect()
        gc.freeze()
        self.follower.start()
        self.offpath.start()
        if self.predlog is not None:
            self.predlog.start()

    def stop(self) -> None:
        self.follower.stop()
        self.batch_worker.shutdown(wait=True)
        self.offpath.close()
        if self.predlog is not None:
            written = self.predlog.close()
            log.info("prediction log flushed %d rows at shutdown", written)

    # ---- scoring
    def score(self, txs: list[Transaction]) -> tuple[str, list[dict[str, Any]], Future | None]:
        """Score transactions in time order; returns (request id, answers in input order, the
        future of their spool commit or None)."""
        decided, logged = self.decide(txs)
        return decided.request_id, decided.dicts(), logged

    def decide(self, txs: list[Transaction]) -> tuple[Decisions, Future | None]:
        """The decisions of ``txs`` (validated models: single requests)."""
        return self.decide_rows(batch_body.of_transactions(txs))

    def decide_rows(self, rows: Rows) -> tuple[Decisions, Future | None]:
        """The decisions of ``rows`` as columns (a batch is answered without an object per
        row), logged, counted in the metrics once per request; and the future of their spool
        commit."""
        begun = self._begin(rows)
        n = len(rows)
        features = self.follower.features
        with self._feature_errors(n):
            if n > 1 and not _in_time_order(rows):  # scored in time order (ties by id),
                order = np.lexsort((np.array(rows.ids), rows.t))  # answered in input order
                matrix = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
                matrix[order] = features.features_and_observe_matrix(rows.take(order))
            else:
                matrix = features.features_and_observe_matrix(rows)
        return self._conclude(begun, rows, matrix, 0.0, begun.cpu)

    async def decide_one(self, tx: Transaction) -> tuple[Decisions, Future | None]:
        """:meth:`decide` of one transaction whose features are in Redis: the script call is
        awaited, the rest runs as in :meth:`decide_rows` (its CPU time counts this request's
        own, not what the loop ran meanwhile)."""
        rows = batch_body.of_transactions([tx])
        begun = self._begin(rows)
        cpu_before = time.thread_time() - begun.cpu
        with self._feature_errors(1):
            matrix = await self.follower.features.features_and_observe_one(rows.dicts()[0])
        return self._conclude(begun, rows, matrix, cpu_before, time.thread_time())

    def _begin(self, rows: Rows) -> _Begun:
        """Checks before any feature is read (503 not ready, 422 times), the request's id and
        clocks."""
        dep = self.follower.deployment
        if dep.production is None or not self.follower.features.ready:
            raise HTTPException(
                503,
                "not ready: no verified model or online features loaded",
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            )
        begun = _Begun(
            dep, uuid.uuid4().hex, time.perf_counter(), time.thread_time(), time.time_ns()
        )
        self._check_times(rows.t)
        return begun

    def _conclude(
        self, begun: _Begun, rows: Rows, matrix: np.ndarray, cpu_before: float, cpu_from: float
    ) -> tuple[Decisions, Future | None]:
        """Route, predict and answer; ``cpu_before`` s of this request's CPU were spent before
        ``cpu_from`` (the thread time this part started at)."""
        n = len(rows)
        canary = self._route(begun.dep, rows.cids)
        scores, fallback = self._predict(begun.dep, canary, matrix)
        elapsed_ms = (time.perf_counter() - begun.started) * 1000 / n
        cpu_ms = (cpu_before + time.thread_time() - cpu_from) * 1000 / n
        return self._answer(
            begun.dep,
            begun.request_id,
            begun.served_ns,
            rows,
            matrix,
            canary,
            scores,
            fallback,
            (elapsed_ms, cpu_ms),
        )

    def score_batch_body(self, body: bytes) -> tuple[bytes, Future | None]:
        """A batch from its raw JSON to the JSON answer, all in the calling (worker) thread:
        on the event loop, parsing and encoding 10,000 rows would hold every single request
        meanwhile. The body goes straight into columns (:mod:`fraudloop.serving.batch_body`);
        invalid input is the same 422 FastAPI gives (``loc`` starts with ``body``)."""
        decided, logged = self.decide_rows(batch_body.parse(body))
        return decided.json(), logged

    async def answered(self, logged: Future | None) -> None:
        """Wait for the decisions' spool commit when answers must not outrun the log."""
        if logged is not None and self.config.spool_sync:
            try:
                await asyncio.wrap_future(logged)
            except Exception as error:  # a full or failing disk: no answer without its record
                raise HTTPException(
                    503, f"the decision could not be logged (prediction-log spool): {error}"
                ) from None

    @contextlib.contextmanager
    def _feature_errors(self, n: int) -> Iterator[None]:
        """The online store's errors as answers, around reading the features of ``n``
        transactions in time order (each observed before the next; the store may be shared:
        another replica may have moved on meanwhile)."""
        try:
            yield
        except TooOld as error:
            loc = ["body", "tx_datetime"] if n == 1 else ["body", "transactions"]
            detail = [{"loc": loc, "msg": str(error), "type": "value_error"}]
            raise HTTPException(422, detail) from None
        except (OnlineStoreUnavailable, NotLoaded) as error:
            raise HTTPException(
                503,
                f"online features unavailable: {error}",
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            ) from None

    def _check_times(self, times: np.ndarray) -> None:
        """422 on ``tx_datetime`` for a transaction the online state cannot take: older than the
        loaded state, or later than now + the allowed clock skew (it would be logged under a
        future hour and sit in every card's velocity windows and the overlay until then)."""
        first = self.follower.features.first_hour
        latest = time.time_ns() + int(self.config.max_clock_skew_seconds * 1e9)
        # without a state, only a time below int64 (clipped to its minimum) is too old
        oldest = -(2**63) + 1 if first is None else first * HOUR_NS  # the first hour's start
        lo, hi = (int(times[0]),) * 2 if len(times) == 1 else (int(times.min()), int(times.max()))
        if lo >= oldest and hi <= latest:
            return
        i = int(np.argmax((times < oldest) | (times > latest)))
        if times[i] < oldest:
            msg = (
                "transaction is older than the online feature state (state hour "
                f"{self.follower.features.state_hour}); score it in batch with "
                "`fraudloop score` instead"
            )
        else:
            msg = (
                "transaction is dated in the future (more than "
                f"{self.config.max_clock_skew_seconds:g} s after the service's clock)"
            )
        loc = ["body", "tx_datetime"]
        if len(times) > 1:
            loc = ["body", "transactions", i, "tx_datetime"]
        raise HTTPException(422, [{"loc": loc, "msg": msg, "type": "value_error"}])

    @staticmethod
    def _route(dep: Deployment, cids: list[str]) -> np.ndarray:
        """Which rows the canary answers (the same split on every replica)."""
        if dep.canary is None or dep.canary_share <= 0:
            return np.zeros(len(cids), dtype=bool)
        salt, share = dep.canary.version, dep.canary_share
        return np.array([bucket(c, salt) < share for c in cids], dtype=bool)

    def _predict(
        self, dep: Deployment, canary: np.ndarray, matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores, and which canary rows fell back to production (the canary failed)."""
        scores = np.zeros(len(canary), dtype=np.float64)
        fallback = np.zeros(len(canary), dtype=bool)
        if dep.canary is None or not canary.any():  # production answers all: no split
            parts = [("production", np.arange(len(canary)))]
        else:
            parts = [("canary", np.flatnonzero(canary)), ("production", np.flatnonzero(~canary))]
        for role, idx in parts:
            if not len(idx):
                continue
            slot = dep.canary if role == "canary" else dep.production
            part = matrix if len(idx) == len(canary) else matrix[idx]
            try:
                result = self._run_model(slot, part)
            except Exception as error:
                self.metrics.errors.labels(str(slot.version), role).inc()
                if role == "production":
                    log.error("production v%s failed: %s", slot.version, error)
                    raise HTTPException(503, f"model v{slot.version} failed: {error}") from None
                log.warning("canary v%s failed, production answers: %s", slot.version, error)
                self.metrics.fallbacks.labels(str(slot.version)).inc(len(idx))
                result = self._run_model(dep.production, part)
                fallback[idx] = True
            scores[idx] = result
        return scores, fallback

    @staticmethod
    def _run_model(slot: Slot, matrix: np.ndarray) -> np.ndarray:
        out = slot.predict(slot_matrix(slot, matrix))
        if out.shape != (len(matrix),) or not np.isfinite(out).all():
            raise ValueError(f"model v{slot.version} returned invalid scores")
        return out

    def _pseudonyms(self, ids: list[str]) -> list[str]:
        """Keyed-hash pseudonyms, memoised (a card recurs across requests; one HMAC each)."""
        memo = self._pseudonym_memo
        if len(memo) > PSEUDONYM_MEMO:
            memo.clear()
        out = []
        for value in ids:
            p = memo.get(value)
            if p is None:
                p = memo[value] = self.pseudonym(value)
            out.append(p)
        return out

    def _answer(
        self, dep, request_id, served_ns, rows: Rows, matrix, canary, scores, fallback, cost
    ) -> tuple[Decisions, Future | None]:
        """Answers, the prediction-log block and metrics, a column at a time; a value every row
        shares (the usual case: production answers all) stays one value."""
        ms, cpu_ms = cost
        n = len(rows)
        prod, c = dep.production, dep.canary
        score_list = scores.tolist()
        routed = canary.tolist()  # plain lists: a single request pays no numpy call per step
        fell_list = fallback.tolist()
        threshold: Any
        version: Any
        logged_version: Any
        answered_role: Any
        route: Any
        if c is None or not any(routed):  # production answers all (the usual case)
            threshold = prod.threshold
            version = logged_version = prod.version
            answered_role = route = "production"
            decisions = ["review" if s >= threshold else "approve" for s in score_list]
            hashes = row_hashes(slot_matrix(prod, matrix))
        else:
            by = [r and not f for r, f in zip(routed, fell_list, strict=True)]
            threshold = [c.threshold if b else prod.threshold for b in by]
            version = [c.version if b else prod.version for b in by]
            logged_version = [c.version if r else prod.version for r in routed]
            answered_role = ["canary" if b else "production" for b in by]
            route = ["canary" if r else "production" for r in routed]
            pairs = zip(score_list, threshold, strict=True)
            decisions = ["review" if s >= t else "approve" for s, t in pairs]
            hashes = [""] * n
            by_canary = np.array(by, dtype=bool)
            for slot, which in ((c, by_canary), (prod, ~by_canary)):
                idx = np.flatnonzero(which)
                hashed = row_hashes(slot_matrix(slot, matrix[idx])) if len(idx) else []
                for i, h in zip(idx.tolist(), hashed, strict=True):
                    hashes[i] = h
        fell: Any = fell_list if any(fell_list) else False
        status: Any = ["fallback" if f else "ok" for f in fell_list] if fell else "ok"
        block = Block(
            n,
            request_id,
            rows.ids,
            self._pseudonyms(rows.cids),
            self._pseudonyms(rows.tids),
            rows.t.tolist(),
            rows.amounts,
            served_ns,
            logged_version,
            route,
            score_list,
            decisions,
            threshold,
            ms,
            cpu_ms,
            hashes,
            status,
        )
        m = self.metrics
        n_canary = routed.count(True) if c is not None else 0
        for role, slot, count in (("canary", c, n_canary), ("production", prod, n - n_canary)):
            if not count:
                continue
            version_label = str(slot.version)
            m.predictions.labels(version_label, role).inc(count)
            observe_many(m.latency.labels(version_label, role), ms / 1000, count)
            if count == n:
                flagged = decisions.count("review")
            else:
                mine = role == "canary"
                flagged = sum(
                    1 for r, d in zip(routed, decisions, strict=True) if r == mine and d == "review"
                )
            if flagged:
                m.flagged.labels(version_label, role).inc(flagged)
        logged = self.predlog.extend(block) if self.predlog is not None else None
        if n_canary:
            idx = np.flatnonzero(canary)
            self.offpath.submit(("control", prod, block.take(idx.tolist()), matrix[idx]))
        if dep.shadow is not None:
            self.offpath.submit(("shadow", dep.shadow, block, matrix))
        decided = Decisions(
            request_id, rows.ids, score_list, decisions, threshold, version, answered_role, fell
        )
        return decided, logged

    # ---- status
    def status(self) -> dict[str, Any]:
        dep = self.follower.deployment
        return {
            "ready": self.follower.ready,
            "model": self.config.model_name,
            "deployment": dep.versions(),
            "canary_share": dep.canary_share,
            "revision": dep.revision,
            "packages": {
                role: slot.package_sha256
                for role in ("production", "canary", "shadow")
                if (slot := getattr(dep, role)) is not None
            },
            "features_state_hour": self.follower.features.state_hour,
            "errors": dict(self.follower.errors),
            "last_sync_seconds_ago": None
            if (age := self.follower.sync_age) is None
            else round(age, 1),
            "observed_transactions": self.follower.features.observed,
            "instance": self.config.instance,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }


def create_app(store: ObjectStore, config: ServeConfig) -> FastAPI:
    service = ScoringService(store, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()
            await service.follower.features.aclose()  # on the loop its connections belong to

    app = FastAPI(
        title="fraudloop scoring service",
        version="1",
        description="Scores card transactions with the model versions the registry deploys.",
        lifespan=lifespan,
        # looked up per request otherwise, even with no provider configured (the Prometheus
        # metrics and the prediction log are the service's own record)
        telemetry=None if config.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service

    def check_bearer(request: Request, token: str) -> None:
        if not bearer_matches(request.headers.get("authorization"), token):
            raise HTTPException(
                401,
                "missing or invalid bearer token in the Authorization header",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def admin(request: Request, _: BearerDeclared) -> None:
        if not config.admin_token:
            raise HTTPException(403, "admin endpoints are disabled: set FRAUDLOOP_ADMIN_TOKEN")
        check_bearer(request, config.admin_token)

    def scorer(request: Request, _: BearerDeclared) -> None:
        check_bearer(request, config.score_token)

    # open scoring (no FRAUDLOOP_SCORE_TOKEN) declares no security, so the document says which
    scoring_auth = [Depends(scorer)] if config.score_token else []

    @app.exception_handler(StarletteHTTPException)
    async def unparseable_body(request: Request, error: StarletteHTTPException) -> Response:
        """FastAPI answers a JSON body it cannot even decode (not UTF-8, nested past Python's
        recursion limit) with a bare 400; it is a 422 on ``body`` like any other bad JSON."""
        cause = error.__cause__
        if error.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):
            message = f"the body is not JSON: {type(cause).__name__}"
            problem = {"loc": ["body"], "msg": message, "type": "json_invalid"}
            return _json({"detail": [problem]}, 422)
        return await http_exception_handler(request, error)

    def count(endpoint: str, status: int) -> None:
        service.metrics.requests.labels(endpoint, str(status)).inc()

    @app.post(
        "/v1/score",
        response_model=Score,
        responses={401: {}, 408: {}, 413: {}, 422: {}, 503: {}},
        summary="Score one transaction",
        dependencies=scoring_auth,
    )
    async def score(tx: Transaction) -> Response:
        return Response(await score_one(tx), media_type="application/json")

    async def score_one(tx: Transaction) -> bytes:
        """The answer's JSON: the route's, and the fast path's (`FastScore`)."""
        try:
            if service.awaits_features:  # Redis: the script call is awaited
                decided, logged = await service.decide_one(tx)
                answers = decided.dicts()
            else:  # in process: nothing to wait for
                _, answers, logged = service.score([tx])
            await service.answered(logged)
        except HTTPException as error:
            count("score", error.status_code)
            raise
        count("score", 200)
        return json.dumps(answers[0]).encode()

    def may_score(headers: dict[bytes, bytes]) -> bool:
        if not config.score_token:
            return True
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        return bearer_matches(authorization, config.score_token)

    @app.post(
        "/v1/score/batch",
        response_model=BatchResponse,
        responses={401: {}, 408: {}, 413: {}, 422: {}, 503: {}},
        summary="Score up to 10,000 transactions (in time order)",
        dependencies=scoring_auth,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _batch_request_schema()}},
            }
        },
    )
    async def score_batch(request: Request) -> Response:
        body = await request.body()
        loop = asyncio.get_running_loop()
        try:
            payload, logged = await loop.run_in_executor(
                service.batch_worker, service.score_batch_body, body
            )
            await service.answered(logged)
        except HTTPException as error:
            count("batch", error.status_code)
            raise
        except RequestValidationError:
            count("batch", 422)
            raise
        count("batch", 200)
        return Response(payload, media_type="application/json")

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "ok", "instance": config.instance}

    @app.get(
        "/readyz",
        summary="Ready only with a verified model and online features",
        responses={503: {"description": "Not ready (the same status document)"}},
    )
    async def readyz() -> Response:
        status = service.status()
        return _json(status, 200 if status["ready"] else 503)

    @app.get("/v1/deployment", summary="Which versions serve, in which roles")
    async def deployment() -> dict:
        return service.status()

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        m = service.metrics
        if service.predlog is not None:
            m.log_buffered.set(service.predlog.buffered)
            m.log_written.set(service.predlog.rows_written)
            m.log_errors.set(service.predlog.write_errors)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    admin_errors = {
        401: {"description": "No or a wrong bearer token"},
        403: {"description": "Admin endpoints disabled (no FRAUDLOOP_ADMIN_TOKEN)"},
    }

    @app.post(
        "/admin/reload",
        dependencies=[Depends(admin)],
        responses=admin_errors,
        summary="Re-read aliases now",
    )
    async def reload() -> dict:
        await asyncio.to_thread(service.follower.sync)
        return service.status()

    @app.post(
        "/admin/traffic",
        dependencies=[Depends(admin)],
        responses={**admin_errors, 409: {"description": "No rollout to change"}},
        summary="Set the canary's traffic share (pauses the rollout controller)",
    )
    async def traffic(change: TrafficChange) -> dict:
        try:
            await asyncio.to_thread(
                rollout.set_share,
                store,
                config.model_name,
                change.canary_share,
                actor=f"admin@{config.instance}",
                reason=change.reason,
            )
        except rollout.RolloutError as error:
            raise HTTPException(409, str(error)) from None
        await asyncio.to_thread(service.follower.sync)
        return service.status()

    # innermost: the guards below run first for the fast path as for every request
    app.add_middleware(
        FastScore, path="/v1/score", model=Transaction, answer=score_one, authorized=may_score
    )
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=config.body_timeout_seconds)
    app.add_middleware(
        InFlightLimit,
        limit=config.max_in_flight,
        retry_after=config.retry_after_seconds,
        paths=("/v1/score",),
        gauge=service.metrics.in_flight,
    )
    return app


def _batch_request_schema() -> dict:
    """The batch body's schema for the OpenAPI document. The body is parsed in the batch worker
    (``score_batch_body``), so FastAPI never sees the model; its items refer to ``Transaction``
    in the document's components (which ``/v1/score`` puts there), not to a ``$defs`` of its
    own that a ``$ref`` from inside the document could not reach."""
    schema = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def default_spool_dir(store: ObjectStore, model_name: str) -> Path:
    """One spool root per (store, model) under the system temp dir: a restarted process finds
    what its killed predecessor spooled (in its slot: :func:`claim_spool`)."""
    place = json.dumps([store.location(), model_name], sort_keys=True, default=str)
    where = hashlib.blake2b(place.encode(), digest_size=8).hexdigest()
    return Path(tempfile.gettempdir()) / "fraudloop-spool" / where
