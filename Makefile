# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
HOST ?= 127.0.0.1
# PORT: `make run` serves on 8000 and `make stack` on 8080 unless PORT is given.
WORKERS ?=

# The charting library vendored under saas/dashboard/static (refreshed by `make vendor-charts`).
UPLOT_VERSION ?= 1.6.32
UPLOT_DIR := saas/dashboard/static/vendor/uplot

.PHONY: install run stack test check-equivalence lint format clean vendor-charts

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Serve on http://$(HOST):8000 with the embedded SQLite database (first run prints the keys).
run: $(STAMP)
	$(BIN)/saas bootstrap
	$(BIN)/saas serve --host $(HOST) --port $(or $(PORT),8000)

## Production on one host: Traefik on 127.0.0.1:PORT (8080) in front of Gunicorn with WORKERS
## workers (CPU cores), the API under /api; SAAS_* settings from the environment. Ctrl-C stops it.
stack: $(STAMP)
	$(BIN)/python ops/stack.py --port $(or $(PORT),8080) $(if $(WORKERS),--workers $(WORKERS))

## Lint, types, the layering, then the whole suite against PostgreSQL + Redis and the embedded
## SQLite default. The servers are SAAS_TEST_POSTGRES_URL / SAAS_TEST_REDIS_URL, else private ones
## the run starts (README, Tests).
test: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench ops
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

## Refresh the vendored uPlot from the npm registry: its built files, its licence, and VERSION
## with the tarball's integrity, so a later refresh can be checked against the registry.
vendor-charts:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	npm pack --silent --json --pack-destination "$$tmp" 'uplot@$(UPLOT_VERSION)' > "$$tmp/pack.json" && \
	node -p 'const [p] = require(process.argv[1]); `$${p.name} $${p.version}\nintegrity $${p.integrity}\nshasum $${p.shasum}`' \
	  "$$tmp/pack.json" > "$$tmp/VERSION" && \
	tar -xzf "$$tmp"/uplot-*.tgz -C "$$tmp" && \
	mkdir -p $(UPLOT_DIR) && \
	cp "$$tmp/package/dist/uPlot.iife.min.js" "$$tmp/package/dist/uPlot.min.css" \
	  "$$tmp/package/LICENSE" "$$tmp/VERSION" $(UPLOT_DIR)/ && \
	cat $(UPLOT_DIR)/VERSION

lint: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench ops
	$(BIN)/ruff format --check saas tests alembic bench ops

format: $(STAMP)
	$(BIN)/ruff format saas tests alembic bench ops
	$(BIN)/ruff check --fix saas tests alembic bench ops

clean:
	rm -rf $(VENV) saas.db saas.db-shm saas.db-wal .pytest_cache .ruff_cache
