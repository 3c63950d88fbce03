"""Jobs, each with its executor chosen on purpose.

Ingestion runs in process: its steps are I/O-light and short, and the multiprocess executor
would start a Python process per step and re-import the code location each time (DESIGN.md
measured ~20 s against ~8 s for a trivial two-asset run).
"""

from __future__ import annotations

import dagster as dg

from assets.ingestion import raw_labels, raw_transactions

hourly_ingestion_job = dg.define_asset_job(
    name="hourly_ingestion_job",
    selection=dg.AssetSelection.assets(raw_transactions),
    executor_def=dg.in_process_executor,
    description="Ingest and validate the hourly transaction partition(s) of the run.",
)

daily_labels_job = dg.define_asset_job(
    name="daily_labels_job",
    selection=dg.AssetSelection.assets(raw_labels),
    executor_def=dg.in_process_executor,
    description="Ingest and validate the daily label partition(s) of the run.",
)
