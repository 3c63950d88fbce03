"""The `fraudloop` command line: what a user types, end to end on a temporary home."""

from __future__ import annotations

import json

import pytest

from fraudloop.core import tables
from fraudloop.core.store import LocalObjectStore
from pipelines.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return LocalObjectStore(tmp_path / "home")


def test_simulate_then_backfill_then_list_quarantine(home, capsys):
    assert (
        main(
            [
                "simulate",
                "--days",
                "1",
                "--scale",
                "0.1",
                "--quiet",
                "--corrupt",
                "non_utf8@2018-04-01T13",
            ]
        )
        == 0
    )
    assert home.list("landing/transactions/2018-04-01/12/")
    assert home.list("landing/transactions/2018-04-01/13/")
    # the range contains the corrupted hour: quarantining it is handled (the check warns), so
    # the run succeeds
    argv = ["--from", "2018-04-01-11:00", "--to", "2018-04-01-13:00", "--in-process"]
    assert main(["backfill", "transactions", *argv]) == 0
    assert tables.read_pointer(home, "transactions", "2018-04-01-12:00")["status"] == "valid"
    assert tables.read_pointer(home, "transactions", "2018-04-01-13:00")["status"] == "quarantined"
    capsys.readouterr()
    assert main(["quarantine", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["partition"] == "2018-04-01-13:00"
    assert "UTF-8" in record["summary"]


def test_backfill_goes_through_the_run_queue_by_default(home, capsys):
    """Without --in-process the range is one run submitted to the instance's queue, as the UI
    would: it waits there for the daemon (none runs here), with its range and trigger tags."""
    import dagster as dg

    argv = ["backfill", "labels", "--from", "2018-04-02", "--to", "2018-04-04", "--wait", "1"]
    assert main(argv) == 1  # still queued when the wait ends: not a success
    out = capsys.readouterr().out
    run_id = out.split()[1].rstrip(":")
    assert "submitted to the queue" in out and out.strip().endswith(f"run {run_id}: QUEUED")
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.job_name == "daily_labels_job" and run.status == dg.DagsterRunStatus.QUEUED
        assert run.tags["dagster/asset_partition_range_start"] == "2018-04-02"
        assert run.tags["dagster/asset_partition_range_end"] == "2018-04-04"
        assert run.tags["fraudloop/trigger"] == "cli"


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--corrupt", "negative_amount@2018-04-01"],
        ["simulate", "--label-delay", "seven days"],
        ["simulate", "--start", "01/04/2018"],
    ],
)
def test_bad_arguments_exit_with_usage_error(home, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "expected" in err or "takes" in err


def test_bad_drift_spec_is_a_clear_error(home, capsys):
    assert (
        main(
            [
                "simulate",
                "--days",
                "1",
                "--scale",
                "0.05",
                "--quiet",
                "--drift",
                "meteor@2018-04-01",
            ]
        )
        == 2
    )
    assert "drift" in capsys.readouterr().err.lower()


def test_unknown_corruption_kind_lists_the_kinds(home, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--corrupt", "gremlins@2018-04-01T05"])
    assert "negative_amount" in capsys.readouterr().err


def test_a_misconfiguration_is_one_line_with_the_variable_and_its_exit_code(
    home, capsys, monkeypatch
):
    from fraudloop.core.errors import ConfigError

    monkeypatch.setenv("FRAUDLOOP_STORE", "gcs")
    assert main(["quarantine"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FRAUDLOOP_STORE" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["transactions", "--from", "2018-04-01", "--to", "2018-04-01-02:00"],
            "like 2018-04-01-13:00",
        ),
        (["labels", "--from", "2018-04-01-00:00", "--to", "2018-04-02"], "like 2018-04-01"),
        (["transactions", "--from", "2018-04-01-00:30", "--to", "2018-04-01-02:00"], "on the hour"),
        (["transactions", "--from", "2018-04-02-00:00", "--to", "2018-04-01-02:00"], "is after"),
        (["labels", "--from", "2018-03-31", "--to", "2018-04-02"], "before the first partition"),
        (["labels", "--from", "2018-04-01", "--to", "2099-01-01"], "past the partitions"),
    ],
)
def test_backfill_refuses_bad_keys_before_any_run_exists(home, tmp_path, argv, expected, capsys):
    """A mistyped key is a one-line error with the expected format, exit 2, and no FAILED run
    in the instance (Dagster itself would say `CheckError: Invariant failed` mid-run)."""
    assert main(["backfill", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fraudloop backfill: error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "dagster").exists()  # no instance touched, so no run recorded


def test_backfill_refuses_without_dagster_home(home, tmp_path, monkeypatch, capsys):
    """Without DAGSTER_HOME the run would land in ./.dagster, which the UI never shows."""
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "labels", "--from", "2018-04-01", "--to", "2018-04-01"]
    assert main(argv) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    assert not (tmp_path / ".dagster").exists()


def test_version_and_every_option_says_what_it_does(capsys):
    import argparse
    from importlib.metadata import version

    from pipelines.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fraudloop {version('fraudloop')}"

    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from undocumented(child, f"{path} {name}")
            elif not action.help and not isinstance(
                action, argparse._HelpAction | argparse._VersionAction
            ):
                yield f"{path} {action.dest}"

    assert list(undocumented(build_parser(), "fraudloop")) == []
    # defaults are shown where there is one to show
    simulate = build_parser()._subparsers._group_actions[0].choices["simulate"]
    text = simulate.format_help()
    assert "(default: 7)" in text and "(default: 42)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_an_unreachable_object_store_is_one_line_with_the_store_exit_code(
    tmp_path, monkeypatch, capsys
):
    """S3 unreachable (no credentials, or no endpoint: which one botocore meets first depends
    on what earlier tests left in its caches): the store's exit code (3) and one line that
    names the bucket and the endpoint, not a botocore traceback."""
    monkeypatch.setenv("FRAUDLOOP_STORE", "s3")
    monkeypatch.setenv("FRAUDLOOP_S3_BUCKET", "fraudloop-nowhere")
    monkeypatch.setenv("FRAUDLOOP_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["models", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("fraudloop models list: error: object store s3://fraudloop-nowhere")
    assert "at http://127.0.0.1:9" in err.splitlines()[0]
    assert err.count("\n") == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_alerts_lists_events_and_open_incidents(home, capsys):
    from fraudloop.core.alerts import Alert, Alerter

    alerter = Alerter(home)
    for key in ("ingest/transactions/2018-04-01-13:00", "run/training_job"):
        alerter.trigger(Alert(title=f"about {key}", summary="why", dedup_key=key))
    alerter.resolve("run/training_job", "a later run succeeded")
    assert main(["alerts", "--open"]) == 0
    out = capsys.readouterr().out
    assert "ingest/transactions/2018-04-01-13:00  x1" in out and "run/training_job" not in out
    assert main(["alerts", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["dedup_key"]) for e in events] == [
        ("trigger", "ingest/transactions/2018-04-01-13:00"),
        ("trigger", "run/training_job"),
        ("resolve", "run/training_job"),
    ]
