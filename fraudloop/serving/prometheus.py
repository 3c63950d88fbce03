"""Prometheus metrics of the scoring service (``GET /metrics``).

Each app owns its own registry, so several apps in one process (tests, staging) do not mix
counts. Label sets are small and bounded: version x role x endpoint/status.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "fraudloop_requests_total",
            "Scoring requests by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.predictions = Counter(
            "fraudloop_predictions_total",
            "Transactions scored, by model version and role.",
            ["version", "role"],
            registry=r,
        )
        self.latency = Histogram(
            "fraudloop_prediction_latency_seconds",
            "Time from request parsed to score ready, by model version and role.",
            ["version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "fraudloop_model_errors_total",
            "Model failures by version and role (a canary failure falls back to production).",
            ["version", "role"],
            registry=r,
        )
        self.fallbacks = Counter(
            "fraudloop_fallbacks_total",
            "Requests answered by production because the canary failed.",
            ["version"],
            registry=r,
        )
        self.flagged = Counter(
            "fraudloop_flagged_total",
            "Decisions `review`, by model version and role.",
            ["version", "role"],
            registry=r,
        )
        self.swaps = Counter(
            "fraudloop_swaps_total", "Deployments swapped in, by role.", ["role"], registry=r
        )
        self.swap_failures = Counter(
            "fraudloop_swap_failures_total",
            "Versions that could not be loaded, verified or warmed (kept the old one).",
            ["role"],
            registry=r,
        )
        self.deployed = Gauge(
            "fraudloop_deployed_version",
            "Version deployed per role (0: none).",
            ["role"],
            registry=r,
        )
        self.in_flight = Gauge(
            "fraudloop_scoring_in_flight",
            "Scoring requests being answered now (beyond FRAUDLOOP_SERVE_MAX_IN_FLIGHT they are "
            "shed with 503).",
            registry=r,
        )
        self.canary_share = Gauge(
            "fraudloop_canary_share", "Share of customers routed to the canary.", registry=r
        )
        self.shadow_dropped = Counter(
            "fraudloop_shadow_dropped_total",
            "Shadow/control scorings skipped because the off-path queue was full.",
            registry=r,
        )
        self.log_buffered = Gauge(
            "fraudloop_prediction_log_buffered", "Decisions not yet flushed.", registry=r
        )
        self.log_written = Gauge(
            "fraudloop_prediction_log_rows_written", "Decisions flushed so far.", registry=r
        )
        self.log_errors = Gauge(
            "fraudloop_prediction_log_write_errors", "Failed flushes so far.", registry=r
        )
        self.feature_reloads = Counter(
            "fraudloop_feature_reloads_total", "Online feature states swapped in.", registry=r
        )


def observe_many(histogram, amount: float, count: int) -> None:
    """``count`` observations of one value in one update (a batch's rows share their per-row
    latency): what ``count`` calls of ``observe`` record, without a loop per row. Uses the
    client's histogram internals (``_sum``, ``_upper_bounds``, ``_buckets``); a test holds it to
    ``observe``."""
    if count <= 0:
        return
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break
