"""Metrics against values worked out by hand from their definitions."""

from __future__ import annotations

import math

import pytest

from bild_exp.harness.scoring.metrics import corpus_bleu, rouge, score, split_sentences

HYPOTHESES = ["the cat sat on the mat", "a quick brown fox jumps"]
REFERENCES = ["the cat is on the mat", "the quick brown fox jumps over"]


def test_corpus_bleu_matches_the_hand_computed_corpus_statistics():
    # Clipped n-gram matches summed over the corpus: 1-gram 9/11, 2-gram 6/9, 3-gram 3/7,
    # 4-gram 1/5; hypothesis length 11, reference length 12 -> brevity penalty exp(1 - 12/11).
    precision = (9 / 11) * (6 / 9) * (3 / 7) * (1 / 5)
    expected = 100 * math.exp(1 - 12 / 11) * precision**0.25
    assert corpus_bleu(HYPOTHESES, REFERENCES) == pytest.approx(expected, abs=1e-6)


def test_corpus_bleu_is_not_an_average_of_sentence_scores():
    # The first sentence alone has no 4-gram match; the corpus score is still well above 0.
    assert corpus_bleu(HYPOTHESES, REFERENCES) > 40
    assert corpus_bleu(["same words here ok"], ["same words here ok"]) == pytest.approx(100)


def test_bleu_strips_surrounding_whitespace():
    assert corpus_bleu(
        ["  the cat sat on the mat \n"], ["the cat sat on the mat"]
    ) == pytest.approx(100)


def test_rouge_l_with_stemming_by_hand():
    # Stemmed reference: the cat are run it was fun (7); hypothesis: the cat run it was fun (6);
    # LCS = 6 -> P = 1, R = 6/7, F = 12/13.
    scores = rouge(
        ["the cat runs. it was fun."], ["the cats are running.\nIt was fun."], use_stemmer=True
    )
    assert scores["rougeL"] == pytest.approx(100 * 12 / 13)
    without_stemming = rouge(
        ["the cat runs. it was fun."], ["the cats are running.\nIt was fun."], use_stemmer=False
    )
    assert without_stemming["rougeL"] < scores["rougeL"]


def test_rouge_lsum_uses_sentence_level_lcs():
    # Sentence order swapped: ROUGE-L (one sequence) loses a sentence, ROUGE-Lsum
    # (union LCS per reference sentence) recovers both.
    reference = "Alpha beta gamma. Delta epsilon zeta."
    hypothesis = "Delta epsilon zeta. Alpha beta gamma."
    scores = rouge([hypothesis], [reference], use_stemmer=False)
    assert scores["rougeLsum"] == pytest.approx(100.0)
    assert scores["rougeL"] == pytest.approx(50.0)


def test_sentence_splitting_without_nltk():
    assert (
        split_sentences("Hello world. This is it! Yes? ok") == "Hello world.\nThis is it!\nYes? ok"
    )
    assert split_sentences("Line one\nLine two. Next") == "Line one\nLine two.\nNext"
    assert split_sentences("Costs 3.5 dollars. e.g. this") == "Costs 3.5 dollars. e.g. this"


def test_score_dispatch_and_bad_metric():
    assert set(score("rouge", ["a b"], ["a b"])) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert score("bleu", ["a b c d"], ["a b c d"])["bleu"] == pytest.approx(100)
    with pytest.raises(ValueError, match="metric='meteor'"):
        score("meteor", ["a"], ["a"])
