"""What every benchmark prints and writes: its figures, each beside the comparison measured in the
same run and the ratio of the two, as a Markdown table, and (``--json PATH``) the same figures as
JSON with the date, the commit and the machine they were measured on.

Why ratios: the machine is shared, so an absolute figure moves with whatever else runs; a ratio
of two figures measured seconds apart, on the same data, in the same process, mostly does not.
The ratio is the verdict, the absolute figure its context.

Every bench takes ``--quick`` (or ``FRAUDLOOP_BENCH_QUICK=1``): small data and short phases, so
that ``tests/test_bench.py`` runs each one end to end in the suite and a function a bench uses
cannot go away unnoticed. Quick figures say nothing about performance; only their presence is
tested.

    .venv/bin/python bench/report.py [--update docs/results.md]   # its table, from bench/results/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICK_ENV = "FRAUDLOOP_BENCH_QUICK"
RESULTS_DIR = REPO / "bench" / "results"


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options every bench has: --quick and --json."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get(QUICK_ENV, "") not in ("", "0"),
        help=f"small data, short phases: a smoke run for the suite (or {QUICK_ENV}=1)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure here")
    return parser


def provenance() -> dict[str, Any]:
    """When, at which commit and on what the figures were measured. ``dirty`` counts changes to
    tracked files other than the results themselves (a `make bench` rewrites those as it goes)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short=10", "HEAD") or "unknown",
        "dirty": bool(changes),
        "machine": {
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Figure:
    """One measured figure and the comparison measured in the same run.

    ``ratio`` is ``value / versus_value`` unless given (say which way in ``ratio_means``, e.g.
    "baseline / ours" for a speed-up)."""

    key: str
    label: str
    value: float
    unit: str
    text: str
    versus: str
    versus_value: float
    versus_text: str
    ratio: float
    ratio_means: str
    target: str = ""


def _number(value: float, unit: str) -> str:
    if not finite(value):
        return f"{value} {unit}".strip()
    if abs(value) >= 1000:
        shown = f"{value:,.0f}"
    elif value == int(value):
        shown = f"{int(value)}"
    else:
        shown = f"{value:.3g}"
    return f"{shown} {unit}".strip()


def ratio_text(ratio: float) -> str:
    if not finite(ratio):
        return str(ratio)
    size = abs(ratio)
    if size >= 100:
        return f"x{ratio:,.0f}"
    return f"x{ratio:.1f}" if size >= 10 else f"x{ratio:.2f}" if size >= 0.01 else f"x{ratio:.2g}"


class Report:
    """Collects a bench's figures; ``finish`` prints the table and writes the JSON."""

    def __init__(self, bench: str, args: argparse.Namespace, command: str | None = None):
        self.bench = bench
        self.quick = bool(args.quick)
        self.json_path: Path | None = args.json
        self.command = command or f"python bench/{bench}.py"
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.details: dict[str, Any] = {}
        self.meta = provenance()
        self.started = time.perf_counter()
        mode = "quick (a smoke run: sizes too small for the figures to mean anything)"
        print(f"== bench/{bench}.py, {mode if self.quick else 'full size'} ==", flush=True)

    def figure(
        self,
        key: str,
        label: str,
        value: float,
        unit: str,
        *,
        versus: str,
        versus_value: float,
        text: str | None = None,
        versus_text: str | None = None,
        ratio: float | None = None,
        ratio_means: str = "",
        target: str = "",
    ) -> Figure:
        if ratio is None:
            ratio = value / versus_value if versus_value else math.nan
        fig = Figure(
            key=key,
            label=label,
            value=float(value),
            unit=unit,
            text=text or _number(value, unit),
            versus=versus,
            versus_value=float(versus_value),
            versus_text=versus_text or _number(versus_value, unit),
            ratio=float(ratio),
            ratio_means=ratio_means or f"{key} / {versus}",
            target="" if self.quick else target,  # targets are for the full sizes
        )
        if any(f.key == key for f in self.figures):
            raise ValueError(f"figure {key!r} reported twice")
        self.figures.append(fig)
        return fig

    def note(self, line: str) -> None:
        """A line printed after the table (context, sub-tables)."""
        self.notes.append(line)

    def table(self) -> str:
        lines = [
            "| figure | result | compared with, same run | ratio | target |",
            "|---|---|---|---|---|",
        ]
        for f in self.figures:
            lines.append(
                f"| {f.label} | {f.text} | {f.versus}: {f.versus_text} | "
                f"{ratio_text(f.ratio)} ({f.ratio_means}) | {f.target} |"
            )
        return "\n".join(lines)

    def finish(self) -> dict[str, Any]:
        """Print the table and the notes, write the JSON; exit 1 if a figure is not finite (a
        phase that measured nothing must not pass for a result)."""
        meta = self.meta
        machine = meta["machine"]
        total = time.perf_counter() - self.started
        print()
        print(
            f"measured {meta['date']} at commit {meta['commit']}"
            f"{' (with uncommitted changes)' if meta['dirty'] else ''}; {machine['processor']}, "
            f"{machine['cpu_count']} cores, Python {machine['python']}; load average at start "
            f"{meta['load_average_at_start']}, at end {[round(v, 2) for v in os.getloadavg()]}; "
            f"{total:.0f} s"
        )
        print(self.table())
        for line in self.notes:
            print(line)
        out = {
            "bench": self.bench,
            "command": self.command,
            "quick": self.quick,
            **meta,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "total_s": round(total, 1),
            "figures": {f.key: asdict(f) for f in self.figures},
            "details": self.details,
        }
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.json_path.with_name(self.json_path.name + ".tmp")
            tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
            tmp.replace(self.json_path)
        bad = [
            f.key
            for f in self.figures
            if not (finite(f.value) and finite(f.versus_value) and finite(f.ratio))
        ]
        if bad:
            print(f"ERROR: figures not measured (not finite): {', '.join(bad)}", file=sys.stderr)
            raise SystemExit(1)
        return out


# ---- docs/results.md from the JSON files of a `make bench`


def results_markdown(paths: list[Path]) -> str:
    """The bench rows of docs/results.md: one row per figure, in the order of ``paths``."""
    lines = [
        "| figure | command | result | compared with, same run | ratio | measured |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if doc["quick"]:
            raise ValueError(f"{path}: a quick run is no result")
        when = (
            f"{doc['date'][:10]}, `{doc['commit'][:7]}`{' +changes' if doc['dirty'] else ''}, "
            f"load {doc['load_average_at_start'][0]:.1f}"
        )
        for f in doc["figures"].values():
            target = f" (target {f['target']})" if f["target"] else ""
            lines.append(
                f"| {f['label']} | `{doc['command']}` | {f['text']}{target} | "
                f"{f['versus']}: {f['versus_text']} | {ratio_text(f['ratio'])} "
                f"({f['ratio_means']}) | {when} |"
            )
    return "\n".join(lines)


def ordered_results(directory: Path = RESULTS_DIR) -> list[Path]:
    """The result files in `make bench` order (then any other)."""
    order = [
        "simulate", "ingest", "features", "training", "gate", "quality", "serve", "drift",
        "orchestration", "balancer", "s3_listing", "scale",
    ]  # fmt: skip
    found = {p.stem: p for p in directory.glob("*.json")}
    return [found[n] for n in order if n in found] + [
        p for n, p in sorted(found.items()) if n not in order
    ]


MARKER = "bench-results"


def update_document(path: Path, table: str) -> None:
    """Replace what stands between ``<!-- bench-results ... -->`` and ``<!-- /bench-results -->``
    in ``path`` with ``table``."""
    text = path.read_text()
    start = text.index(f"<!-- {MARKER}")
    start = text.index("\n", start) + 1
    end = text.index(f"<!-- /{MARKER} -->")
    path.write_text(text[:start] + table + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description="The table of docs/results.md from bench JSON.")
    parser.add_argument("files", nargs="*", type=Path, help="default: bench/results/*.json")
    parser.add_argument("--update", type=Path, metavar="DOC", help="write it into DOC")
    args = parser.parse_args()
    table = results_markdown(args.files or ordered_results())
    if args.update:
        update_document(args.update, table)
        print(f"{args.update}: bench table updated")
    else:
        print(table)


if __name__ == "__main__":
    main()
