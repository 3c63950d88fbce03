"""Landed files to validated, versioned raw partitions: the landing watch, reading and
normalising feed files, Great Expectations validation, quarantine, and the ingestion policy.
"""
