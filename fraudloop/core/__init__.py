"""What every stage stands on: the object store and its key space, the partitioned tables,
canonical schemas, hours and time units, settings, the error hierarchy and alerts.
"""
