"""Bring your own history: an export is cut into the landing layout a live feed would produce."""

from __future__ import annotations

import io
import json
from datetime import date

import pandas as pd
import pytest

from fraudloop.core.keyspace import hour_landing_prefix
from fraudloop.data.ingest import ingest_transactions_hour, landed_files
from fraudloop.feeds import deliveries
from fraudloop.feeds.importer import import_history, parse_mapping
from pipelines.cli import main


@pytest.fixture
def export(tmp_path):
    tx = pd.DataFrame(
        {
            "TX_ID": ["a", "b", "c", "d"],
            "WHEN": [
                "2018-04-01 05:10:00",
                "2018-04-01T05:59:59Z",
                "2018-04-01T07:00:00+02:00",
                "??",
            ],
            "CARD": ["c1", "c2", "c1", "c3"],
            "TERM": ["t1", "t1", "t2", "t3"],
            "AMT": ["10.5", "3", "99.99", "1"],
            "channel": ["web", "pos", "pos", "web"],
        }
    )
    labels = pd.DataFrame({"TX_ID": ["a", "b", "c"], "is_fraud": [0, 1, 0]})
    tx_path, lab_path = tmp_path / "history.csv", tmp_path / "labels.csv"
    tx.to_csv(tx_path, index=False)
    labels.to_csv(lab_path, index=False)
    return tx_path, lab_path


MAPPING = [
    "TX_ID=transaction_id",
    "WHEN=tx_datetime",
    "CARD=customer_id",
    "TERM=terminal_id",
    "AMT=amount",
]


def test_import_places_rows_by_utc_hour_and_quarantines_unplaceable(local_store, export):
    tx_path, lab_path = export
    summary = import_history(local_store, tx_path, lab_path, parse_mapping(MAPPING), fmt="csv")
    keys = [i.key for i in local_store.list("landing/")]
    hour5 = [k for k in keys if k.startswith("landing/transactions/2018-04-01/05/")]
    hour7 = [k for k in keys if k.startswith("landing/transactions/2018-04-01/07/")]
    hour5_rows = pd.read_csv(io.BytesIO(local_store.get_bytes(hour5[0])), dtype=str)
    # naive timestamps are UTC; +02:00 moves row c from 07 local to 05 UTC
    assert sorted(hour5_rows["transaction_id"]) == ["a", "b", "c"]
    assert hour7 == []
    assert "channel" in hour5_rows.columns  # extra feed columns travel with the rows
    assert summary.transaction_rows == 3 and summary.unplaced_rows == 1
    reason = json.loads(
        local_store.get_bytes("quarantine/import/history.csv.unplaced.csv.reason.json")
    )
    assert "no parseable tx_datetime" in reason["summary"]
    # labels without known_at get tx time + 7 days, filed under that day
    assert summary.label_rows == 3
    (label_key,) = [k for k in keys if k.startswith("landing/labels/")]
    assert label_key.startswith("landing/labels/2018-04-08/")
    assert any("known_at" in note for note in summary.notes)


def test_import_is_idempotent(local_store, export):
    tx_path, lab_path = export
    import_history(local_store, tx_path, lab_path, parse_mapping(MAPPING), fmt="parquet")
    first = {i.key: local_store.get_bytes(i.key) for i in local_store.list("landing/")}
    import_history(local_store, tx_path, lab_path, parse_mapping(MAPPING), fmt="parquet")
    second = {i.key: local_store.get_bytes(i.key) for i in local_store.list("landing/")}
    assert first == second


def test_bad_mapping_and_missing_timestamp_column_are_clear_errors(local_store, export):
    tx_path, _ = export
    with pytest.raises(ValueError, match="SOURCE=canonical"):
        parse_mapping(["TX_ID"])
    with pytest.raises(ValueError, match="no tx_datetime column"):
        import_history(local_store, tx_path, None, {})


# --- corrections supersede; a date range ----------------------------------------------------


def _export(tmp_path, name: str, bad_rows: int = 0, days=("2018-04-01", "2018-04-02")):
    """40 transactions at 05:xx on each day; the first ``bad_rows`` of the first day have a
    negative amount (an export bug the feed later fixes)."""
    frames = []
    for d, day in enumerate(days):
        frames.append(
            pd.DataFrame(
                {
                    "transaction_id": [f"{day}-{i:03d}" for i in range(40)],
                    "tx_datetime": [f"{day}T05:{i:02d}:00Z" for i in range(40)],
                    "customer_id": [f"C{i % 7}" for i in range(40)],
                    "terminal_id": [f"T{i % 5}" for i in range(40)],
                    "amount": [
                        "-9.99" if d == 0 and i < bad_rows else f"{i + 1}.50" for i in range(40)
                    ],
                }
            )
        )
    path = tmp_path / name
    pd.concat(frames).to_csv(path, index=False)
    return path


H5 = "2018-04-01-05:00"


def test_a_corrected_reimport_supersedes_the_broken_one_and_can_be_reverted(local_store, tmp_path):
    broken = _export(tmp_path, "v1.csv", bad_rows=10)  # 25 %: the whole hour is quarantined
    import_history(local_store, broken, fmt="csv")
    files = landed_files(local_store, "transactions", H5)
    assert ingest_transactions_hour(local_store, H5, files, []).status == "quarantined"
    (old_key,) = [k for k, _ in files]

    fixed = _export(tmp_path, "v2.csv")
    summary = import_history(local_store, fixed, fmt="csv")
    assert summary.superseded == 2  # the broken file of each hour it covers
    assert any("superseded" in note for note in summary.notes)
    # both deliveries stay in landing (old bytes kept); ingestion sees the corrected one only
    assert len([i for i in local_store.list(hour_landing_prefix(H5)) if "import-" in i.key]) == 2
    files = landed_files(local_store, "transactions", H5)
    (new_key,) = [k for k, _ in files]
    assert new_key != old_key
    outcome = ingest_transactions_hour(local_store, H5, files, [])
    assert outcome.status == "valid" and outcome.rows == 40 and outcome.rows_rejected == 0
    ledger = deliveries.read_ledger(local_store, "transactions", H5)
    (entry,) = [e for e in ledger["entries"] if e["newly_superseded"]]
    assert entry["current"] == new_key and entry["newly_superseded"] == [old_key]
    assert entry["reason"] == "re-import of v2.csv"

    # reversible: importing the earlier export again makes it current again, recorded
    import_history(local_store, broken, fmt="csv")
    assert [k for k, _ in landed_files(local_store, "transactions", H5)] == [old_key]
    last = deliveries.read_ledger(local_store, "transactions", H5)["entries"][-1]
    assert last["restored"] == [old_key] and last["superseded"] == [new_key]
    # and the same export twice changes nothing
    entries = len(deliveries.read_ledger(local_store, "transactions", H5)["entries"])
    import_history(local_store, broken, fmt="csv")
    assert len(deliveries.read_ledger(local_store, "transactions", H5)["entries"]) == entries


def test_import_targets_a_date_range_and_supersedes_only_there(local_store, tmp_path):
    import_history(local_store, _export(tmp_path, "v1.csv"), fmt="csv")
    fixed = _export(tmp_path, "v2.csv", days=("2018-04-01", "2018-04-02", "2018-04-03"))
    day2 = date(2018, 4, 2)
    summary = import_history(local_store, fixed, fmt="csv", first_day=day2, last_day=day2)
    assert summary.transaction_rows == 40 and summary.transaction_files == 1
    assert summary.superseded == 1
    assert not local_store.list(hour_landing_prefix("2018-04-03-05:00"))  # outside the range
    (kept,) = landed_files(local_store, "transactions", H5)  # day 1 untouched
    assert deliveries.read_ledger(local_store, "transactions", H5) is None
    (current,) = landed_files(local_store, "transactions", "2018-04-02-05:00")
    assert current[0] != kept[0].replace("2018-04-01/05", "2018-04-02/05")
    with pytest.raises(ValueError, match="after"):
        import_history(local_store, fixed, first_day=day2, last_day=date(2018, 4, 1))


def test_cli_import_takes_a_date_range(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAUDLOOP_HOME", str(tmp_path / "home"))
    export = _export(tmp_path, "v1.csv", days=("2018-04-01", "2018-04-02"))
    argv = ["import", "--transactions", str(export), "--format", "csv"]
    assert main([*argv, "--from", "2018-04-02", "--to", "2018-04-02"]) == 0
    assert "imported 40 transactions into 1 hourly files" in capsys.readouterr().out
    assert main([*argv, "--from", "2018-04-03", "--to", "2018-04-01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "--from 2018-04-03 is after --to 2018-04-01" in err[0]
