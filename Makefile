# Developer entry points. `make run` starts the product on the embedded default (SQLite for data
# and for the Celery broker); `make test` checks style and runs the test suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamps record which dependency set is installed; they are newer than pyproject.toml until it
# changes, so pip runs once per change instead of on every `make`.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test bench lint format migrate seed clean

help:
	@echo "make run      start web (http://127.0.0.1:5000), Celery worker and beat; Ctrl-C stops all"
	@echo "make test     ruff check, ruff format --check, then pytest (PYTEST_ARGS=... passed on)"
	@echo "make bench    run the benchmarks (results in bench/RESULTS.md)"
	@echo "make lint     ruff check and format check only"
	@echo "make format   rewrite files with ruff format and ruff's safe fixes"
	@echo "make migrate  alembic upgrade head"
	@echo "make seed     migrate, then load the demo department (idempotent; prints credentials)"
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
	@# A newer pip resolves and builds more reliably; an old one still works, so carry on offline.
	$(BIN)/python -m pip install --quiet --upgrade pip || echo "warning: could not upgrade pip; continuing"

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev set includes the runtime set, so it satisfies the runtime stamp as well.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

run: seed
	@echo "Starting web on http://127.0.0.1:$${PORT:-5000}, Celery worker and beat (Ctrl-C stops all)"
	@# honcho runs each Procfile line through the shell, so the venv's tools must be on PATH.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# Exit code 5 means pytest collected nothing: a failure, not a pass, so say so clearly.
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
	exit $$status

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

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

# Only the checkout's own instance/, never $INSTANCE_DIR: that may point at real data.
clean:
	rm -rf instance .pytest_cache .ruff_cache .hypothesis test-artifacts bench/out
