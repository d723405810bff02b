# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test check-equivalence lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Serve on http://$(HOST):$(PORT) with the embedded SQLite database (first run prints the keys).
run: $(STAMP)
	$(BIN)/saas bootstrap
	$(BIN)/saas serve --host $(HOST) --port $(PORT)

## Lint, types, the layering, then the whole suite against PostgreSQL + Redis and the embedded
## SQLite default. The servers are SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL, else private ones
## the run starts (README, Tests).
test: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

## Pipeline equivalence on 2,048 real texts too (bench/corpus.py): minutes, so CI runs it after
## `make test` instead of in it.
check-equivalence: $(BENCH_STAMP)
	SAAS_TEST_CORPUS_TEXTS=2048 $(BIN)/pytest tests/nlp/test_pipeline_equivalence.py

lint: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench
	$(BIN)/ruff format --check saas tests alembic bench

format: $(STAMP)
	$(BIN)/ruff format saas tests alembic bench
	$(BIN)/ruff check --fix saas tests alembic bench

clean:
	rm -rf $(VENV) saas.db saas.db-shm saas.db-wal .pytest_cache .ruff_cache
