# One entry point for set-up, the demo, tests and checks.
PYTHON ?= python3
VENV ?= .venv
# Which torch build to install, first, so that sentence-transformers does not
# pull a multi-GB CUDA build. On our CPU machines torch==2.13.0 is a CPU wheel
# on local disk. Elsewhere, choose, e.g.:
#   make setup TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
#   make setup TORCH="torch"   # the default build from PyPI (CUDA on Linux)
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint check bench-quick bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/semsearch index examples/articles
	$(BIN)/semsearch query "NATO Indo-Pacific" -k 5

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check semsearch tests benchmarks
	$(BIN)/ruff format --check semsearch tests benchmarks
	$(BIN)/mypy

check: lint test

bench-quick: setup
	$(BIN)/python -m benchmarks.run --quick

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) indexes/default .pytest_cache .mypy_cache .ruff_cache
