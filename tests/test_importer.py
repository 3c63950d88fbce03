"""Bring your own history: an export is cut into the landing layout a live feed would produce."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from fraudloop.feeds.importer import import_history, parse_mapping


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
