"""Plain autoregressive decoding with one model (the ``large`` and ``small`` baselines)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.result import GenerationResult, build_result


def decode_autoregressive(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    context: DecodeContext,
    *,
    is_large: bool,
) -> GenerationResult:
    """Decode token by token with ``model``; one forward and one host sync per token."""
    sequence = context.start(model, input_ids)
    runner = context.runner(model, input_ids, sequence)
    while not sequence.done:
        token = context.sampler.choose(runner.forward(sequence.view())[-1])
        sequence.append(int(token), from_large=is_large)
    return build_result(sequence, runner if is_large else None, None if is_large else runner)
