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
# Swagger UI (/docs) and ReDoc (/redoc), vendored under saas/apidocs/static (`make vendor-docs`).
# ReDoc stays on 2.x: 3.x sends usage telemetry to Redocly unless told not to, and loads icons
# and logos from Redocly's CDN.
SWAGGER_UI_VERSION ?= 5.35.0
REDOC_VERSION ?= 2.5.2
DOCS_VENDOR := saas/apidocs/static/vendor
REDOC_LOGO := src:"https://cdn.redoc.ly/redoc/logo-mini.svg"

.PHONY: install run stack test check-equivalence lint format clean vendor-charts vendor-docs

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

# $(call npm-vendor,PACKAGE@VERSION,DIRECTORY,FILES): those files of the package's npm tarball,
# and VERSION with the tarball's name, version, integrity and shasum, so a later refresh can be
# checked against the registry.
define npm-vendor
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	npm pack --silent --json --pack-destination "$$tmp" '$(1)' > "$$tmp/pack.json" && \
	node -p 'const [p] = require(process.argv[1]); `$${p.name} $${p.version}\nintegrity $${p.integrity}\nshasum $${p.shasum}`' \
	  "$$tmp/pack.json" > "$$tmp/VERSION" && \
	tar -xzf "$$tmp"/*.tgz -C "$$tmp" && \
	mkdir -p $(2) && \
	cp $(foreach file,$(3),"$$tmp/package/$(file)") "$$tmp/VERSION" $(2)/ && \
	cat $(2)/VERSION
endef

## Refresh the vendored uPlot from the npm registry: its built files, its licence, and VERSION.
vendor-charts:
	$(call npm-vendor,uplot@$(UPLOT_VERSION),$(UPLOT_DIR),dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE)

## Refresh the vendored Swagger UI and ReDoc from the npm registry: the bundles, their licences
## (with the licences of what they bundle) and VERSION. Nothing else of the packages is served.
vendor-docs:
	$(call npm-vendor,swagger-ui-dist@$(SWAGGER_UI_VERSION),$(DOCS_VENDOR)/swagger-ui,\
	  swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png \
	  LICENSE NOTICE)
	$(call npm-vendor,redoc@$(REDOC_VERSION),$(DOCS_VENDOR)/redoc,\
	  bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE)
	@# ReDoc's sidebar credit shows Redocly's logo from their CDN, with no option to turn it off:
	@# the one thing either viewer would load from another site. Its URL is emptied (the credit
	@# keeps its text); the refresh fails if that code is not there exactly once.
	@bundle=$(DOCS_VENDOR)/redoc/redoc.standalone.js && \
	test "$$(grep -o '$(REDOC_LOGO)' $$bundle | wc -l)" -eq 1 && \
	sed -i 's|$(REDOC_LOGO)|src:""|' $$bundle && \
	echo 'patched $(REDOC_LOGO) emptied (make vendor-docs)' >> $(DOCS_VENDOR)/redoc/VERSION && \
	tail -1 $(DOCS_VENDOR)/redoc/VERSION

lint: $(STAMP)
	$(BIN)/ruff check saas tests alembic bench ops
	$(BIN)/ruff format --check saas tests alembic bench ops
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format saas tests alembic bench ops
	$(BIN)/ruff check --fix saas tests alembic bench ops

clean:
	rm -rf $(VENV) saas.kit.db saas.kit.db-shm saas.kit.db-wal .pytest_cache .ruff_cache
