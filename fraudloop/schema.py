"""Canonical table schemas and the hour/partition vocabulary shared by every stage.

Everything downstream of ingestion sees exactly these columns and dtypes, whatever a feed
delivered; extra feed columns are kept after the canonical ones in raw, never dropped.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd

TRANSACTION_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "tx_datetime": "datetime64[ns, UTC]",
    "customer_id": "string",
    "terminal_id": "string",
    "amount": "float64",
}
LABEL_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "is_fraud": "int8",
    "known_at": "datetime64[ns, UTC]",
}

HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's HourlyPartitionsDefinition key format
DAY_KEY_FORMAT = "%Y-%m-%d"


def hour_key(ts: datetime | pd.Timestamp) -> str:
    """Partition key of the UTC hour that contains `ts` (naive means UTC)."""
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("h").strftime(HOUR_KEY_FORMAT)


def hour_start(key: str) -> pd.Timestamp:
    """UTC start of an hourly partition key such as ``2018-04-01-05:00``."""
    return pd.Timestamp(datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=UTC))


def day_start(key: str) -> pd.Timestamp:
    return pd.Timestamp(datetime.strptime(key, DAY_KEY_FORMAT).replace(tzinfo=UTC))


def hour_landing_prefix(key: str) -> str:
    """Landing folder of an hour: ``landing/transactions/<YYYY-MM-DD>/<HH>/``."""
    start = hour_start(key)
    return f"landing/transactions/{start:%Y-%m-%d}/{start:%H}/"


def day_landing_prefix(day: str | date) -> str:
    day = day if isinstance(day, str) else day.strftime(DAY_KEY_FORMAT)
    return f"landing/labels/{day}/"


def partition_from_landing_key(key: str) -> tuple[str, str] | None:
    """Map a landing object key to ``(table, partition_key)``; None if it is not a feed file.

    ``landing/transactions/2018-04-01/05/part.csv`` -> ``("transactions", "2018-04-01-05:00")``;
    ``landing/labels/2018-04-08/labels.csv`` -> ``("labels", "2018-04-08")``.
    """
    parts = key.split("/")
    if len(parts) == 5 and parts[:2] == ["landing", "transactions"]:
        try:
            start = datetime.strptime(f"{parts[2]} {parts[3]}", "%Y-%m-%d %H")
        except ValueError:
            return None
        return "transactions", start.strftime(HOUR_KEY_FORMAT)
    if len(parts) == 4 and parts[:2] == ["landing", "labels"]:
        try:
            datetime.strptime(parts[2], DAY_KEY_FORMAT)
        except ValueError:
            return None
        return "labels", parts[2]
    return None


def hours_of_day(day: str) -> list[str]:
    start = day_start(day)
    return [(start + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24)]
