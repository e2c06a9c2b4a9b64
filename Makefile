# memproxy: `make run` serves the default config, `make test` runs the suite. Both create .venv
# and install what is missing first.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
CONFIG ?= config/default.yaml
# LOCOMO data is not shipped (CC BY-NC 4.0): get data/locomo10.json from the snap-research/LoCoMo
# repository on GitHub and run `make eval LOCOMO=path/to/locomo10.json`.
LOCOMO ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-memproxy

.PHONY: install run test test-slow demo bench eval locomo-data lint clean

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

eval: locomo-data install
	$(BIN)/memproxy eval locomo --data $(LOCOMO)
	$(BIN)/memproxy eval updates --corpus tests/fixtures/updates_corpus.txt

locomo-data:
	@test -n "$(LOCOMO)" || { echo "make eval needs LOCOMO=path/to/locomo10.json: the file data/locomo10.json of the snap-research/LoCoMo repository on GitHub (CC BY-NC 4.0, not shipped here)"; exit 2; }

lint: install
	$(BIN)/ruff check proxy memcubes tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
