"""Dagster resources: the one home of configuration. Each hands the core a plain typed object
(a store, a registry, a stage's policy); the composition root fills them from the environment.
"""
