"""`FastScore`: a valid single transaction is answered without FastAPI; every other request reaches
FastAPI with its body intact, so errors keep FastAPI's shape. Driven as ASGI (chunked bodies and
disconnects are messages here); the service's own tests run every request through it over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI, HTTPException

from fraudloop.delivery.contract import Transaction
from fraudloop.serving.app import BodyLimit
from fraudloop.serving.fast_path import FastScore

TOKEN = "fast-path-token"
VALID = {
    "transaction_id": "t-1",
    "tx_datetime": "2026-04-01T10:00:00",
    "customer_id": "c-1",
    "terminal_id": "x-1",
    "amount": 12.5,
}


class Fallback:
    """Stands for the FastAPI app: records what reached it and answers 299."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"fallback"})


def fast_score(fallback, answer=None, token: str | None = TOKEN) -> tuple[FastScore, list]:
    answered: list = []

    async def default_answer(tx) -> bytes:
        answered.append(tx)
        return b'{"answered": true}'

    def authorized(headers: dict[bytes, bytes]) -> bool:
        return token is None or headers.get(b"authorization") == f"Bearer {token}".encode()

    app = FastScore(
        fallback, "/v1/score", Transaction, answer or default_answer, authorized=authorized
    )
    return app, answered


def call(app, chunks, headers=None, method="POST", path="/v1/score", disconnect=False):
    """(status, headers, body) of one request; status None if nothing was sent."""
    if headers is None:
        headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages = [*messages[:1], {"type": "http.disconnect"}]
        messages[0]["more_body"] = True
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    if not sent:
        return None, {}, b""
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_a_valid_transaction_is_answered_without_fastapi():
    fallback = Fallback()
    app, answered = fast_score(fallback)
    status, headers, body = call(app, [json.dumps(VALID).encode()])
    assert (status, body) == (200, b'{"answered": true}')
    assert headers == {"content-type": "application/json", "content-length": str(len(body))}
    assert fallback.bodies == []
    (tx,) = answered
    assert tx.transaction_id == "t-1" and tx.amount == 12.5
    assert tx.tx_datetime.utcoffset().total_seconds() == 0  # the model's UTC rule applied


def test_a_body_in_chunks_and_a_charset_are_accepted():
    fallback = Fallback()
    app, answered = fast_score(fallback)
    raw = json.dumps(VALID).encode()
    headers = {
        "content-type": "application/json; charset=utf-8",
        "authorization": "Bearer " + TOKEN,
    }
    status, _, _ = call(app, [raw[:7], raw[7:30], raw[30:]], headers=headers)
    assert status == 200 and len(answered) == 1 and fallback.bodies == []


WITHOUT_AMOUNT = {k: v for k, v in VALID.items() if k != "amount"}
NOT_THE_HAPPY_PATH = {
    "not JSON": (b'{"transaction_id": ', None),
    "not UTF-8": (b"\xff\xfe{", None),
    "a list": (b"[1, 2]", None),
    "a field out of range": (json.dumps({**VALID, "amount": -1}).encode(), None),
    "an unknown field": (json.dumps({**VALID, "extra": 1}).encode(), None),
    "a field missing": (
        json.dumps({k: v for k, v in VALID.items() if k != "amount"}).encode(),
        None,
    ),
    "another content type": (
        json.dumps(VALID).encode(),
        {"content-type": "text/plain", "authorization": f"Bearer {TOKEN}"},
    ),
    "no token": (json.dumps(VALID).encode(), {"content-type": "application/json"}),
    "a wrong token": (
        json.dumps(VALID).encode(),
        {"content-type": "application/json", "authorization": "Bearer nope"},
    ),
}


@pytest.mark.parametrize("case", NOT_THE_HAPPY_PATH)
def test_everything_else_reaches_fastapi_with_its_body_intact(case):
    body, headers = NOT_THE_HAPPY_PATH[case]
    fallback = Fallback()
    app, answered = fast_score(fallback)
    status, _, answer = call(app, [body[:3], body[3:]], headers=headers)
    assert (status, answer) == (299, b"fallback")
    assert fallback.bodies == [body]
    assert answered == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/score"), ("POST", "/v1/score/batch")])
def test_other_routes_are_not_touched(method, path):
    fallback = Fallback()
    app, answered = fast_score(fallback)
    status, _, _ = call(app, [json.dumps(VALID).encode()], method=method, path=path)
    assert status == 299 and answered == []


def test_without_a_configured_token_no_header_is_needed():
    fallback = Fallback()
    app, answered = fast_score(fallback, token=None)
    status, _, _ = call(app, [json.dumps(VALID).encode()], headers={})
    assert status == 200 and len(answered) == 1


def fastapi_rendering(error: HTTPException) -> tuple[int, dict, dict]:
    """What FastAPI itself answers when a route raises ``error``."""
    api = FastAPI()

    @api.post("/v1/score")
    async def raising() -> None:
        raise error

    status, headers, body = call(api, [b"{}"])
    return status, headers, json.loads(body)


@pytest.mark.parametrize(
    "error",
    [
        HTTPException(503, "no verified model", headers={"Retry-After": "2"}),
        HTTPException(422, [{"loc": ["body", "tx_datetime"], "msg": "too late", "type": "x"}]),
    ],
    ids=["503 with Retry-After", "422 with a list"],
)
def test_an_error_of_the_answer_is_rendered_as_fastapi_renders_it(error):
    async def failing(tx) -> bytes:
        raise error

    fallback = Fallback()
    app, _ = fast_score(fallback, answer=failing)
    status, headers, body = call(app, [json.dumps(VALID).encode()])
    want_status, want_headers, want_body = fastapi_rendering(error)
    assert (status, json.loads(body)) == (want_status, want_body)
    for name in ("content-type", "retry-after"):
        assert headers.get(name) == want_headers.get(name)
    assert fallback.bodies == []


def test_a_streamed_body_over_the_limit_is_413_and_never_answered():
    fallback = Fallback()
    inner, answered = fast_score(fallback)
    app = BodyLimit(inner, limit=40)
    raw = json.dumps(VALID).encode()  # no content-length header: the limit counts as it reads
    status, _, body = call(app, [raw[:30], raw[30:]])
    assert status == 413
    assert "exceeds the limit of 40 bytes" in json.loads(body)["detail"]
    assert answered == [] and fallback.bodies == []


def test_a_client_that_goes_away_mid_body_gets_nothing_and_nothing_is_scored():
    fallback = Fallback()
    app, answered = fast_score(fallback)
    status, _, _ = call(app, [json.dumps(VALID).encode()], disconnect=True)
    assert status is None and answered == [] and fallback.bodies == []
