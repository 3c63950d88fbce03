"""Drift report figures for the README: "drift report over one hour of 42,000 predictions with all
features <= 5 s".

Synthetic feature tables with the 24 columns of ``fraudloop.features.compute.FEATURE_NAMES`` plus
``score``: counts (Poisson), amounts (lognormal, per-customer level), ratios, z-scores, gaps between
transactions, shares and 0/1 flags, at roughly the scale the simulator gives. The reference is ~50k
rows spread over a month of hours; the current batch is one hour (default 14:00 on a weekday) of
42,000 rows drawn from the same generator with another seed. So the only columns that differ by
construction are the time-of-day ones (``tx_hour``, ``tx_is_night``, ``tx_is_weekend`` are
constant within an hour): the run also shows what Evidently makes of that.

Measures, in one process:
- warm calls on the same data (median of --repeat), against the first ``drift_report`` call,
  which includes ``import evidently`` (paid once per process);
- the HTML rendering of the report, against the report's computation;
- writing the returned HTML to a file.

Usage: .venv/bin/python bench/drift.py [--reference-rows 50000] [--current-rows 42000]
       [--quick] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import Report, arguments
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.state import NO_FRAUD_AGE_HOURS, NO_PREV_TX_SECONDS
from fraudloop.monitoring.drift import drift_report


def synthetic_features(rows: int, seed: int, hour: int | None = None) -> pd.DataFrame:
    """A scored feature table; `hour` fixes the UTC hour of every row (one hourly batch), else
    hours and weekdays are spread as over a month."""
    rng = np.random.default_rng(seed)
    if hour is None:
        tx_hour = rng.integers(0, 24, rows)
        weekend = (rng.random(rows) < 2 / 7).astype(float)
    else:
        tx_hour = np.full(rows, hour)
        weekend = np.zeros(rows)
    level = rng.lognormal(np.log(50.0), 0.6, rows)  # the customer's usual amount
    amount = np.round(level * rng.lognormal(0.0, 0.5, rows), 2)
    out: dict[str, np.ndarray] = {
        "amount": amount,
        "tx_is_weekend": weekend,
        "tx_is_night": (tx_hour <= 6).astype(float),
        "tx_hour": tx_hour.astype(float),
        "customer_nb_tx_1h": 1.0 + rng.poisson(0.15, rows),
    }
    for window, daily_rate, spread in (("1d", 3.0, 0.35), ("7d", 21.0, 0.2), ("30d", 90.0, 0.1)):
        nb = 1.0 + rng.poisson(daily_rate, rows)
        avg = level * rng.lognormal(0.0, spread, rows)
        out[f"customer_nb_tx_{window}"] = nb
        out[f"customer_avg_amount_{window}"] = avg
        out[f"customer_amount_ratio_{window}"] = amount / avg
    z = rng.normal(0.0, 1.0, rows)
    z[rng.random(rows) < 0.02] = 0.0  # fewer than 2 transactions in 30 days
    out["customer_amount_zscore_30d"] = z
    gap = np.minimum(rng.exponential(8 * 3600.0, rows), NO_PREV_TX_SECONDS)
    gap[rng.random(rows) < 0.01] = NO_PREV_TX_SECONDS  # no previous transaction known
    out["customer_secs_since_prev_tx"] = np.round(gap)
    small = rng.random(rows) < 0.1
    out["customer_small_tx_share_1d"] = np.where(small, rng.beta(1.0, 3.0, rows), 0.0)
    out["customer_terminal_novelty"] = (rng.random(rows) < 0.25).astype(float)
    terminal_risk = rng.beta(0.3, 60.0, rows)  # the terminal's underlying fraud rate
    for days in (1, 7, 30):
        nb = rng.poisson(4.0 * days, rows)
        frauds = rng.binomial(nb, terminal_risk)
        out[f"terminal_nb_tx_{days}d"] = nb.astype(float)
        out[f"terminal_risk_{days}d"] = np.divide(frauds, nb, out=np.zeros(rows), where=nb > 0)
    # the 30-day window's known frauds, dated: mostly none (the sentinel), else inside the window
    known = frauds > 0
    first = rng.uniform(7 * 24 + 1, 37 * 24, rows).round()
    last = np.minimum(first, rng.uniform(7 * 24 + 1, 37 * 24, rows).round())  # more recent
    out["terminal_first_fraud_age_30d"] = np.where(known, first, NO_FRAUD_AGE_HOURS)
    out["terminal_last_fraud_age_30d"] = np.where(known, last, NO_FRAUD_AGE_HOURS)
    frame = pd.DataFrame(out)
    missing = set(FEATURE_NAMES) - set(frame.columns)
    if missing:  # the feature list changed: adapt the generator rather than bench a subset
        raise SystemExit(f"generator lacks feature(s): {sorted(missing)}")
    frame = frame[list(FEATURE_NAMES)].copy()
    logit = -5.0 + 1.2 * np.log1p(out["customer_amount_ratio_1d"]) + 30 * terminal_risk
    frame["score"] = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 1.0, rows))))
    return frame


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--reference-rows", type=int, default=50_000)
    parser.add_argument("--current-rows", type=int, default=42_000)
    parser.add_argument("--hour", type=int, default=14, help="UTC hour of the current batch")
    parser.add_argument("--repeat", type=int, default=3, help="warm calls after the first")
    args = parser.parse_args()
    if args.quick:
        args.reference_rows, args.current_rows, args.repeat = 3_000, 2_000, 1
    report = Report("drift", args)

    started = time.perf_counter()
    reference = synthetic_features(args.reference_rows, seed=1)
    current = synthetic_features(args.current_rows, seed=2, hour=args.hour)
    setup_s = time.perf_counter() - started
    features = list(FEATURE_NAMES)
    data = (
        f"{len(current):,} current vs {len(reference):,} reference rows, {len(features)} + 1 cols"
    )

    def timed():
        """One call: (result, html, wall s, CPU s of this process)."""
        wall, cpu = time.perf_counter(), time.process_time()
        result, html = drift_report(reference, current, features, "score")
        return result, html, time.perf_counter() - wall, time.process_time() - cpu

    first, _, first_s, first_cpu = timed()
    warm_runs = [timed() for _ in range(args.repeat)]
    warm, html, _, _ = warm_runs[-1]
    warm_walls = sorted(run[2] for run in warm_runs)
    warm_s = statistics.median(warm_walls)
    warm_cpu = statistics.median(run[3] for run in warm_runs)
    warm_report_s = statistics.median(run[0].seconds for run in warm_runs)
    warm_html_s = statistics.median(run[0].html_seconds for run in warm_runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        started = time.perf_counter()
        path.write_text(html, encoding="utf-8")
        write_s = time.perf_counter() - started
        html_bytes = path.stat().st_size
    # what the first call spent outside the report and its HTML: mostly `import evidently`
    import_s = first_s - first.seconds - first.html_seconds

    report.figure(
        "warm_s",
        f"Evidently drift report (`drift_report`), warm, median of {args.repeat}: {data}",
        warm_s,
        "s",
        text=f"{warm_s:.2f} s wall (min {warm_walls[0]:.2f} s), {warm_cpu:.1f} CPU s",
        versus="the first call in the process (includes `import evidently`)",
        versus_value=first_s,
        versus_text=f"{first_s:.2f} s (import ~{import_s:.1f} s)",
        ratio=first_s / warm_s,
        ratio_means="cold / warm",
        target="<= 5 s warm",
    )
    report.figure(
        "html_s",
        "its HTML (rendering, in the warm call)",
        warm_html_s,
        "s",
        text=f"{warm_html_s:.2f} s, {html_bytes / 1e6:.1f} MB (written in {write_s:.3f} s)",
        versus="the report's computation",
        versus_value=warm_report_s,
        versus_text=f"{warm_report_s:.2f} s",
        ratio_means="HTML / report",
    )
    methods = sorted(set(warm.feature_methods.values()) | {warm.prediction_method or ""} - {""})
    report.note(
        f"\nsynthetic tables built in {setup_s:.1f} s; drifted: "
        f"{', '.join(warm.drifted_features) or 'none'} "
        f"({warm.drifted_share:.0%} of the columns, dataset drift {warm.dataset_drift}); "
        f"score drifted {warm.prediction_drifted} ({warm.prediction_drift_score:.3f}); "
        f"methods: {', '.join(methods)}"
    )
    report.details = {
        "reference_rows": len(reference),
        "current_rows": len(current),
        "columns": len(features) + 1,
        "first_call_s": round(first_s, 3),
        "first_call_cpu_s": round(first_cpu, 3),
        "first_call_import_s": round(import_s, 3),
        "warm_call_s_all": [round(w, 3) for w in warm_walls],
        "warm_call_cpu_s_median": round(warm_cpu, 3),
        "write_html_s": round(write_s, 4),
        "html_bytes": html_bytes,
        "result": warm.to_dict(),
    }
    report.finish()


if __name__ == "__main__":
    main()
