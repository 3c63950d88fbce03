"""Drift specifications for the simulator: what changes in the world, and from which day.

A spec is a short string so that the CLI, the Dagster config and the tests say the same thing:

    card_testing@2018-05-15          new fraud pattern: bursts of small amounts (scenario 4)
    card_testing:12@2018-05-15       the same with 12 cards a day instead of 3 per 5,000 customers
    amount_shift:1.3@2018-05-15      every amount is multiplied by 1.3 from that day
    new_terminals:500@2018-05-15     500 terminals open in random places from that day

Numbers in a spec are absolute (cards a day, terminal count, factor). The canonical text of a spec
also seeds its own random stream, so the same spec gives the same data whatever else is combined.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

DRIFT_KINDS = ("card_testing", "amount_shift", "new_terminals")
DRIFT_GRAMMAR = (
    "KIND[:VALUE]@YYYY-MM-DD with KIND one of: "
    "card_testing[:CARDS_PER_DAY] (positive number, default 3 per 5,000 customers), "
    "amount_shift:FACTOR (positive number), "
    "new_terminals:COUNT (positive integer); "
    "e.g. 'card_testing@2018-05-15', 'amount_shift:1.3@2018-05-15', 'new_terminals:500@2018-05-15'"
)
_SPEC = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<value>[^@]+))?@(?P<day>\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Drift:
    """One parsed drift: `kind` starts on `start` (inclusive); `value` as described above."""

    kind: str
    start: date
    value: float | None = None

    @property
    def spec(self) -> str:
        """Canonical text; parse_drift(d.spec) == d."""
        if self.value is None:
            return f"{self.kind}@{self.start.isoformat()}"
        value = int(self.value) if self.kind == "new_terminals" else self.value
        return f"{self.kind}:{value:g}@{self.start.isoformat()}"

    @property
    def stream_key(self) -> int:
        """Stable 32-bit key of the spec, used to derive its random stream."""
        return zlib.crc32(self.spec.encode())

    def active(self, day: date) -> bool:
        return day >= self.start


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"invalid drift spec {spec!r}: {why}. Accepted grammar: {DRIFT_GRAMMAR}")


def _parse_value(spec: str, kind: str, text: str | None) -> float | None:
    if text is None:
        if kind == "card_testing":
            return None
        raise _bad(spec, f"{kind} needs a value")
    try:
        value = float(text)
    except ValueError:
        raise _bad(spec, f"value {text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise _bad(spec, "value must be a positive finite number")
    if kind == "new_terminals" and value != int(value):
        raise _bad(spec, "new_terminals needs a whole number of terminals")
    return value


def parse_drift(spec: str | Drift) -> Drift:
    """Parse one spec string (see the module docstring); raise ValueError with the grammar."""
    if isinstance(spec, Drift):
        return spec
    text = spec.strip()
    match = _SPEC.match(text)
    if match is None:
        raise _bad(spec, "it does not have the form KIND[:VALUE]@YYYY-MM-DD")
    kind = match["kind"]
    if kind not in DRIFT_KINDS:
        raise _bad(spec, f"unknown kind {kind!r}")
    try:
        start = date.fromisoformat(match["day"])
    except ValueError:
        raise _bad(spec, f"{match['day']!r} is not a calendar date") from None
    return Drift(kind, start, _parse_value(spec, kind, match["value"]))


def parse_drifts(specs: Iterable[str | Drift] | str | None) -> tuple[Drift, ...]:
    """Several specs (an iterable, or one string with comma-separated specs), in a stable order."""
    if specs is None:
        return ()
    if isinstance(specs, str):
        specs = [part for part in specs.split(",") if part.strip()]
    drifts = {parse_drift(spec) for spec in specs}
    return tuple(sorted(drifts, key=lambda d: (d.start, d.spec)))
