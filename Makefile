# bild-exp: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Machines without an NVIDIA GPU get the CPU build of torch (a local wheel on the
# project's machines); GPU machines resolve torch freely and get a CUDA build.
TORCH_CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints/cpu.txt")
export HF_HUB_OFFLINE ?= 1

.PHONY: help setup test test-slow lint format bench-engine demo-corpus demo-models clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_CONSTRAINTS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## Create .venv and install the package with dev tools

test: setup ## Run the test suite (slow tests excluded)
	$(PY) -m pytest

test-slow: setup ## Run only the slow tests
	$(PY) -m pytest -m slow

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-engine: setup ## Engine's "large" loop vs HF generate, per-token time ratio (CPU, t5-small-sized)
	$(PY) scripts/bench_engine.py

demo-corpus: setup ## Rebuild the demo corpus from Debian packages (needs apt-get)
	$(PY) scripts/build_demo_corpus.py

demo-models: setup ## Train the demo tokenizer, large, small and aligned small models (~1.5 h on 2 CPU cores)
	$(PY) -m bild_exp.train +training=demo_large
	$(PY) -m bild_exp.train +training=demo_small
	$(PY) -m bild_exp.train +training=demo_align

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
