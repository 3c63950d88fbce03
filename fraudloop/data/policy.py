"""What ingestion accepts: the guards and thresholds every landed file is held to.

The defaults are written here once; `fraudloop.core.settings.from_env` reads their variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from fraudloop.core.settings import setting

MIB = 1024 * 1024


@dataclass(frozen=True)
class IngestPolicy:
    """Guards and thresholds of ingestion."""

    max_file_mb: float = setting(
        "FRAUDLOOP_MAX_FILE_MB", 256, "a landed file larger than this is quarantined unread"
    )
    max_line_bytes: int = MIB  # a longer CSV line is junk or a file without line breaks
    max_amount: float = setting(
        "FRAUDLOOP_MAX_AMOUNT", 100_000.0, "largest plausible card amount; above it is rejected"
    )
    row_count_history_days: int = setting(
        "FRAUDLOOP_ROW_COUNT_HISTORY_DAYS",
        7,
        "row-count bounds: the same hour on this many earlier days",
    )
    row_count_ratio: float = setting(
        "FRAUDLOOP_ROW_COUNT_RATIO", 4.0, "row-count bounds: allowed factor vs that history"
    )
    row_count_slack: int = 20  # rows always allowed either way (quiet hours are noisy)
    #: an all-whole-number amount column whose median is this far from the same hour's history
    #: is ids, not amounts (fraudloop.data.plausibility)
    amount_median_ratio: float = 4.0
    label_lookback_days: int = setting(
        "FRAUDLOOP_LABEL_LOOKBACK_DAYS", 45, "how old a labelled transaction may be"
    )
    known_ids_mostly: float = 1.0  # share of a day's labels that must refer to ingested ids
    max_rejected_share: float = setting(
        "FRAUDLOOP_MAX_REJECTED_SHARE",
        0.05,
        "share of a file's rows that may be rejected one by one; above it the whole file "
        "(and its hour) is quarantined",
    )
    id_pattern: str = setting(
        "FRAUDLOOP_ID_PATTERN",
        r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}",
        "regular expression every transaction, customer and terminal id must match in full",
    )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MIB)
