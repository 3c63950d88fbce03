"""Prints how many cases each fuzzed surface ran (the figures of docs/reliability.md)."""

from __future__ import annotations

from tests.fuzz.budget import FOUND, SCALE, TALLY


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY:
        return
    terminalreporter.section(f"fuzz cases per surface (scale {SCALE})")
    for surface, count in sorted(TALLY.items()):
        terminalreporter.write_line(f"{surface}: {count:,}")
    for what, count in sorted(FOUND.items()):
        terminalreporter.write_line(f"FAILED {what}: {count:,}")
