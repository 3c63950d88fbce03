"""The scoring service: a Dagster-free FastAPI app that follows the registry's aliases and
scores with online features (blue-green swaps, canary, shadow, Prometheus metrics).
"""
