"""The scoring service's HTTP API (FastAPI).

``POST /v1/score`` and ``POST /v1/score/batch`` answer with a score, a decision, the model version
and a request id. Features come from the online feature store; each scored transaction is then
observed, so the next transaction of the same card sees it in its velocity windows.

A single transaction is scored on the event loop thread: it is CPU work of tens of microseconds,
and running it inline keeps the order of observations equal to the order of requests (what the
batch feature definition assumes). A batch (up to 10,000 rows, ~0.5 s) is scored in one worker
thread, one batch at a time, from its raw JSON to the JSON answer (parsing, validation and
encoding cost as much as the scoring), so single requests keep being answered meanwhile (the
service shortens Python's GIL switch interval for that: ``FRAUDLOOP_SERVE_GIL_SWITCH_MS``).
Everything that is not the answer runs elsewhere: shadow and control scoring in the off-path
worker, the prediction log's spool writer and flush, the registry polling and every store call
in threads.

The answer is sent once its decision is fsync'd to the prediction-log spool (group commit,
``FRAUDLOOP_SERVE_SPOOL_SYNC``), so a crash after an answer loses no logged decision.

Failure behaviour: a body over the limit is 413, a body that does not arrive in time 408, an
invalid field 422 naming it (pydantic's ``loc``), a transaction older than the loaded feature
state or later than now + the clock skew 422 on ``tx_datetime``, more scoring requests in
progress than allowed 503 with ``Retry-After``, no verified model 503; a failing canary falls
back to production (counted), never a 500; an online store (Redis) that does not answer within
its timeout 503 with ``Retry-After``. With ``FRAUDLOOP_SCORE_TOKEN`` set, scoring needs
that bearer token (401 otherwise): scoring writes the online features other cards' decisions
read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.store import ObjectStore
from fraudloop.delivery import rollout
from fraudloop.delivery.contract import BatchRequest, BatchResponse, Score, Transaction
from fraudloop.delivery.prediction_log import PredictionLog, Pseudonyms, Row
from fraudloop.features.online import NotLoaded, TooOld
from fraudloop.serving.config import ServeConfig
from fraudloop.serving.follower import Follower
from fraudloop.serving.guards import BodyDeadline, InFlightLimit, bearer_token, send_json
from fraudloop.serving.live import Deployment, Slot, bucket, feature_hash
from fraudloop.serving.prometheus import ServiceMetrics
from fraudloop.serving.shared_features import OnlineStoreUnavailable
from fraudloop.serving.spool import claim_spool

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: pseudonym key when FRAUDLOOP_LOG_PSEUDONYM_KEY is unset: public, so no protection (demo only)
DEMO_PSEUDONYM_KEY = b"fraudloop-demo-not-a-secret"


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


def _ns(value: datetime) -> int:
    return (value - _EPOCH) // _US * 1000


_US = datetime.resolution  # one microsecond


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

    def _score(self, role: str, slot: Slot, rows: list[tuple[Row, dict]]) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        matrix = np.array([[values[n] for n in slot.features] for _, values in rows])
        scores = slot.predict(matrix)
        per_row_ms = (time.perf_counter() - started) * 1000 / max(len(rows), 1)
        cpu_ms = (time.thread_time() - cpu) * 1000 / max(len(rows), 1)
        version = str(slot.version)
        self.metrics.predictions.labels(version, role).inc(len(rows))
        out = []
        for (base, values), score in zip(rows, scores.tolist(), strict=True):
            decision = "review" if score >= slot.threshold else "approve"
            out.append(
                base._replace(
                    model_version=slot.version,
                    role=role,
                    score=score,
                    decision=decision,
                    threshold=slot.threshold,
                    latency_ms=per_row_ms,
                    cpu_ms=cpu_ms,
                    feature_hash=feature_hash([values[n] for n in slot.features]),
                    status="ok",
                )
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
        self.predlog: PredictionLog | None = None
        self.offpath = OffPath(None, self.metrics, config.shadow_queue)
        #: batches are scored here, one at a time, off the event loop
        self.batch_worker = ThreadPoolExecutor(1, thread_name_prefix="batch-scoring")
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
        dep = self.follower.deployment
        if dep.production is None or not self.follower.features.ready:
            raise HTTPException(503, "not ready: no verified model or online features loaded")
        request_id = uuid.uuid4().hex
        started, cpu = time.perf_counter(), time.thread_time()
        served_ns = time.time_ns()
        records = [
            {
                "transaction_id": t.transaction_id,
                "tx_datetime": _ns(t.tx_datetime),
                "customer_id": t.customer_id,
                "terminal_id": t.terminal_id,
                "amount": t.amount,
            }
            for t in txs
        ]
        self._check_times(records)
        order = (
            sorted(
                range(len(records)),
                key=lambda i: (records[i]["tx_datetime"], records[i]["transaction_id"]),
            )
            if len(records) > 1
            else [0]
        )
        values: list[dict[str, float]] = [{}] * len(records)
        for i, v in zip(order, self._features([records[i] for i in order]), strict=True):
            values[i] = v
        routes = self._route(dep, records)
        scores, status, answered_by = self._predict(dep, routes, values)
        elapsed_ms = (time.perf_counter() - started) * 1000 / len(records)
        cpu_ms = (time.thread_time() - cpu) * 1000 / len(records)
        answers, logged = self._answer(
            dep,
            request_id,
            served_ns,
            records,
            values,
            routes,
            scores,
            status,
            answered_by,
            (elapsed_ms, cpu_ms),
        )
        return request_id, answers, logged

    def score_batch_body(self, body: bytes) -> tuple[bytes, Future | None]:
        """A batch from its raw JSON to the JSON answer, all in the calling (worker) thread:
        parsing, validating and encoding 10,000 rows costs as much as scoring them, and on the
        event loop it would hold every single request meanwhile. Invalid input is the same 422
        FastAPI gives (``loc`` starts with ``body``)."""
        try:
            batch = BatchRequest.model_validate_json(body)
        except ValidationError as error:
            # the input of a JSON error is the raw body: not echoed back (bytes that are not
            # UTF-8 could not even be encoded into the answer)
            errors = error.errors(include_url=False, include_input=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None
        request_id, answers, logged = self.score(batch.transactions)
        return json.dumps({"request_id": request_id, "scores": answers}).encode(), logged

    async def answered(self, logged: Future | None) -> None:
        """Wait for the decisions' spool commit when answers must not outrun the log."""
        if logged is not None and self.config.spool_sync:
            try:
                await asyncio.wrap_future(logged)
            except Exception as error:  # a full or failing disk: no answer without its record
                raise HTTPException(
                    503, f"the decision could not be logged (prediction-log spool): {error}"
                ) from None

    def _features(self, ordered: list[dict]) -> list[dict[str, float]]:
        """Features of the transactions in time order, each observed before the next (the
        online store may be shared: another replica may have moved on meanwhile)."""
        try:
            return self.follower.features.features_and_observe_many(ordered)
        except TooOld as error:
            loc = ["body", "tx_datetime"] if len(ordered) == 1 else ["body", "transactions"]
            detail = [{"loc": loc, "msg": str(error), "type": "value_error"}]
            raise HTTPException(422, detail) from None
        except (OnlineStoreUnavailable, NotLoaded) as error:
            raise HTTPException(
                503,
                f"online features unavailable: {error}",
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            ) from None

    def _check_times(self, records: list[dict]) -> None:
        """422 on ``tx_datetime`` for a transaction the online state cannot take: older than the
        loaded state, or later than now + the allowed clock skew (it would be logged under a
        future hour and sit in every card's velocity windows and the overlay until then)."""
        first = self.follower.features.first_hour
        latest = time.time_ns() + int(self.config.max_clock_skew_seconds * 1e9)
        for i, rec in enumerate(records):
            if first is not None and rec["tx_datetime"] // HOUR_NS < first:
                msg = (
                    "transaction is older than the online feature state (state hour "
                    f"{self.follower.features.state_hour}); score it in batch with "
                    "`fraudloop score` instead"
                )
            elif rec["tx_datetime"] > latest:
                msg = (
                    "transaction is dated in the future (more than "
                    f"{self.config.max_clock_skew_seconds:g} s after the service's clock)"
                )
            else:
                continue
            loc = ["body", "tx_datetime"]
            if len(records) > 1:
                loc = ["body", "transactions", i, "tx_datetime"]
            raise HTTPException(422, [{"loc": loc, "msg": msg, "type": "value_error"}])

    @staticmethod
    def _route(dep: Deployment, records: list[dict]) -> list[str]:
        if dep.canary is None or dep.canary_share <= 0:
            return ["production"] * len(records)
        salt, share = dep.canary.version, dep.canary_share
        return [
            "canary" if bucket(r["customer_id"], salt) < share else "production" for r in records
        ]

    def _predict(
        self, dep: Deployment, routes: list[str], values: list[dict[str, float]]
    ) -> tuple[list[float], list[str], list[Slot]]:
        n = len(routes)
        scores = [0.0] * n
        status = ["ok"] * n
        answered_by: list[Slot] = [dep.production] * n
        for role in ("canary", "production"):
            idx = [i for i in range(n) if routes[i] == role]
            if not idx:
                continue
            slot = dep.canary if role == "canary" else dep.production
            try:
                result = self._run_model(slot, [values[i] for i in idx])
            except Exception as error:
                self.metrics.errors.labels(str(slot.version), role).inc()
                if role == "production":
                    log.error("production v%s failed: %s", slot.version, error)
                    raise HTTPException(503, f"model v{slot.version} failed: {error}") from None
                log.warning("canary v%s failed, production answers: %s", slot.version, error)
                self.metrics.fallbacks.labels(str(slot.version)).inc(len(idx))
                result = self._run_model(dep.production, [values[i] for i in idx])
                for i in idx:
                    status[i] = "fallback"
            else:
                for i in idx:
                    answered_by[i] = slot
            for i, s in zip(idx, result, strict=True):
                scores[i] = s
        return scores, status, answered_by

    @staticmethod
    def _run_model(slot: Slot, values: list[dict[str, float]]) -> list[float]:
        matrix = np.array([[v[n] for n in slot.features] for v in values], dtype=np.float64)
        out = slot.predict(matrix)
        if out.shape != (len(values),) or not np.isfinite(out).all():
            raise ValueError(f"model v{slot.version} returned invalid scores")
        return out.tolist()

    def _answer(
        self, dep, request_id, served_ns, records, values, routes, scores, status, answered_by, cost
    ) -> tuple[list[dict[str, Any]], Future | None]:
        ms, cpu_ms = cost
        answers, rows, control, shadow = [], [], [], []
        m = self.metrics
        for i, rec in enumerate(records):
            slot = answered_by[i]
            role = routes[i]
            logged_slot = dep.canary if role == "canary" else dep.production
            score = scores[i]
            decision = "review" if score >= slot.threshold else "approve"
            answers.append(
                {
                    "request_id": request_id,
                    "transaction_id": rec["transaction_id"],
                    "score": score,
                    "decision": decision,
                    "threshold": slot.threshold,
                    "model_version": slot.version,
                    "role": slot.role if status[i] == "ok" else "production",
                    "fallback": status[i] == "fallback",
                }
            )
            row = Row(
                request_id,
                rec["transaction_id"],
                self.pseudonym(rec["customer_id"]),
                self.pseudonym(rec["terminal_id"]),
                rec["tx_datetime"],
                rec["amount"],
                served_ns,
                logged_slot.version,
                role,
                score,
                decision,
                slot.threshold,
                ms,
                cpu_ms,
                feature_hash([values[i][n] for n in slot.features]),
                status[i],
            )
            rows.append(row)
            version = str(logged_slot.version)
            m.predictions.labels(version, role).inc()
            m.latency.labels(version, role).observe(ms / 1000)
            if decision == "review":
                m.flagged.labels(version, role).inc()
            if role == "canary":
                control.append((row, values[i]))
            if dep.shadow is not None:
                shadow.append((row, values[i]))
        logged = self.predlog.extend(rows) if self.predlog is not None else None
        if control:
            self.offpath.submit(("control", dep.production, control))
        if shadow:
            self.offpath.submit(("shadow", dep.shadow, shadow))
        return answers, logged

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

    app = FastAPI(
        title="fraudloop scoring service",
        version="1",
        description="Scores card transactions with the model versions the registry deploys.",
        lifespan=lifespan,
    )
    app.state.service = service

    def check_bearer(request: Request, token: str) -> None:
        given = bearer_token(request.headers.get("authorization"))
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
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
        try:
            _, answers, logged = service.score([tx])
            await service.answered(logged)
        except HTTPException as error:
            count("score", error.status_code)
            raise
        count("score", 200)
        return _json(answers[0])

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

    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=config.body_timeout_seconds)
    app.add_middleware(
        InFlightLimit,
        limit=config.max_in_flight,
        retry_after=config.retry_after_seconds,
        paths=("/v1/score",),
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
