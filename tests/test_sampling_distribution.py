"""Speculative sampling preserves the large model's distribution; the small model's does not.

Test: Pearson's chi-square goodness of fit of the first generated token over
N_SAMPLES independent seeds against the large model's (warped) first-token
distribution, bins with expected count < 5 merged. Significance level ALPHA = 0.001:
speculative sampling must not be rejected (p >= ALPHA); small-model sampling must
be (p < ALPHA). Seeds are fixed, so the outcome is reproducible.
"""

from __future__ import annotations

import pytest
import torch

from bild_exp.decoding import generate
from bild_exp.decoding.sampling import make_sampler
from tests.tiny_models import tiny_model

ALPHA = 0.001
N_SAMPLES = 1500
VOCAB = 8


def chi_square_p_value(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Upper-tail p-value of Pearson's statistic, merging bins with expected count < 5."""
    expected = expected_probs.double() * observed.sum()
    order = expected.argsort(descending=True)
    observed, expected = observed[order].double(), expected[order]
    big = expected >= 5
    obs_bins = torch.cat([observed[big], observed[~big].sum().view(1)])
    exp_bins = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp_bins > 0
    obs_bins, exp_bins = obs_bins[keep], exp_bins[keep]
    statistic = ((obs_bins - exp_bins) ** 2 / exp_bins).sum()
    dof = obs_bins.numel() - 1
    # Chi-square survival function: the regularised upper incomplete gamma Q(k/2, x/2).
    return torch.special.gammaincc(torch.tensor(dof / 2), statistic / 2).item()


def test_chi_square_helper_on_known_values():
    # 2 bins, statistic 3.841 at dof 1 is the 5% critical value.
    observed = torch.tensor(
        [500 + 0.5 * 3.841**0.5 * 1000**0.5, 500 - 0.5 * 3.841**0.5 * 1000**0.5]
    )
    assert chi_square_p_value(observed, torch.tensor([0.5, 0.5])) == pytest.approx(0.05, abs=1e-3)


@pytest.fixture(scope="module")
def tiny_vocab_pair():
    large = tiny_model("gpt2", 11, layers=1, width=16)
    small = tiny_model("gpt2", 12, layers=1, width=16)
    for model in (large, small):
        model.resize_token_embeddings(VOCAB)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(4.0)  # spread but distinct distributions
        model.generation_config.eos_token_id = None
    return large, small


def first_token_counts(method: str, pair, **params) -> torch.Tensor:
    large, small = pair
    counts = torch.zeros(VOCAB)
    for seed in range(N_SAMPLES):
        res = generate(
            method,
            large=large,
            small=small,
            input_ids=torch.tensor([[3, 5]]),
            max_new_tokens=3,
            sampling="nucleus",
            seed=seed,
            **params,
        )
        counts[res.tokens[0]] += 1
    return counts


def large_first_token_distribution(pair, top_p: float, temperature: float) -> torch.Tensor:
    large, _ = pair
    logits = large(input_ids=torch.tensor([[3, 5]])).logits[0, -1].detach()
    sampler = make_sampler("nucleus", top_p, temperature, 0, torch.device("cpu"))
    return sampler.sampling_probs(logits)


@pytest.mark.parametrize(
    ("top_p", "temperature"),
    [(1.0, 1.0), pytest.param(0.9, 0.8, marks=pytest.mark.slow)],  # slow: `make test-slow`
)
def test_speculative_sampling_follows_the_large_model(tiny_vocab_pair, top_p, temperature):
    expected = large_first_token_distribution(tiny_vocab_pair, top_p, temperature)
    small_probs = tiny_vocab_pair[1](input_ids=torch.tensor([[3, 5]])).logits[0, -1].softmax(-1)
    assert (expected - small_probs).abs().sum() > 0.3  # the test has power: the models differ
    counts = first_token_counts(
        "speculative", tiny_vocab_pair, window=2, top_p=top_p, temperature=temperature
    )
    assert chi_square_p_value(counts, expected) >= ALPHA
    small_counts = first_token_counts(
        "small", tiny_vocab_pair, top_p=top_p, temperature=temperature
    )
    assert chi_square_p_value(small_counts, expected) < ALPHA
