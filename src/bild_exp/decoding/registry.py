"""One place for what each decoding method is: its decode function, its parameter class, and
what it supports. ``generate``, parameter parsing, the compiled path's checks and the
harness's planning all read this table; a new method adds its module and one entry here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.autoregressive import decode_autoregressive
from bild_exp.decoding.bild import decode_bild
from bild_exp.decoding.calm import decode_calm
from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.hf_assisted import decode_hf_assisted, decode_prompt_lookup
from bild_exp.decoding.oracle import decode_oracle
from bild_exp.decoding.params import (
    AutoregressiveParams,
    BildParams,
    CalmParams,
    HfAssistedParams,
    OracleParams,
    PromptLookupParams,
    SamplingParams,
    SpeculativeParams,
    check_choice,
)
from bild_exp.decoding.result import GenerationResult
from bild_exp.decoding.speculative import decode_speculative
from bild_exp.errors import InvalidParameterError

# decode(large, small, input_ids, params, context) -> GenerationResult: every method behind
# one signature (a method without a small model, or without parameters, ignores them)
Decode = Callable[
    [PreTrainedModel | None, PreTrainedModel | EarlyExit | None, torch.Tensor, Any, DecodeContext],
    GenerationResult,
]


@dataclass(frozen=True)
class MethodSpec:
    """What a decoding method is and supports.

    needs_small: decodes with a small model (then the harness plans one run per small
        variant; methods without one have no small variant).
    early_exit_small: accepts ``EarlyExit(large, layers=k)`` as its small model.
    compilable: runs on the compiled path (static caches + ``torch.compile``).
    """

    name: str
    params: type[SamplingParams]
    decode: Decode
    needs_small: bool = False
    early_exit_small: bool = False
    compilable: bool = False


def _model(model: PreTrainedModel | EarlyExit) -> PreTrainedModel:
    return model.model if isinstance(model, EarlyExit) else model


def _large(large, small, input_ids, params, context) -> GenerationResult:
    return decode_autoregressive(large, input_ids, context, is_large=True)


def _small(large, small, input_ids, params, context) -> GenerationResult:
    return decode_autoregressive(_model(small), input_ids, context, is_large=False)


def _without_small(function: Callable[..., GenerationResult]) -> Decode:
    """CALM, prompt lookup: the large model only."""

    def decode(large, small, input_ids, params, context) -> GenerationResult:
        return function(large, input_ids, params, context)

    return decode


SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("large", AutoregressiveParams, _large, compilable=True),
        MethodSpec(
            "small",
            AutoregressiveParams,
            _small,
            needs_small=True,
            early_exit_small=True,
            compilable=True,
        ),
        MethodSpec(
            "bild",
            BildParams,
            decode_bild,
            needs_small=True,
            early_exit_small=True,
            compilable=True,
        ),
        MethodSpec(
            "speculative",
            SpeculativeParams,
            decode_speculative,
            needs_small=True,
            early_exit_small=True,
            compilable=True,
        ),
        MethodSpec(
            "oracle",
            OracleParams,
            decode_oracle,
            needs_small=True,
            early_exit_small=True,
            compilable=True,
        ),
        MethodSpec("hf_assisted", HfAssistedParams, decode_hf_assisted, needs_small=True),
        MethodSpec("prompt_lookup", PromptLookupParams, _without_small(decode_prompt_lookup)),
        MethodSpec("calm", CalmParams, _without_small(decode_calm)),
    )
}
METHODS = tuple(SPECS)


def spec_of(method: str) -> MethodSpec:
    check_choice("method", method, tuple(SPECS))
    return SPECS[method]


def methods_where(flag: str) -> tuple[str, ...]:
    """The methods whose spec has ``flag`` set, e.g. ``methods_where("compilable")``."""
    return tuple(name for name, spec in SPECS.items() if getattr(spec, flag))


def parameter_types() -> dict[str, type]:
    """Every method parameter and its type (int, float, str or bool; ``X | None`` as X),
    method-specific ones first, the sampling settings every method shares last: the
    parameter columns of result rows and how to read them back."""
    shared = {field.name for field in dataclasses.fields(SamplingParams)}
    types: dict[str, type] = {}
    for spec in SPECS.values():
        hints = typing.get_type_hints(spec.params)
        for field in dataclasses.fields(spec.params):
            kinds = [t for t in typing.get_args(hints[field.name]) if t is not type(None)]
            types.setdefault(field.name, kinds[0] if kinds else hints[field.name])
    return {
        **{n: t for n, t in types.items() if n not in shared},
        **{n: t for n, t in types.items() if n in shared},
    }


def parse_params(method: str, params: dict[str, Any]) -> SamplingParams:
    """Build the method's parameter object, rejecting unknown names and bad values."""
    params_class = spec_of(method).params
    accepted = [field.name for field in dataclasses.fields(params_class)]
    for name in params:
        if name not in accepted:
            raise InvalidParameterError(
                f"{name}={params[name]!r} is not a parameter of method {method!r}: "
                f"accepted {', '.join(accepted)}"
            )
    return params_class(**params)


def decode(
    method: str,
    large: PreTrainedModel | None,
    small: PreTrainedModel | EarlyExit | None,
    input_ids: torch.Tensor,
    params: SamplingParams,
    context: DecodeContext,
) -> GenerationResult:
    """Run a validated method."""
    return SPECS[method].decode(large, small, input_ids, params, context)
