# Developer entry points. `make run` starts the product on the embedded default (SQLite for data
# and for the Celery broker); `make test` checks style and runs the test suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamps record which dependency set is installed; they are newer than pyproject.toml and the
# locks until one of them changes, so pip runs once per change instead of on every `make`.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# Every dependency, indirect ones included, pinned with the hashes of its files (`make lock`).
RUN_LOCK := requirements/run.lock
DEV_LOCK := requirements/dev.lock
# `make lock UPGRADE=1` also moves indirect dependencies to their newest allowed versions.
UPGRADE ?=
PYTEST_ARGS ?=
# Front-end packages (the API docs viewer, the accessibility checker of the browser tests),
# installed from package-lock.json exactly; the stamp is newer than the lock until it changes.
NPM_STAMP := node_modules/.installed
SWAGGER_UI_DIR := web/static/vendor/swagger-ui

.DEFAULT_GOAL := help
.PHONY: help run test bench load lint format migrate seed clean lock simulate

help:
	@echo "make run      start web (http://127.0.0.1:5000, PORT=N for another), Celery worker and beat; Ctrl-C stops all"
	@echo "make test     ruff check, ruff format --check, then pytest (PYTEST_ARGS=... passed on)"
	@echo "make bench    run the benchmarks (results in bench/RESULTS.md)"
	@echo "make load     Locust: LOAD_USERS (50) staff for LOAD_MINUTES (5) on the production stack"
	@echo "make lint     ruff check and format check only"
	@echo "make format   rewrite files with ruff format and ruff's safe fixes"
	@echo "make migrate  alembic upgrade head"
	@echo "make simulate replay scenarios/example.json through the booking services (simulation-output/)"
	@echo "make seed     migrate, then load the demo department (idempotent; prints credentials)"
	@echo "make lock     re-resolve requirements/*.lock from pyproject.toml (UPGRADE=1: newest)"
	@echo "make clean    delete local data in instance/ and caches (keeps .venv)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
		echo "error: '$(PYTHON)' not found. Install Python 3.11 or newer, or run e.g." \
		     "'make PYTHON=python3.12 $(MAKECMDGOALS)'." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: Python 3.11 or newer is required; '$(PYTHON)' is" \
		     "$$($(PYTHON) -c 'import platform; print(platform.python_version())')." \
		     "Point PYTHON at a newer interpreter, e.g. 'make PYTHON=python3.12 $(MAKECMDGOALS)'." >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

# Exactly the locked files (pip refuses any file whose hash is not in the lock, and any
# dependency the lock does not pin), then the project itself without resolving anything.
$(RUN_STAMP): pyproject.toml $(RUN_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(RUN_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The dev set includes the runtime set, so it satisfies the runtime stamp as well.
$(DEV_STAMP): pyproject.toml $(DEV_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@ $(RUN_STAMP)

# Resolved for this Python (3.11) against the package index alone: local pip settings (extra
# indexes, find-links) are ignored so that the hashes are those of the index's own files, for
# every platform it has files for. The runtime lock is made first and constrains the dev lock,
# so a package common to both has one version.
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND="make lock"
LOCK_ARGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(DEV_STAMP)
	$(LOCK_ENV) $(BIN)/pip-compile $(LOCK_ARGS) -o $(RUN_LOCK) pyproject.toml
	$(LOCK_ENV) $(BIN)/pip-compile $(LOCK_ARGS) --extra dev -c $(RUN_LOCK) -o $(DEV_LOCK) pyproject.toml

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		echo "error: npm not found. Install Node.js 20 or newer (it brings npm)." >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@# The API docs viewer is served from the app's own static files (same origin, under its CSP).
	mkdir -p $(SWAGGER_UI_DIR)
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
		$(SWAGGER_UI_DIR)/
	touch $@

# Migrates, seeds and starts the Procfile's processes itself, after checking that the port and
# the instance folder are free; prints the address and demo credentials once all are up.
run: $(RUN_STAMP) $(NPM_STAMP)
	@$(BIN)/python scripts/run_local.py

test: $(DEV_STAMP) $(NPM_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# Exit code 5 means pytest collected nothing: a failure, not a pass, so say so clearly.
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
	exit $$status

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

# PostgreSQL (BENCH_POSTGRES_URL) and redis-server needed; exits non-zero on a missed target.
load: $(DEV_STAMP)
	$(BIN)/python -m bench.load --record

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(RUN_STAMP)
	$(BIN)/alembic upgrade head

seed: migrate
	$(BIN)/flask --app web seed-demo

# A small department's eight weeks, replayed on a throwaway SQLite database.
simulate: $(RUN_STAMP)
	$(BIN)/flask --app web simulate scenarios/example.json --out simulation-output

# Only the checkout's own instance/, never $INSTANCE_DIR: that may point at real data.
clean:
	rm -rf instance .pytest_cache .ruff_cache .hypothesis test-artifacts bench/out simulation-output
