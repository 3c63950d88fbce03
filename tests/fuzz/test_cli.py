"""The command line's arguments, fuzzed from the parser itself.

Every sub-command (nested ones too) gets generated argument lists: its own options with
hostile values (text, huge and negative numbers, ``nan``, impossible dates and durations),
missing positionals, unknown options. Each list is parsed, and run on an empty temporary home
when running it is cheap (everything but the servers and the demo; ``simulate`` only when it
asks for little data). The property: a usage error exits 2 with argparse's message, a refused
command returns its stage's exit code with one ``fraudloop <command>: error: ...`` line, and
nothing ever escapes as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.cli import build_parser, main
from tests.fuzz.budget import TALLY, Findings, fuzz_settings, seeded

pytestmark = pytest.mark.slow  # in make test, not test-fast

#: parsed only: they start servers or the whole demo
NOT_RUN = {"demo", "serve", "reports"}
#: rows of simulated data a run may produce and still count as cheap (days x scale)
CHEAP_SIMULATION = 0.2


def _commands(parser: argparse.ArgumentParser, prefix=()) -> dict[tuple, argparse.ArgumentParser]:
    """Every leaf sub-command: (path of names) -> its parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_commands(sub, (*prefix, name)) or {(*prefix, name): sub})
    return out


COMMANDS = _commands(build_parser())

VALUES = st.one_of(
    st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        max_size=20,
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e999",
            "nan",
            "-inf",
            "2018-04-01",
            "2018-13-45",
            "0001-01-01",
            "9999-12-31",
            "7d",
            "36h",
            "90m",
            "1e999d",
            "99999999999d",
            "-1d",
            "0.5",
            "2018-04-01-13:00",
            "2018-04-01-25:00",
            "negative_amount@2018-04-03T14",
            "x@y",
            "card_testing@2018-05-15",
            "production",
            "canary",
            "previous",
            "999",
            "a=b",
            "=",
            "--",
            "-",
            "transactions",
            "labels",
            "csv",
            "parquet",
            "/nonexistent/x.csv",
        ]
    ),
)


#: values aimed at an option's type (the hostile corners of what it parses)
TYPED = {
    "_duration": st.one_of(
        st.from_regex(r"\s*\d{1,14}(\.\d{1,3})?\s*[dhm]?\s*", fullmatch=True),
        st.sampled_from(["1e999d", "99999999999d", "0d", "-1d", "7 d", "d"]),
    ),
    "_date": st.one_of(
        st.dates().map(str), st.sampled_from(["0001-01-01", "9999-12-31", "2018-02-30"])
    ),
    "_corrupt_spec": st.builds(
        "{}@{}".format,
        st.sampled_from(["negative_amount", "empty", "x"]),
        st.sampled_from(["2018-04-03T14", "0001-01-01T00", "9999-12-31T23", "2018-04-03"]),
    ),
    "int": st.one_of(st.integers(-5, 5), st.integers(-(10**30), 10**30)).map(str),
    "float": st.one_of(
        st.floats(-1, 1), st.floats(), st.sampled_from(["nan", "inf", "1e-300", "0.001"])
    ).map(str),
}


def _values_for(action: argparse.Action) -> st.SearchStrategy[str]:
    typed = TYPED.get(getattr(action.type, "__name__", ""))
    if action.choices:
        typed = st.sampled_from(sorted(map(str, action.choices)))
    return VALUES if typed is None else st.one_of(typed, typed, VALUES)


@st.composite
def argvs(draw):
    path = draw(st.sampled_from(sorted(COMMANDS)))
    parser = COMMANDS[path]
    argv = list(path)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:  # a positional: usually given, sometimes missing
            if draw(st.integers(0, 9)):
                argv.append(draw(_values_for(action).filter(lambda v: not v.startswith("-"))))
            continue
        if not draw(st.booleans()):
            continue
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            argv.append(draw(_values_for(action)))
    if not draw(st.integers(0, 9)):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--bogus", "zzz"])))
    return argv


def _cheap(args: argparse.Namespace) -> bool:
    if args.command in NOT_RUN:
        return False
    if args.command != "simulate":
        return True
    size = abs(args.days) * args.scale
    many = [n for n in (args.customers, args.terminals) if n is not None and n > 100_000]
    return not many and not (size > CHEAP_SIMULATION) and args.days <= 3


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # backfill refuses before any run
    return tmp_path


def run_cli(argv: list[str], parse_only: bool = False) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command line, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            args = build_parser().parse_args(argv)
            if parse_only or not _cheap(args):
                return 0, out.getvalue(), err.getvalue()
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def clear_outcome(argv: list[str], code: int, out: str, err: str) -> str | None:
    """What is unclear about how the command line ended (None: clear)."""
    if "Traceback" in err:
        return f"traceback: {err[-500:]}"
    if code == 2 and "usage:" in err:
        return None if "error:" in err else f"usage without the error: {err[-300:]!r}"
    if code == 1 and out.strip() and not err.strip():
        return None  # the command ran and reported its own failure (a staging test, a run)
    if code != 0:
        last = err.strip().split("\n")[-1] if err.strip() else ""  # lines as a terminal ends them
        if not (last.startswith("fraudloop ") and "error:" in last):
            return f"exit {code} without a one-line error: {err[-300:]!r}"
    return None


@seeded
@fuzz_settings(200)
@given(argv=argvs())
def test_bad_arguments_give_a_clear_error_and_exit_code_never_a_traceback(home, argv):
    TALLY["cli arguments"] += 1
    findings = Findings("cli arguments")
    try:
        code, out, err = run_cli(argv)
    except Exception as error:  # a traceback is what the user would see
        findings.add("crash", f"{argv!r}: {type(error).__name__}: {error}")
    else:
        TALLY[f"cli arguments: exit {code}"] += 1
        if problem := clear_outcome(argv, code, out, err):
            findings.add("unclear", f"{argv!r}: {problem}")
    findings.check()


def test_every_sub_command_is_fuzzed():
    """The generator walks the parser: a new sub-command is fuzzed without listing it."""
    names = {" ".join(path) for path in COMMANDS}
    assert {"simulate", "import", "backfill", "models promote", "rollout share"} <= names


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "--label-delay", "99999999999d"], "--label-delay: duration"),
        (["import", "--transactions", "x.csv", "--label-delay", "2846602702001"], "too long"),
        (["simulate", "--start", "0001-01-01", "--days", "1", "--scale", "0.01"], "out of range"),
    ],
)
def test_what_the_fuzzing_found_is_a_one_line_error(home, argv, fragment):
    """Found by the long set: an overflowing duration and a start date the simulator reaches
    back before year 1 from were tracebacks (OverflowError)."""
    code, _, err = run_cli(argv)
    assert code in (2, 7) and "Traceback" not in err, err
    assert fragment in err.strip().splitlines()[-1]
