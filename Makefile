# passito-jobs — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_JOBS ?= 200
DEMO_WORKERS ?= 4
UNTIL_DRAINED ?=
PYTEST_ARGS ?=
OUTPASS_BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test lint typecheck unit bench bench-peers schema clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the package and every development tool

run: $(STAMP) ## run locally: embedded Postgres, workers, demo workload (DEMO_JOBS=200 UNTIL_DRAINED=1)
	$(BIN)/passito-jobs demo --jobs $(DEMO_JOBS) --workers $(DEMO_WORKERS) $(if $(UNTIL_DRAINED),--until-drained)

test: lint typecheck ## the whole suite: ruff, import contracts, mypy --strict, pytest
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP) ## only the fast tests that need no server
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and the import-layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

bench: $(STAMP) ## benchmark: bulk dispatch, drain rate and pickup latency (BENCH_ARGS=...); outpasses/s (OUTPASS_BENCH_ARGS=...)
	$(BIN)/python bench/queue_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/outpass_bench.py $(OUTPASS_BENCH_ARGS)

bench-peers: $(STAMP) ## the benchmark side by side with PgQueuer on the same PostgreSQL
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/queue_bench.py --peers $(BENCH_ARGS)

schema: $(STAMP) ## regenerate src/passito_jobs/queue/sql/schema.sql from the migrations
	PASSITO_UPDATE_SCHEMA=1 $(BIN)/pytest -q tests/integration/test_migrations.py -k current_schema

clean: ## stop the embedded Postgres and remove .venv and local state
	-@test -x $(BIN)/passito-jobs && $(BIN)/passito-jobs db stop
	rm -rf $(VENV) .passito .pytest_cache .mypy_cache .ruff_cache
