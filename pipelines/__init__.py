"""The code location: the composition root (`definitions.build_definitions`), jobs, schedules,
partitions, the resources of a deployment, the CLI and the demo."""
