"""The derived tables of the feature stage, registered with the partition store.

They are versioned, verified and refused exactly like the raw tables (`fraudloop.core.tables`).
"""

from __future__ import annotations

from fraudloop.core import keyspace
from fraudloop.core.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS
from fraudloop.core.tables import TableSpec, register
from fraudloop.features.compute import FEATURE_NAMES, ID_COLUMNS

# labels joined with what the feature state needs of their transaction (bi-temporal)
FRAUD_LABELS = register(
    TableSpec(
        name="fraud_labels",
        prefix=f"{keyspace.FEATURES}/fraud_labels",
        columns={
            **LABEL_COLUMNS,
            "tx_datetime": TRANSACTION_COLUMNS["tx_datetime"],
            "customer_id": "string",
            "terminal_id": "string",
        },
        sort=("known_at", "transaction_id"),
        time="known_at",
    )
)
TRANSACTION_FEATURES = register(
    TableSpec(
        name="transaction_features",
        prefix=f"{keyspace.FEATURES}/transaction_features",
        columns={
            **{c: TRANSACTION_COLUMNS[c] for c in ID_COLUMNS},
            **dict.fromkeys(FEATURE_NAMES, "float64"),
        },
        sort=("tx_datetime", "transaction_id"),
        time="tx_datetime",
    )
)
