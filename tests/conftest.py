"""Shared fixtures: tiny random models built from configs (no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.harness_fixtures import write_task_files, write_tiny_pair  # noqa: E402
from tests.tiny_models import FAMILIES, tiny_pair  # noqa: E402

# A test fails when bild_exp code triggers a FutureWarning or DeprecationWarning.
from tests.warning_guard import (  # noqa: E402, F401
    pytest_configure,
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_unconfigure,
)


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pair(family: str):
    return tiny_pair(family, seed=0)


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """A tiny T5 pair (tokenizer, large, small, aligned small) and a tiny task on disk."""
    root = tmp_path_factory.mktemp("assets")
    return write_tiny_pair(root / "pair"), write_task_files(root)


# Over ~25 s each on the 2-core CI machine with a cold inductor cache (pytest --durations,
# 2026-12-02): kept out of `make test` so that a cold run stays under 15 minutes, run by
# `make test-slow`. Each area keeps a cheaper test in the default run (noted per group).
SLOW_ON_A_COLD_CPU = {
    # compiled path: llama-small, llama-BiLD, the official-schedule BiLD, HF generate and
    # frozen constants stay
    "tests/test_compiled.py::test_graphs_are_bounded_and_compiled_before_the_first_timed_call",
    "tests/test_compiled.py::test_weights_changed_after_compiling_are_used",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[llama-large-{}]",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[t5-large-{}]",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[t5-small-{}]",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[bart-large-{}]",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[bart-small-{}]",
    # 47-58 s cold in the first fresh-clone run with this list (14 min 58 s in all): BiLD on
    # the compiled path stays tested on llama
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[t5-bild-{'fallback_threshold': 0.5, 'rollback_threshold': 1.0}]",
    "tests/test_compiled.py::test_compiled_equals_eager_token_for_token_and_every_stat[bart-bild-{'fallback_threshold': 0.5, 'rollback_threshold': 1.0}]",
    "tests/test_compiled.py::test_t5_with_more_decoder_than_encoder_layers_compiled_equals_eager",
    "tests/test_cpu_kernels.py::test_compiled_path_over_a_prepacked_model_matches_eager",
    "tests/test_sweep.py::test_engine_compile_sweep_matches_eager_and_reports_compilation",
    "tests/test_bench.py::test_eager_and_compiled_call_times_are_measured_in_alternating_blocks",
    # the bench end to end (its settings checks stay)
    "tests/test_bench.py::test_bench_runs_end_to_end_on_a_tiny_pair[default]",
    # CALM: the llama and bart lambda=1 cases and the rest of test_calm stay
    "tests/test_calm.py::test_lambda_one_never_exits_and_is_the_full_model[0-t5]",
    # results folders: Ctrl-C, kill -9 and two concurrent sweeps (the store's unit tests stay)
    "tests/test_first_contact.py::test_ctrl_c_says_what_was_saved_and_resumes",
    "tests/test_first_contact.py::test_two_sweeps_on_one_folder_never_compute_a_record_twice",
    "tests/test_resume_after_kill.py::test_killed_sweep_resumes_without_loss_or_duplicates",
    # training: the seq2seq training tests stay
    "tests/test_causal_training.py::test_exit_loss_training_of_a_decoder_only_model[early_exit-depths0]",
    "tests/test_causal_training.py::test_exit_loss_training_of_a_decoder_only_model[calm-depths1]",
    "tests/test_causal_training.py::test_alignment_lowers_loss_and_raises_agreement",
    # engine: the llama official schedule, t5/bart/gpt2 schedule differences, temperature 1
    # sampling and the stop2 real-LLM case stay
    "tests/test_sampling_distribution.py::test_speculative_sampling_follows_the_large_model[0.9-0.8]",
    "tests/test_bild_schedule.py::test_official_schedule_matches_the_official_loop[t5]",
    "tests/test_bild_schedule.py::test_official_schedule_matches_the_official_loop[gpt2]",
    "tests/test_bild_schedule.py::test_official_schedule_matches_the_official_loop[bart]",
    "tests/test_bild_schedule.py::test_the_schedules_differ_where_the_official_code_does[llama]",
    "tests/test_real_llm.py::test_lossless_bild_and_speculative_equal_vanilla_large[stop1]",
    "tests/test_real_llm.py::test_lossless_bild_and_speculative_equal_vanilla_large[None]",
    # prepacked kernels: the tiny t5 and llama pairs stay
    "tests/test_cpu_kernels.py::test_shipped_pairs_decode_the_same_tokens_prepacked[smollm2]",
}


@pytest.hookimpl(tryfirst=True)  # before the "-m 'not slow'" deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests listed above slow; `-m 'not slow'` (the default) then deselects them."""
    slow = pytest.mark.slow
    for item in items:
        if item.nodeid in SLOW_ON_A_COLD_CPU:
            item.add_marker(slow)
