"""The paper's decision rules on hand-written numbers, thresholds at the boundary."""

from __future__ import annotations

import math

import pytest
import torch

from bild_exp.decoding.policies import (
    first_rollback_index,
    greedy_acceptance,
    rollback_distances,
    should_fall_back,
    speculative_acceptance,
)
from bild_exp.decoding.sampling import top_p_filter


def log(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


class TestFallback:
    def test_strictly_below_threshold_falls_back(self):
        assert should_fall_back(torch.tensor(0.49), 0.5)
        assert not should_fall_back(torch.tensor(0.5), 0.5)  # the boundary is confident enough
        assert not should_fall_back(torch.tensor(0.51), 0.5)

    def test_zero_never_and_one_always(self):
        assert not should_fall_back(torch.tensor(0.0), 0.0)
        assert should_fall_back(torch.tensor(1.0), 1.0)  # even a saturated confidence
        assert not should_fall_back(torch.tensor(0.01), None)


class TestRollbackDistance:
    def test_cross_entropy_is_minus_log_large_prob_of_small_token(self):
        large = log([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
        distances = rollback_distances(large, torch.tensor([1, 2]))
        assert distances.tolist() == pytest.approx([math.log(4), -math.log(0.8)])

    def test_total_variation_and_kl(self):
        large = log([[0.5, 0.5, 0.0]])
        small = log([[0.25, 0.5, 0.25]])
        tv = rollback_distances(large, torch.tensor([0]), small, "total_variation")
        assert tv.item() == pytest.approx(0.25)
        # KL(p_S || p_L) is infinite where p_L has no mass and p_S does.
        assert rollback_distances(large, torch.tensor([0]), small, "kl").item() == math.inf
        # KL(p || p) = 0, and 0 * log 0 terms vanish.
        assert rollback_distances(large, torch.tensor([0]), large, "kl").item() == pytest.approx(0)

    def test_distribution_metrics_need_small_distributions(self):
        with pytest.raises(ValueError, match="rollback_metric='kl'"):
            rollback_distances(log([[0.5, 0.5]]), torch.tensor([0]), None, "kl")


class TestRollbackIndex:
    def test_first_position_strictly_above_threshold(self):
        distances = torch.tensor([0.5, 2.0, 3.0, 9.0])
        assert first_rollback_index(distances, 2.0).item() == 2  # 2.0 is not > 2.0
        assert first_rollback_index(distances, 0.4).item() == 0
        assert first_rollback_index(distances, 9.0).item() == 4  # none: the count

    def test_disabled_and_empty(self):
        assert first_rollback_index(torch.tensor([5.0, 6.0]), None).item() == 2
        assert first_rollback_index(torch.empty(0), 1.0).item() == 0

    def test_agreeing_positions_never_roll_back(self):
        distances = torch.tensor([1.0, 1.0, 1.0])
        agreement = torch.tensor([True, False, True])
        assert first_rollback_index(distances, 0.0, agreement).item() == 1
        all_agree = torch.tensor([True, True, True])
        assert first_rollback_index(distances, 0.0, all_agree).item() == 3


class TestSpeculativeAcceptance:
    def test_greedy_longest_matching_prefix(self):
        assert greedy_acceptance(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 6, 7])).item() == 2
        assert greedy_acceptance(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 5, 7])).item() == 3
        assert greedy_acceptance(torch.tensor([3]), torch.tensor([9, 7])).item() == 0

    def test_rejection_rule_and_residual(self):
        p_small = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
        p_large = torch.tensor([[0.25, 0.5, 0.25], [0.6, 0.2, 0.2], [1.0, 0.0, 0.0]])
        drafts = torch.tensor([0, 1])
        # Position 0: ratio p/q = 0.25/0.5 = 0.5; u = 0.5 is on the boundary and accepted.
        # Position 1: ratio 0.2/0.8 = 0.25; u = 0.3 rejects.
        n, residual = speculative_acceptance(drafts, p_small, p_large, torch.tensor([0.5, 0.3]))
        assert n.item() == 1
        # norm(max(0, p_L - p_S)) at position 1: (0.4, 0, 0.2) / 0.6.
        assert residual.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])

    def test_all_accepted_samples_from_the_next_large_distribution(self):
        p_small = torch.tensor([[0.5, 0.5, 0.0]])
        p_large = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
        n, next_dist = speculative_acceptance(
            torch.tensor([1]), p_small, p_large, torch.tensor([0.99])
        )
        assert n.item() == 1
        assert next_dist.tolist() == pytest.approx([0.1, 0.2, 0.7])

    def test_draft_with_zero_small_probability_is_judged_without_division(self):
        p_small = torch.tensor([[0.0, 1.0]])
        p_large = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
        n, _ = speculative_acceptance(torch.tensor([0]), p_small, p_large, torch.tensor([0.7]))
        assert n.item() == 1


class TestTopP:
    def test_nucleus_includes_the_token_that_crosses_top_p(self):
        probs = torch.tensor([0.5, 0.3, 0.2])
        assert top_p_filter(probs, 0.5).tolist() == pytest.approx([1.0, 0.0, 0.0])
        assert top_p_filter(probs, 0.6).tolist() == pytest.approx([0.625, 0.375, 0.0])
        assert top_p_filter(probs, 1.0).tolist() == pytest.approx([0.5, 0.3, 0.2])

    def test_ties_keep_exactly_the_mass_needed(self):
        kept = top_p_filter(torch.tensor([0.4, 0.4, 0.2]), 0.4)
        assert sorted(kept.tolist()) == pytest.approx([0.0, 0.0, 1.0])
