# One task runner for people and CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-dev lint typecheck bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "auditkeep needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# make run PORT=8001 HOST=0.0.0.0: where the server listens (demo checks the port is free first). HOST
# comes only from make's command line, never the environment: tcsh exports HOST as the machine's name.
HOST = 127.0.0.1
PORT ?= 8000
# Sample events for a new demo organization (the first `make run` only; 0 for none).
SAMPLE_EVENTS ?= 200

## make run: install, migrate ./var/auditkeep.db, ensure the demo org, serve on http://$(HOST):$(PORT)
run: $(VENV)/.installed
	$(BIN)/auditkeep demo --host '$(HOST)' --port '$(PORT)' --sample-events '$(SAMPLE_EVENTS)' --if-empty
	$(BIN)/auditkeep serve --host '$(HOST)' --port '$(PORT)'

## make test: install the dev extras and run every test
test: $(VENV)/.installed-dev
	$(BIN)/pytest --durations=20  # the slowest tests, to keep CI's time in view

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/ingest_export.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
