"""Point-in-time features: one definition with batch, incremental and online paths, the
feature state, the hourly feature pipeline and the feature store (offline partitions, online state).
"""

# Importing the stage registers its derived tables (fraud_labels, transaction_features) with the
# partition store, so any reader of them, which imports this package, finds them.
from fraudloop.features import tables as _tables  # noqa: F401
