"""fraudloop's Dagster-free core, one package per stage of the loop: core, feeds, data,
features, model, delivery, serving, monitoring (each imports only itself and earlier stages).
"""
