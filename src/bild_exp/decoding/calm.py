"""CALM, Confident Adaptive Language Modeling (Schuster et al. 2022), as the BiLD paper ran it.

Per generated token the decoder runs layer by layer; after layer ``i`` it exits when the
cosine similarity of the hidden states before and after that layer exceeds a threshold
that decays with the token's index ``n`` (CALM's Eq. 5, ``N`` = max_new_tokens):

    lambda'(n) = clip(0.9 * lambda + 0.1 * exp(-t * n / N), 0, 1)

The exited hidden state is propagated: every skipped layer computes its keys and values
from it (its self-attention sub-layer only), so later tokens attend to something real.
The prediction is read out with the model's final norm and head. T5-family models only.
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.layers import T5_LAYOUT, decoder_layers, exit_logits, layout_of
from bild_exp.decoding.params import CalmParams, InvalidParameterError
from bild_exp.decoding.result import GenerationResult, build_result, start_sequence
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sampling import Sampler


def decayed_threshold(threshold: float, temperature: float, index: int, max_length: int) -> float:
    """CALM's position-decaying exit threshold for the ``index``-th generated token."""
    decayed = 0.9 * threshold + 0.1 * math.exp(-temperature * index / max_length)
    return min(max(decayed, 0.0), 1.0)


def state_similarity(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of hidden states before and after a layer (CALM's state propagation)."""
    return torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)


def check_calm_model(model: PreTrainedModel) -> None:
    if layout_of(model) is not T5_LAYOUT:
        raise InvalidParameterError(
            f"large={model.config.model_type!r} is not supported by method 'calm': "
            "accepted a T5-family encoder-decoder (t5, mt5)"
        )


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, 1, L, L)`` additive mask: 0 on and below the diagonal, the dtype's minimum above."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    return mask.masked_fill(blocked, torch.finfo(dtype).min)[None, None]


class CalmRunner(DecoderRunner):
    """A T5 decoder that runs each new token only as deep as CALM's exit rule lets it.

    ``exit_depths[q]`` is the depth (1..L) the token fed at decoder position ``q`` exited at.
    With ``use_cache=False`` every call recomputes the whole sequence: each past position
    runs up to its recorded depth and keeps its exited state above it, which is what the
    propagated cache holds (the reference the cached path is tested against).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        params: CalmParams,
        prefix_length: int,
        max_new_tokens: int,
        use_cache: bool = True,
    ):
        super().__init__(model, input_ids, use_cache)
        self.params, self.prefix_length, self.max_new_tokens = params, prefix_length, max_new_tokens
        self.layers = decoder_layers(model)
        self.exit_depths: list[int] = []

    def threshold_for(self, position: int) -> float:
        """The exit threshold when the token fed at ``position`` predicts the next one."""
        index = position - self.prefix_length + 1  # tokens generated so far
        if self.params.exit_threshold >= 1.0:
            return math.inf  # lambda = 1: never exit (cosine rounding can exceed 1)
        return decayed_threshold(
            self.params.exit_threshold, self.params.decay_temperature, index, self.max_new_tokens
        )

    def may_exit(self, depth: int, before: torch.Tensor, after: torch.Tensor, position: int):
        if depth < self.params.min_exit_layer or depth >= len(self.layers):
            return False
        return bool(state_similarity(before, after) > self.threshold_for(position))

    def _run(self, tokens: torch.Tensor, cache) -> torch.Tensor:
        encoder_states = self.encoder_outputs.last_hidden_state
        hidden = self.model.get_decoder().embed_tokens(tokens)
        if self.use_cache:
            if tokens.shape[1] != 1:
                raise ValueError("CALM feeds one token per cached step")
            hidden = self.step(hidden, encoder_states, cache)
        else:
            hidden = self.recompute(hidden, encoder_states)
        return exit_logits(self.model, hidden)[0]

    def step(self, hidden: torch.Tensor, encoder_states: torch.Tensor, cache) -> torch.Tensor:
        """One new token through the layers until it exits, then its state propagated up."""
        position = self.n_cached
        bias = cross_bias = None
        depth = len(self.layers)
        for index, layer in enumerate(self.layers):
            before = hidden
            hidden, bias, cross_bias = layer(
                hidden, None, bias, encoder_states, None, cross_bias, past_key_values=cache
            )
            if self.may_exit(index + 1, before[0, -1], hidden[0, -1], position):
                depth = index + 1
                break
        for layer in self.layers[depth:]:  # keys/values of the skipped layers from the exited state
            layer.layer[0](hidden, attention_mask=None, position_bias=bias, past_key_values=cache)
        self.exit_depths.append(depth)
        return hidden

    def recompute(self, hidden: torch.Tensor, encoder_states: torch.Tensor) -> torch.Tensor:
        """The whole sequence from scratch; past positions freeze above their recorded depth."""
        length = hidden.shape[1]
        depths = torch.tensor(self.exit_depths + [len(self.layers)], device=hidden.device)
        mask = causal_mask(length, hidden.dtype, hidden.device)
        bias = cross_bias = None
        last = length - 1
        for index, layer in enumerate(self.layers):
            before = hidden
            output, bias, cross_bias = layer(hidden, mask, bias, encoder_states, None, cross_bias)
            running = (depths > index)[None, :, None]
            hidden = torch.where(running, output, before)
            if int(depths[last]) == len(self.layers) and self.may_exit(
                index + 1, before[0, last], hidden[0, last], last
            ):
                depths[last] = index + 1
        self.exit_depths.append(int(depths[last]))
        return hidden


def decode_calm(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    *,
    params: CalmParams,
    sampler: Sampler,
    max_new_tokens: int,
    use_cache: bool = True,
) -> GenerationResult:
    """Decode token by token with CALM's per-token early exit (batch size 1)."""
    check_calm_model(model)
    sequence = start_sequence(model, input_ids, max_new_tokens)
    runner = CalmRunner(model, input_ids, params, sequence.prefix_length, max_new_tokens, use_cache)
    while not sequence.done:
        token = sampler.choose(runner.forward(sequence.view())[-1])
        sequence.append(int(token), from_large=True)
    result = build_result(sequence, runner, None)
    # the depth each kept token was predicted at (the last fed token predicted nothing kept)
    depths = runner.exit_depths[: len(result.tokens)]
    result.stats["exit_layers"] = depths
    result.stats["call_exit_layers"] = list(runner.exit_depths)  # per forward call (cost models)
    result.stats["n_decoder_layers"] = len(runner.layers)
    result.stats["mean_exit_layer"] = sum(depths) / max(len(depths), 1)
    return result
