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


def check_partition_range(
    grain: str, first: str, last: str, *, start: str, end: str | None, now: datetime
) -> tuple[str, str]:
    """Validate a range [first, last] of `grain` ("hourly" or "daily") partition keys typed by a
    person, before any run exists: the expected format in the message, then the range inside
    the partitions the definitions have ([start, end) from the settings; open-ended = up to the
    last complete partition at `now`). Raises ValueError; returns the keys as Dagster spells them.
    """
    fmt, example, unit = {
        "hourly": (HOUR_KEY_FORMAT, "2018-04-01-13:00", timedelta(hours=1)),
        "daily": (DAY_KEY_FORMAT, "2018-04-01", timedelta(days=1)),
    }[grain]
    parsed = []
    for name, key in (("--from", first), ("--to", last)):
        try:
            moment = datetime.strptime(key.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(
                f"{name} {key!r} is not a {grain} partition key: expected "
                f"{fmt.replace('%', '')} like {example}"
            ) from None
        if grain == "hourly" and moment.minute:
            raise ValueError(f"{name} {key!r}: hourly partitions start on the hour ({example})")
        parsed.append(moment)
    low, high = parsed
    if low > high:
        raise ValueError(f"--from {first} is after --to {last}")
    origin = datetime.strptime(start[: len(example)], fmt).replace(tzinfo=UTC)
    if low < origin:
        raise ValueError(
            f"--from {first} is before the first partition {origin.strftime(fmt)} "
            f"(FRAUDLOOP_PARTITION_START)"
        )
    if end is not None:
        limit = datetime.strptime(end[: len(example)], fmt).replace(tzinfo=UTC)
        why = "FRAUDLOOP_PARTITION_END, exclusive"
    else:
        limit = now.astimezone(UTC) - unit + timedelta(microseconds=1)
        why = "the last complete partition now"
    if high >= limit:
        raise ValueError(f"--to {last} is past the partitions ({why})")
    return low.strftime(fmt), high.strftime(fmt)
