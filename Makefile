# fraudloop: two commands on a fresh machine, `make demo` and `make test`.
# Both bootstrap uv (into .tools/ when it is not on PATH) and the locked virtualenv (.venv/).
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export FRAUDLOOP_HOME ?= $(CURDIR)/.fraudloop
export UV_PYTHON_DOWNLOADS := never
# Ship bytecode with the venv: with PYTHONDONTWRITEBYTECODE set (as on these machines) every
# process would otherwise recompile Dagster, Great Expectations and Evidently on import
# (measured: importing great_expectations 5.9 s -> 2.9 s, dagster 1.3 s -> 0.6 s).
export UV_COMPILE_BYTECODE := 1
# One "materialization planned" event per asset of a range run instead of one per partition:
# on SQLite each is a write of ~25-100 ms, and the daemon's sensor thread wrote 500 of them
# (25 s) before a 11-day features run could even queue (bench/orchestration.py). The price: the
# UI no longer marks the partitions of a failed range run as failed (the run is, and alerts).
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS ?= true

.PHONY: demo test test-fast chaos fuzz ui bench bench-quick lint fmt clean help system-deps bootstrap stack stack-down stack-images test-stack test-stack-long

help:
	@echo "make demo   - the end-to-end demo on the embedded local profile"
	@echo "make test   - the whole test suite"
	@echo "make ui     - Dagster UI (webserver + daemon) on http://127.0.0.1:3000"
	@echo "make bench  - the benchmarks at full size; rewrites bench/results/ and docs/results.md"
	@echo "make bench-quick - every benchmark at a small size (what make test runs of them)"
	@echo "make chaos  - the crash suite's long schedule (writers killed at 300 seeded points)"
	@echo "make fuzz   - the fuzz set's long run (10x the examples of make test, new cases each run)"
	@echo "make lint   - ruff"
	@echo "make stack  - the Docker stack here (Postgres, S3, code location, webserver, daemon,"
	@echo "              scoring service; host networking on 127.0.0.1); make stack-down removes it"
	@echo "make test-stack      - the stack's system test alone (loop + faults through containers)"
	@echo "make test-stack-long - the same with the long fault variants"

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: infra/local/dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp infra/local/dagster.yaml $@

demo: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/fraudloop demo

system-deps:
	bash infra/system-deps.sh

# On a fresh machine the virtualenv's sync (uv's downloads, then bytecode) and the system packages
# (apt) do not depend on each other, so `make test` runs them side by side.
bootstrap:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.synced system-deps

# Three pytest workers (pytest-xdist), one test file each at a time (`--dist loadfile`: a file's
# module fixtures, servers and worlds are built once). Much of the suite waits on processes it
# started (Dagster runs, daemons, servers, a 60 s freshness window), so more workers than cores:
# on 2 cores one process 21.4 min, two workers 14.1-15.8 min, three 12.6-13.2 min, four 12.5 min
# (2026-12-06; at two the cores were idle 38 % of the time). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
# Files go out in pytest-xdist's default order, most tests first, so the closed loop (one test:
# `make demo` through the daemon) starts late, beside the suite's last files. Tried
# (2026-12-06): the longest files first; beside them the demo took 893 s, not 235-380 s (its
# replay keeps landing days while its pipeline lags: more runs, more traffic), and the suite
# 18.7 min with 27.4 min of CPU, against 17.2 min with 21.8 min of CPU in default order. The
# heavy files first, then the closed loop, then the quick in-process files: 921 s, against
# 894 s in default order the same afternoon (the demo 335 s beside the quick files).
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

# The Docker stack's system test runs last, alone: it starts ~15 containers and runs the loop
# through them, and beside the other tests on 2 cores both would crawl. Its images are built
# there too, not in the background during the suite: tried (2026-12-06), a cold build beside
# the suite made the suite 3.3 min slower, as long as the build itself (the build is CPU work:
# unpacking wheels, writing layers), and loaded the host enough to fail latency checks.
test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not stack" $(PYTEST_PARALLEL)
	$(STACK_TEST)

test-fast: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not slow" -q $(PYTEST_PARALLEL)

# The crash suite's long schedule (300 kills; `make test` runs 24 at the default seed).
# FRAUDLOOP_CHAOS_SEED picks another schedule.
chaos: $(VENV)/.synced
	FRAUDLOOP_CHAOS_KILLS=$${FRAUDLOOP_CHAOS_KILLS:-300} $(VENV)/bin/pytest -q -s --timeout 3600 tests/chaos

# The fuzz set's long run (tests/fuzz: the service's API, landed files, the importer, the CLI):
# FRAUDLOOP_FUZZ_SCALE x the examples `make test` runs, drawn anew each run unless
# FRAUDLOOP_FUZZ_SEED pins them.
fuzz: $(VENV)/.synced
	FRAUDLOOP_FUZZ_SCALE=$${FRAUDLOOP_FUZZ_SCALE:-10} $(VENV)/bin/pytest -q --timeout 7200 tests/fuzz

# After `make demo`, the UI runs with the demo's settings (partitions, label delay, ...).
# The report server on :3001 makes the UI's report links (Evidently HTML, evaluations) open.
ui: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml
	set -a; if [ -f .fraudloop/demo.env ]; then . ./.fraudloop/demo.env; fi; set +a; \
	export FRAUDLOOP_REPORTS_URL=$${FRAUDLOOP_REPORTS_URL:-http://127.0.0.1:3001}; \
	$(VENV)/bin/fraudloop reports --port 3001 & reports=$$!; trap 'kill $$reports' EXIT; \
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Each bench prints its table and writes every figure to bench/results/<bench>.json; the table
# of docs/results.md is generated from those files (tests/test_bench.py checks it is current).
BENCHES := simulate ingest features training gate quality serve drift orchestration balancer s3_listing scale

bench: $(VENV)/.synced
	@mkdir -p bench/results
	set -e; for b in $(BENCHES); do \
		$(VENV)/bin/python bench/$$b.py --json bench/results/$$b.json; done
	$(VENV)/bin/python bench/report.py --update docs/results.md

bench-quick: $(VENV)/.synced
	$(VENV)/bin/pytest -q tests/test_bench.py

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf .dagster .fraudloop

# The Docker stack (infra/stack.sh): engine started when absent (as root), images built from
# the Dockerfiles on a local Debian base, compose up with host networking; see README
# "Production: the Docker stack".
stack: system-deps
	bash infra/stack.sh up

stack-down:
	bash infra/stack.sh down

stack-images: system-deps
	bash infra/docker/ensure-dockerd.sh >/dev/null
	bash infra/docker/build.sh

# --capture=tee-sys: the timeline prints as it happens and is in the failure report too (CI
# shows a failure's report, not the whole log)
STACK_TEST = $(VENV)/bin/pytest -m stack tests/test_stack.py -p no:cacheprovider --capture=tee-sys

test-stack: $(VENV)/.synced system-deps
	$(STACK_TEST)

test-stack-long: $(VENV)/.synced system-deps
	FRAUDLOOP_STACK_LONG=1 $(STACK_TEST)
