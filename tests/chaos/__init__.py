"""The crash suite: real writer processes killed with SIGKILL at seeded points, then the
invariants every reader relies on checked (see docs/reliability.md)."""
