"""Plain autoregressive decoding with one model (the ``large`` and ``small`` baselines)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.compiled import static_length
from bild_exp.decoding.result import GenerationResult, build_result, start_sequence
from bild_exp.decoding.runner import DecoderRunner, StopStrings
from bild_exp.decoding.sampling import Sampler


def decode_autoregressive(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    *,
    is_large: bool,
    sampler: Sampler,
    max_new_tokens: int,
    use_cache: bool = True,
    stop_strings: StopStrings | None = None,
    compile: bool = False,
) -> GenerationResult:
    """Decode token by token with ``model``; one forward and one host sync per token."""
    sequence = start_sequence(model, input_ids, max_new_tokens, stop_strings)
    runner = DecoderRunner(
        model, input_ids, use_cache, static_length=static_length(sequence, compile)
    )
    while not sequence.done:
        token = sampler.choose(runner.forward(sequence.view())[-1])
        sequence.append(int(token), from_large=is_large)
    return build_result(sequence, runner if is_large else None, None if is_large else runner)
