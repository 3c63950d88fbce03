"""Partitions: transactions land hourly, labels daily; start and end come from the settings,
read when definitions load (not when this module is imported)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from fraudloop.core.settings import Settings


@dataclass(frozen=True)
class Partitions:
    hourly: dg.HourlyPartitionsDefinition
    daily: dg.DailyPartitionsDefinition

    @classmethod
    def of(cls, settings: Settings) -> Partitions:
        end = settings.partition_end
        return cls(
            hourly=dg.HourlyPartitionsDefinition(
                start_date=settings.partition_start, end_date=end, timezone="UTC"
            ),
            daily=dg.DailyPartitionsDefinition(
                start_date=settings.history_start,
                end_date=end[:10] if end else None,
                timezone="UTC",
            ),
        )
