"""Turning logits into distributions and tokens: greedy or nucleus (top-p) sampling.

Two distributions are used per position, on purpose:
- the *tempered* distribution ``softmax(logits / T)`` (T = 1 in greedy mode) feeds the
  policies: the small model's confidence and the rollback distances. Top-p is not
  applied there because it renormalises (inflating confidence) and zeroes tokens
  (making cross-entropy infinite).
- the *sampling* distribution, tempered then cut to the nucleus, is what tokens are
  drawn from, and what speculative sampling's acceptance rule compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SAMPLING_MODES = ("greedy", "nucleus")


@dataclass(frozen=True)
class Sampler:
    """How one generation call picks tokens; holds its own RNG so calls are independent."""

    mode: str = "greedy"
    top_p: float = 1.0
    temperature: float = 1.0
    generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.mode == "greedy"

    def tempered_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., vocab)`` log softmax(logits / T); T = 1 when greedy."""
        temperature = 1.0 if self.greedy else self.temperature
        return torch.log_softmax(logits.float() / temperature, dim=-1)

    def sampling_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., vocab)`` the distribution tokens are drawn from (tempered, top-p cut)."""
        probs = self.tempered_log_probs(logits).exp()
        return top_p_filter(probs, self.top_p)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Pick one token per row of ``(..., vocab)`` logits: argmax or a nucleus sample."""
        if self.greedy:
            return logits.argmax(-1)
        return self.draw(self.sampling_probs(logits))

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """Sample one token per row of ``(..., vocab)`` probabilities with this call's RNG."""
        flat = probs.reshape(-1, probs.shape[-1])
        tokens = torch.multinomial(flat, 1, generator=self.generator).squeeze(-1)
        return tokens.reshape(probs.shape[:-1])

    def uniforms(self, n: int, device: torch.device) -> torch.Tensor:
        """``(n,)`` samples of U(0, 1) from this call's RNG."""
        return torch.rand(n, generator=self.generator, device=device)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches ``top_p``, renormalised.

    Args:
        probs: ``(..., vocab_size)`` probabilities.
        top_p: nucleus mass in (0, 1]; 1 keeps every token.

    Returns:
        ``(..., vocab_size)`` renormalised probabilities, zero outside the nucleus.
    """
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    # A token is kept if the mass strictly before it is below top_p: the most
    # likely token is always kept, and the one that crosses top_p is included.
    keep_sorted = mass_before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = torch.where(keep, probs, 0.0)
    return kept / kept.sum(-1, keepdim=True)


def make_sampler(
    sampling: str, top_p: float, temperature: float, seed: int | None, device: torch.device
) -> Sampler:
    """A :class:`Sampler` with a fresh per-call generator (same seed, same output)."""
    generator = None
    if sampling != "greedy":
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    return Sampler(mode=sampling, top_p=top_p, temperature=temperature, generator=generator)
