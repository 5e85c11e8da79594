"""BiLD's two control-flow schedules: ``paper`` (Algorithm 1) and ``official`` (the authors'
``T5BiLDModel._greedy_search_body``), each checked token for token.

The official loop is re-stated here without caches (every call recomputes the whole decoder
input) from the authors' code, line by line, so the engine's cached version is compared
against an independent reading of it.
"""

from __future__ import annotations

import pytest
import torch

from bild_exp.decoding import InvalidParameterError, generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.decoding.sequence import start_sequence
from tests.tiny_models import FAMILIES, prompt, tiny_pair

MAX_NEW = 24
SETTINGS = [(0.3, 1.0), (0.5, 2.0), (0.7, 0.5), (0.9, 3.0), (0.1, 0.3), (0.0, 0.05), (0.2, 0.1)]


def all_logits(model, ids: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """``(len(tokens), vocab)``: row t predicts token t + 1 of the decoder input ``tokens``."""
    sequence = torch.tensor([tokens])
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, decoder_input_ids=sequence).logits[0]
        return model(input_ids=sequence).logits[0]


def official_loop(large, small, ids, fallback, rollback, max_small_steps=10):
    """(generated tokens, n_fallbacks, n_rollbacks) of the official greedy BiLD loop."""
    tokens = start_sequence(large, ids, MAX_NEW).view()[0].tolist()
    n_prefix = len(tokens)
    eos = large.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    pasts = {"large": 0, "small": 0}  # positions each model's cache holds
    model_type, iter_count = "large", 1  # init_iters(init_with='large')
    n_fallbacks = n_rollbacks = 0
    while True:
        model = large if model_type == "large" else small
        # decoder_input_ids = input_ids[past:]; a decoder-only prompt's rows predict prompt
        # tokens, so pending rows start at the prompt's last position at the earliest
        start = max(pasts[model_type], n_prefix - 1)
        rows = all_logits(model, ids, tokens)[start:]
        score = torch.softmax(rows[-1], dim=-1)
        next_token = int(score.argmax())
        if model_type == "small" and score.max() < fallback:  # fallback: discard y_S
            n_fallbacks += 1
            model_type, iter_count = "large", 1  # schedule_iters(fall_back_to_large=True)
            continue
        tokens.append(next_token)
        if model_type == "large" and rows.shape[0] != 1:
            small_prediction = torch.tensor(tokens[start + 1 : start + rows.shape[0]])
            loss = torch.nn.functional.cross_entropy(rows[:-1], small_prediction, reduction="none")
            above = loss > rollback
            if above.any():
                first = int(above.int().argmax())
                new_prediction = int(rows[first].argmax())
                if new_prediction != int(small_prediction[first]):
                    tokens = tokens[: start + 1 + first] + [new_prediction]
                    n_rollbacks += 1
                    for name in pasts:  # _reset_kwargs_past_to_new_length; the large's own
                        pasts[name] = min(pasts[name], len(tokens) - 1)  # past was not updated
                    # (deviation, kept by the engine: the official loop does not check for
                    # EOS here and writes past a rolled-back EOS; generation ends at it)
                    if new_prediction in eos:
                        break
                    continue  # still the large model, iter_count unchanged
        pasts[model_type] = len(tokens) - 1
        if next_token in eos or len(tokens) - n_prefix >= MAX_NEW:
            break
        iter_count -= 1  # schedule_iters()
        if model_type == "large" and iter_count == 0:
            model_type, iter_count = "small", max_small_steps
        elif model_type == "small" and iter_count == 0:
            model_type, iter_count = "large", 1
    return tokens[n_prefix:], n_fallbacks, n_rollbacks


def bild(large, small, ids, fallback, rollback, schedule, **params):
    return generate(
        "bild",
        large=large,
        small=small,
        input_ids=ids,
        max_new_tokens=MAX_NEW,
        fallback_threshold=fallback,
        rollback_threshold=rollback,
        schedule=schedule,
        **params,
    )


def families_slow_except(fast: str) -> list:
    """Every family, all but ``fast`` marked slow (over ~25 s each cold on the 2-core CI
    machine: `make test-slow`)."""
    return [f if f == fast else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]


@pytest.mark.parametrize("family", families_slow_except("llama"))
def test_official_schedule_matches_the_official_loop(family):
    large, small = tiny_pair(family, seed=0)
    n_rollbacks = n_fallbacks = 0
    for seed in range(3):
        ids = prompt(family, seed)
        for fallback, rollback in SETTINGS:
            expected = official_loop(large, small, ids, fallback, rollback)
            result = bild(large, small, ids, fallback, rollback, "official")
            got = (result.tokens, result.stats["n_fallbacks"], result.stats["n_rollbacks"])
            assert got == expected, (seed, fallback, rollback)
            n_rollbacks += expected[2]
            n_fallbacks += expected[1]
    assert n_rollbacks > 0 and n_fallbacks > 0  # both policies were exercised


@pytest.mark.parametrize(  # llama is over ~25 s cold: `make test-slow`
    "family", [pytest.param(f, marks=pytest.mark.slow if f == "llama" else ()) for f in FAMILIES]
)
def test_the_schedules_differ_where_the_official_code_does(family):
    large, small = tiny_pair(family, seed=0)
    saw_rollback = False
    for seed in range(3):
        ids = prompt(family, seed)
        # who writes the first token (no fallback, no rollback: it stays who wrote it)
        paper = bild(large, small, ids, 0.0, None, "paper")
        assert not paper.from_large[0]
        assert bild(large, small, ids, 0.0, None, "official").from_large[0]
        for fallback, rollback in SETTINGS:
            official = bild(large, small, ids, fallback, rollback, "official")
            if official.stats["n_rollbacks"]:
                saw_rollback = True  # the correction and one more large token follow each
                pairs = zip(official.from_large[1:], official.from_large[2:], strict=False)
                ended_at_correction = official.from_large[-1]  # (unless the correction ended it)
                assert any(a and b for a, b in pairs) or ended_at_correction
    assert saw_rollback


@pytest.mark.parametrize("schedule", ["paper", "official"])
@pytest.mark.parametrize("family", FAMILIES)
def test_always_falling_back_is_vanilla_large_under_both_schedules(family, schedule):
    large, small = tiny_pair(family, seed=0)
    for seed in range(2):
        ids = prompt(family, seed)
        expected = hf_greedy_tokens(large, ids, MAX_NEW)
        assert bild(large, small, ids, 1.0, 0.0, schedule).tokens == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_paper_schedule_is_lossless_at_zero_rollback_threshold(family):
    large, small = tiny_pair(family, seed=0)
    ids = prompt(family, 1)
    result = bild(large, small, ids, 0.5, 0.0, "paper", verify_tail=True)
    assert result.tokens == hf_greedy_tokens(large, ids, MAX_NEW)


def test_an_unknown_schedule_is_one_line():
    with pytest.raises(InvalidParameterError, match=r"^schedule='authors' is invalid: accepted"):
        bild(None, None, None, 0.5, 2.0, "authors")
