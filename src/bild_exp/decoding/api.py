"""``generate``: the engine's single entry point, with every input checked before a model runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.calm import check_calm_model
from bild_exp.decoding.compiled import check_compilable, check_compile_mode, compile_settings
from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.params import SamplingParams, check_int, invalid
from bild_exp.decoding.registry import decode, methods_where, parse_params, spec_of
from bild_exp.decoding.result import GenerationResult
from bild_exp.decoding.sampling import make_sampler
from bild_exp.decoding.sequence import StopStrings
from bild_exp.errors import InvalidParameterError

ARCHITECTURES = ("seq2seq", "decoder-only")


def architecture_of(model: PreTrainedModel) -> str:
    return "seq2seq" if model.config.is_encoder_decoder else "decoder-only"


def check_model(name: str, model: Any, architecture: str | None = None) -> None:
    """Raise unless ``model`` is a Hugging Face model of the expected architecture."""
    if not isinstance(model, PreTrainedModel):
        raise invalid(name, type(model).__name__, "a transformers PreTrainedModel")
    if architecture is not None and architecture_of(model) != architecture:
        raise InvalidParameterError(
            f"{name}={model.config.model_type!r} is {architecture_of(model)}, "
            f"but architecture={architecture!r} was asked for: accepted a {architecture} model"
        )


def check_pair(
    large: PreTrainedModel, small: PreTrainedModel, architecture: str | None = None
) -> None:
    """Raise unless the two models can decode together: same architecture, vocabulary, start token."""
    check_model("large", large, architecture)
    check_model("small", small, architecture or architecture_of(large))
    large_vocab, small_vocab = large.config.vocab_size, small.config.vocab_size
    if large_vocab != small_vocab:
        raise InvalidParameterError(
            f"small vocab_size={small_vocab} differs from large vocab_size={large_vocab}: "
            "accepted a pair that shares one vocabulary"
        )
    if large.config.is_encoder_decoder:
        large_start = large.generation_config.decoder_start_token_id
        small_start = small.generation_config.decoder_start_token_id
        if large_start != small_start:
            raise InvalidParameterError(
                f"small decoder_start_token_id={small_start} differs from large's {large_start}: "
                "accepted a pair that starts decoding from the same token"
            )


def check_input_ids(input_ids: Any) -> None:
    """Raise unless ``input_ids`` is a non-empty LongTensor of shape ``(1, L)``."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.long:
        raise invalid("input_ids", type(input_ids).__name__, "a torch.LongTensor of shape (1, L)")
    if input_ids.dim() != 2:
        raise invalid("input_ids.shape", tuple(input_ids.shape), "(1, L): a batch of one sequence")
    if input_ids.shape[0] != 1:
        raise invalid(
            "batch size", input_ids.shape[0], "1 (the engine decodes one example at a time)"
        )
    if input_ids.shape[1] == 0:
        raise invalid("input_ids length", 0, "at least 1 token")


def check_early_exit(method: str, large: Any, small: EarlyExit) -> None:
    """Raise unless an early-exit small model is used inside its own large model."""
    if not spec_of(method).early_exit_small:
        raise invalid(
            "small",
            repr(small),
            f"a PreTrainedModel for method {method!r} "
            f"(EarlyExit works with {', '.join(methods_where('early_exit_small'))})",
        )
    if method != "small" and small.large is not large:
        raise invalid(
            "small", repr(small), "EarlyExit(large, layers=k) built on the same large model"
        )


def validate(
    method: str,
    large: Any,
    small: Any,
    input_ids: Any,
    max_new_tokens: Any,
    params: dict[str, Any],
) -> SamplingParams:
    """Check every argument of :func:`generate`; return the parsed method parameters."""
    method_params = parse_params(method, params)
    check_int("max_new_tokens", max_new_tokens, 1)
    check_input_ids(input_ids)
    if isinstance(small, EarlyExit):
        check_early_exit(method, large, small)
        small = small.model
    if method == "small":
        check_model("small", small)
    else:
        check_model("large", large)
    if method == "calm":
        check_calm_model(large)
    if spec_of(method).needs_small and method != "small":
        if small is None:
            raise invalid("small", None, f"a small model: method {method!r} needs both models")
        check_pair(large, small)
    return method_params


@torch.inference_mode()
def generate(
    method: str,
    *,
    large: PreTrainedModel | None = None,
    small: PreTrainedModel | EarlyExit | None = None,
    input_ids: torch.Tensor,
    max_new_tokens: int = 128,
    use_cache: bool = True,
    stop_strings: Sequence[str] | None = None,
    tokenizer: Any = None,
    compile: bool = False,
    compile_mode: str = "default",
    **params: Any,
) -> GenerationResult:
    """Generate one continuation (batch size 1) with a decoding method.

    Args:
        method: ``large``, ``small``, ``bild``, ``speculative``, ``oracle``, ``hf_assisted``,
            ``prompt_lookup`` (HF's model-free drafter; ``small`` unused) or ``calm`` (early
            exit inside ``large``; ``small`` unused).
        large, small: Hugging Face models sharing one vocabulary, both encoder-decoder
            or both decoder-only; ``small`` may be None for ``large``, ``large`` for ``small``.
            ``small`` may be ``EarlyExit(large, layers=k)``: the large model's first k
            decoder layers (methods small, bild, speculative, oracle).
        input_ids: ``(1, L)`` the encoder input (seq2seq) or the prompt (decoder-only).
        max_new_tokens: upper bound on generated tokens.
        use_cache: False runs the slow no-cache reference (every forward recomputes
            the whole sequence); tokens and stats must not change.
        stop_strings: text that ends the output (e.g. ``["\n"]``), found in the decoded
            generated tokens by ``tokenizer``; every method stops at the same token. EOS
            (every id of the model's generation config, e.g. an end-of-turn token) always
            ends it.
        compile: run the compiled path (:mod:`bild_exp.decoding.compiled`): static caches and
            ``torch.compile``; same tokens and stats, the first call of each model compiles.
            Methods large, small, bild, speculative, oracle on Llama-style models, T5/mT5
            and BART.
        compile_mode: with ``compile=True``, ``"default"`` (inductor's default mode on a
            CPU, CUDA graphs on CUDA) or ``"max-autotune"`` (generated matmul kernels:
            faster steps, several times longer first compilation).
        **params: the method's parameters (see ``bild_exp.decoding.params``), e.g.
            ``fallback_threshold``, ``rollback_threshold``, ``window``, ``sampling``,
            ``top_p``, ``temperature``, ``seed``.

    Returns:
        A :class:`GenerationResult` with ``tokens``, ``from_large`` and ``stats``.
    """
    method_params = validate(method, large, small, input_ids, max_new_tokens, params)
    if not isinstance(compile, bool):
        raise invalid("compile", compile, "True or False")
    check_compile_mode(compile_mode)
    if compile_mode != "default" and not compile:
        raise invalid("compile_mode", compile_mode, "'default' unless compile=True")
    if compile:
        if not use_cache:
            raise invalid("use_cache", use_cache, "True with compile=True (a static cache)")
        members = {"large": None if method == "small" else large}
        members["small"] = None if method == "large" else small
        check_compilable(method, members)
    device = (small if method == "small" else large).device
    input_ids = input_ids.to(device)
    sampler = make_sampler(
        method_params.sampling,
        method_params.top_p,
        method_params.temperature,
        method_params.seed,
        device,
    )
    if stop_strings and tokenizer is None:
        raise invalid("tokenizer", None, "a tokenizer to find stop_strings in the output")
    context = DecodeContext(
        sampler=sampler,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        stop_strings=StopStrings.of(stop_strings, tokenizer),
        compile_mode=compile_mode if compile else None,
    )
    # any graph compiled during this call (first use, a longer example) gets the compiled
    # path's inductor settings, which must be set while dynamo traces (weight freezing)
    with compile_settings(device, context.compile_mode):
        return decode(method, large, small, input_ids, method_params, context)
