"""The paper's Figure 2 oracle: the large model watches every small step and overrides it."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.compiled import static_length
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.params import OracleParams
from bild_exp.decoding.result import GenerationResult, PolicyCounters, build_result, start_sequence
from bild_exp.decoding.runner import StopStrings, runner_pair
from bild_exp.decoding.sampling import Sampler


def decode_oracle(
    large: PreTrainedModel,
    small: PreTrainedModel | EarlyExit,
    input_ids: torch.Tensor,
    *,
    params: OracleParams,
    sampler: Sampler,
    max_new_tokens: int,
    use_cache: bool = True,
    stop_strings: StopStrings | None = None,
    compile: bool = False,
) -> GenerationResult:
    """Both models run at every step; y_S is replaced when ``p_L(y_S) < oracle_threshold``.

    ``stats["oracle_replaced_fraction"]`` is the fraction of kept tokens the large model replaced.
    """
    sequence = start_sequence(large, input_ids, max_new_tokens, stop_strings)
    large_runner, small_runner = runner_pair(
        large, small, input_ids, use_cache, static_length=static_length(sequence, compile)
    )
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
