"""The paper's decision rules as pure tensor functions.

Symbols follow Kim et al. (arXiv 2302.07863) and Leviathan et al. (2023):
``p_small`` / ``p_large`` are next-token distributions of the small / large model,
``fallback_threshold`` is alpha_FB and ``rollback_threshold`` is alpha_RB.
Every function works on device tensors and never syncs with the host, so the
engine can batch all decisions of one step into a single ``.tolist()``.
"""

from __future__ import annotations

import torch

ROLLBACK_METRICS = ("cross_entropy", "total_variation", "kl")


def should_fall_back(
    small_confidence: torch.Tensor, fallback_threshold: float | None
) -> torch.Tensor:
    """Fallback policy: hand control to the large model when ``max_y p_S(y) < alpha_FB``.

    Args:
        small_confidence: scalar tensor, ``max_y p_small(y | y_<n)``.
        fallback_threshold: alpha_FB in [0, 1]; ``None`` disables the policy.
            ``1`` always falls back, even where float rounding saturates the
            confidence to exactly 1.0 (the comparison is then meaningless).

    Returns:
        A boolean scalar tensor.
    """
    if fallback_threshold is None:
        return torch.zeros((), dtype=torch.bool, device=small_confidence.device)
    if fallback_threshold >= 1.0:
        return torch.ones((), dtype=torch.bool, device=small_confidence.device)
    return small_confidence < fallback_threshold


def rollback_distances(
    large_log_probs: torch.Tensor,
    small_tokens: torch.Tensor,
    small_log_probs: torch.Tensor | None = None,
    metric: str = "cross_entropy",
) -> torch.Tensor:
    """Distance d(p_S, p_L) at each position the small model authored.

    Args:
        large_log_probs: ``(n_positions, vocab_size)`` log p_L at those positions.
        small_tokens: ``(n_positions,)`` the small model's tokens y_S.
        small_log_probs: ``(n_positions, vocab_size)`` log p_S; needed for
            ``total_variation`` and ``kl`` only.
        metric: ``cross_entropy`` (the paper's default: ``-log p_L(y_S)``, nats),
            ``total_variation`` (``0.5 * sum |p_S - p_L|``) or ``kl`` (``KL(p_S || p_L)``).

    Returns:
        ``(n_positions,)`` distances.
    """
    if metric == "cross_entropy":
        return -large_log_probs.gather(-1, small_tokens.unsqueeze(-1)).squeeze(-1)
    if small_log_probs is None:
        raise ValueError(f"rollback_metric={metric!r} needs the small model's distributions")
    if metric == "total_variation":
        return 0.5 * (small_log_probs.exp() - large_log_probs.exp()).abs().sum(-1)
    if metric == "kl":
        p_small = small_log_probs.exp()
        # 0 * log 0 is 0: mask positions where the small model puts no mass.
        terms = torch.where(p_small > 0, p_small * (small_log_probs - large_log_probs), 0.0)
        return terms.sum(-1)
    raise ValueError(f"rollback_metric={metric!r} is not supported: accepted {ROLLBACK_METRICS}")


def first_rollback_index(
    distances: torch.Tensor,
    rollback_threshold: float | None,
    agreement: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rollback policy: the first position m with ``d(p_S, p_L) > alpha_RB``.

    Args:
        distances: ``(n_positions,)`` from :func:`rollback_distances`.
        rollback_threshold: alpha_RB >= 0; ``None`` disables rollback.
        agreement: ``(n_positions,)`` bool, True where the large model's argmax equals
            y_S; such positions never roll back (greedy mode), which makes
            alpha_RB = 0 exactly lossless. ``None`` (sampling) exempts nothing.

    Returns:
        Scalar long tensor: the index m, or ``n_positions`` when nothing is rolled back.
    """
    n_positions = distances.shape[0]
    if rollback_threshold is None or n_positions == 0:
        return torch.tensor(n_positions, device=distances.device)
    rolls_back = distances > rollback_threshold
    if agreement is not None:
        rolls_back &= ~agreement
    return first_true_index(rolls_back)


def first_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True in a 1-D boolean tensor, or its length if none (no host sync)."""
    n = mask.shape[0]
    positions = torch.arange(n, device=mask.device)
    return torch.where(mask, positions, n).min() if n else torch.tensor(0, device=mask.device)


def speculative_acceptance(
    draft_tokens: torch.Tensor,
    p_small: torch.Tensor,
    p_large: torch.Tensor,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling's acceptance rule (Leviathan et al. 2023, Algorithm 1).

    Draft token x_i is accepted when ``u_i <= min(1, p_L(x_i) / p_S(x_i))``; the
    first rejection ends the window and the next token is drawn from
    ``norm(max(0, p_L - p_S))`` at that position; if all are accepted, from p_L
    at the position after the window.

    Args:
        draft_tokens: ``(gamma,)`` tokens the small model drafted.
        p_small: ``(gamma, vocab_size)`` the small model's (warped) distributions.
        p_large: ``(gamma + 1, vocab_size)`` the large model's (warped) distributions.
        uniforms: ``(gamma,)`` samples of U(0, 1).

    Returns:
        ``n_accepted`` (scalar long tensor) and ``next_distribution`` ``(vocab_size,)``.
    """
    gamma = draft_tokens.shape[0]
    index = draft_tokens.unsqueeze(-1)
    q = p_small.gather(-1, index).squeeze(-1)
    p = p_large[:gamma].gather(-1, index).squeeze(-1)
    # u <= p/q rewritten as u * q <= p: no division by a zero draft probability.
    rejected = uniforms * q > p
    n_accepted = first_true_index(rejected)
    residual_rows = torch.cat([(p_large[:gamma] - p_small).clamp_min(0), p_large[gamma:]], dim=0)
    residual = residual_rows[n_accepted]
    total = residual.sum()
    # If p_L == p_S exactly at the rejected position the residual is empty;
    # fall back to p_L there (a measure-zero event that keeps sampling defined).
    next_distribution = torch.where(
        total > 0, residual / total.clamp_min(1e-30), p_large[n_accepted]
    )
    return n_accepted, next_distribution


def greedy_acceptance(draft_tokens: torch.Tensor, large_tokens: torch.Tensor) -> torch.Tensor:
    """Greedy verification: the length of the longest draft prefix equal to the large argmax.

    Args:
        draft_tokens: ``(gamma,)``.
        large_tokens: ``(gamma + 1,)`` the large model's argmax at each draft position and the next.

    Returns:
        Scalar long tensor ``n_accepted`` in [0, gamma].
    """
    gamma = draft_tokens.shape[0]
    return first_true_index(draft_tokens != large_tokens[:gamma])
