"""CALM, Confident Adaptive Language Modeling (Schuster et al. 2022), as the BiLD paper ran it.

Per generated token the decoder runs layer by layer; after layer ``i`` it exits when the
cosine similarity of the hidden states before and after that layer exceeds a threshold
that decays with the token's index ``n`` (CALM's Eq. 5, ``N`` = max_new_tokens):

    lambda'(n) = clip(0.9 * lambda + 0.1 * exp(-t * n / N), 0, 1)

The exited hidden state is propagated: every skipped layer computes its keys and values
from it (its self-attention sub-layer only), so later tokens attend to something real.
The prediction is read out with the model's final norm and head. Prompt tokens of
decoder-only models are fed together and run every layer. T5-family encoder-decoders and
Llama-style decoder-only models (Llama, Mistral, Qwen2/3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.layers import (
    LLAMA_LAYOUT,
    T5_LAYOUT,
    decoder_layers,
    exit_logits,
    layout_of,
)
from bild_exp.decoding.params import CalmParams
from bild_exp.decoding.result import GenerationResult, build_result
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.errors import InvalidParameterError

CALM_LAYOUTS = (T5_LAYOUT, LLAMA_LAYOUT)


def decayed_threshold(threshold: float, temperature: float, index: int, max_length: int) -> float:
    """CALM's position-decaying exit threshold for the ``index``-th generated token."""
    decayed = 0.9 * threshold + 0.1 * math.exp(-temperature * index / max_length)
    return min(max(decayed, 0.0), 1.0)


def state_similarity(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of hidden states before and after a layer (CALM's state propagation)."""
    return torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)


def check_calm_model(model: PreTrainedModel) -> None:
    if layout_of(model) not in CALM_LAYOUTS:
        raise InvalidParameterError(
            f"large={model.config.model_type!r} is not supported by method 'calm': accepted a "
            "T5-family encoder-decoder (t5, mt5) or a Llama-style decoder-only model"
        )


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, 1, L, L)`` additive mask: 0 on and below the diagonal, the dtype's minimum above."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    return mask.masked_fill(blocked, torch.finfo(dtype).min)[None, None]


class T5Steps:
    """One T5 decoder layer at a time; layer 0's relative position bias is reused above it."""

    def __init__(self, model: PreTrainedModel, encoder_states: torch.Tensor):
        self.model, self.encoder_states = model, encoder_states
        self.layers = decoder_layers(model)

    def embed(self, tokens: torch.Tensor, start: int, mask: torch.Tensor | None) -> dict:
        hidden = self.model.get_decoder().embed_tokens(tokens)
        return {"hidden": hidden, "mask": mask, "bias": None, "cross_bias": None}

    def layer(self, index: int, state: dict, cache: Any) -> torch.Tensor:
        hidden, state["bias"], state["cross_bias"] = self.layers[index](
            state["hidden"],
            state["mask"],
            state["bias"],
            self.encoder_states,
            None,
            state["cross_bias"],
            cache=cache,
        )
        return hidden

    def propagate(self, index: int, hidden: torch.Tensor, state: dict, cache: Any) -> None:
        self.layers[index].layer[0](
            hidden, attention_mask=None, position_bias=state["bias"], cache=cache
        )


class LlamaSteps:
    """One Llama-style decoder layer at a time, with rotary embeddings of the fed positions."""

    def __init__(self, model: PreTrainedModel, encoder_states: None = None):
        self.model = model
        self.layers = decoder_layers(model)

    def embed(self, tokens: torch.Tensor, start: int, mask: torch.Tensor | None) -> dict:
        hidden = self.model.get_input_embeddings()(tokens)
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)[None]
        rotary = self.model.model.rotary_emb(hidden, position_ids=positions)
        return {"hidden": hidden, "mask": mask, "positions": positions, "rotary": rotary}

    def layer(self, index: int, state: dict, cache: Any) -> torch.Tensor:
        return self.layers[index](
            state["hidden"],
            attention_mask=state["mask"],
            position_ids=state["positions"],
            cache=cache,
            position_embeddings=state["rotary"],
        )

    def propagate(self, index: int, hidden: torch.Tensor, state: dict, cache: Any) -> None:
        layer = self.layers[index]
        layer.self_attn(
            hidden_states=layer.input_layernorm(hidden),
            attention_mask=None,
            position_ids=state["positions"],
            cache=cache,
            position_embeddings=state["rotary"],
        )


class CalmRunner(DecoderRunner):
    """A decoder that runs each new token only as deep as CALM's exit rule lets it.

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
        encoder_states = self.encoder_outputs.last_hidden_state if self.is_seq2seq else None
        self.steps = (T5Steps if layout_of(model) is T5_LAYOUT else LlamaSteps)(
            model, encoder_states
        )
        self.n_layers = len(self.steps.layers)
        # a multi-token prefix (a decoder-only prompt) is fed in one call and never exits
        self.first_exit_position = prefix_length if prefix_length > 1 else 0
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
        if position < self.first_exit_position:
            return False
        if depth < self.params.min_exit_layer or depth >= self.n_layers:
            return False
        return bool(state_similarity(before, after) > self.threshold_for(position))

    def _run(self, tokens: torch.Tensor, cache, keep: int = 0) -> torch.Tensor:
        hidden = self.step(tokens, cache) if self.use_cache else self.recompute(tokens)
        if 0 < keep < hidden.shape[1]:  # prompt positions need no logits (see DecoderRunner)
            hidden = hidden[:, -keep:]
        return exit_logits(self.model, hidden)[0]

    def step(self, tokens: torch.Tensor, cache) -> torch.Tensor:
        """New tokens through the layers until the last one exits, then its state propagated."""
        position, n_new = self.n_cached, tokens.shape[1]
        mask = causal_mask(n_new, self.model.dtype, tokens.device) if n_new > 1 else None
        if mask is not None and position:
            raise ValueError("CALM feeds several tokens only as the first (prompt) call")
        state = self.steps.embed(tokens, position, mask)
        depth = self.n_layers
        for index in range(self.n_layers):
            before = state["hidden"]
            state["hidden"] = self.steps.layer(index, state, cache)
            last = position + n_new - 1
            if self.may_exit(index + 1, before[0, -1], state["hidden"][0, -1], last):
                depth = index + 1
                break
        for index in range(depth, self.n_layers):  # skipped layers' keys/values from the exit state
            self.steps.propagate(index, state["hidden"], state, cache)
        self.exit_depths.extend([self.n_layers] * (n_new - 1) + [depth])
        return state["hidden"]

    def recompute(self, tokens: torch.Tensor) -> torch.Tensor:
        """The whole sequence from scratch; past positions freeze above their recorded depth."""
        length = tokens.shape[1]
        n_new = length - len(self.exit_depths)
        depths = torch.tensor(self.exit_depths + [self.n_layers] * n_new, device=tokens.device)
        state = self.steps.embed(tokens, 0, causal_mask(length, self.model.dtype, tokens.device))
        last = length - 1
        for index in range(self.n_layers):
            before = state["hidden"]
            output = self.steps.layer(index, state, None)
            running = (depths > index)[None, :, None]
            state["hidden"] = torch.where(running, output, before)
            if int(depths[last]) == self.n_layers and self.may_exit(
                index + 1, before[0, last], state["hidden"][0, last], last
            ):
                depths[last] = index + 1
        self.exit_depths.extend(depths[-n_new:].tolist())
        return state["hidden"]


def decode_calm(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    params: CalmParams,
    context: DecodeContext,
) -> GenerationResult:
    """Decode token by token with CALM's per-token early exit (batch size 1)."""
    check_calm_model(model)
    sequence = context.start(model, input_ids)
    runner = CalmRunner(
        model,
        input_ids,
        params,
        sequence.prefix_length,
        context.max_new_tokens,
        context.use_cache,
    )
    while not sequence.done:
        token = context.sampler.choose(runner.forward(sequence.view())[-1])
        sequence.append(int(token), from_large=True)
    result = build_result(sequence, runner, None)
    # the depth each kept token was predicted at: the depth of the position before it
    first = sequence.prefix_length - 1
    depths = runner.exit_depths[first : first + len(result.tokens)]
    result.stats["exit_layers"] = depths
    result.stats["n_decoder_layers"] = runner.n_layers
    result.stats["mean_exit_layer"] = sum(depths) / max(len(depths), 1)
    # per forward call (cost models): the depth its last fed token ran to
    call_ends = [call.n_cached_before + call.n_fed - 1 for call in runner.calls]
    result.stats["call_exit_layers"] = [runner.exit_depths[end] for end in call_ends]
    return result
