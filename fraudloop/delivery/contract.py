"""The HTTP contract of the scoring service: request and response models, and their JSON Schemas.

One definition serves three purposes: FastAPI validates requests with it (a 422 names the field),
the model package ships its JSON Schema (clients and the staging test validate against it), and
the OpenAPI page documents it. Limits are here too, so a hostile or broken client cannot make the
service allocate without bound.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID_LENGTH = 64
MAX_AMOUNT = 1_000_000.0
MAX_BATCH_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024  # a full batch of MAX_BATCH_ROWS is ~1.3 MB of JSON

_ID = {"min_length": 1, "max_length": MAX_ID_LENGTH, "pattern": r"^[A-Za-z0-9._:-]+$"}


class Transaction(BaseModel):
    """One card transaction, as the payment switch sends it for scoring."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    transaction_id: str = Field(description="Unique id of the transaction.", **_ID)
    tx_datetime: datetime = Field(
        description="When the transaction happened (ISO 8601; without an offset it is UTC)."
    )
    customer_id: str = Field(description="The card / customer id.", **_ID)
    terminal_id: str = Field(description="The terminal id.", **_ID)
    amount: float = Field(gt=0, le=MAX_AMOUNT, description="Amount in the card's currency.")

    @field_validator("tx_datetime")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+03:00 is before year 1 in UTC: a 422, not a 500
            raise ValueError("tx_datetime is out of range once converted to UTC") from None

    @field_validator("amount")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("amount must be a finite number")
        return value


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: list[Transaction] = Field(
        min_length=1,
        max_length=MAX_BATCH_ROWS,
        description=f"Up to {MAX_BATCH_ROWS} transactions; scored in time order.",
    )


Decision = Literal["approve", "review"]
Role = Literal["production", "canary"]


class Score(BaseModel):
    """The service's answer for one transaction."""

    request_id: str = Field(description="Id of this decision in the prediction log.")
    transaction_id: str
    score: float = Field(ge=0, le=1, description="Fraud probability.")
    decision: Decision = Field(description="`review` when score >= threshold.")
    threshold: float
    model_version: int = Field(ge=1)
    role: Role = Field(description="Which deployment answered: production or the canary.")
    fallback: bool = Field(
        default=False, description="True when the canary failed and production answered instead."
    )


class BatchResponse(BaseModel):
    request_id: str
    scores: list[Score]


def request_schema() -> dict:
    """JSON Schema of ``POST /v1/score`` bodies (and, under ``$defs``, batch items)."""
    schema = Transaction.model_json_schema()
    schema["$id"] = "https://fraudloop.dev/schemas/score-request.json"
    return schema


def batch_request_schema() -> dict:
    return BatchRequest.model_json_schema()


def response_schema() -> dict:
    schema = Score.model_json_schema()
    schema["$id"] = "https://fraudloop.dev/schemas/score-response.json"
    return schema


def batch_response_schema() -> dict:
    return BatchResponse.model_json_schema()
