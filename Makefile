# Two commands for users: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What the GPU machine uses: its system python3 (CuPy, PyTorch preinstalled), no venv.
GPU_PYTHON ?= python3

.PHONY: demo test bench lint gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[numba,plot,progress]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[numba,test]"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/mlpaccel demo

test: $(VENV)/.test-installed
	$(BIN)/python -m ruff check mlpaccel tests bench tools
	$(BIN)/python -m pytest

bench: $(VENV)/.test-installed
	$(BIN)/mlpaccel bench --out bench/results/$$(hostname)

lint: $(VENV)/.test-installed
	$(BIN)/python -m ruff check mlpaccel tests bench tools

# One call on a GPU machine: tests, emulator cross-check, sanitizer, autotune, benchmarks.
# Results go to $$OUT (device tool) or bench/results/ and are committed from there.
gpu-check:
	PYTHONPATH=$(CURDIR) PYTHONUNBUFFERED=1 $(GPU_PYTHON) tools/gpu_check.py --out "$${OUT:-bench/results/gpu}"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache mlpaccel-report
