"""Partitions: transactions land hourly, labels daily; start and end come from settings."""

from __future__ import annotations

import dagster as dg

from fraudloop.core.settings import Settings


def hourly_partitions(settings: Settings) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partition_start,
        end_date=settings.partition_end,
        timezone="UTC",
    )


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=settings.partition_start[:10],
        end_date=settings.partition_end[:10] if settings.partition_end else None,
        timezone="UTC",
    )


SETTINGS = Settings.from_env()
HOURLY = hourly_partitions(SETTINGS)
DAILY = daily_partitions(SETTINGS)
