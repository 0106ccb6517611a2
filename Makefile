# Hookline: `make up` runs it, `make test` tests it. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install up test lint typecheck recipes-test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/hookline up

lint: install
	$(BIN)/ruff check hookline tests bench
	$(BIN)/ruff format --check hookline tests bench

typecheck: install
	$(BIN)/mypy

recipes-test: install
	$(BIN)/hookline check
	$(BIN)/hookline test-recipes

test: install lint typecheck recipes-test
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) .hookline .pytest_cache .mypy_cache .ruff_cache
