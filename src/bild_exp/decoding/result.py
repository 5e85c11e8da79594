"""What a generation call returns, and the bookkeeping every method shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sequence import TokenSequence


@dataclass
class GenerationResult:
    """Output of :func:`bild_exp.decoding.generate` for one example.

    tokens: generated tokens only (no decoder-start / prompt tokens), EOS included if produced.
    from_large: per token, True where the kept token is the large model's prediction;
        None for ``hf_assisted``, whose authorship Hugging Face does not expose.
    stats: counters (see the README's table): n_small_calls, n_large_calls, n_fallbacks,
        n_rollbacks, n_rolled_back_tokens, n_small_tokens, n_large_tokens,
        accepted_lengths and drafted_lengths (per large pass: draft tokens kept and
        checked), and per-call shapes for cost models.
    """

    tokens: list[int]
    from_large: list[bool] | None
    stats: dict[str, Any]


@dataclass
class PolicyCounters:
    """Decisions taken during one call (policies' side of the stats)."""

    n_fallbacks: int = 0
    n_rollbacks: int = 0
    n_rolled_back_tokens: int = 0
    n_forced_verifications: int = 0  # large passes triggered by max_small_steps
    n_tail_verifications: int = 0  # large passes over the tail (verify_tail)
    n_oracle_replacements: int = 0
    accepted_lengths: list[int] = field(default_factory=list)
    # per large pass, how many draft tokens it checked (accepted_lengths[i] of them kept)
    drafted_lengths: list[int] = field(default_factory=list)


def build_result(
    sequence: TokenSequence,
    large: DecoderRunner | None,
    small: DecoderRunner | None,
    counters: PolicyCounters | None = None,
) -> GenerationResult:
    """Assemble tokens, authorship and stats; counts come from the sequence and runners only."""
    counters = counters or PolicyCounters()
    n_large_tokens = sum(sequence.from_large)
    stats: dict[str, Any] = {
        "n_small_calls": small.n_calls if small else 0,
        "n_large_calls": large.n_calls if large else 0,
        "n_fallbacks": counters.n_fallbacks,
        "n_rollbacks": counters.n_rollbacks,
        "n_rolled_back_tokens": counters.n_rolled_back_tokens,
        "n_small_tokens": len(sequence.tokens) - n_large_tokens,
        "n_large_tokens": n_large_tokens,
        "accepted_lengths": list(counters.accepted_lengths),
        "drafted_lengths": list(counters.drafted_lengths),
        "n_forced_verifications": counters.n_forced_verifications,
        "n_tail_verifications": counters.n_tail_verifications,
        "n_oracle_replacements": counters.n_oracle_replacements,
        "large_call_shapes": [(c.n_fed, c.n_cached_before) for c in large.calls] if large else [],
        "small_call_shapes": [(c.n_fed, c.n_cached_before) for c in small.calls] if small else [],
    }
    return GenerationResult(list(sequence.tokens), list(sequence.from_large), stats)
