"""The texts that are scored: references cut and outputs cleaned up as the task's scoring
settings say (the official pipeline's choices), outside every timed region."""

from __future__ import annotations

from typing import Any

import pandas as pd


def truncate_references(references: pd.Series, tokenizer: Any, n_tokens: int | None) -> pd.Series:
    """References as the official script scored them: tokenized as labels cut to
    ``n_tokens`` (the end token included) and decoded back without special tokens.
    Every reference makes the round trip, as there (characters outside the vocabulary drop
    out); ``None`` keeps them as written."""
    if not n_tokens:
        return references
    return references.map(
        lambda text: tokenizer.decode(
            tokenizer(text_target=text, max_length=n_tokens, truncation=True)["input_ids"],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
    )


def clean_up_spaces(texts: pd.Series, tokenizer: Any, enabled: bool) -> pd.Series:
    """transformers 4.25 decoded with ``clean_up_tokenization_spaces=True`` (" ." -> ".",
    " n't" -> "n't", ...; 5.x defaults to False): the official scores were taken on such text."""
    if not enabled:
        return texts
    return texts.map(lambda text: tokenizer.clean_up_tokenization(text).strip())


def scored_texts(records: pd.DataFrame, tokenizer: Any, scoring: Any) -> pd.DataFrame:
    """Add the hypothesis and reference columns that the metrics read (``scoring.*``)."""
    references = truncate_references(
        records["reference"], tokenizer, scoring.get("truncate_references")
    )
    cleanup = bool(scoring.get("clean_up_tokenization_spaces", False))
    records["scored_reference"] = clean_up_spaces(references, tokenizer, cleanup)
    records["scored_hypothesis"] = clean_up_spaces(records["hypothesis"], tokenizer, cleanup)
    return records
