"""``POST /v1/score``'s usual request answered as plain ASGI, the rest left to FastAPI.

A one-off py-spy profile of the service at its peak (under `bench/serve.py`'s closed loop) put
a third of the event loop's time in FastAPI's layers around the endpoint (routing, dependency
solving, body parsing, the exception and exit-stack middlewares) against less than half in
scoring itself.
A single transaction is what the service answers most, so its happy path skips them: the body
is read, parsed and validated the way FastAPI does it (``json.loads``, then the pydantic model
in Python mode), and answered directly.

Anything else goes to the FastAPI route with the body replayed: a body that is not JSON or not a
valid transaction, another content type, a missing or wrong bearer token. Errors keep one
source, FastAPI's, so their shape (422 ``loc``, 401 ``WWW-Authenticate``) cannot drift. The
guards around the app (in-flight limit, body deadline, body limit) run before this, as for any
request. An ``HTTPException`` the handler raises (503 not ready, 422 ``tx_datetime`` out of
range) or the body limit raises while the body is read is answered as FastAPI's handler would:
``{"detail": ...}`` with its status and headers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudloop.serving.guards import send_json

JSON = b"application/json"


class FastScore:
    """Answers ``POST path`` with ``answer(model)`` when the body is a valid ``model`` and
    ``authorized(headers)``; hands every other request to ``app`` unchanged."""

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        model: type[BaseModel],
        answer: Callable[[Any], Awaitable[bytes]],
        authorized: Callable[[dict[bytes, bytes]], bool],
    ):
        self.app = app
        self.path = path
        self.model = model
        self.answer = answer
        self.authorized = authorized

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except HTTPException as error:
            await _send_error(send, error)
            return
        if body is None:  # the client went away
            return
        item = self._parse(dict(scope["headers"]), body)
        if item is None:
            await self.app(scope, _replaying(body, receive), send)
            return
        try:
            data = await self.answer(item)
        except HTTPException as error:
            await _send_error(send, error)
            return
        head = [(b"content-type", JSON), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": data})

    def _parse(self, headers: dict[bytes, bytes], body: bytes) -> Any | None:
        """The validated item, or None where FastAPI should answer."""
        content_type = headers.get(b"content-type")
        if content_type is not None and content_type.split(b";")[0].strip().lower() != JSON:
            return None
        if not self.authorized(headers):
            return None
        try:
            return self.model.model_validate(json.loads(body))
        except (ValueError, RecursionError):  # a pydantic ValidationError is a ValueError
            return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` once, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_error(send: Send, error: HTTPException) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send_json(send, error.status_code, {"detail": error.detail}, headers)
