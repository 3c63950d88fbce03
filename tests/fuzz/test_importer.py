"""`fraudloop import` on generated exports: every row lands once, in its UTC hour, unchanged.

Exports are generated with the source's own column names (mapped with ``--map``), timestamps
with and without offsets, some that no parser can place, values with commas, quotes and
non-ASCII text, written as CSV or Parquet and imported as either. The property: the command
ends with 0 or a one-line error; after a 0 every row of the export is in exactly one landed file
of the hour its timestamp falls in (UTC), with its values unchanged, or in the importer's
quarantine with the reason; no row is lost or invented. Arbitrary bytes as an export give a
one-line error or an import of what could be read, never a traceback.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudloop.core.hours import hour_key
from fraudloop.core.keyspace import partition_from_landing_key
from fraudloop.core.store import LocalObjectStore
from tests.fuzz.budget import TALLY, Findings, fuzz_settings, seeded
from tests.fuzz.test_cli import clear_outcome, run_cli

pytestmark = pytest.mark.slow  # in make test, not test-fast

CANONICAL = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "amount"]
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12
).filter(lambda v: v.strip() == v)
INSTANTS = st.datetimes(
    min_value=pd.Timestamp("2018-03-30").to_pydatetime(),
    max_value=pd.Timestamp("2018-04-03").to_pydatetime(),
)
UNPLACEABLE = st.sampled_from(["", "??", "yesterday", "1522559400", "2018-02-30T01:00:00"])


@st.composite
def when_text(draw) -> tuple[str, pd.Timestamp | None]:
    """(the timestamp as the export writes it, the instant it means or None)."""
    if draw(st.integers(0, 6)) == 0:
        return draw(UNPLACEABLE), None
    instant = pd.Timestamp(draw(INSTANTS)).tz_localize("UTC")
    offset = draw(st.integers(-12, 14))
    style = draw(st.sampled_from(["naive", "Z", "offset"]))
    if style == "naive":
        return instant.tz_localize(None).isoformat(sep=" "), instant
    if style == "Z":
        return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), instant
    return instant.tz_convert(f"Etc/GMT{-offset:+d}").isoformat(), instant


@st.composite
def exports(draw):
    """(frame as the source writes it, the instants, the source's column names)."""
    n = draw(st.integers(1, 25))
    names = draw(
        st.lists(
            st.from_regex(r"[A-Z][A-Z_]{1,8}", fullmatch=True),
            min_size=5,
            max_size=5,
            unique_by=str.lower,
        ).filter(lambda ns: not {n.lower() for n in ns} & set(CANONICAL))
    )
    whens = [draw(when_text()) for _ in range(n)]
    frame = pd.DataFrame(
        {
            names[0]: [f"tx{i}" for i in range(n)],
            names[1]: [text for text, _ in whens],
            names[2]: [draw(TEXT) for _ in range(n)],
            names[3]: [draw(TEXT) for _ in range(n)],
            names[4]: [str(draw(st.decimals(0, 10**5, places=2))) for _ in range(n)],
        }
    )
    return frame, [instant for _, instant in whens], names


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDLOOP_HOME", str(tmp_path / "home"))
    return tmp_path


def _landed(store: LocalObjectStore) -> pd.DataFrame:
    """Every landed transaction row, with the hour of the file it is in."""
    frames = []
    for info in store.list("landing/transactions/"):
        found = partition_from_landing_key(info.key)
        if not found or info.key.endswith(".json"):
            continue
        data = store.get_bytes(info.key)
        if info.key.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(data)).astype(str)
        else:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        frames.append(frame.assign(_hour=found[1]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@seeded
@fuzz_settings(30)
@given(
    export=exports(),
    source=st.sampled_from(["csv", "parquet"]),
    fmt=st.sampled_from(["csv", "parquet"]),
)
def test_every_exported_row_lands_once_in_its_hour_or_is_quarantined(home, export, source, fmt):
    frame, instants, names = export
    TALLY["importer: generated exports"] += 1
    case = home / f"case-{TALLY['importer: generated exports']}"
    case.mkdir()
    path = case / f"history.{source}"
    if source == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    home_dir = case / "home"
    mapping = [f"--map={n}={c}" for n, c in zip(names, CANONICAL, strict=True)]
    argv = ["import", "--transactions", str(path), *mapping, "--format", fmt]
    findings = Findings("importer")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRAUDLOOP_HOME", str(home_dir))
        code, out, err = run_cli(argv)
    if problem := clear_outcome(argv, code, out, err):
        findings.add("unclear", problem)
    findings.check()
    assert code == 0, err
    store = LocalObjectStore(home_dir)
    landed = _landed(store)
    placed = [i for i, instant in enumerate(instants) if instant is not None]
    assert len(landed) == len(placed)  # nothing lost, nothing invented
    assert not len(landed) or "transaction_id" in landed, (list(landed.columns), source, fmt)
    by_id = landed.set_index("transaction_id", drop=False) if len(landed) else landed
    assert not len(landed) or by_id.index.is_unique
    for i in placed:
        row = by_id.loc[f"tx{i}"]
        assert row["_hour"] == hour_key(instants[i].floor("h"))
        for name, column in zip(names, CANONICAL, strict=True):
            assert row[column] == frame.loc[i, name], column
    unplaced = len(instants) - len(placed)
    if unplaced:
        kept = store.get_bytes(f"quarantine/import/{path.name}.unplaced.csv")
        quarantined = pd.read_csv(io.BytesIO(kept), dtype=str, keep_default_na=False)
        assert len(quarantined) == unplaced
        assert store.get_bytes(f"quarantine/import/{path.name}.unplaced.csv.reason.json")


@seeded
@fuzz_settings(60)
@given(
    data=st.one_of(st.binary(max_size=512), st.text(max_size=200).map(str.encode)),
    suffix=st.sampled_from([".csv", ".parquet", ".csv.gz", ".txt"]),
)
def test_arbitrary_bytes_as_an_export_are_a_one_line_error_or_an_import(home, data, suffix):
    TALLY["importer: arbitrary bytes"] += 1
    path = home / f"export{suffix}"
    path.write_bytes(data)
    argv = ["import", "--transactions", str(path)]
    findings = Findings("importer")
    try:
        code, out, err = run_cli(argv)
    except Exception as error:
        findings.add("crash", f"{data[:80]!r}{suffix}: {type(error).__name__}: {error}")
    else:
        if problem := clear_outcome(argv, code, out, err):
            findings.add("unclear", f"{data[:80]!r}{suffix}: {problem}")
    findings.check()
