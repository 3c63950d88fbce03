"""Fuzzing of every input surface: the scoring service's HTTP API (schemathesis, from the
service's own OpenAPI), landed feed files, the history importer and the CLI's arguments
(hypothesis). See docs/reliability.md, "Fuzzing"."""
