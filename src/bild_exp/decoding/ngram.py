"""A model-free draft source: the continuation of an earlier occurrence of the latest n-gram.

Answers often restate their prompt (a code answer repeats the signature and docstring) or
themselves; where the last ``ngram_size`` tokens occurred before, what followed them then is
a free guess at what follows now (prompt lookup decoding, Saxena 2023). BiLD and speculative
decoding with ``draft_source="ngram+small"`` try this proposal first at every step and let
the small model draft only where it finds nothing; the large model verifies either kind of
draft, so exactness is unchanged (``docs/engine.md``, "A second draft source").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DRAFT_SOURCES = ("small", "ngram+small")


def ngram_proposal(tokens: Sequence[int], ngram_size: int, max_tokens: int) -> list[int]:
    """Up to ``max_tokens`` tokens that followed the latest earlier occurrence of the last
    ``ngram_size`` tokens of ``tokens`` (none: ``[]``).

    The latest occurrence is the one that ends closest to the end (the most recent context
    wins, as in Hugging Face's prompt lookup); one that overlaps the final n-gram counts, so
    a repeating pattern extends itself. ``max_tokens`` is the caller's clip (the tokens left
    before ``max_new_tokens``, the window); 0 proposes nothing.

    >>> ngram_proposal([5, 6, 7, 8, 9, 5, 6], ngram_size=2, max_tokens=3)
    [7, 8, 9]
    >>> ngram_proposal([5, 6, 7, 5, 6, 8, 5, 6], ngram_size=2, max_tokens=10)  # the latest
    [8, 5, 6]
    >>> ngram_proposal([1, 1, 1], ngram_size=2, max_tokens=4)  # overlapping: [1, 1] at 0
    [1]
    >>> ngram_proposal([5, 6, 7], ngram_size=2, max_tokens=3)
    []
    """
    n = len(tokens)
    if max_tokens <= 0 or n <= ngram_size:
        return []
    key = list(tokens[n - ngram_size :])
    last = key[-1]
    for start in range(n - ngram_size - 1, -1, -1):  # latest first; never the key itself
        if (
            tokens[start + ngram_size - 1] == last
            and list(tokens[start : start + ngram_size]) == key
        ):
            follow = start + ngram_size
            return list(tokens[follow : min(follow + max_tokens, n)])
    return []


def until_end(proposal: list[int], eos_token_ids: frozenset[int]) -> list[int]:
    """``proposal`` up to and including its first end token (nothing is drafted past it)."""
    for index, token in enumerate(proposal):
        if token in eos_token_ids:
            return proposal[: index + 1]
    return proposal


def one_hot_probs(tokens: list[int], vocab_size: int, device: torch.device) -> torch.Tensor:
    """``(len(tokens), vocab)`` the draft distribution of deterministic proposals: speculative
    sampling then accepts token x with probability ``p_L(x)`` and resamples from the large
    model's distribution without x, so the output still follows the large model."""
    probs = torch.zeros((len(tokens), vocab_size), device=device)
    probs[torch.arange(len(tokens)), torch.tensor(tokens, device=device)] = 1.0
    return probs
