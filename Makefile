# passito-jobs — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_JOBS ?= 200
DEMO_WORKERS ?= 4
UNTIL_DRAINED ?=
CLEAR ?=
PYTEST_ARGS ?=
OUTPASS_BENCH_ARGS ?=
WEB_BENCH_ARGS ?=
# Container images (`make images`): the base image and the name/tag of each image.
BASE_IMAGE ?= python:3.11-slim-bookworm
IMAGE_PREFIX ?= passito-jobs
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER ?= docker
# checkov (tests/chart/test_checkov.py) lives in its own virtualenv: its pins clash with ours.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.DEFAULT_GOAL := help
.PHONY: help venv run test test-fast lint typecheck unit bench bench-peers schema docs clean
.PHONY: images manifests kind-e2e checkov screenshots

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) with passito-jobs and its development tools (PostgreSQL server, WeasyPrint,"
	@echo "kopf, pytest, mypy, ruff, ...): the first time, pip downloads them (about 1 GB installed) in a minute or more"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "Done: '. $(VENV)/bin/activate' puts passito-jobs on your PATH"

venv: $(STAMP) ## create .venv with the package and every development tool

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

checkov: $(CHECKOV_STAMP) ## install checkov into .venv-checkov (once) for the chart's security scan test

run: $(STAMP) ## run locally: embedded Postgres, workers, demo workload (DEMO_JOBS=200 UNTIL_DRAINED=1 CLEAR=1)
	$(BIN)/passito-jobs demo --jobs $(DEMO_JOBS) --workers $(DEMO_WORKERS) $(if $(UNTIL_DRAINED),--until-drained) $(if $(CLEAR),--clear-leftovers)

test: lint typecheck ## the whole suite: ruff, import contracts, mypy --strict, pytest
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the edit-test loop: unit and integration tests, without the slow, image and monitoring tiers
	$(BIN)/pytest tests/unit tests/integration -m "not slow and not images" $(PYTEST_ARGS)

unit: $(STAMP) ## only the fast tests that need no server
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and the import-layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy

bench: $(STAMP) ## quick benchmark: bulk dispatch, drain rate, cost per job, pickup latency (BENCH_ARGS=...); outpasses/s (OUTPASS_BENCH_ARGS=...); dashboard p50/p95 on 3M jobs (WEB_BENCH_ARGS=...)
	$(BIN)/python bench/queue_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/outpass_bench.py $(OUTPASS_BENCH_ARGS)
	$(BIN)/python -u bench/web_bench.py $(WEB_BENCH_ARGS)

bench-peers: $(STAMP) ## passito-jobs vs PgQueuer vs bare SQL on one PostgreSQL: 5 interleaved reps, cost per job, pickup, growth (~10 min; quick: BENCH_ARGS="--reps 3 --jobs 20000 --no-growth")
	$(BIN)/python bench/peers_bench.py $(BENCH_ARGS)

docs: $(STAMP) ## regenerate the settings tables of docs/configuration.md from the declarations
	$(BIN)/python -m hack.render_configuration

schema: $(STAMP) ## regenerate src/passito_jobs/queue/sql/schema.sql from the migrations
	PASSITO_UPDATE_SCHEMA=1 $(BIN)/pytest -q tests/integration/test_migrations.py -k current_schema

images: ## build the worker, supervisor (operator) and health images (BASE_IMAGE=..., IMAGE_TAG=...)
	@for service in worker supervisor health; do \
	    echo "building $(IMAGE_PREFIX)-$$service:$(IMAGE_TAG) from $(BASE_IMAGE)"; \
	    $(DOCKER) build --file services/$$service/Dockerfile \
	        --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	        --build-arg VERSION=$(IMAGE_TAG) \
	        --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	        --tag $(IMAGE_PREFIX)-$$service:$(IMAGE_TAG) . || exit 1; \
	done

manifests: $(STAMP) ## regenerate manifests/ (plain YAML) from the Helm chart's default values
	$(BIN)/python -m hack.render_manifests

kind-e2e: ## end to end on a kind cluster: images, chart, burst, scale out and in, helm test (needs docker, kind, kubectl, helm)
	BASE_IMAGE=$(BASE_IMAGE) IMAGE_PREFIX=$(IMAGE_PREFIX) IMAGE_TAG=$(IMAGE_TAG) bash hack/kind-e2e.sh

screenshots: $(STAMP) ## pictures of the dashboard's pages (desktop and phone) into docs/images/ (needs /usr/bin/chromium)
	$(BIN)/python -m hack.screenshots

clean: ## stop the embedded Postgres and remove .venv and local state
	-@test -x $(BIN)/passito-jobs && $(BIN)/passito-jobs db stop
	rm -rf $(VENV) $(CHECKOV_VENV) .passito .pytest_cache .mypy_cache .ruff_cache
