"""The contenders of ``make bench``: each a name and a callable decoding one example.

Operating points come from a selection sweep on the validation split (never the test
examples): per family, the best speedup within each quality tolerance of vanilla large.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from bild_exp.analysis.operating_points import choose_point
from bild_exp.decoding import GenerationResult
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.decoding.registry import methods_where, parameter_types
from bild_exp.decoding.sequence import StopStrings
from bild_exp.models.pair import LoadedPair


@dataclass(frozen=True)
class Contender:
    """One method at fixed parameters; ``engine=False`` runs HF ``generate`` without assistant."""

    name: str
    method: str
    small_variant: str = "-"
    params: dict[str, Any] = field(default_factory=dict)
    engine: bool = True
    compile: bool = False  # the compiled path (engine) / HF's static cache + compile
    compile_mode: str = "default"  # COMPILE_MODES (bench.compile_mode for the twins)

    def decode(
        self,
        pair: LoadedPair,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        stop_strings: list[str] | None = None,
    ) -> GenerationResult:
        if not self.engine:
            stops = StopStrings.of(stop_strings, pair.tokenizer)
            return hf_generate(
                pair.large, input_ids, max_new_tokens, stops, self.compile, self.compile_mode
            )
        return pair.decode(
            self.method,
            self.small_variant,
            self.params,
            input_ids,
            max_new_tokens,
            stop_strings,
            self.compile_mode if self.compile else None,
        )


def hf_generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    stop_strings: StopStrings | None = None,
    compiled: bool = False,
    compile_mode: str = "default",
) -> GenerationResult:
    """Vanilla large through HF ``generate`` (greedy), counted the same way as the engine."""
    tokens = hf_greedy_tokens(
        model,
        input_ids,
        max_new_tokens,
        stop_strings=stop_strings,
        compiled=compiled,
        compile_mode=compile_mode,
    )
    return GenerationResult(tokens=tokens, from_large=[True] * len(tokens), stats={})


def params_of(row: pd.Series, names: tuple[str, ...]) -> dict[str, Any]:
    """The named parameters of a summary row, each as its parameter class declares it."""
    types = parameter_types()
    return {name: types[name](row[name]) for name in names}


VARIANT_LABELS = {"base": "unaligned", "aligned": "aligned"}


def contenders(
    summary: pd.DataFrame,
    quality: str,
    tolerances: list[float],
    hf_confidence_threshold: float,
    variants: list[str] = ("base", "aligned"),
    rules: list[str] = ("ci", "point"),
) -> tuple[list[Contender], list[dict[str, Any]]]:
    """The benchmark's methods, and a note per selection (what was chosen, by which rule,
    on what evidence). ``variants``: the pair's small models (``pair.small_variants``);
    ``rules``: the operating-point rules tried in order (``bench.rules``)."""
    chosen = [
        Contender("vanilla large (engine)", "large"),
        Contender("vanilla large (HF generate)", "large", engine=False),
    ]
    notes = []
    rules = list(rules)
    for variant in variants:
        for tolerance in tolerances:
            row, rule = choose_point(summary, f"bild/{variant}", quality, tolerance, rules)
            notes.append(selection_note(f"bild/{variant}", tolerance, row, quality, rule))
            if row is None:
                continue
            thresholds = params_of(row, ("fallback_threshold", "rollback_threshold"))
            label = VARIANT_LABELS.get(variant, variant)
            chosen.append(
                Contender(f"BiLD {label} (within {tolerance:g})", "bild", variant, thresholds)
            )
            if variant == variants[0] and tolerance == tolerances[0]:
                chosen.append(
                    Contender(
                        "BiLD no fallback (same thresholds)",
                        "bild",
                        variant,
                        {**thresholds, "fallback_threshold": None},
                    )
                )
                chosen.append(
                    Contender(
                        "BiLD no rollback (same thresholds)",
                        "bild",
                        variant,
                        {**thresholds, "rollback_threshold": None},
                    )
                )
    hf_variant = variants[0]
    for family, label, name in (
        ("speculative/*", "speculative", "window"),
        ("hf_assisted/*", "HF assisted constant", "num_assistant_tokens"),
    ):
        row, rule = choose_point(summary, family, quality, tolerances[0], rules)
        notes.append(selection_note(family, tolerances[0], row, quality, rule))
        if row is None:
            continue
        method, variant = family.split("/")[0], row["small_variant"]
        hf_variant = variant if method == "hf_assisted" else hf_variant
        small = VARIANT_LABELS.get(variant, variant)
        chosen.append(
            Contender(
                f"{label} ({name}={int(row[name])}, {small} small)",
                method,
                variant,
                {name: int(row[name])},
            )
        )
    # HF's own adaptive schedules use the small model its best constant window used.
    chosen.append(
        Contender(
            "HF assisted heuristic",
            "hf_assisted",
            hf_variant,
            {"num_assistant_tokens_schedule": "heuristic"},
        )
    )
    chosen.append(
        Contender(
            f"HF assisted confidence {hf_confidence_threshold:g}",
            "hf_assisted",
            hf_variant,
            {"assistant_confidence_threshold": hf_confidence_threshold},
        )
    )
    return chosen, notes


COMPILED_NAMES = {
    "vanilla large (engine)": "vanilla large (engine, compiled)",
    "vanilla large (HF generate)": "vanilla large (HF generate, static cache + compile)",
}


def with_compiled_twins(chosen: list[Contender], mode: str = "default") -> list[Contender]:
    """Each contender followed by its compiled twin where one exists: the engine's methods
    on the compiled path and HF generate with its own static cache and compilation, both in
    compile ``mode`` (HF assisted generation and the BiLD ablations stay eager)."""
    twins = []
    for contender in chosen:
        twins.append(contender)
        ablation = contender.name.startswith("BiLD no ")
        if contender.method in methods_where("compilable") and not ablation:
            name = COMPILED_NAMES.get(contender.name, f"{contender.name} (compiled)")
            twins.append(replace(contender, name=name, compile=True, compile_mode=mode))
    return twins


def selection_note(
    family: str, tolerance: float, row: pd.Series | None, quality: str, rule: str | None = None
) -> dict[str, Any]:
    if row is None:
        return {"family": family, "tolerance": tolerance, "chosen": None}
    return {
        "family": family,
        "tolerance": tolerance,
        "rule": rule,
        "chosen": row["config_id"],
        "validation_quality": row[quality],
        "validation_speedup": row["speedup"],
    }


Decode = Callable[[Contender, torch.Tensor], GenerationResult]
