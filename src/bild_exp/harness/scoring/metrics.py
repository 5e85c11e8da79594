"""Quality metrics through sacrebleu and rouge-score only (no hand-written n-gram code).

- BLEU: sacrebleu corpus BLEU (default 13a tokenisation) over the whole set, on
  detokenised, stripped text.
- ROUGE: rouge-score's ROUGE-L F1 averaged over examples, and ROUGE-Lsum with one
  sentence per line (the paper's CNN/DM "ROUGE-L" matches ROUGE-Lsum). NLTK's punkt data
  cannot be downloaded offline, so sentences are split with a regular expression.
- Stemming (Porter, inside rouge-score) is ``scoring.rouge_stemmer``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer

from bild_exp.errors import InvalidParameterError

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")

# rouge-score logs "Using default tokenizer." at INFO for every scorer it builds
logging.getLogger("absl").setLevel(logging.WARNING)


def split_sentences(text: str) -> str:
    """One sentence per line, for ROUGE-Lsum (existing newlines are kept)."""
    lines = [SENTENCE_END.sub("\n", line.strip()) for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a"
) -> float:
    hypotheses = [h.strip() for h in hypotheses]
    references = [r.strip() for r in references]
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score


def rouge_per_example(
    hypotheses: Sequence[str], references: Sequence[str], use_stemmer: bool = True
) -> dict[str, list[float]]:
    """Per example ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1, in percent."""
    names = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(names, use_stemmer=use_stemmer)
    scores: dict[str, list[float]] = {name: [] for name in names}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        example = scorer.score(split_sentences(reference), split_sentences(hypothesis))
        for name in names:
            scores[name].append(100 * example[name].fmeasure)
    return scores


def rouge(
    hypotheses: Sequence[str], references: Sequence[str], use_stemmer: bool = True
) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1, in percent."""
    scores = rouge_per_example(hypotheses, references, use_stemmer)
    return {name: sum(values) / max(len(values), 1) for name, values in scores.items()}


def score(
    metric: str,
    hypotheses: Sequence[str],
    references: Sequence[str],
    bleu_tokenize: str = "13a",
    rouge_stemmer: bool = True,
) -> dict[str, float]:
    """All scores of the task's metric family."""
    if metric == "bleu":
        return {"bleu": corpus_bleu(hypotheses, references, bleu_tokenize)}
    if metric == "rouge":
        return rouge(hypotheses, references, rouge_stemmer)
    raise InvalidParameterError(f"metric={metric!r} is invalid: accepted bleu, rouge")


@dataclass(frozen=True)
class Scoring:
    """How a run's answers are scored: the task's metric family (bleu, rouge, pass_at_1),
    the headline quality column, and the metric settings (``scoring`` in conf/sweep.yaml)."""

    metric: str
    quality: str
    options: dict[str, Any] = field(default_factory=dict)


def quality_column(metric: str, quality: str | None) -> str:
    """The headline quality score: BLEU, ROUGE-L, pass@1, or the task's choice (CNN/DM:
    ROUGE-Lsum)."""
    return quality or {"bleu": "bleu", "pass_at_1": "pass_at_1"}.get(metric, "rougeL")


def metric_options(scoring: dict[str, Any]) -> dict[str, Any]:
    """The metric settings of ``scoring`` (``scoring`` in conf/sweep.yaml; the metrics'
    own defaults where a caller such as the bench passes fewer keys)."""
    return {
        "bleu_tokenize": scoring.get("bleu_tokenize", "13a"),
        "rouge_stemmer": scoring.get("rouge_stemmer", True),
    }
