"""The paper's Figure 2 oracle: the large model watches every small step and overrides it."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.params import OracleParams
from bild_exp.decoding.result import GenerationResult, PolicyCounters, build_result


def decode_oracle(
    large: PreTrainedModel,
    small: PreTrainedModel | EarlyExit,
    input_ids: torch.Tensor,
    params: OracleParams,
    context: DecodeContext,
) -> GenerationResult:
    """Both models run at every step; y_S is replaced when ``p_L(y_S) < oracle_threshold``.

    ``stats["oracle_replaced_fraction"]`` is the fraction of kept tokens the large model replaced.
    """
    sampler = context.sampler
    sequence = context.start(large, input_ids)
    large_runner, small_runner = context.runners(large, small, input_ids, sequence)
    counters = PolicyCounters()
    while not sequence.done:
        small_logits = small_runner.forward(sequence.view())[-1]
        large_logits = large_runner.forward(sequence.view())[-1]
        small_token = sampler.choose(small_logits)
        p_large_of_small = sampler.tempered_log_probs(large_logits)[small_token].exp()
        replace = p_large_of_small < params.oracle_threshold
        token = torch.where(replace, sampler.choose(large_logits), small_token)
        token_id, replaced = torch.stack([token, replace.long()]).tolist()
        counters.n_oracle_replacements += replaced
        sequence.append(token_id, from_large=bool(replaced))
    result = build_result(sequence, large_runner, small_runner, counters)
    result.stats["oracle_replaced_fraction"] = counters.n_oracle_replacements / max(
        len(result.tokens), 1
    )
    return result
