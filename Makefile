PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: set up the environment and predict DeepSeek-R1 decode on CloudMatrix384 (paper's 50 ms setup)
run: $(STAMP)
	$(BIN)/cmperf decode

## make test: set up the environment, lint, check formatting, type-check the core, and run the test suite
test: $(STAMP)
	$(BIN)/ruff check cmperf tests scripts
	$(BIN)/ruff format --check cmperf tests scripts
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check cmperf tests scripts
	$(BIN)/ruff format --check cmperf tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
