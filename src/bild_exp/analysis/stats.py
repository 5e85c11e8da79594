"""Paired statistics over examples: intervals and p-values for a configuration's quality
difference and speedup against vanilla large on the same examples, and the acceptance
statistics of draft-and-verify methods. Pure functions over arrays.

- Intervals: paired bootstrap as in sacrebleu (``sacrebleu.significance``; Koehn 2004):
  one set of example indices drawn with ``numpy.random.default_rng(seed).choice``, shared
  by both systems (and by the speedup), every corpus-level score recomputed per resample
  from summed per-example statistics (BLEU: sacrebleu's own sufficient statistics; ROUGE
  and pass@1: per-example scores, whose mean is the corpus score); percentile bounds.
- p-value of "the quality differs": sacrebleu's paired approximate randomization (each
  example's two outputs swapped at random), with one change: a randomised difference
  *equal* to the observed one counts as extreme (``>=``, where sacrebleu has ``>``). With
  a discrete metric (pass@1) ties are common, and ``>`` would call 2 flipped problems in
  20 significant at p ~ 0.001 where the exact sign test gives 0.5; identical outputs get
  p = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU

from bild_exp.harness.scoring.metrics import rouge_per_example

CHUNK = 64  # resamples summed at once: bounds memory at paper scale (~10^4 examples)
FEW_EXAMPLES = 30  # below this, percentile intervals understate the uncertainty


@dataclass(frozen=True)
class PerExample:
    """A metric's per-example statistics ``(n, k)`` and how a corpus score follows from
    their sum over the examples: ``aggregate(sums (samples, k), n) -> scores (samples,)``."""

    stats: np.ndarray
    aggregate: Callable[[np.ndarray, int], np.ndarray]

    def score(self, indices: np.ndarray) -> np.ndarray:
        """The corpus score of each resample (rows of ``indices``)."""
        n = indices.shape[1]
        sums = np.concatenate(
            [self.stats[indices[i : i + CHUNK]].sum(1) for i in range(0, len(indices), CHUNK)]
        )
        return self.aggregate(sums, n)

    def swapped_scores(self, other: PerExample, swap: np.ndarray) -> np.ndarray:
        """The score of the pseudo-system that takes ``other``'s example where ``swap``."""
        n = swap.shape[1]
        mine, theirs = self.stats.astype(np.float64), other.stats.astype(np.float64)
        sums = np.concatenate(
            [
                (~swap[i : i + CHUNK]) @ mine + swap[i : i + CHUNK] @ theirs
                for i in range(0, len(swap), CHUNK)
            ]
        )
        return self.aggregate(sums, n)

    def full_score(self) -> float:
        return float(self.aggregate(self.stats.sum(0, keepdims=True), len(self.stats))[0])


def mean_of(values: Sequence[float]) -> PerExample:
    """A metric that is the mean of per-example scores (ROUGE F1, pass@1 in percent)."""
    return PerExample(np.asarray(values, dtype=np.float64).reshape(-1, 1), _mean)


def _mean(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[:, 0] / n


def bleu_statistics(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a"
) -> PerExample:
    """sacrebleu's per-sentence BLEU sufficient statistics (n-gram matches and totals,
    lengths), summed per resample and turned into corpus BLEU by sacrebleu."""
    metric = BLEU(tokenize=tokenize)
    hypotheses = [h.strip() for h in hypotheses]
    references = [r.strip() for r in references]
    stats = np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype=np.int64)

    def corpus_bleu(sums: np.ndarray, n: int) -> np.ndarray:
        return np.array([metric._compute_score_from_stats(list(row)).score for row in sums])

    return PerExample(stats, corpus_bleu)


def per_example_quality(
    metric: str,
    quality: str,
    hypotheses: Sequence[str],
    references: Sequence[str],
    passed: Sequence[bool] | None = None,
    bleu_tokenize: str = "13a",
    rouge_stemmer: bool = True,
) -> PerExample:
    """The per-example statistics behind the task's headline quality column."""
    if metric == "bleu":
        return bleu_statistics(hypotheses, references, bleu_tokenize)
    if metric == "pass_at_1":
        return mean_of([100.0 * bool(p) for p in passed or []])
    return mean_of(rouge_per_example(hypotheses, references, rouge_stemmer)[quality])


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """``(samples, n)`` example indices drawn with replacement (sacrebleu's draw)."""
    if n == 0:
        return np.zeros((samples, 0), dtype=np.int64)
    return np.random.default_rng(seed).choice(n, size=(samples, n), replace=True)


def stratified_bootstrap_indices(strata: Sequence, samples: int, seed: int) -> np.ndarray:
    """``(samples, n)`` indices drawn with replacement within each stratum (e.g. each
    timing block): a resample keeps every block's number of examples, so a block timed on
    a faster (or slower) moment of the machine weighs the same in every resample. With one
    stratum it is :func:`bootstrap_indices` (the same draw)."""
    labels = np.asarray([str(s) for s in strata])
    groups = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels)]
    if len(groups) <= 1:
        return bootstrap_indices(len(labels), samples, seed)
    rng = np.random.default_rng(seed)
    indices = np.empty((samples, len(labels)), dtype=np.int64)
    for members in groups:
        indices[:, members] = members[rng.choice(len(members), size=(samples, len(members)))]
    return indices


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PairedDifference:
    """``mine - reference`` on all examples, its percentile interval and the p-value of
    "the two differ"."""

    difference: Interval
    p_value: float


def percentile_interval(
    estimate: float, resampled: np.ndarray, confidence: float = 0.95
) -> Interval:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def swap_masks(n: int, trials: int, seed: int) -> np.ndarray:
    """``(trials, n)``: where each randomisation swaps the two systems' outputs
    (sacrebleu's draw for its approximate randomization test)."""
    return np.random.default_rng(seed).integers(2, size=(trials, n), dtype=bool)


def randomization_p_value(
    mine: PerExample, reference: PerExample, trials: int = 10_000, seed: int = 12345
) -> float:
    """Two-sided paired approximate randomization p-value of ``mine != reference``."""
    observed = abs(mine.full_score() - reference.full_score())
    swap = swap_masks(len(mine.stats), trials, seed)
    randomised = np.abs(mine.swapped_scores(reference, swap) - reference.swapped_scores(mine, swap))
    # a tolerance so float noise in recomputed scores does not break exact ties
    extreme = np.sum(randomised >= observed - 1e-9 * max(1.0, observed))
    return float((extreme + 1) / (trials + 1))


def paired_difference(
    mine: PerExample,
    reference: PerExample,
    indices: np.ndarray,
    confidence: float = 0.95,
    trials: int = 10_000,
    seed: int = 12345,
) -> PairedDifference:
    """Bootstrap interval of a quality difference (both systems scored on the same draws)
    and its approximate-randomization p-value."""
    resampled = mine.score(indices) - reference.score(indices)
    observed = mine.full_score() - reference.full_score()
    return PairedDifference(
        percentile_interval(observed, resampled, confidence),
        randomization_p_value(mine, reference, trials, seed),
    )


def score_interval(scores: PerExample, indices: np.ndarray, confidence: float = 0.95) -> Interval:
    """A configuration's own quality with its percentile interval."""
    return percentile_interval(scores.full_score(), scores.score(indices), confidence)


def ratio_interval(
    numerator: np.ndarray, denominator: np.ndarray, indices: np.ndarray, confidence: float = 0.95
) -> Interval:
    """``sum(numerator) / sum(denominator)`` resampled per example: a speedup is vanilla
    large's total latency over the configuration's on the same examples."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    ratios = numerator[indices].sum(1) / denominator[indices].sum(1)
    return percentile_interval(numerator.sum() / denominator.sum(), ratios, confidence)


def examples_needed(n_examples: int, half_width: float, tolerance: float) -> int | None:
    """How many examples would shrink a half-width measured on ``n_examples`` to the
    tolerance (intervals narrow as 1/sqrt(n)); None for a zero tolerance."""
    if tolerance <= 0 or half_width <= 0:
        return None
    return math.ceil(n_examples * (half_width / tolerance) ** 2)


def acceptance_by_position(
    accepted_lengths: Sequence[Sequence[int]], drafted_lengths: Sequence[Sequence[int]]
) -> tuple[list[int], list[int]]:
    """Per draft position i = 1, 2, ...: how many large calls checked an i-th draft token
    (``drafted``) and how many kept it (``accepted``); the acceptance probability at i is
    their ratio (EAGLE's per-position alpha). Calls pair up by order within an example."""
    longest = max((d for lengths in drafted_lengths for d in lengths), default=0)
    drafted, accepted = np.zeros(longest, dtype=np.int64), np.zeros(longest, dtype=np.int64)
    for kept, checked in zip(accepted_lengths, drafted_lengths, strict=True):
        for n_kept, n_checked in zip(kept, checked, strict=True):
            drafted[:n_checked] += 1
            accepted[:n_kept] += 1
    return accepted.tolist(), drafted.tolist()
