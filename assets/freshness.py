"""Freshness: Dagster's own freshness policies on what must keep arriving, so the UI shows a
stale asset and `freshness_alert_sensor` (sensors/freshness.py) raises one incident per stale
asset, resolved when it is fresh again.

A scheduled run that finds no file still materializes `raw_transactions` (a *missing* hour),
so the feed's silence cannot be read from it: the feeds are external assets of their own,
materialized (runless) by `new_data_sensor` whenever files land, and the prediction log is
observed from the store by `prediction_log_sensor`. Windows are wall-clock time, from
`MonitoringPolicy` (FRAUDLOOP_FRESH_*).
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from assets import keys
from fraudloop.core.errors import ConfigError
from fraudloop.monitoring.policy import MonitoringPolicy

MINIMUM_WINDOW = timedelta(minutes=1)  # Dagster refuses shorter freshness windows

transaction_feed = dg.AssetSpec(
    keys.TRANSACTION_FEED,
    group_name="ingestion",
    kinds={"csv"},
    owners=["team:data-engineering"],
    description=(
        "The issuer's transaction files as they land in `landing/transactions/`. Materialized "
        "by `new_data_sensor` when new files land (files, newest key, partitions), so its "
        "freshness says when the feed last delivered: a silent feed goes stale and alerts once."
    ),
)

label_feed = dg.AssetSpec(
    keys.LABEL_FEED,
    group_name="ingestion",
    kinds={"csv"},
    owners=["team:data-engineering"],
    description="The same for the investigators' label files (`landing/labels/`).",
)


def windows(policy: MonitoringPolicy) -> dict[dg.AssetKey, timedelta]:
    """How long each watched asset may go without an update before it fails freshness."""
    return {
        keys.TRANSACTION_FEED: timedelta(hours=policy.feed_fresh_hours),
        keys.LABEL_FEED: timedelta(hours=policy.labels_fresh_hours),
        keys.TRANSACTION_FEATURES: timedelta(hours=policy.features_fresh_hours),
        keys.PREDICTION_LOG: timedelta(hours=policy.predictions_fresh_hours),
        keys.MODEL_RELEASE: timedelta(days=policy.model_fresh_days),
    }


def with_freshness(definitions: list, policy: MonitoringPolicy) -> list:
    """The assets with their freshness policy (warn at half the window, fail at the window);
    checks pass through unchanged."""
    window = windows(policy)

    for key, fail in window.items():
        if fail < MINIMUM_WINDOW:
            raise ConfigError(
                f"the freshness window of {key.to_user_string()} is {fail}; Dagster evaluates "
                f"freshness no finer than {MINIMUM_WINDOW} (FRAUDLOOP_FRESH_*)"
            )

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key not in window:
            return spec
        fail = window[spec.key]
        warn = fail / 2 if fail / 2 >= MINIMUM_WINDOW else None
        policy_ = dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
        return spec.replace_attributes(freshness_policy=policy_)

    checks = [d for d in definitions if isinstance(d, dg.AssetChecksDefinition)]
    assets = [d for d in definitions if not isinstance(d, dg.AssetChecksDefinition)]
    return [*dg.map_asset_specs(attach, assets), *checks]


def build() -> list:
    return [transaction_feed, label_feed]
