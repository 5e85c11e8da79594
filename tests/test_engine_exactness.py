"""Token-for-token exactness of every engine method against Hugging Face greedy decoding."""

from __future__ import annotations

import pytest
import torch

from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from tests.tiny_models import (
    CHAIN,
    FAMILIES,
    SEPARATOR,
    decode_with,
    prompt,
    tiny_config,
    tiny_pair,
)

PROMPT_SEEDS = (0, 1, 2)
MAX_NEW = 24


def hf_greedy(model, input_ids: torch.Tensor) -> list[int]:
    return hf_greedy_tokens(model, input_ids, MAX_NEW)


def run(method: str, family: str, seed: int, **params):
    large, small = tiny_pair(family)
    return decode_with(method, large, small, prompt(family, seed), MAX_NEW, **params)


@pytest.fixture(scope="module", params=[(f, s) for f in FAMILIES for s in PROMPT_SEEDS], ids=str)
def case(request):
    family, seed = request.param
    large, small = tiny_pair(family)
    ids = prompt(family, seed)
    return family, seed, hf_greedy(large, ids), hf_greedy(small, ids)


def test_large_and_small_match_hf_generate(case):
    family, seed, large_greedy, small_greedy = case
    assert run("large", family, seed).tokens == large_greedy
    assert run("small", family, seed).tokens == small_greedy


def test_bild_that_never_falls_back_is_the_small_model(case):
    family, seed, _, small_greedy = case
    res = run(
        "bild", family, seed, fallback_threshold=0.0, rollback_threshold=None, max_small_steps=10**9
    )
    assert res.tokens == small_greedy
    assert res.stats["n_large_calls"] == 0
    assert not any(res.from_large)


def test_bild_that_always_falls_back_is_the_large_model(case):
    family, seed, large_greedy, _ = case
    res = run("bild", family, seed, fallback_threshold=1.0, rollback_threshold=3.0)
    assert res.tokens == large_greedy
    assert res.stats["n_small_tokens"] == 0
    assert all(res.from_large)


@pytest.mark.parametrize("fallback_threshold", [0.0, 0.3, 0.6, 0.9, 1.0, None])
@pytest.mark.parametrize("max_small_steps", [1, 4, 10])
def test_bild_with_zero_rollback_threshold_is_lossless(case, fallback_threshold, max_small_steps):
    family, seed, large_greedy, _ = case
    res = run(
        "bild",
        family,
        seed,
        fallback_threshold=fallback_threshold,
        rollback_threshold=0.0,
        max_small_steps=max_small_steps,
        verify_tail=True,
    )
    assert res.tokens == large_greedy


@pytest.mark.parametrize("window", [1, 2, 3, 5, 10])
def test_speculative_greedy_is_the_large_model(case, window):
    family, seed, large_greedy, _ = case
    assert run("speculative", family, seed, window=window).tokens == large_greedy


def test_oracle_extremes(case):
    family, seed, large_greedy, small_greedy = case
    never = run("oracle", family, seed, oracle_threshold=0.0)
    assert never.tokens == small_greedy and never.stats["oracle_replaced_fraction"] == 0.0
    # p_L(y_S) < 1 holds everywhere, so every token is the large model's: its greedy output.
    always = run("oracle", family, seed, oracle_threshold=1.0)
    assert always.tokens == large_greedy and always.stats["oracle_replaced_fraction"] == 1.0


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_hf_assisted_greedy_is_the_large_model(family):
    large, small = tiny_pair(family)
    ids = prompt(family, 0)
    res = generate("hf_assisted", large=large, small=small, input_ids=ids, max_new_tokens=MAX_NEW)
    assert res.tokens == hf_greedy(large, ids)
    assert res.from_large is None
    assert res.stats["n_large_calls"] >= 1 and res.stats["n_small_calls"] >= 1


@pytest.mark.parametrize("family", ["llama", "t5"])
@pytest.mark.parametrize("num_tokens", [1, 10])
def test_prompt_lookup_greedy_is_the_large_model(family, num_tokens):
    """HF's prompt lookup, a model-free drafter: greedy output is vanilla large's, with
    fewer large calls than tokens when the output repeats the prompt."""
    large, _ = tiny_pair(family)
    for seed in PROMPT_SEEDS:
        ids = prompt(family, seed)
        res = generate(
            "prompt_lookup",
            large=large,
            input_ids=ids,
            max_new_tokens=MAX_NEW,
            prompt_lookup_num_tokens=num_tokens,
        )
        assert res.tokens == hf_greedy(large, ids)
        assert res.from_large is None and "n_small_calls" not in res.stats
        assert 1 <= res.stats["n_large_calls"] <= len(res.tokens)


def test_prompt_lookup_drafts_from_a_repeated_prompt():
    """The tiny models continue the synthetic chain from the prompt's first token, so a
    prompt that already holds the chain is repeated by the output: its n-grams match, the
    drafts are accepted, and the large model runs far fewer times than it emits tokens."""
    large, _ = tiny_pair("llama")
    chain = [5]
    for _ in range(9):
        chain.append(int(CHAIN[chain[-1]]))
    ids = torch.tensor([[*chain, SEPARATOR]])
    res = generate("prompt_lookup", large=large, input_ids=ids, max_new_tokens=10)
    assert res.tokens == hf_greedy_tokens(large, ids, 10)
    assert res.tokens[:9] == chain[1:]  # the output repeats the prompt, as constructed
    assert res.stats["n_large_calls"] <= 3


def test_hf_assisted_heuristic_schedule_leaves_no_state_behind():
    large, small = tiny_pair("t5")
    before = small.generation_config.to_dict()
    calls = [
        generate(
            "hf_assisted",
            large=large,
            small=small,
            input_ids=prompt("t5", 1),
            max_new_tokens=MAX_NEW,
            num_assistant_tokens_schedule="heuristic",
        ).stats
        for _ in range(2)
    ]
    assert calls[0] == calls[1]
    assert small.generation_config.to_dict() == before


def test_t5_with_more_decoder_than_encoder_layers():
    """The demo's large model shape: HF generate needs an explicit cache there, the engine not."""
    from transformers import T5ForConditionalGeneration

    from bild_exp.decoding.runner import empty_cache

    torch.manual_seed(0)
    tied = {"tie_word_embeddings": True}
    large = T5ForConditionalGeneration(tiny_config("t5", 1, 32, num_decoder_layers=3, **tied))
    small = T5ForConditionalGeneration(tiny_config("t5", 2, 16, num_decoder_layers=1, **tied))
    large, small = large.double().eval(), small.double().eval()
    ids = torch.tensor([[5, 6, 7, 9, 12]])
    reference = large.generate(ids, max_new_tokens=10, use_cache=False)[0, 1:].tolist()
    assert (
        large.generate(ids, max_new_tokens=10, cache=empty_cache(large))[0, 1:].tolist()
        == reference
    )
    common = {"large": large, "small": small, "input_ids": ids, "max_new_tokens": 10}
    assert generate("large", **common).tokens == reference
    assert generate("bild", rollback_threshold=0.0, verify_tail=True, **common).tokens == reference
    assert generate("speculative", window=3, **common).tokens == reference
    assert generate("hf_assisted", **common).tokens == reference
