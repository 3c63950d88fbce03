"""The scale bench's growth curves as a log-log chart: CPU seconds and peak RSS per run of each
stage against the hour's transactions, at every scale measured (issue 15's "so the growth is
visible").

Reads the scale bench's JSON files (``bench/results/scale-growth/*.json`` and
``bench/results/scale.json``) and writes an SVG: text, so it diffs, renders in a browser and on
the forge, and needs no plotting library in the lock. A dashed line of slope 1 beside the
curves shows what "linear in the data" would look like; a stage flatter than it is still its
fixed cost (imports, instance, the first Great Expectations call).

    .venv/bin/python bench/growth_plot.py [--out docs/scale-growth.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import REPO, RESULTS_DIR

#: stage of the scale bench -> (label, colour); publish shares the features run's process
STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("hourly ingest", "#1f77b4"),
    "features": ("hourly features + publish", "#ff7f0e"),
    "health": ("hourly health", "#2ca02c"),
    "labels": ("day end: labels", "#9467bd"),
    "daily": ("daily drift + accuracy", "#8c564b"),
    "training": ("training", "#d62728"),
}
PANELS = (  # (figure key of a stage, title, unit, y decades, limit line)
    ("cpu_median_s", "CPU per run (median)", "s", (0, 4), None),
    ("peak_rss_mb", "peak RSS of the run process", "MB", (2, 5), (8192, "8 GB per process")),
)
X_DECADES = (2, 5)  # transactions an hour: 100 .. 100,000
WIDTH, HEIGHT = 900, 450
PANEL_W, PANEL_H, TOP, LEFT, GAP = 340, 300, 40, 70, 110


def default_inputs() -> list[Path]:
    return [*sorted((RESULTS_DIR / "scale-growth").glob("*.json")), RESULTS_DIR / "scale.json"]


def series(paths: list[Path]) -> dict[str, list[tuple[float, dict]]]:
    """stage -> [(transactions an hour, its figures)] in increasing scale."""
    out: dict[str, list[tuple[float, dict]]] = {}
    for path in paths:
        details = json.loads(path.read_text())["details"]
        for stage in details["stages"]:
            if stage["stage"] in STAGES:
                out.setdefault(stage["stage"], []).append((details["tx_per_hour"], stage))
    return {k: sorted(v, key=lambda point: point[0]) for k, v in out.items()}


def _scale(value: float, decades: tuple[int, int], length: float) -> float:
    low, high = decades
    return (math.log10(value) - low) / (high - low) * length


def _panel(x0: float, key: str, title: str, unit: str, y_decades, limit, data) -> list[str]:
    def at(x: float, y: float) -> tuple[float, float]:
        return (
            x0 + _scale(x, X_DECADES, PANEL_W),
            TOP + PANEL_H - _scale(y, y_decades, PANEL_H),
        )

    parts = [
        f'<text x="{x0 + PANEL_W / 2}" y="{TOP - 14}" text-anchor="middle" '
        f'font-weight="bold">{title} ({unit})</text>',
        f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" '
        'stroke="#444"/>',
    ]
    for d in range(X_DECADES[0], X_DECADES[1] + 1):
        x, _ = at(10**d, 10 ** y_decades[0])
        parts += [
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + PANEL_H}" stroke="#ddd"/>',
            f'<text x="{x:.1f}" y="{TOP + PANEL_H + 16}" text-anchor="middle">{10**d:,}</text>',
        ]
    for d in range(y_decades[0], y_decades[1] + 1):
        _, y = at(10 ** X_DECADES[0], 10**d)
        parts += [
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#ddd"/>',
            f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{10**d:,}</text>',
        ]
    parts.append(
        f'<text x="{x0 + PANEL_W / 2}" y="{TOP + PANEL_H + 34}" text-anchor="middle">'
        "transactions an hour (scale 1, 10, 100)</text>"
    )
    if limit:
        _, y = at(10 ** X_DECADES[0], limit[0])
        parts += [
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#d62728" '
            'stroke-dasharray="2,3"/>',
            f'<text x="{x0 + 4}" y="{y - 4:.1f}" fill="#d62728">{limit[1]}</text>',
        ]
    # slope 1 through the lowest stage's first point: what growing with the data looks like
    firsts = [points[0] for points in data.values() if points]
    if firsts:
        x_a, stage_a = min(firsts, key=lambda p: p[1][key])
        y_a = stage_a[key]
        x_b = 10 ** X_DECADES[1]
        (ax, ay), (bx, by) = at(x_a, y_a), at(x_b, y_a * x_b / x_a)
        parts.append(
            f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#888" '
            'stroke-dasharray="6,4"><title>slope 1: linear in the transactions</title></line>'
        )
    for stage, points in data.items():
        colour = STAGES[stage][1]
        xy = [at(x, max(figures[key], 10 ** y_decades[0])) for x, figures in points]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), (tx, figures) in zip(xy, points, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>'
                f"{STAGES[stage][0]}: {figures[key]:,} {unit} at {tx:,.0f} tx/hour</title></circle>"
            )
    return parts


def growth_svg(paths: list[Path]) -> str:
    data = series(paths)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    for i, (key, title, unit, y_decades, limit) in enumerate(PANELS):
        parts += _panel(LEFT + i * (PANEL_W + GAP), key, title, unit, y_decades, limit, data)
    entries = [(label, colour, "") for stage, (label, colour) in STAGES.items() if stage in data]
    entries.append(("slope 1 (linear in the data)", "#888", ' stroke-dasharray="6,4"'))
    for i, (label, colour, dash) in enumerate(entries):
        x, y = LEFT + (i % 4) * 210, TOP + PANEL_H + 62 + (i // 4) * 20
        parts += [
            f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>',
            f'<text x="{x + 24}" y="{y + 4}">{label}</text>',
        ]
    parts += [
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scale-growth.svg")
    parser.add_argument("inputs", nargs="*", type=Path, help="scale bench JSON files")
    args = parser.parse_args()
    args.out.write_text(growth_svg(args.inputs or default_inputs()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
