"""Software-defined assets and their checks, one module per stage: each builds its stage's
assets from the deployment's partitions and stays thin (load -> call the core -> write ->
metadata)."""
