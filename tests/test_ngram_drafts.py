"""A second draft source (``draft_source="ngram+small"``): the proposal rule on hand-made
sequences; BiLD lossless and speculative decoding with n-gram drafts give vanilla large's
exact tokens on tiny T5 and Llama pairs; a sequence without a repeated n-gram decodes as
``draft_source="small"``; the stats add up; bad settings are refused before any model runs."""

from __future__ import annotations

import doctest

import pytest
import torch

from bild_exp.decoding import ngram
from bild_exp.decoding.ngram import ngram_proposal, one_hot_probs, until_end
from bild_exp.decoding.params import BildParams, SpeculativeParams
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.plan import plan_runs
from tests.harness_fixtures import compose_sweep, tiny_overrides
from tests.tiny_models import decode_with, tiny_model, train_briefly

MAX_NEW = 40
NGRAM = {"draft_source": "ngram+small", "ngram_size": 2, "ngram_tokens": 6}
LOSSLESS = {"fallback_threshold": 0.6, "rollback_threshold": 0.0, "verify_tail": True}


@pytest.mark.parametrize(
    ("tokens", "size", "most", "expected"),
    [
        ([5, 6, 7, 8, 9, 5, 6], 2, 3, [7, 8, 9]),  # clipped at the caller's room
        ([5, 6, 7, 8, 9, 5, 6], 2, 10, [7, 8, 9, 5, 6]),  # runs up to the end of the sequence
        ([5, 6, 7, 5, 6, 8, 5, 6], 2, 10, [8, 5, 6]),  # the latest occurrence wins
        ([4, 5, 6, 9, 5, 6, 4, 5, 6], 3, 2, [9, 5]),  # a longer n-gram
        ([1, 1, 1], 2, 4, [1]),  # an occurrence overlapping the final n-gram counts
        ([5, 6, 7], 2, 3, []),  # no earlier occurrence
        ([5, 6, 5, 6], 2, 0, []),  # no room
        ([6], 2, 3, []),  # shorter than the n-gram
    ],
)
def test_the_proposal_is_the_continuation_of_the_latest_earlier_occurrence(
    tokens, size, most, expected
):
    assert ngram_proposal(tokens, size, most) == expected


def test_the_proposal_rules_docstring_examples_hold():
    failures, tried = doctest.testmod(ngram)
    assert tried >= 4 and failures == 0


def test_a_proposal_stops_at_its_first_end_token_and_is_one_hot_when_sampled():
    assert until_end([4, 1, 5, 1], frozenset({1})) == [4, 1]
    assert until_end([4, 5], frozenset({1})) == [4, 5]
    probs = one_hot_probs([2, 0], 4, torch.device("cpu"))
    assert probs.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0]]


def pair(family: str):
    large = train_briefly(tiny_model(family, seed=0, layers=3, width=48), steps=80, seed=0)
    small = train_briefly(tiny_model(family, seed=1, layers=1, width=32), steps=80, seed=1)
    return large, small


def repetitive_prompts(n: int = 4) -> list[torch.Tensor]:
    """Prompts that repeat a phrase (so that n-grams match) among random tokens."""
    generator = torch.Generator().manual_seed(5)
    prompts = []
    for i in range(n):
        phrase = torch.randint(3, 64, (4,), generator=generator)
        noise = torch.randint(3, 64, (3 + i,), generator=generator)
        prompts.append(torch.cat([phrase, noise, phrase, phrase[:2]]).view(1, -1))
    return prompts


def check_stats_add_up(result) -> None:
    stats = result.stats
    assert stats["n_small_tokens"] + stats["n_large_tokens"] + stats["n_ngram_tokens"] == len(
        result.tokens
    )
    assert min(stats["n_small_tokens"], stats["n_large_tokens"], stats["n_ngram_tokens"]) >= 0
    passes = len(stats["drafted_lengths"])
    assert len(stats["draft_sources"]) == len(stats["ngram_drafted_lengths"]) == passes
    for source, n_ngram, kept, drafted, accepted in zip(
        stats["draft_sources"],
        stats["ngram_drafted_lengths"],
        stats["ngram_accepted_lengths"],
        stats["drafted_lengths"],
        stats["accepted_lengths"],
        strict=True,
    ):
        assert (source == "ngram") == (n_ngram > 0)
        assert 0 <= kept <= n_ngram <= drafted and accepted <= drafted


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_lossless_bild_and_speculative_with_ngram_drafts_give_vanilla_larges_tokens(family):
    large, small = pair(family)
    n_ngram_passes = 0
    for ids in repetitive_prompts():
        vanilla = decode_with("large", large, None, ids, MAX_NEW).tokens
        bild = decode_with("bild", large, small, ids, MAX_NEW, **LOSSLESS, **NGRAM)
        speculative = decode_with("speculative", large, small, ids, MAX_NEW, window=3, **NGRAM)
        assert bild.tokens == vanilla
        assert speculative.tokens == vanilla
        for result in (bild, speculative):
            check_stats_add_up(result)
            n_ngram_passes += result.stats["draft_sources"].count("ngram")
    assert n_ngram_passes > 0  # the prompts made n-gram drafts happen (else nothing was tested)


def test_lossy_bild_with_ngram_drafts_keeps_the_stats_consistent():
    large, small = pair("llama")
    lossy = {"fallback_threshold": 0.6, "rollback_threshold": 2.0}
    for ids in repetitive_prompts():
        result = decode_with("bild", large, small, ids, MAX_NEW, **lossy, **NGRAM)
        check_stats_add_up(result)
        assert len(result.tokens) <= MAX_NEW


def test_without_a_repeated_ngram_the_decode_is_that_of_the_small_draft_source():
    large, small = pair("llama")
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
    # an n-gram longer than prompt and output together never repeats: every step looks a
    # proposal up and finds none, which must leave the decode as it was
    options = {**NGRAM, "ngram_size": 64}
    for method, params in (("bild", LOSSLESS), ("speculative", {"window": 3})):
        plain = decode_with(method, large, small, ids, 16, **params)
        with_ngrams = decode_with(method, large, small, ids, 16, **params, **options)
        assert with_ngrams.stats["draft_sources"].count("ngram") == 0
        assert with_ngrams.tokens == plain.tokens
        assert with_ngrams.stats["accepted_lengths"] == plain.stats["accepted_lengths"]
        assert with_ngrams.stats["n_small_calls"] == plain.stats["n_small_calls"]


def test_sampled_speculative_with_ngram_drafts_stays_within_the_output_budget():
    large, small = pair("llama")
    for seed, ids in enumerate(repetitive_prompts()):
        result = decode_with(
            "speculative",
            large,
            small,
            ids,
            MAX_NEW,
            window=3,
            sampling="nucleus",
            top_p=0.9,
            seed=seed,
            **NGRAM,
        )
        check_stats_add_up(result)
        assert 0 < len(result.tokens) <= MAX_NEW


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"draft_source": "ngram"},
            "draft_source='ngram' is invalid: accepted one of small, ngram+small",
        ),
        ({"draft_source": "ngram+small", "ngram_size": 0}, "ngram_size=0 is invalid"),
        ({"draft_source": "ngram+small", "ngram_tokens": 1.5}, "ngram_tokens=1.5 is invalid"),
        (
            {"draft_source": "ngram+small", "rollback_metric": "kl"},
            "rollback_metric='kl' is invalid: accepted cross_entropy with draft_source='ngram+small'",
        ),
    ],
)
def test_bad_draft_source_settings_are_one_line(params, message):
    with pytest.raises(
        InvalidParameterError, match=message.replace("+", r"\+").replace("(", r"\(")
    ):
        BildParams(**params)
    if "rollback_metric" not in params:
        with pytest.raises(InvalidParameterError):
            SpeculativeParams(**params)


def test_a_sweep_refuses_a_bad_draft_source_before_loading(tiny_assets, tmp_path):
    cfg = compose_sweep(
        tiny_overrides(
            tiny_assets,
            tmp_path,
            "method=speculative",
            "grid.window=[2]",
            "+method.speculative.params.draft_source=ngrams",
            "pair.large=/nonexistent",
        )
    )
    with pytest.raises(
        InvalidParameterError, match="method.speculative.params.draft_source='ngrams' is invalid"
    ):
        plan_runs(cfg)
