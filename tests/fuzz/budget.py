"""How much each fuzz test runs, in one place.

``make test`` runs the quick set: a modest number of examples per test, derandomized (the same
cases every run, so a failure reproduces and the suite time is stable). ``make fuzz`` sets
``FRAUDLOOP_FUZZ_SCALE`` (examples x that factor) and draws new cases each run unless
``FRAUDLOOP_FUZZ_SEED`` pins them.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, Phase, settings

SCALE = max(1, int(os.environ.get("FRAUDLOOP_FUZZ_SCALE", "1")))
SEED = os.environ.get("FRAUDLOOP_FUZZ_SEED")
#: cases run per surface in this session (tests/fuzz/conftest.py prints them at the end)
TALLY: Counter[str] = Counter()
#: cases per surface that broke a property, by kind ("5xx", "crash", ...): printed likewise
FOUND: Counter[str] = Counter()


class Findings:
    """Collects the cases of one test that break its property instead of stopping at the
    first, so a run counts them all (the figures); :meth:`check` fails the test with the
    first few."""

    def __init__(self, surface: str):
        self.surface = surface
        self.cases: list[str] = []

    def add(self, kind: str, description: str) -> None:
        FOUND[f"{self.surface}: {kind}"] += 1
        self.cases.append(f"[{kind}] {description}")

    def check(self) -> None:
        shown = "\n\n".join(self.cases[:5])
        assert not self.cases, f"{len(self.cases)} failing case(s), the first:\n{shown}"


def fuzz_settings(examples: int) -> settings:
    """Settings for a property test that runs ``examples`` cases in the quick set."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=SCALE == 1 and SEED is None,
        database=None,  # no example database: the quick set is the same on every machine
        deadline=None,  # real servers and a shared machine: time is not the property
        print_blob=True,
        # no shrinking: a failing case is reported as found (shrinking a whole ingestion or
        # an HTTP exchange can take many minutes); derandomized, it reproduces as it is
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def seeded(test):
    """Pin the long set's cases to ``FRAUDLOOP_FUZZ_SEED`` when it is set."""
    if SEED is None:
        return test
    from hypothesis import seed

    return seed(int(SEED))(test)
