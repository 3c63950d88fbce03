"""Canonical table schemas: the columns and dtypes every stage sees.

Everything downstream of ingestion sees exactly these columns and dtypes, whatever a feed
delivered; extra feed columns are kept after the canonical ones in raw, never dropped.
"""

from __future__ import annotations

TRANSACTION_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "tx_datetime": "datetime64[ns, UTC]",
    "customer_id": "string",
    "terminal_id": "string",
    "amount": "float64",
}
LABEL_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "is_fraud": "int8",
    "known_at": "datetime64[ns, UTC]",
}
#: the columns that identify a transaction's row in a derived table (the feature table)
TRANSACTION_KEY_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
)
