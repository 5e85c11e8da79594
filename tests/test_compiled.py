"""The compiled engine path (static caches + torch.compile) equals the eager one exactly."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from bild_exp.decoding import InvalidParameterError, generate
from bild_exp.decoding.compiled import compile_stats, compiled_model
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from tests.tiny_models import prompt, tiny_pair

MAX_NEW = 24
METHODS = [
    ("large", {}),
    ("small", {}),
    ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 1.0}),
    ("bild", {"fallback_threshold": 0.3, "rollback_threshold": 0.5, "schedule": "official"}),
    ("speculative", {"window": 3}),
    ("oracle", {"oracle_threshold": 0.5}),
]


@pytest.fixture(scope="module")
def llama_pair():
    return tiny_pair("llama", seed=0)


def both(method, large, small, ids, **params):
    eager = generate(
        method, large=large, small=small, input_ids=ids, max_new_tokens=MAX_NEW, **params
    )
    compiled = generate(
        method,
        large=large,
        small=small,
        input_ids=ids,
        max_new_tokens=MAX_NEW,
        compile=True,
        **params,
    )
    return eager, compiled


@pytest.mark.parametrize(("method", "params"), METHODS, ids=lambda x: str(x))
def test_compiled_equals_eager_token_for_token_and_every_stat(llama_pair, method, params):
    large, small = llama_pair
    for seed in range(3):
        ids = prompt("llama", seed, length=5 + 3 * seed)  # prompts of several lengths
        eager, compiled = both(method, large, small, ids, **params)
        assert compiled.tokens == eager.tokens
        assert compiled.from_large == eager.from_large
        assert compiled.stats == eager.stats


def test_compiled_bild_lossless_settings_equal_vanilla_large(llama_pair):
    large, small = llama_pair
    n_rollbacks = 0
    for seed in range(4):
        ids = prompt("llama", seed)
        result = generate(
            "bild",
            large=large,
            small=small,
            input_ids=ids,
            max_new_tokens=MAX_NEW,
            fallback_threshold=0.1,  # small tokens pile up: the large model disagrees
            rollback_threshold=0.0,
            verify_tail=True,
            compile=True,
        )
        assert result.tokens == hf_greedy_tokens(large, ids, MAX_NEW)
        n_rollbacks += result.stats["n_rollbacks"]
    assert n_rollbacks > 0  # rollbacks (position resets) happened on the way


def test_rollback_reads_no_stale_cache_position(llama_pair):
    """Feed three tokens, reset to before them, feed another: the logits equal a cache that
    never saw the three; without the reset they would not."""
    large, _ = llama_pair
    ids = prompt("llama", 0)
    reference = DynamicCache()
    with (
        torch.inference_mode()
    ):  # as generate runs (the static cache's tensors are inference tensors)
        large(input_ids=ids, past_key_values=reference)
        expected = large(input_ids=torch.tensor([[9]]), past_key_values=reference).logits[0]
        entry = compiled_model(large, ids.shape[1] + 8)
        entry.run(ids, prefill=True, keep=1)
        entry.run(torch.tensor([[4, 5, 6]]), prefill=False)
        from bild_exp.decoding.compiled import set_cached_length

        set_cached_length(entry.cache, ids.shape[1])
        after_reset = entry.run(torch.tensor([[9]]), prefill=False)
        torch.testing.assert_close(after_reset, expected, rtol=1e-4, atol=1e-5)
        # the same three tokens and no reset: a different (wrong) continuation
        entry.reset()
        entry.run(ids, prefill=True, keep=1)
        entry.run(torch.tensor([[4, 5, 6]]), prefill=False)
        stale = entry.run(torch.tensor([[9]]), prefill=False)
        assert not torch.allclose(stale, expected, atol=1e-3)


def test_graphs_are_bounded_and_compiled_before_the_first_timed_call(llama_pair):
    large, small = llama_pair
    for method, params in METHODS:  # prompts of several lengths, every method
        for seed in range(3):
            both(method, large, small, prompt("llama", seed, length=4 + 5 * seed), **params)
    counts = {name: compile_stats(model) for name, model in (("large", large), ("small", small))}
    for stats in counts.values():
        # one graph for one-token steps, one for every verification length
        assert stats["n_graphs"] <= 2, counts
        assert stats["compile_s"] > 0 and stats["n_compiled_calls"] > 0
    before = {
        name: compile_stats(model)["n_graphs"]
        for name, model in (("large", large), ("small", small))
    }
    both(
        "bild",
        large,
        small,
        prompt("llama", 7, length=11),
        fallback_threshold=0.7,
        rollback_threshold=0.3,
    )
    after = {
        name: compile_stats(model)["n_graphs"]
        for name, model in (("large", large), ("small", small))
    }
    assert after == before  # nothing compiles inside a later example


@pytest.mark.parametrize("method", ["calm", "hf_assisted"])
def test_methods_without_a_compiled_path_are_one_line(llama_pair, method):
    large, small = llama_pair
    with pytest.raises(
        InvalidParameterError, match=rf"^compile=True is invalid for method='{method}'"
    ):
        generate(method, large=large, small=small, input_ids=prompt("llama", 0), compile=True)


def test_models_without_a_compiled_path_are_one_line(llama_pair):
    large, _ = llama_pair
    with pytest.raises(InvalidParameterError, match="an early-exit small model shares"):
        generate(
            "bild",
            large=large,
            small=EarlyExit(large, layers=1),
            input_ids=prompt("llama", 0),
            compile=True,
        )
    t5_large, t5_small = tiny_pair("t5", seed=0)
    with pytest.raises(InvalidParameterError, match=r"model_type='t5': accepted llama"):
        generate("bild", large=t5_large, small=t5_small, input_ids=prompt("t5", 0), compile=True)
    with pytest.raises(InvalidParameterError, match=r"^use_cache=False is invalid"):
        generate("large", large=large, input_ids=prompt("llama", 0), use_cache=False, compile=True)
