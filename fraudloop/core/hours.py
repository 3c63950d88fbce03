"""Hourly and daily partition keys, and the time units every stage counts in.

Keys are Dagster's: ``2018-04-01-05:00`` for an hour, ``2018-04-01`` for a day, always UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

SECOND_NS = 1_000_000_000
HOUR_NS = 3_600 * SECOND_NS
DAY_NS = 24 * HOUR_NS
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


def hours_of_day(day: str) -> list[str]:
    start = day_start(day)
    return [(start + timedelta(hours=h)).strftime(HOUR_KEY_FORMAT) for h in range(24)]
