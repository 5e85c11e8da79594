"""Typed, validated parameters for each decoding method.

Every check runs in ``__post_init__``, so a bad value fails with one line naming
the parameter, the value and what is accepted, before any model runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bild_exp.decoding.ngram import DRAFT_SOURCES
from bild_exp.decoding.policies import ROLLBACK_METRICS
from bild_exp.decoding.sampling import SAMPLING_MODES
from bild_exp.errors import InvalidParameterError

ASSISTANT_SCHEDULES = ("constant", "heuristic", "heuristic_transient")
BILD_SCHEDULES = ("paper", "official")


def invalid(name: str, value: Any, accepted: str) -> InvalidParameterError:
    return InvalidParameterError(f"{name}={value!r} is invalid: accepted {accepted}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_range(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a number in [low, high] (or (low, high] when ``low_open``)."""
    if optional and value is None:
        return
    bracket = "(" if low_open else "["
    upper = f"{high:g}]" if math.isfinite(high) else "inf)"
    accepted = f"a number in {bracket}{low:g}, {upper}" + (" or None" if optional else "")
    if not _is_number(value):
        raise invalid(name, value, accepted)
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        raise invalid(name, value, accepted)


def check_int(name: str, value: Any, low: int) -> None:
    """Raise unless ``value`` is an int >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise invalid(name, value, f"an integer >= {low}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise invalid(name, value, f"one of {', '.join(choices)}")


@dataclass(frozen=True)
class SamplingParams:
    """Token selection shared by every method."""

    sampling: str = "greedy"
    top_p: float = 1.0
    temperature: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_choice("sampling", self.sampling, SAMPLING_MODES)
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("temperature", self.temperature, 0.0, low_open=True)
        if self.seed is not None:
            check_int("seed", self.seed, 0)


@dataclass(frozen=True)
class AutoregressiveParams(SamplingParams):
    """``large`` / ``small``: plain decoding with one model."""


@dataclass(frozen=True)
class DraftSourceParams(SamplingParams):
    """Where drafts come from (BiLD and speculative decoding alike, so they compare fairly).

    draft_source: ``small`` (the small model only) or ``ngram+small``: at every step the
        continuation of the latest earlier occurrence of the last ``ngram_size`` tokens of
        prompt and output (up to ``ngram_tokens``, :func:`bild_exp.decoding.ngram.ngram_proposal`)
        is drafted when there is one, the small model otherwise; the large model verifies both.
    """

    draft_source: str = "small"
    ngram_size: int = 2
    ngram_tokens: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("draft_source", self.draft_source, DRAFT_SOURCES)
        check_int("ngram_size", self.ngram_size, 1)
        check_int("ngram_tokens", self.ngram_tokens, 1)

    @property
    def uses_ngrams(self) -> bool:
        return self.draft_source == "ngram+small"


@dataclass(frozen=True)
class BildParams(DraftSourceParams):
    """``bild``: Algorithm 1 of the paper.

    fallback_threshold: alpha_FB in [0, 1]; None disables the fallback policy.
    rollback_threshold: alpha_RB >= 0; None disables rollback.
    max_small_steps: the large model runs after this many consecutive small tokens.
    rollback_metric: the distance d(p_S, p_L): cross_entropy, total_variation or kl.
    verify_tail: let the large model check the last small tokens before finishing.
    draft_source, ngram_size, ngram_tokens: :class:`DraftSourceParams` (n-gram tokens go to
        the large model at once and its rollback rule judges them as the small model's;
        the fallback policy governs the small model's tokens; ``max_small_steps`` counts both).
    schedule: ``paper`` (Algorithm 1: the small model starts; a rollback hands control back
        at once; the first position beyond alpha_RB where the large model disagrees rolls
        back) or ``official`` (the authors' ``T5BiLDModel`` loop: the large model produces
        the first token; after a rollback it produces one more token before control
        returns; only the first position beyond alpha_RB is considered, and nothing rolls
        back when the large model's token there equals the small one's).
    """

    fallback_threshold: float | None = 0.5
    rollback_threshold: float | None = 5.0
    max_small_steps: int = 10
    rollback_metric: str = "cross_entropy"
    verify_tail: bool = False
    schedule: str = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("fallback_threshold", self.fallback_threshold, 0.0, 1.0, optional=True)
        check_range("rollback_threshold", self.rollback_threshold, 0.0, optional=True)
        check_int("max_small_steps", self.max_small_steps, 1)
        check_choice("rollback_metric", self.rollback_metric, ROLLBACK_METRICS)
        if not isinstance(self.verify_tail, bool):
            raise invalid("verify_tail", self.verify_tail, "True or False")
        check_choice("schedule", self.schedule, BILD_SCHEDULES)
        if self.uses_ngrams and self.rollback_metric != "cross_entropy":
            raise invalid(
                "rollback_metric",
                self.rollback_metric,
                "cross_entropy with draft_source='ngram+small' (an n-gram token has no "
                "small-model distribution to compare; cross-entropy needs only p_L of the token)",
            )


@dataclass(frozen=True)
class SpeculativeParams(DraftSourceParams):
    """``speculative``: the small model drafts ``window`` (gamma) tokens per large pass."""

    window: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("window", self.window, 1)


@dataclass(frozen=True)
class OracleParams(SamplingParams):
    """``oracle`` (paper Figure 2): replace y_S whenever ``p_L(y_S) < oracle_threshold``."""

    oracle_threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("oracle_threshold", self.oracle_threshold, 0.0, 1.0)


@dataclass(frozen=True)
class HfAssistedParams(SamplingParams):
    """``hf_assisted``: Hugging Face assisted generation, parameters passed through."""

    num_assistant_tokens: int = 5
    # "constant" keeps repeated calls independent: the heuristic schedules
    # learn the window and write it back into the assistant's generation config.
    num_assistant_tokens_schedule: str = "constant"
    assistant_confidence_threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_assistant_tokens", self.num_assistant_tokens, 1)
        check_choice(
            "num_assistant_tokens_schedule", self.num_assistant_tokens_schedule, ASSISTANT_SCHEDULES
        )
        check_range(
            "assistant_confidence_threshold",
            self.assistant_confidence_threshold,
            0.0,
            1.0,
            optional=True,
        )


@dataclass(frozen=True)
class PromptLookupParams(SamplingParams):
    """``prompt_lookup``: Hugging Face prompt lookup decoding (Saxena 2023), a model-free
    drafter: the continuation of the latest n-gram match in the prompt and output so far is
    proposed and verified by the large model in one call. Parameters pass through to
    ``generate`` unchanged."""

    prompt_lookup_num_tokens: int = 10  # tokens proposed per match (HF's example value)
    max_matching_ngram_size: int = 2  # longest n-gram matched (HF's default)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens, 1)
        check_int("max_matching_ngram_size", self.max_matching_ngram_size, 1)


@dataclass(frozen=True)
class CalmParams(SamplingParams):
    """``calm``: per-token early exit inside the large model (Schuster et al. 2022).

    exit_threshold: lambda in [0, 1]; a token exits after a layer when the cosine similarity
        of its hidden states before and after it exceeds the decayed threshold (1: never).
    decay_temperature: t >= 0 of the decay ``0.9 lambda + 0.1 exp(-t n / N)`` (0: constant).
    min_exit_layer: the shallowest depth a token may exit at.
    """

    exit_threshold: float = 0.9
    decay_temperature: float = 0.0
    min_exit_layer: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("exit_threshold", self.exit_threshold, 0.0, 1.0)
        check_range("decay_temperature", self.decay_temperature, 0.0)
        check_int("min_exit_layer", self.min_exit_layer, 1)
