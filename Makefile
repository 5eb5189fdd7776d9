# The README's two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both set everything up on a fresh machine first (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is the CPU build pip finds on these machines; on a GPU machine pip takes the CUDA one.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(PY) -m lab sft

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "not gpu and not vllm"

lint: setup
	$(PY) -m ruff check core lab app tests

clean:
	rm -rf $(VENV) .pytest_cache
