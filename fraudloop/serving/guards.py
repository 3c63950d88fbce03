"""What keeps slow, hostile or too many clients from taking the service down.

- :func:`header_deadline_protocol`: uvicorn times out idle keep-alive connections, but not a
  client that sends half a request head and then nothing (checked in uvicorn 0.54: no timer runs
  between the first byte and the end of the head). This protocol closes such connections after
  ``seconds``, counted from the connection (or from the first byte of a keep-alive request).
- :class:`BodyDeadline`: a body that does not arrive in time is answered 408.
- :class:`InFlightLimit`: at most ``limit`` scoring requests at once; the rest are shed at once
  with 503 and ``Retry-After`` (a load balancer retries elsewhere) instead of queueing without
  bound.
- :func:`bearer_token`: the ``Authorization`` header read as RFC 6750 / 7235 say.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: RFC 7235: the auth-scheme is a case-insensitive token; RFC 6750: one space, then the token
_BEARER = re.compile(r"^bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


def bearer_token(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` credential, or None if the header is missing or not one."""
    if not authorization:
        return None
    match = _BEARER.match(authorization)
    return match.group(1) if match else None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether the header carries ``token`` as its Bearer credential (constant-time compare)."""
    given = bearer_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class CoalescingTransport:
    """A transport whose writes of one event-loop turn leave as one `write` (one TCP segment for
    a small answer).

    uvicorn writes a response's head and its body separately. A replica killed (SIGKILL) with
    unread bytes on a kept-alive connection closes it with a reset, which can drop the second
    segment after the first was sent: the balancer then holds a head with no body, too late to
    retry elsewhere, and its client gets a broken answer (seen once in 1,000 requests during a
    replica kill). Sent as one segment, an answer arrives whole or not at all, and "not at all"
    is what the balancer retries."""

    def __init__(self, transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data) -> None:
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def header_deadline_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """A uvicorn HTTP protocol class that closes a connection whose request head is not complete
    ``seconds`` after it began (pass it as ``uvicorn.run(http=...)``)."""

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


async def send_json(
    send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


class BodyDeadline:
    """408 when the request body is not complete within ``seconds`` of the head."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        started = False

        async def timed() -> Message:
            # a timeout scope, not wait_for: no task per receive (a request's body is read in
            # one receive that usually does not even wait)
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                if not started:
                    message = f"request body not received within {self.seconds:g} s"
                    await send_json(send, 408, {"detail": message}, [(b"connection", b"close")])
                raise _Answered from None

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_Answered):
            await self.app(scope, timed, tracked)


class _Answered(Exception):
    """The request was already answered by a guard; unwind the app quietly."""


class InFlightLimit:
    """Sheds requests to ``paths`` beyond ``limit`` at once with 503 + Retry-After."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        retry_after: int,
        paths: tuple[str, ...],
        gauge: Any = None,
    ):
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.paths = paths
        self.in_flight = 0
        self.shed = 0
        self.gauge = gauge  # a Prometheus gauge that follows in_flight, if given

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.paths):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.shed += 1
            detail = f"overloaded: {self.limit} scoring requests in progress; retry later"
            headers = [(b"retry-after", str(self.retry_after).encode())]
            await send_json(send, 503, {"detail": detail}, headers)
            return
        self.in_flight += 1  # one event loop: no lock needed
        self._show()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self._show()

    def _show(self) -> None:
        if self.gauge is not None:
            self.gauge.set(self.in_flight)
