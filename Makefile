# memproxy: `make run` serves the default config, `make test` runs the suite. Both create .venv
# and install what is missing first.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
CONFIG ?= config/default.yaml
LOCOMO ?= ../shared/data/locomo/locomo-dev.json
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-memproxy

.PHONY: install run test test-slow demo bench eval lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first and pinned: an open range would pull a multi-GB CUDA build instead of the CPU one.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/memproxy serve --config $(CONFIG)

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/python -m proxy.dev.demo

bench: install
	$(BIN)/python -m bench

eval: install
	$(BIN)/memproxy eval locomo --data $(LOCOMO)
	$(BIN)/memproxy eval updates --corpus tests/fixtures/updates_corpus.txt

lint: install
	$(BIN)/ruff check proxy memcubes tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
