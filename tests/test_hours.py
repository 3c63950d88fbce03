"""Partition keys (fraudloop.core.hours): the range check the CLI runs before any run exists."""

from __future__ import annotations

import pytest


def test_partition_range_check_follows_the_partitions_definition():
    """The CLI's up-front check agrees with what Dagster's definitions hold: open-ended hourly
    partitions end at the last complete hour, a set end is exclusive."""
    from datetime import UTC, datetime

    from fraudloop.core.hours import check_partition_range

    now = datetime(2018, 4, 3, 10, 30, tzinfo=UTC)
    start = "2018-04-01-00:00"
    ok = check_partition_range(
        "hourly", "2018-04-01-00:00", "2018-04-03-09:00", start=start, end=None, now=now
    )
    assert ok == ("2018-04-01-00:00", "2018-04-03-09:00")
    with pytest.raises(ValueError, match="past the partitions"):  # 10:00 is not complete
        check_partition_range(
            "hourly", "2018-04-03-10:00", "2018-04-03-10:00", start=start, end=None, now=now
        )
    assert check_partition_range(
        "daily", "2018-04-01", "2018-04-02", start=start, end=None, now=now
    ) == ("2018-04-01", "2018-04-02")
    with pytest.raises(ValueError, match="past the partitions"):
        check_partition_range("daily", "2018-04-01", "2018-04-03", start=start, end=None, now=now)
    with pytest.raises(ValueError, match="FRAUDLOOP_PARTITION_END"):
        check_partition_range(
            "daily", "2018-04-01", "2018-04-02", start=start, end="2018-04-02-00:00", now=now
        )
