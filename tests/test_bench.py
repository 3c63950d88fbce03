"""Benchmarks that cannot rot: every bench runs end to end in the suite at a small size.

Each bench is started in a subprocess exactly as a user starts it (`python bench/X.py --quick
--json PATH`), so a function it uses that went away fails here. It must finish, print its table
and write every figure it promises, finite, beside a comparison measured in the same run and
their ratio. Timings are never asserted: at the quick sizes they mean nothing. The full sizes are
`make bench`, whose JSON files (bench/results/) docs/results.md is generated from.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.test_docs as docs
from bench.growth_plot import default_inputs, growth_svg, series
from bench.report import QUICK_ENV, ordered_results, results_markdown

ROOT = Path(__file__).resolve().parents[1]

#: bench -> the figures it must report (keys of the JSON's "figures")
BENCHES: dict[str, tuple[str, ...]] = {
    "simulate": ("large_tx_per_s", "large_2days_s"),
    "ingest": ("hour_compute_s", "dagster_run_s", "backfill_s"),
    "features": (
        "rebuild_s",
        "slice_s",
        "incremental_hour_s",
        "state_mb",
        "state_load_s",
        "online_p99_us",
    ),
    "training": ("dataset_build_s", "train_s", "reproduce_s", "fit_peak_mb"),
    "gate": ("bootstrap_s", "bootstrap_peak_mb", "replicate_difference"),
    "quality": ("ap_vs_rf", "cp100_vs_rf", "ap_vs_lr", "cp100_vs_lr"),
    "serve": (
        "score_p99_us",
        "http_p99_ms",
        "peak_rps",
        "batch_rows_per_s",
        "big_batch_rows_per_s",
        "swap_failed",
        "swap_follow_s",
        "predlog_rows",
        "retry_rows_memory_p50_us",
        "retry_rows_redis_p50_us",
    ),
    "drift": ("warm_s", "html_s"),
    "orchestration": ("startup_s", "create_s", "queued_s", "startup_share", "worker_start_s"),
    "balancer": ("lb_p99_200_ms", "lb_p99_500_ms", "lb_peak_rps", "lb_batch_rows_s", "kill_failed"),
    "s3_listing": ("head_ms", "hour_list_ms", "log_list_s"),
    "scale": (
        "state_hour_mb",
        "state_hour_cpu_s",
        "hour_wall_s",
        "features_growth",
        "features_mb",
        "peak_rss_mb",
        "training_s",
        "daily_s",
        "score_tx_per_s",
        "overhead_share",
    ),
}
HELPERS = {"loadgen", "report", "growth_plot"}  # modules of bench/ that are not benchmarks


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_bench_is_covered_here_and_by_make_bench():
    found = {p.stem for p in (ROOT / "bench").glob("*.py")} - HELPERS
    assert found == set(BENCHES), "a bench without a quick run in the suite (add it to BENCHES)"
    makefile = (ROOT / "Makefile").read_text().splitlines()
    (line,) = [line for line in makefile if line.startswith("BENCHES :=")]
    assert line.split(":=")[1].split() == list(BENCHES), "make bench runs another set or order"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BENCHES))
def test_bench_quick_mode_runs_and_reports_every_figure(name, tmp_path):
    out = tmp_path / f"{name}.json"
    env = {**os.environ, QUICK_ENV: ""}  # the flag below, not the environment, asks for quick
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    took = time.perf_counter() - started
    assert done.returncode == 0, f"bench/{name}.py --quick failed:\n{done.stderr[-4000:]}"
    print(f"bench/{name}.py --quick: {took:.0f} s")

    doc = json.loads(out.read_text())
    assert doc["bench"] == name and doc["quick"] is True
    assert doc["commit"] and doc["date"]
    figures = doc["figures"]
    assert set(figures) == set(BENCHES[name])
    for key, fig in figures.items():
        for field in ("value", "versus_value", "ratio"):
            assert _finite(fig[field]), f"{name}: {key}.{field} = {fig[field]!r}"
        assert fig["label"] and fig["versus"] and fig["ratio_means"], f"{name}: {key}"

    lines = done.stdout.splitlines()
    header = "| figure | result | compared with, same run | ratio | target |"
    assert header in lines, f"bench/{name}.py printed no table:\n{done.stdout[-3000:]}"
    rows = lines[lines.index(header) + 2 :][: len(figures)]
    for fig, row in zip(figures.values(), rows, strict=True):
        assert row.startswith(f"| {fig['label']} | {fig['text']} | {fig['versus']}: "), row
    if name == "training":
        assert doc["details"]["identical"] is True, "reproduce gave another model"
    if name == "gate":  # the two bootstrap forms agree, replicate by replicate
        assert figures["replicate_difference"]["value"] < 1e-9


@pytest.mark.slow
def test_quality_measures_the_before_row_and_the_class_weights_in_the_same_run(tmp_path):
    """`--before` (the defaults before a change) and `--weighting` train through the job's
    path in the same run; their figures are in the JSON, finite."""
    out = tmp_path / "quality.json"
    flags = ["--before", "window_days=7", "--weighting", "none,balanced"]
    flags += ["--variant", "max_train_rows=2000", "--variant", "num_leaves=7"]
    done = subprocess.run(
        [sys.executable, "bench/quality.py", "--quick", "--json", str(out), *flags],
        cwd=ROOT,
        env={**os.environ, QUICK_ENV: ""},
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    details = json.loads(out.read_text())["details"]
    assert details["before"]["overrides"] == "window_days=7"
    assert _finite(details["before"]["ap"])
    assert "LightGBM, defaults before (window_days=7)" in done.stdout
    sampled, leaves = details["variants"]
    assert (sampled["overrides"], leaves["overrides"]) == ("max_train_rows=2000", "num_leaves=7")
    assert sampled["train_rows"] < leaves["train_rows"]  # the window's negatives sampled
    assert all(_finite(v) for row in (sampled, leaves) for v in row["test"].values())
    assert "LightGBM, variant (max_train_rows=2000)" in done.stdout
    weighting = details["weighting"]
    assert set(weighting) == {"none", "balanced"} and weighting["balanced"]["pos_weight"] > 1
    for row in weighting.values():
        assert all(_finite(v) for v in (*row["holdout"], *row["test"], row["brier_corrected"]))


def test_results_table_is_generated_from_full_runs():
    """docs/results.md's bench table is `python bench/report.py` over bench/results/*.json, and
    those are full-size runs of every bench."""
    paths = ordered_results()
    assert [p.stem for p in paths] == list(BENCHES), "make bench writes one result per bench"
    for path in paths:
        doc = json.loads(path.read_text())
        assert doc["quick"] is False, f"{path.name} is a quick run"
        assert set(doc["figures"]) == set(BENCHES[path.stem]), f"{path.name} is stale"
    assert docs.generated(ROOT / "docs" / "results.md", "bench-results") == (
        results_markdown(paths).strip()
    ), "docs/results.md is stale: paste `python bench/report.py` between the markers"


def test_growth_chart_is_generated_from_the_scale_runs():
    """docs/scale-growth.svg is `python bench/growth_plot.py` over the committed scale runs, which
    cover three scales for every stage it draws."""
    data = series(default_inputs())
    assert data and all(len(points) == 3 for points in data.values()), data.keys()
    assert [round(tx, -2) for tx, _ in data["training"]] == [400, 4000, 40400]
    svg = growth_svg(default_inputs())
    panels = 2  # CPU and peak RSS
    assert svg.count("<polyline") == panels * len(data)
    assert svg.count("<circle") == panels * 3 * len(data)
    assert (ROOT / "docs" / "scale-growth.svg").read_text() == svg, (
        "docs/scale-growth.svg is stale: run `python bench/growth_plot.py`"
    )
