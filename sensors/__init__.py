"""Dagster sensors, one module per stage: new data -> ingestion, ingested data -> features,
the rollout controller, and monitoring -> retraining; built from the deployment's settings."""
