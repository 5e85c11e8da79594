"""Paired bootstrap intervals, p-values, the ci operating-point rule and acceptance
statistics on constructed data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from bild_exp.analysis import stats
from bild_exp.analysis.comparison import resolution_notes
from bild_exp.analysis.operating_points import operating_points
from bild_exp.analysis.report import load_warning, notes
from bild_exp.analysis.summary import acceptance_summary

REFERENCES = [
    "the cat sat on the mat today",
    "a dog barked at the mailman twice",
    "rain is expected over the weekend",
    "the market closed higher on friday",
    "she walked to school in the morning",
    "prices of fresh fruit rose sharply",
] * 5
GOOD = list(REFERENCES)
# Worse on every example: each sentence loses words the reference has.
WORSE = [" ".join(r.split()[:3]) + " something else entirely" for r in REFERENCES]


@pytest.mark.parametrize("metric, quality", [("bleu", "bleu"), ("rouge", "rougeL")])
def test_identical_outputs_give_a_zero_interval_and_p_one(metric, quality):
    mine = stats.per_example_quality(metric, quality, WORSE, REFERENCES)
    same = stats.per_example_quality(metric, quality, WORSE, REFERENCES)
    result = stats.paired_difference(mine, same, stats.bootstrap_indices(30, 500, 1))
    assert (result.difference.estimate, result.difference.low, result.difference.high) == (
        0.0,
        0.0,
        0.0,
    )
    assert result.p_value == 1.0


@pytest.mark.parametrize("metric, quality", [("bleu", "bleu"), ("rouge", "rougeL")])
def test_a_method_worse_on_every_example_has_an_interval_below_zero(metric, quality):
    worse = stats.per_example_quality(metric, quality, WORSE, REFERENCES)
    good = stats.per_example_quality(metric, quality, GOOD, REFERENCES)
    result = stats.paired_difference(worse, good, stats.bootstrap_indices(30, 1000, 1))
    assert result.difference.high < 0
    assert result.difference.low <= result.difference.estimate <= result.difference.high
    assert result.p_value < 0.01


def test_pass_at_1_differences_are_per_problem():
    passed = stats.per_example_quality("pass_at_1", "pass_at_1", [], [], passed=[True] * 20)
    failed_two = [True] * 18 + [False] * 2
    fewer = stats.per_example_quality("pass_at_1", "pass_at_1", [], [], passed=failed_two)
    result = stats.paired_difference(fewer, passed, stats.bootstrap_indices(20, 2000, 3))
    assert result.difference.estimate == pytest.approx(-10.0)
    assert result.difference.low < 0 and result.difference.high == 0
    # two problems flipped, both the same way: the exact sign test gives p = 2 * 0.5**2
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_full_scores_are_the_corpus_metrics():
    bleu = stats.per_example_quality("bleu", "bleu", WORSE, REFERENCES)
    assert bleu.full_score() == pytest.approx(sacrebleu.corpus_bleu(WORSE, [REFERENCES]).score)
    rouge = stats.per_example_quality("rouge", "rougeL", WORSE, REFERENCES)
    assert 0 < rouge.full_score() < 100


# Two systems that differ on some sentences only, so the tests have something to find.
MIXED = [w if i % 3 == 0 else r for i, (w, r) in enumerate(zip(WORSE, REFERENCES, strict=True))]


def sacrebleu_paired(test_type: str, samples: int, seed: int):
    test = PairedTest(
        [("baseline", GOOD), ("mine", MIXED)],
        {"BLEU": BLEU()},
        [REFERENCES],
        test_type=test_type,
        n_samples=samples,
    )
    test._seed = seed  # the PairedTest reads its seed from SACREBLEU_SEED at construction
    return test()[1]["BLEU"][1]


def test_bleu_p_value_agrees_with_sacrebleus_approximate_randomization():
    seed, trials = 12345, 2000
    theirs = sacrebleu_paired("ar", trials, seed).p_value
    mine = stats.per_example_quality("bleu", "bleu", MIXED, REFERENCES)
    good = stats.per_example_quality("bleu", "bleu", GOOD, REFERENCES)
    ours = stats.randomization_p_value(mine, good, trials, seed)
    # same swaps, same statistic; ours also counts ties with the observed one as extreme
    assert ours >= theirs
    assert ours == pytest.approx(theirs, abs=20 / (trials + 1))
    assert ours < 0.05


def test_bleu_interval_agrees_with_sacrebleus_paired_bootstrap():
    seed, samples = 12345, 1000
    theirs = sacrebleu_paired("bs", samples, seed)
    mine = stats.per_example_quality("bleu", "bleu", MIXED, REFERENCES)
    ours = stats.score_interval(mine, stats.bootstrap_indices(len(MIXED), samples, seed))
    # the same resamples; sacrebleu reports mean +- half the 95% range
    assert ours.estimate == pytest.approx(sacrebleu.corpus_bleu(MIXED, [REFERENCES]).score)
    assert (ours.high - ours.low) / 2 == pytest.approx(theirs.ci, abs=0.05)
    difference = stats.paired_difference(
        mine,
        stats.per_example_quality("bleu", "bleu", GOOD, REFERENCES),
        stats.bootstrap_indices(len(MIXED), samples, seed),
    )
    assert difference.difference.estimate == pytest.approx(
        theirs.score - sacrebleu.corpus_bleu(GOOD, [REFERENCES]).score
    )
    assert difference.difference.high < 0


def test_ratio_interval_of_identical_latencies_is_one():
    latency = np.array([1.0, 2.0, 3.0, 4.0])
    speedup = stats.ratio_interval(latency, latency, stats.bootstrap_indices(4, 200, 0))
    assert (speedup.estimate, speedup.low, speedup.high) == (1.0, 1.0, 1.0)


def test_examples_needed_scales_with_the_square_of_the_width():
    assert stats.examples_needed(25, half_width=2.0, tolerance=1.0) == 100
    assert stats.examples_needed(25, half_width=2.0, tolerance=0.0) is None


def summary_rows(points: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    """A sweep summary: vanilla large plus BiLD points (config, quality, speedup, diff low,
    diff high)."""
    rows = [
        dict(
            config_id="L",
            study="large",
            method="large",
            family="large",
            bleu=30.0,
            speedup=1.0,
            quality_diff=0.0,
            quality_diff_low=0.0,
            quality_diff_high=0.0,
            n_paired_examples=40,
        )
    ]
    for config, quality, speedup, low, high in points:
        rows.append(
            dict(
                config_id=config,
                study="bild",
                method="bild",
                family="bild/base",
                bleu=quality,
                speedup=speedup,
                quality_diff=quality - 30.0,
                quality_diff_low=low,
                quality_diff_high=high,
                n_paired_examples=40,
                fallback_threshold=0.5,
                rollback_threshold=2.0,
            )
        )
    return pd.DataFrame(rows).assign(sampling="greedy", top_p=None, temperature=None, seed=None)


def test_ci_rule_refuses_a_point_whose_lower_bound_is_below_the_tolerance():
    summary = summary_rows(
        [
            # fastest, and above vanilla on the point estimate, but the loss is not bounded
            ("fast", 30.2, 2.0, -1.5, 1.9),
            ("exact", 30.0, 1.4, 0.0, 0.0),
            ("close", 29.7, 1.6, -0.9, 0.3),
        ]
    )
    points = operating_points(summary, "bleu").set_index(["rule", "tolerance"])
    assert points.loc[("point", 0.1), "config_id"] == "fast"
    assert points.loc[("point", 1.0), "config_id"] == "fast"
    assert points.loc[("ci", 0.1), "config_id"] == "exact"
    assert points.loc[("ci", 1.0), "config_id"] == "close"
    assert points.loc[("ci", 1.0), "quality_diff_low"] == -0.9


def test_too_few_examples_to_separate_the_configurations_is_said():
    summary = summary_rows([("a", 29.0, 1.5, -6.0, 4.0), ("b", 31.0, 1.2, -3.0, 7.0)])
    lines = resolution_notes(summary, tolerances=(1.0,))
    assert len(lines) == 1
    # median half-width 5 on 40 examples -> 40 * 25 = 1000 examples for +-1
    assert "Tolerance 1: every quality interval is wider than ±1" in lines[0]
    assert "about 1,000 examples would" in lines[0]
    narrow = summary_rows([("a", 29.9, 1.5, -0.5, 0.4)])
    assert resolution_notes(narrow, tolerances=(1.0,)) == []


def test_load_warning_when_the_machine_was_busy():
    busy = {"machine_load": {"cores": 2, "before": [3.1, 2.0, 1.0], "after": [1.9, 2.0, 1.0]}}
    quiet = {"machine_load": {"cores": 2, "before": [0.2, 0.3, 0.3], "after": [1.9, 1.5, 0.9]}}
    assert "reached 3.10 on 2 cores" in load_warning(busy)
    assert load_warning(quiet) is None
    assert notes(summary_rows([]), busy) == [load_warning(busy)]


def test_acceptance_by_position_on_hand_made_records():
    # example 1: passes checked 3 and 2 drafts, kept 1 and 2; example 2: checked 4, kept 4
    accepted, drafted = stats.acceptance_by_position([[1, 2], [4]], [[3, 2], [4]])
    assert drafted == [3, 3, 2, 1]
    assert accepted == [3, 2, 1, 1]
    group = pd.DataFrame(
        {"accepted_lengths": [[1, 2], [4]], "drafted_lengths": [[3, 2], [4]]}, dtype=object
    )
    row = acceptance_summary(group)
    assert row["acceptance_rate"] == pytest.approx(7 / 9)
    assert json.loads(row["acceptance_by_position"]) == [1.0, round(2 / 3, 4), 0.5, 1.0]


def test_acceptance_is_absent_where_the_method_does_not_draft():
    vanilla = pd.DataFrame({"accepted_lengths": [[], []], "drafted_lengths": [[], []]})
    assert acceptance_summary(vanilla)["acceptance_rate"] is None
    older = pd.DataFrame({"accepted_lengths": [[1], [2]]})  # records before the column
    assert acceptance_summary(older)["acceptance_by_position"] is None
