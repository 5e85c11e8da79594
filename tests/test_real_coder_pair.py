"""The real Qwen2.5-Coder 0.5B/1.5B pair (GGUF parts installed by `make setup`) on HumanEval
prompts: exactness of the engine against HF generate and of the lossless methods against
vanilla large. Slow: the first use assembles 1.6 GB of parts and converts both models
(~9 GB of float32 in the cache), and each 1.5B step takes ~0.6 s on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from bild_exp.data.tasks import load_examples, task_from_config
from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.models.pair import load_pair
from bild_exp.models.weight_only import model_bytes, quantized_twin
from tests.harness_fixtures import compose_sweep

pytestmark = pytest.mark.slow
MAX_NEW = 24


@pytest.fixture(scope="module")
def coder():
    cfg = compose_sweep(["+task=humaneval", "pair.device=cpu"])
    task = task_from_config(cfg.task)
    pair = load_pair(cfg.pair, ["base"])
    prompt = task.prompt_format()
    ids = [
        torch.tensor([prompt.ids(example.source, pair.tokenizer)], dtype=torch.long)
        for example in load_examples(task, limit=2)
    ]
    return pair, ids


def test_the_pair_shares_one_vocabulary(coder):
    pair, _ = coder
    assert pair.large.config.vocab_size == pair.smalls["base"].config.vocab_size == 151936
    assert pair.tokenizer.eos_token_id == 151645


def test_vanilla_large_matches_hf_greedy(coder):
    pair, prompts = coder
    for ids in prompts:
        engine = generate("large", large=pair.large, input_ids=ids, max_new_tokens=MAX_NEW)
        assert engine.tokens == hf_greedy_tokens(pair.large, ids, MAX_NEW)


def test_lossless_bild_and_speculative_equal_vanilla_large(coder):
    pair, prompts = coder
    small = pair.smalls["base"]
    for ids in prompts:
        common = {"large": pair.large, "small": small, "input_ids": ids, "max_new_tokens": MAX_NEW}
        vanilla = generate("large", **common).tokens
        bild = generate(
            "bild", fallback_threshold=0.7, rollback_threshold=0.0, verify_tail=True, **common
        )
        assert bild.tokens == vanilla
        assert generate("speculative", window=4, **common).tokens == vanilla


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_lossless_bild_and_speculative_with_a_quantised_drafter_equal_vanilla_large(coder, weights):
    pair, prompts = coder
    drafter = quantized_twin(pair.smalls["base"], weights)
    for ids in prompts:
        common = {
            "large": pair.large,
            "small": drafter,
            "input_ids": ids,
            "max_new_tokens": MAX_NEW,
        }
        vanilla = generate("large", **{**common, "small": None}).tokens
        bild = generate(
            "bild", fallback_threshold=0.7, rollback_threshold=0.0, verify_tail=True, **common
        )
        assert bild.tokens == vanilla
        assert generate("speculative", window=4, **common).tokens == vanilla


def test_a_quantised_small_model_is_smaller_than_its_float32_self(coder):
    pair, _ = coder
    small = pair.smalls["base"]
    float_bytes = model_bytes(small)
    assert float_bytes > 1.5e9  # 0.49 B float32 parameters
    for weights, most in (("int8", 0.4), ("int4", 0.3)):
        twin = quantized_twin(small, weights)
        # the twin shares the float model's norms: its own bytes are the quantised weights
        assert model_bytes(twin) < most * float_bytes, weights


def test_lossless_bild_and_speculative_with_ngram_drafts_equal_vanilla_large(coder):
    pair, prompts = coder
    drafter = quantized_twin(pair.smalls["base"], "int8")
    ngram = {"draft_source": "ngram+small", "ngram_size": 2, "ngram_tokens": 10}
    n_ngram_passes = 0
    for ids in prompts:
        common = {"large": pair.large, "input_ids": ids, "max_new_tokens": 48}
        vanilla = generate("large", **common).tokens
        for small in (pair.smalls["base"], drafter):
            bild = generate(
                "bild",
                small=small,
                fallback_threshold=0.7,
                rollback_threshold=0.0,
                verify_tail=True,
                **ngram,
                **common,
            )
            speculative = generate("speculative", small=small, window=4, **ngram, **common)
            assert bild.tokens == vanilla and speculative.tokens == vanilla
            n_ngram_passes += bild.stats["draft_sources"].count("ngram")
    assert n_ngram_passes > 0  # the answers restate their prompts' signatures
