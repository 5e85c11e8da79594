"""BiLD with an early-exit small model: exactness, shared-cache consistency, errors."""

from __future__ import annotations

import pytest
import torch

from bild_exp.decoding import InvalidParameterError, generate
from bild_exp.decoding.bild import BildDecoder
from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.decoding.layers import decoder_depth, exit_logits
from bild_exp.decoding.params import BildParams
from bild_exp.decoding.runner import self_attention_layers
from bild_exp.decoding.sampling import make_sampler
from bild_exp.decoding.sequence import start_sequence
from bild_exp.training.exit_loss import decoder_hidden_states
from tests.tiny_models import (
    EARLY_EXIT_DEPTH,
    EARLY_EXIT_FAMILIES,
    decode_with,
    prompt,
    tiny_early_exit_model,
    tiny_pair,
)

MAX_NEW = 24
SEEDS = (0, 1, 2)
CASES = [(family, seed) for family in EARLY_EXIT_FAMILIES for seed in SEEDS]


@pytest.fixture(scope="module", params=CASES, ids=str)
def case(request):
    family, seed = request.param
    model = tiny_early_exit_model(family)
    ids = prompt(family, seed)
    return model, ids, hf_greedy_tokens(model, ids, MAX_NEW)


def run(method, model, ids, layers=1, use_cache=True, **params):
    return decode_with(
        method, model, EarlyExit(model, layers=layers), ids, MAX_NEW, use_cache=use_cache, **params
    )


def full_forward(model, ids, generated):
    """A no-cache forward of the whole decoder input; hidden states of every layer."""
    sequence = start_sequence(model, ids, MAX_NEW).view()
    sequence = torch.cat([sequence, torch.tensor([generated])], dim=1)
    if model.config.is_encoder_decoder:
        return model(input_ids=ids, decoder_input_ids=sequence, output_hidden_states=True)
    return model(input_ids=sequence, output_hidden_states=True)


@pytest.mark.parametrize("family", EARLY_EXIT_FAMILIES)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_exit_readout_equals_the_truncated_model(family, layers):
    model = tiny_early_exit_model(family)
    ids = prompt(family, 0)
    outputs = full_forward(model, ids, [5, 9, 11])
    hidden = decoder_hidden_states(model, outputs)[layers]
    view = EarlyExit(model, layers=layers).model
    sequence = start_sequence(model, ids, MAX_NEW).view()
    sequence = torch.cat([sequence, torch.tensor([[5, 9, 11]])], dim=1)
    if model.config.is_encoder_decoder:
        view_logits = view(input_ids=ids, decoder_input_ids=sequence).logits
    else:
        view_logits = view(input_ids=sequence).logits
    torch.testing.assert_close(exit_logits(model, hidden), view_logits)
    assert decoder_depth(view) == layers and decoder_depth(model) == EARLY_EXIT_DEPTH
    # the view shares weights: nothing was copied
    assert view.get_output_embeddings().weight.data_ptr() == (
        model.get_output_embeddings().weight.data_ptr()
    )


def test_exit_layer_is_a_different_model_than_the_full_one(case):
    """Otherwise every exactness test below would pass trivially."""
    model, ids, full_greedy = case
    exit_only = run("small", model, ids, layers=1)
    assert exit_only.tokens != full_greedy
    assert exit_only.tokens == run("small", model, ids, layers=1, use_cache=False).tokens


def test_always_falling_back_is_the_full_model(case):
    model, ids, full_greedy = case
    res = run("bild", model, ids, fallback_threshold=1.0, rollback_threshold=3.0)
    assert res.tokens == full_greedy
    assert res.stats["n_small_tokens"] == 0


@pytest.mark.parametrize("fallback_threshold", [0.0, 0.3, 0.6, 0.9, None])
@pytest.mark.parametrize("layers", [1, 2])
def test_zero_rollback_threshold_with_tail_verification_is_the_full_model(
    case, fallback_threshold, layers
):
    model, ids, full_greedy = case
    res = run(
        "bild",
        model,
        ids,
        layers=layers,
        fallback_threshold=fallback_threshold,
        rollback_threshold=0.0,
        verify_tail=True,
        max_small_steps=4,
    )
    assert res.tokens == full_greedy


def test_speculative_with_an_early_exit_draft_is_the_full_model(case):
    model, ids, full_greedy = case
    assert run("speculative", model, ids, window=3).tokens == full_greedy


@pytest.mark.parametrize(
    "params",
    [
        {"fallback_threshold": 0.5, "rollback_threshold": 2.0},
        {"fallback_threshold": 0.8, "rollback_threshold": 0.5, "max_small_steps": 3},
        {"fallback_threshold": 0.3, "rollback_threshold": None, "verify_tail": True},
        {
            "fallback_threshold": 0.8,
            "rollback_threshold": 1.0,
            "max_small_steps": 4,
            "sampling": "nucleus",
            "seed": 3,
        },
    ],
    ids=str,
)
def test_cached_early_exit_bild_equals_the_no_cache_reference(case, params):
    model, ids, _ = case
    cached = run("bild", model, ids, **params)
    reference = run("bild", model, ids, use_cache=False, **params)
    assert cached.tokens == reference.tokens
    assert cached.from_large == reference.from_large
    assert cached.stats == reference.stats
    assert cached.stats["n_large_calls"] > 0 and cached.stats["n_small_tokens"] > 0


@pytest.mark.parametrize("family", EARLY_EXIT_FAMILIES)
def test_shared_cache_holds_real_keys_and_values_in_every_layer(family):
    """After a run with rollbacks, every cached position of every layer equals a fresh
    full forward's: skipped layers were filled by the large pass, exit layers stayed consistent."""
    model = tiny_early_exit_model(family)
    ids = prompt(family, 1)
    context = DecodeContext(make_sampler("greedy", 1.0, 1.0, None, ids.device), MAX_NEW)
    sequence = context.start(model, ids)
    large_runner, small_runner = context.runners(model, EarlyExit(model, layers=1), ids, sequence)
    params = BildParams(fallback_threshold=0.6, rollback_threshold=1.0, max_small_steps=4)
    decoder = BildDecoder(large_runner, small_runner, sequence, params, context.sampler)
    with torch.inference_mode():
        result = decoder.run()
    assert result.stats["n_rollbacks"] > 0 and result.stats["n_large_calls"] > 0
    assert small_runner.cache is large_runner.cache
    reference = full_forward(model, ids, result.tokens).cache
    layers = self_attention_layers(large_runner.cache)
    reference_layers = self_attention_layers(reference)
    assert len(layers) == EARLY_EXIT_DEPTH
    lengths = [layer.get_seq_length() for layer in layers]
    assert lengths[0] == small_runner.n_cached and lengths[-1] == large_runner.n_cached
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] > 1
    for layer, expected in zip(layers, reference_layers, strict=True):
        n = layer.get_seq_length()
        torch.testing.assert_close(layer.keys, expected.keys[..., :n, :])
        torch.testing.assert_close(layer.values, expected.values[..., :n, :])


def test_encoder_runs_once_per_example():
    model = tiny_early_exit_model("t5")
    calls = []
    handle = model.get_encoder().register_forward_hook(lambda *_: calls.append(1))
    try:
        run("bild", model, prompt("t5", 0), fallback_threshold=0.6, rollback_threshold=1.0)
    finally:
        handle.remove()
    assert len(calls) == 1


@pytest.mark.parametrize("layers", [0, EARLY_EXIT_DEPTH, -1, 1.5, True])
def test_exit_depth_out_of_range_is_one_line_error(layers):
    with pytest.raises(InvalidParameterError, match=r"^layers=.* accepted an integer in 1\.\.3"):
        EarlyExit(tiny_early_exit_model("t5"), layers=layers)


def test_early_exit_of_another_model_is_refused():
    model = tiny_early_exit_model("t5")
    other, _ = tiny_pair("t5")
    with pytest.raises(InvalidParameterError, match="same large model"):
        generate("bild", large=other, small=EarlyExit(model, layers=1), input_ids=prompt("t5", 0))


def test_early_exit_is_refused_for_hf_assisted():
    model = tiny_early_exit_model("t5")
    with pytest.raises(InvalidParameterError, match="EarlyExit works with small, bild"):
        generate(
            "hf_assisted", large=model, small=EarlyExit(model, layers=1), input_ids=prompt("t5", 0)
        )


def test_unsupported_architecture_is_one_line_error():
    large, _ = tiny_pair("bart")
    with pytest.raises(InvalidParameterError, match="model_type='bart' is not supported"):
        EarlyExit(large, layers=1)
