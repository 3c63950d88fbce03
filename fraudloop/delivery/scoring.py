"""Batch scoring of transactions with a registered model (``fraudloop score``).

Dagster-free. Each transaction's features come from:

- the stored offline ``transaction_features`` partition of its hour when that partition holds
  its ``transaction_id`` (point-in-time correct: exactly what the model was trained on), else
- the online feature store (``featurestore/online/``, loaded and verified against its sha256),
  in (``tx_datetime``, ``transaction_id``) order, each transaction observed after it is scored so
  that later ones see it (the batch definition of the in-hour windows).
"""

from __future__ import annotations

import pandas as pd

from fraudloop.core import tables
from fraudloop.core.hours import HOUR_KEY_FORMAT
from fraudloop.core.schema import TRANSACTION_COLUMNS
from fraudloop.core.store import ObjectStore
from fraudloop.features.feature_store import load_online
from fraudloop.model.booster import load_model
from fraudloop.model.training import MODEL_FILE

__all__ = ["OUTPUT_COLUMNS", "canonical_transactions", "score_transactions"]

FEATURE_TABLE = "transaction_features"
OUTPUT_COLUMNS = ("transaction_id", "score", "model_version", "feature_source")


def canonical_transactions(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical transaction columns with their dtypes; a clear ValueError otherwise."""
    missing = [c for c in TRANSACTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"input lacks columns {missing} (expected {', '.join(TRANSACTION_COLUMNS)})"
        )
    out = pd.DataFrame(index=range(len(frame)))
    for column in ("transaction_id", "customer_id", "terminal_id"):
        values = frame[column].reset_index(drop=True)
        if values.isna().any():
            raise ValueError(f"input column {column!r} has empty values")
        out[column] = values.astype(str).astype("string")
    times = pd.to_datetime(
        frame["tx_datetime"].reset_index(drop=True), errors="coerce", utc=True, format="ISO8601"
    )
    if times.isna().any():
        bad = frame["tx_datetime"].reset_index(drop=True)[times.isna()].iloc[0]
        raise ValueError(f"input column 'tx_datetime' has an unparseable value {bad!r}")
    out["tx_datetime"] = times.astype("datetime64[ns, UTC]")
    amounts = pd.to_numeric(frame["amount"].reset_index(drop=True), errors="coerce")
    if amounts.isna().any():
        bad = frame["amount"].reset_index(drop=True)[amounts.isna()].iloc[0]
        raise ValueError(f"input column 'amount' has a non-numeric value {bad!r}")
    out["amount"] = amounts.astype("float64")
    return out


def _offline_hour(store: ObjectStore, hour: str) -> pd.DataFrame | None:
    try:
        return tables.read_partition(store, FEATURE_TABLE, hour)
    except (tables.PartitionMissing, tables.PartitionQuarantined):
        return None


def score_transactions(store: ObjectStore, registry, ref: int | str, frame: pd.DataFrame):
    """Score ``frame`` (canonical transaction columns) with version/alias ``ref`` of ``registry``.

    Returns one row per input row, in input order: ``transaction_id``, ``score``,
    ``model_version``, ``feature_source`` (``"offline"`` or ``"online"``). The model files are
    read verified (the registry's IntegrityError on tampering); the online state too.
    """

    loaded = registry.load(ref)
    model = load_model(loaded.files[MODEL_FILE].decode())
    names = list(model.features)
    tx = canonical_transactions(frame)
    n = len(tx)
    features = pd.DataFrame(index=range(n), columns=names, dtype="float64")
    source = pd.Series(["online"] * n, dtype="object")

    hours = tx["tx_datetime"].dt.floor("h").dt.strftime(HOUR_KEY_FORMAT)
    for hour in sorted(hours.unique()):
        stored = _offline_hour(store, hour)
        if stored is None or len(stored) == 0:
            continue
        lacking = [c for c in names if c not in stored.columns]
        if lacking:
            raise ValueError(
                f"stored features of {hour} lack the model's features {lacking}: "
                "the model was trained on another feature set"
            )
        stored = stored.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
        rows = (hours == hour).to_numpy()
        ids = tx.loc[rows, "transaction_id"]
        found = ids.isin(stored.index).to_numpy()
        if not found.any():
            continue
        index = ids.index[found]
        features.loc[index, names] = stored.loc[ids[found].to_numpy(), names].to_numpy()
        source.loc[index] = "offline"

    online_rows = source.index[source == "online"]
    if len(online_rows):
        try:
            online, _ = load_online(store)
        except LookupError as error:
            raise ValueError(
                f"{len(online_rows)} transaction(s) are not in the stored features and {error}"
            ) from None
        order = tx.loc[online_rows].sort_values(["tx_datetime", "transaction_id"], kind="mergesort")
        for i, row in zip(order.index, order.to_dict("records"), strict=True):
            try:
                values = online.features(row)
            except ValueError as error:
                raise ValueError(
                    f"transaction {row['transaction_id']} at {row['tx_datetime']}: {error} "
                    "(and it is not in the stored offline features of its hour)"
                ) from None
            features.loc[i, names] = [values[name] for name in names]
            online.observe(row)

    scores = model.predict(features) if n else []
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "score": pd.Series(scores, dtype="float64"),
            "model_version": pd.Series([loaded.version] * n, dtype="int64"),
            "feature_source": source.astype("string"),
        }
    )
