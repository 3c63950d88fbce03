"""Candidates and the gate: datasets as of a cutoff, deterministic LightGBM training with
lineage and reproduction, evaluation against production, metrics, and the model registry.
"""
