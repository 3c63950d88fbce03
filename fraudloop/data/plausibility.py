"""Does the amount column still hold amounts? A delivery judged against the feed's own history.

The row checks catch a shifted file whose id columns receive amounts ("66.96" is not an id),
but not the other direction: when the feed's ids are integers, an amount column that receives
customer ids is a column of plausible numbers (2417 is a possible amount, under the cap, not
negative), and every row passes. Row by row nothing is wrong; as a column it is: every value is
a whole number and the column's median is far from what the same hour carried on earlier days.

So each accepted hour keeps a small profile of its amounts in its pointer (``validation`` ->
``amount_profile``: rows, share of whole numbers, median), and a new file is compared with the
profiles of the same hour on earlier days (the same days the row-count bounds use). A file is
held back when **both** hold:

- (nearly) every amount is a whole number (ids are integers), and
- its median is more than ``IngestPolicy.amount_median_ratio`` (4x) away from the median of the
  history's medians, either way.

Whole numbers alone are not enough: a feed may send round-dollar amounts (or switch to them),
and those keep the median of genuine amounts, so they pass. A median shift alone is not enough
either: prices move, and that is drift for monitoring, not a broken file. Without history (the
first days of a feed, or hours ingested before profiles were kept) the check does not run, like
the row-count bounds. What it cannot see: ids whose values lie in the amounts' own range (a
feed with customer ids 1..200 and amounts around 50); a learned id format per column would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudloop.data.expectations import Problem

#: fewer rows than this are too few to call a column's shape (quiet night hours)
MIN_ROWS = 30
#: share of whole-number amounts from which a column is "all integers"
WHOLE_SHARE = 0.99


def amount_profile(amounts: pd.Series) -> dict[str, float] | None:
    """What an hour's amounts looked like: rows, share of whole numbers, median (None: empty)."""
    values = amounts.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    return {
        "rows": len(values),
        "whole_share": round(float(np.mean(values == np.floor(values))), 6),
        "median": float(np.median(values)),
    }


def history_profiles(history: list[dict]) -> list[dict]:
    """The amount profiles kept by ``history`` (the raw pointers of the same hour on earlier
    days, valid ones: :func:`fraudloop.core.tables.history_pointers`), oldest first."""
    profiles = ((p.get("validation") or {}).get("amount_profile") for p in history)
    return [profile for profile in profiles if profile]


def amounts_look_like_ids(
    amounts: pd.Series, history: list[dict], median_ratio: float, source: str | None = None
) -> Problem | None:
    """A problem when the amounts of one file look like ids (see the module docstring)."""
    profile = amount_profile(amounts)
    if not history or profile is None or profile["rows"] < MIN_ROWS:
        return None
    if profile["whole_share"] < WHOLE_SHARE:
        return None
    usual = float(np.median([p["median"] for p in history]))
    now = profile["median"]
    ratio = max(now, 1.0) / max(usual, 1.0)
    if 1 / median_ratio <= ratio <= median_ratio:
        return None
    whole = float(np.median([p["whole_share"] for p in history]))
    return Problem(
        "plausibility",
        "amount_looks_like_ids",
        f"amount looks like ids, not amounts (shifted columns?): {profile['whole_share']:.0%} of "
        f"{profile['rows']:,} values are whole numbers and their median {now:,.2f} is "
        f"{ratio if ratio > 1 else 1 / ratio:,.1f}x {'above' if ratio > 1 else 'below'} the "
        f"median {usual:,.2f} of the same hour on {len(history)} earlier day(s) (where "
        f"{whole:.0%} were whole numbers); the limit is {median_ratio:g}x",
        column="amount",
        unexpected_count=profile["rows"],
        examples=amounts.head(5).tolist(),
        source=source,
    )
