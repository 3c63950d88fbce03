"""The scoring service: a Dagster-free FastAPI app that serves registry versions.

It follows the registry's aliases live (blue-green swaps, canary share, shadow scoring), takes
features from the online feature store, and logs every decision to ``predictions/``. Nothing here
imports dagster; the container image of a model package does not even install it.
"""
