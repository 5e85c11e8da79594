"""Speculative decoding / sampling (Leviathan et al. 2023; Chen et al. 2023) with a fixed window.

The small model drafts ``window`` (gamma) tokens, the large model scores them in
one pass; greedy keeps the longest prefix that matches the large argmax plus one
large token, sampling applies the ``min(1, p_L / p_S)`` rejection rule. Either
way the output follows the large model exactly (greedy) or in distribution (sampling).

With ``draft_source="ngram+small"`` an n-gram proposal (:mod:`bild_exp.decoding.ngram`),
where there is one, is the draft instead of the small model's ``window`` tokens; under
sampling its draft distribution is one-hot, which the rejection rule handles as any other.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.ngram import ngram_proposal, one_hot_probs, until_end
from bild_exp.decoding.params import SpeculativeParams
from bild_exp.decoding.policies import greedy_acceptance, speculative_acceptance
from bild_exp.decoding.result import GenerationResult, PolicyCounters, build_result
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sampling import Sampler
from bild_exp.decoding.sequence import TokenSequence


def draft(
    small: DecoderRunner, sequence: TokenSequence, gamma: int, sampler: Sampler
) -> torch.Tensor | None:
    """Write ``gamma`` small-model tokens to the sequence without a host sync.

    Returns the ``(gamma, vocab)`` sampling distributions (None when greedy).
    """
    draft_probs = []
    for _ in range(gamma):
        logits = small.forward(sequence.view())[-1]
        if sampler.greedy:
            sequence.write(logits.argmax(-1))
        else:
            probs = sampler.sampling_probs(logits)
            draft_probs.append(probs)
            sequence.write(sampler.draw(probs))
    return torch.stack(draft_probs) if draft_probs else None


def verify(
    large_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor | None,
    sampler: Sampler,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of accepted drafts and the large model's next token.

    Args:
        large_logits: ``(gamma + 1, vocab)`` rows predicting each draft and the position after.
        draft_tokens: ``(gamma,)``.
        draft_probs: ``(gamma, vocab)`` when sampling, else None.
    """
    if draft_tokens.numel() == 0:
        return torch.zeros((), dtype=torch.long, device=large_logits.device), sampler.choose(
            large_logits[0]
        )
    if sampler.greedy:
        large_tokens = large_logits.argmax(-1)
        n_accepted = greedy_acceptance(draft_tokens, large_tokens)
        return n_accepted, large_tokens[n_accepted]
    p_large = sampler.sampling_probs(large_logits)
    uniforms = sampler.uniforms(draft_tokens.shape[0], draft_tokens.device)
    n_accepted, next_distribution = speculative_acceptance(
        draft_tokens, draft_probs, p_large, uniforms
    )
    return n_accepted, sampler.draw(next_distribution)


def decode_speculative(
    large: PreTrainedModel,
    small: PreTrainedModel | EarlyExit,
    input_ids: torch.Tensor,
    params: SpeculativeParams,
    context: DecodeContext,
) -> GenerationResult:
    """Run speculative decoding on one example (batch size 1)."""
    sampler, max_new_tokens = context.sampler, context.max_new_tokens
    sequence = context.start(large, input_ids)
    large_runner, small_runner = context.runners(large, small, input_ids, sequence)
    lookup_prefix = context.lookup_prefix(large, input_ids, sequence)
    counters = PolicyCounters()
    while not sequence.done:
        n_kept = sequence.n_generated
        # Never draft past max_new_tokens: the large pass adds one token after the window.
        room = max_new_tokens - n_kept - 1
        proposal = []
        if params.uses_ngrams:
            proposal = ngram_proposal(
                lookup_prefix + sequence.tokens, params.ngram_size, min(params.ngram_tokens, room)
            )
            proposal = until_end(proposal, sequence.eos_token_ids)
        # 1. Draft: the n-gram proposal, else gamma tokens of the small model.
        if proposal:
            gamma = len(proposal)
            for token_id in proposal:
                sequence.write(token_id)
            draft_probs = None  # one-hot, once the large model's vocabulary width is known
        else:
            gamma = min(params.window, room)
            draft_probs = draft(small_runner, sequence, gamma, sampler)
        draft_tokens = sequence.view()[0, sequence.length - gamma :]
        # 2. One large pass over the drafts.
        large_logits = large_runner.forward(sequence.view())[-(gamma + 1) :]
        if proposal and not sampler.greedy:
            draft_probs = one_hot_probs(proposal, large_logits.shape[-1], large_logits.device)
        # 3. Accept a prefix and add the large model's token (one host sync).
        n_accepted, next_token = verify(large_logits, draft_tokens, draft_probs, sampler)
        synced = torch.cat([n_accepted.view(1), next_token.view(1), draft_tokens]).tolist()
        n_accepted, next_token_id, drafted = synced[0], synced[1], synced[2:]
        counters.verified(gamma, n_accepted, gamma if proposal else 0)
        if n_accepted < gamma:
            counters.n_rollbacks += 1
            counters.n_rolled_back_tokens += gamma - n_accepted
        sequence.truncate(n_kept)
        sequence.keep_written(drafted[:n_accepted], [False] * n_accepted, bool(proposal))
        sequence.append(next_token_id, from_large=True)
        sequence.clip_after_stop()
        # 4. Crop both caches to the kept tokens.
        large_runner.truncate(sequence.length - 1)
        small_runner.truncate(sequence.length - 1)
    return build_result(sequence, large_runner, small_runner, counters)
