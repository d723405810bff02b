# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format bench clean

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

## The whole suite, against PostgreSQL + Redis and the embedded SQLite default. The servers are
## SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL, else private ones the run starts (README, Tests).
test: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench
	$(BIN)/ruff format --check saas tests alembic bench

format: $(STAMP)
	$(BIN)/ruff format saas tests alembic bench
	$(BIN)/ruff check --fix saas tests alembic bench

clean:
	rm -rf $(VENV) saas.db saas.db-shm saas.db-wal .pytest_cache .ruff_cache
