"""The promotion gate's paired bootstrap at a 100x holdout: what the evaluation step of a
retraining costs where it broke the 10-minute budget (docs/scale.md).

A holdout day at 100x is ~1 M transactions of ~500 k cards with ~0.8 % frauds; the gate draws
1,000 cluster-bootstrap replicates over the cards and computes AP(candidate) - AP(production)
in each. Measured in one run, on the same scores and the same draws:

- the per-segment form the gate uses (`fraudloop.model.evaluation.bootstrap_ap_delta`: the
  score order cut at the thresholds that hold a fraud, two weighted counts per replicate);
- the per-row form it replaced, kept here as the reference: each replicate's weights expanded
  to every row, reordered by score and cumulated, 50 replicates at a time.

Both give the same replicates (the largest difference is printed and must be float noise).
Peak memory is what tracemalloc saw allocated by each form (numpy reports its buffers).

    .venv/bin/python bench/gate.py [--rows 1000000] [--replicates 1000] [--quick] [--json PATH]
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import Report, arguments
from fraudloop.model.evaluation import bootstrap_ap_delta

FULL = (1_000_000, 1_000)
QUICK = (20_000, 50)
FRAUD_RATE = 0.008
ROWS_PER_CARD = 2  # ~500 k cards in a 1 M-row day


def holdout(rows: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(is_fraud, candidate scores, production scores, card codes) of a synthetic holdout."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < FRAUD_RATE).astype(np.int64)
    cards = np.unique(rng.integers(0, rows // ROWS_PER_CARD, rows), return_inverse=True)[1]
    candidate = rng.random(rows) + 0.5 * y
    production = rng.random(rows) + 0.4 * y
    return y, candidate, production, cards


def per_row_bootstrap(y, candidate, production, units, n_boot, seed=0, chunk=50) -> np.ndarray:
    """The form the gate used before: the same draws, every replicate's weights per row."""
    rng = np.random.default_rng(seed)
    n_units = int(units.max()) + 1
    curves = [_per_row_curve(y, s) for s in (candidate, production)]
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_units, size=(b, n_units))
        counts = np.stack([np.bincount(row, minlength=n_units) for row in draws])
        w = counts[:, units].astype(np.float64)
        ap_c, ap_p = (curve(w) for curve in curves)
        out.append(ap_c - ap_p)
    return np.concatenate(out)


def _per_row_curve(y, s):
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])
    yo = y[order].astype(np.float64)

    def ap(w: np.ndarray) -> np.ndarray:
        w = w[:, order]
        tps = np.cumsum(w * yo, axis=1)[:, ends]
        alls = np.cumsum(w, axis=1)[:, ends]
        total = tps[:, -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(alls > 0, tps / alls, 1.0)
            d_recall = np.diff(tps / total, axis=1, prepend=0.0)
        return np.sum(d_recall * precision, axis=1)

    return ap


def measured(fn) -> tuple[np.ndarray, float, float, float]:
    """(result, wall s, CPU s, peak MB allocated while it ran)."""
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return result, wall, cpu, peak


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--rows", type=int, help="holdout rows (1,000,000; quick: 20,000)")
    parser.add_argument("--replicates", type=int, help="bootstrap replicates (1,000; quick: 50)")
    args = parser.parse_args()
    rows, replicates = QUICK if args.quick else FULL
    rows, replicates = args.rows or rows, args.replicates or replicates
    report = Report("gate", args)
    y, candidate, production, cards = holdout(rows)
    facts = (
        f"{rows:,} rows, {cards.max() + 1:,} cards, {y.sum():,} frauds, {replicates:,} replicates"
    )
    now, now_wall, now_cpu, now_mb = measured(
        lambda: bootstrap_ap_delta(y, candidate, production, cards, n_boot=replicates)
    )
    before, before_wall, before_cpu, before_mb = measured(
        lambda: per_row_bootstrap(y, candidate, production, cards, replicates)
    )
    difference = float(np.nanmax(np.abs(now - before)))
    report.figure(
        "bootstrap_s",
        f"the gate's paired card bootstrap, per segment ({facts})",
        now_wall,
        "s",
        text=f"{now_wall:,.1f} s wall, {now_cpu:,.1f} s CPU",
        versus="the per-row form it replaced, same draws",
        versus_value=before_wall,
        versus_text=f"{before_wall:,.1f} s wall, {before_cpu:,.1f} s CPU",
        ratio=before_wall / now_wall,
        ratio_means="per row / per segment",
    )
    report.figure(
        "bootstrap_peak_mb",
        "memory allocated at the peak of that bootstrap (tracemalloc)",
        now_mb,
        "MB",
        versus="the per-row form",
        versus_value=before_mb,
        ratio=before_mb / now_mb,
        ratio_means="per row / per segment",
    )
    report.figure(
        "replicate_difference",
        "largest difference between the two forms' replicates",
        difference,
        "",
        text=f"{difference:.1e}",
        versus="the spread of the replicates (their standard deviation)",
        versus_value=float(np.nanstd(now)),
        ratio=difference / float(np.nanstd(now)),
        ratio_means="difference / spread (float noise: < 1e-9)",
    )
    report.details = {
        "rows": rows,
        "cards": int(cards.max() + 1),
        "frauds": int(y.sum()),
        "replicates": replicates,
        "ci_95": [float(v) for v in np.nanquantile(now, [0.025, 0.975])],
    }
    report.finish()


if __name__ == "__main__":
    main()
