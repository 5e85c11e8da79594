"""Hugging Face assisted generation (``generate(assistant_model=...)``) and prompt lookup
decoding (``generate(prompt_lookup_num_tokens=...)``) as external baselines.

Parameters are passed through unchanged. Calls stay independent: the assistant's
generation config, which HF's heuristic schedule writes back into, is swapped for
a copy during the call and restored after. Authorship of each token and accepted
lengths are not exposed by HF, so ``from_large`` is None and those stats are absent;
forward calls of each model are counted with hooks.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel, StoppingCriteriaList, StopStringCriteria

from bild_exp.decoding.compiled import generation_cache, inductor_options, recompile_room
from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.params import HfAssistedParams, PromptLookupParams, SamplingParams
from bild_exp.decoding.result import GenerationResult
from bild_exp.decoding.runner import empty_cache
from bild_exp.decoding.sequence import StopStrings, decoder_prefix


@contextmanager
def count_forward_calls(model: PreTrainedModel) -> Iterator[list[int]]:
    """Count the top-level forward calls of ``model`` (decoder steps; HF runs encoders separately)."""
    counter = [0]

    def hook(_module: torch.nn.Module, _args: tuple) -> None:
        counter[0] += 1

    handle = model.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


@contextmanager
def assistant_config(small: PreTrainedModel, params: HfAssistedParams) -> Iterator[None]:
    """Give the assistant a private generation config for this call only."""
    original = small.generation_config
    config = copy.deepcopy(original)
    config.num_assistant_tokens = params.num_assistant_tokens
    config.num_assistant_tokens_schedule = params.num_assistant_tokens_schedule
    # HF fills an unset threshold with its default 0.4; None here means "off", which HF spells 0.
    config.assistant_confidence_threshold = params.assistant_confidence_threshold or 0.0
    small.generation_config = config
    try:
        yield
    finally:
        small.generation_config = original


def decode_hf_assisted(
    large: PreTrainedModel,
    small: PreTrainedModel,
    input_ids: torch.Tensor,
    params: HfAssistedParams,
    context: DecodeContext,
) -> GenerationResult:
    """Run ``large.generate(assistant_model=small, ...)`` on one example.

    HF stops on the stop strings itself; its output is then cut by the engine's own rule
    (the token completing the first stop string), so every method keeps the same tokens.
    """
    with assistant_config(small, params), count_forward_calls(small) as small_calls:
        result = hf_generate(
            large,
            input_ids,
            params,
            context.max_new_tokens,
            context.stop_strings,
            assistant_model=small,
        )
    result.stats["n_small_calls"] = small_calls[0]
    return result


def decode_prompt_lookup(
    large: PreTrainedModel,
    input_ids: torch.Tensor,
    params: PromptLookupParams,
    context: DecodeContext,
) -> GenerationResult:
    """Run ``large.generate(prompt_lookup_num_tokens=...)``: HF's prompt lookup decoding,
    the model-free draft-and-verify baseline (no small model)."""
    return hf_generate(
        large,
        input_ids,
        params,
        context.max_new_tokens,
        context.stop_strings,
        prompt_lookup_num_tokens=params.prompt_lookup_num_tokens,
        max_matching_ngram_size=params.max_matching_ngram_size,
    )


def hf_generate(
    large: PreTrainedModel,
    input_ids: torch.Tensor,
    params: SamplingParams,
    max_new_tokens: int,
    stop_strings: StopStrings | None,
    **method_kwargs: Any,
) -> GenerationResult:
    """One HF ``generate`` call of a draft-and-verify method (``method_kwargs``), with the
    engine's sampling settings, stop rule and a count of the large model's calls."""
    sampling_kwargs: dict = {"do_sample": False}
    if params.sampling == "nucleus":
        sampling_kwargs = {
            "do_sample": True,
            "top_p": params.top_p,
            "temperature": params.temperature,
        }
    n_prefix = decoder_prefix(large, input_ids).shape[1]
    with (
        count_forward_calls(large) as large_calls,
        torch.random.fork_rng(devices=[input_ids.device] if input_ids.is_cuda else []),
    ):
        if params.seed is not None:
            # HF samples from the global RNG; fork_rng keeps the caller's state untouched.
            torch.manual_seed(params.seed)
        output = large.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            num_beams=1,
            cache=empty_cache(large),
            **sampling_kwargs,
            **stop_kwargs(stop_strings),
            **method_kwargs,
        )
    tokens = clip_at_stop(output[0, n_prefix:].tolist(), stop_strings)
    return GenerationResult(tokens=tokens, from_large=None, stats={"n_large_calls": large_calls[0]})


@torch.inference_mode()
def hf_greedy_tokens(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    exact_length: bool = False,
    stop_strings: StopStrings | None = None,
    compiled: bool = False,
    compile_mode: str = "default",
) -> list[int]:
    """Plain HF ``generate`` greedy output (generated tokens only): the reference the engine
    must match, and the ``vanilla large (HF generate)`` baseline. ``exact_length`` forbids
    stopping before ``max_new_tokens``; ``stop_strings`` are HF's to stop on, and its
    output is cut by the engine's rule. ``compiled``: a static cache and HF's own
    compilation of the forward (a ``CompileConfig``) in ``compile_mode``, the fair
    counterpart of the engine's compiled path (without weight freezing: see
    :func:`hf_compile_config`)."""
    cache = (
        {
            "cache": generation_cache(model, input_ids, max_new_tokens),
            "compile_config": hf_compile_config(model, compile_mode),
        }
        if compiled
        else {"cache": empty_cache(model)}
    )
    with recompile_room() if compiled else contextlib.nullcontext():
        tokens = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens if exact_length else None,
            **cache,
            **stop_kwargs(stop_strings),
        )[0, decoder_prefix(model, input_ids).shape[1] :].tolist()
    return clip_at_stop(tokens, stop_strings)


def hf_compile_config(model: PreTrainedModel, mode: str = "default"):
    """HF generate's compilation settings: the engine's (``inductor_options``: CUDA graphs
    on CUDA, generated matmul kernels in ``max-autotune``) less weight freezing. HF
    ``generate`` makes a static cache per call and marks its tensors static, so freezing
    would make the first call's cache a graph constant (measured: the next call with a
    cache of another length fails). HF compiles only on accelerators unless told to
    compile on every device."""
    from transformers import CompileConfig

    options = {k: v for k, v in inductor_options(model.device, mode).items() if k != "freezing"}
    # torch.compile takes a mode or options, not both: the options of the engine's mode
    config = CompileConfig(mode=None, options=options)
    config._compile_all_devices = True  # noqa: SLF001 - HF's documented switch for CPUs
    return config


def stop_kwargs(stop_strings: StopStrings | None) -> dict[str, Any]:
    """HF ``generate``'s own stop-string criterion, passed as a stopping criterion: with
    ``stop_strings=`` HF's assisted generation hands the strings to the assistant without
    the tokenizer and fails."""
    if stop_strings is None:
        return {}
    criterion = StopStringCriteria(stop_strings.tokenizer, list(stop_strings.strings))
    return {"stopping_criteria": StoppingCriteriaList([criterion])}


def clip_at_stop(tokens: list[int], stop_strings: StopStrings | None) -> list[int]:
    """Tokens through the one that completes the first stop string (the engine's rule)."""
    end = None if stop_strings is None else stop_strings.end(tokens)
    return tokens if end is None else tokens[:end]
