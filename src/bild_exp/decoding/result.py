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
        n_rollbacks, n_rolled_back_tokens, n_small_tokens, n_large_tokens, n_ngram_tokens
        (the three add up to the output's length: every token has one source),
        accepted_lengths and drafted_lengths (per large pass: draft tokens kept and
        checked), draft_sources (per large pass: ``ngram`` when an n-gram proposal sent
        it, else ``small``), ngram_drafted_lengths and ngram_accepted_lengths (per large
        pass, the n-gram part of its drafts), and per-call shapes for cost models.
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
    # per large pass: what sent it ("ngram": an n-gram proposal; "small": the small model's
    # policies), and how many of its draft tokens an n-gram proposal drafted and were kept
    draft_sources: list[str] = field(default_factory=list)
    ngram_drafted_lengths: list[int] = field(default_factory=list)
    ngram_accepted_lengths: list[int] = field(default_factory=list)

    def verified(self, drafted: int, accepted: int, n_ngram: int = 0) -> None:
        """One large pass over ``drafted`` draft tokens, the last ``n_ngram`` of them from an
        n-gram proposal, of which the first ``accepted`` were kept."""
        self.drafted_lengths.append(drafted)
        self.accepted_lengths.append(accepted)
        self.draft_sources.append("ngram" if n_ngram else "small")
        self.ngram_drafted_lengths.append(n_ngram)
        self.ngram_accepted_lengths.append(max(0, accepted - (drafted - n_ngram)))


def build_result(
    sequence: TokenSequence,
    large: DecoderRunner | None,
    small: DecoderRunner | None,
    counters: PolicyCounters | None = None,
) -> GenerationResult:
    """Assemble tokens, authorship and stats; counts come from the sequence and runners only."""
    counters = counters or PolicyCounters()
    n_large_tokens = sum(sequence.from_large)
    n_ngram_tokens = sum(sequence.from_ngram)
    stats: dict[str, Any] = {
        "n_small_calls": small.n_calls if small else 0,
        "n_large_calls": large.n_calls if large else 0,
        "n_fallbacks": counters.n_fallbacks,
        "n_rollbacks": counters.n_rollbacks,
        "n_rolled_back_tokens": counters.n_rolled_back_tokens,
        "n_small_tokens": len(sequence.tokens) - n_large_tokens - n_ngram_tokens,
        "n_large_tokens": n_large_tokens,
        "n_ngram_tokens": n_ngram_tokens,
        "accepted_lengths": list(counters.accepted_lengths),
        "drafted_lengths": list(counters.drafted_lengths),
        "draft_sources": list(counters.draft_sources),
        "ngram_drafted_lengths": list(counters.ngram_drafted_lengths),
        "ngram_accepted_lengths": list(counters.ngram_accepted_lengths),
        "n_forced_verifications": counters.n_forced_verifications,
        "n_tail_verifications": counters.n_tail_verifications,
        "n_oracle_replacements": counters.n_oracle_replacements,
        "large_call_shapes": [(c.n_fed, c.n_cached_before) for c in large.calls] if large else [],
        "small_call_shapes": [(c.n_fed, c.n_cached_before) for c in small.calls] if small else [],
    }
    return GenerationResult(list(sequence.tokens), list(sequence.from_large), stats)
