"""Point-in-time features: one definition with batch, incremental and online paths, the
feature state, the hourly feature pipeline and the feature store (offline partitions, online state).
"""
