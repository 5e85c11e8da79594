"""The cached engine against the slow no-cache reference, and stats bookkeeping."""

from __future__ import annotations

import pytest

from bild_exp.decoding import generate
from tests.tiny_models import prompt, tiny_pair

CONFIGS = [
    ("large", {}),
    ("small", {}),
    ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 1.0}),
    ("bild", {"fallback_threshold": 0.7, "rollback_threshold": 0.5, "max_small_steps": 3}),
    ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 2.0, "verify_tail": True}),
    ("bild", {"fallback_threshold": None, "rollback_threshold": 1.0, "max_small_steps": 4}),
    ("bild", {"fallback_threshold": 0.6, "rollback_threshold": None}),
    ("bild", {"fallback_threshold": 0.5, "rollback_threshold": 0.2, "rollback_metric": "kl"}),
    (
        "bild",
        {
            "fallback_threshold": 0.5,
            "rollback_threshold": 0.3,
            "rollback_metric": "total_variation",
        },
    ),
    (
        "bild",
        {
            "fallback_threshold": 0.5,
            "rollback_threshold": 1.0,
            "sampling": "nucleus",
            "top_p": 0.9,
            "seed": 3,
        },
    ),
    ("speculative", {"window": 4}),
    (
        "speculative",
        {"window": 3, "sampling": "nucleus", "top_p": 0.8, "temperature": 0.7, "seed": 5},
    ),
    ("oracle", {"oracle_threshold": 0.3}),
]


@pytest.mark.parametrize("family", ["t5", "bart", "gpt2", "llama"])
@pytest.mark.parametrize(("method", "params"), CONFIGS, ids=lambda x: str(x))
def test_cached_engine_equals_no_cache_reference(family, method, params):
    large, small = tiny_pair(family)
    ids = prompt(family, 4)
    cached = generate(method, large=large, small=small, input_ids=ids, max_new_tokens=20, **params)
    reference = generate(
        method,
        large=large,
        small=small,
        input_ids=ids,
        max_new_tokens=20,
        use_cache=False,
        **params,
    )
    assert cached.tokens == reference.tokens
    assert cached.from_large == reference.from_large
    assert cached.stats == reference.stats
    # Stats are consistent with the tokens.
    stats = cached.stats
    assert stats["n_small_tokens"] + stats["n_large_tokens"] == len(cached.tokens)
    assert sum(cached.from_large) == stats["n_large_tokens"]
    assert len(stats["large_call_shapes"]) == stats["n_large_calls"]
    assert len(stats["small_call_shapes"]) == stats["n_small_calls"]
    assert 1 <= len(cached.tokens) <= 20


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_bild_stats_add_up(family):
    """Every large call verifies some small tokens; rolled-back tokens were drafted and dropped."""
    large, small = tiny_pair(family)
    events = {"rollbacks": 0, "fallbacks": 0}
    for seed in range(4):
        res = generate(
            "bild",
            large=large,
            small=small,
            input_ids=prompt(family, seed),
            max_new_tokens=30,
            fallback_threshold=0.4,  # both policies fire on these tiny pairs
            rollback_threshold=0.3,
        )
        stats = res.stats
        assert len(stats["accepted_lengths"]) == stats["n_large_calls"]
        assert (
            stats["n_fallbacks"] + stats["n_forced_verifications"] + stats["n_tail_verifications"]
            == (stats["n_large_calls"])
        )
        drafted = stats["n_small_tokens"] + stats["n_rolled_back_tokens"]
        # Each small call yields one token: kept, rolled back, or discarded at a fallback.
        assert drafted + stats["n_fallbacks"] == stats["n_small_calls"]
        assert stats["n_rollbacks"] <= stats["n_rolled_back_tokens"]
        # per large pass: draft tokens checked and kept; the rest were rolled back
        checked, kept = stats["drafted_lengths"], stats["accepted_lengths"]
        assert len(checked) == len(kept)
        assert all(0 <= k <= c for k, c in zip(kept, checked, strict=True))
        assert sum(checked) - sum(kept) == stats["n_rolled_back_tokens"]
        events["rollbacks"] += stats["n_rollbacks"]
        events["fallbacks"] += stats["n_fallbacks"]
    assert events["rollbacks"] > 0 and events["fallbacks"] > 0, events  # both paths ran


def test_each_token_is_fed_once_without_rollbacks():
    large, small = tiny_pair("gpt2")
    ids = prompt("gpt2", 0)
    res = generate(
        "bild",
        large=large,
        small=small,
        input_ids=ids,
        max_new_tokens=30,
        fallback_threshold=0.6,
        rollback_threshold=None,
    )
    n_sequence = ids.shape[1] + len(res.tokens)
    fed_large = sum(n for n, _ in res.stats["large_call_shapes"])
    fed_small = sum(n for n, _ in res.stats["small_call_shapes"])
    # The last token is never fed to a model that did not need to predict past it.
    assert fed_large <= n_sequence and fed_small <= n_sequence


def test_same_seed_same_output_and_different_seed_differs():
    large, small = tiny_pair("t5")
    ids = prompt("t5", 0)
    outputs = [
        generate(
            "bild",
            large=large,
            small=small,
            input_ids=ids,
            max_new_tokens=20,
            sampling="nucleus",
            top_p=1.0,
            temperature=1.5,
            seed=seed,
        ).tokens
        for seed in (1, 1, 2, 3, 4)
    ]
    assert outputs[0] == outputs[1]
    assert any(out != outputs[0] for out in outputs[2:])
