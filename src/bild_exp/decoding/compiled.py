"""The compiled engine path: a static key/value cache and a ``torch.compile``'d decoder step.

A small decoder's step is mostly framework overhead (Python, per-op dispatch, cache
bookkeeping); compiling it over a cache of fixed shape removes most of it, so the
large/small step-time ratio that bounds BiLD's speedup gets closer to the ratio of their
weights. ``generate(..., compile=True)`` uses this path; tokens and stats equal the eager
path's (``tests/test_compiled.py``).

- One :class:`CompiledModel` per model, reused by every example: a static cache sized from
  the generation limit (rounded up to :data:`CACHE_BUCKET` positions and grown when an
  example needs more) and the compiled forward.
- Rollback is a position reset (:func:`set_cached_length`): positions past the valid length
  are masked by the causal mask and overwritten by the next tokens fed, never copied.
- Shapes: a decoder-only prompt runs eagerly (the prefill; its length varies per example);
  one-token steps run one graph, multi-token verification passes another whose length is
  marked dynamic, so a sweep compiles a bounded number of graphs
  (:attr:`CompiledModel.n_graphs`). Both are compiled when the model is first used (the
  harness's untimed warm-up), and their compile time is kept in ``compile_s``.
- CUDA: ``mode="reduce-overhead"`` (CUDA graphs, which remove the kernel-launch cost that
  bounds small decoders on GPUs); CPU: inductor's default mode with weight freezing
  (weights become constants, prepacked for oneDNN's matmuls; measured here it cuts a
  compiled step by a further ~20-35%). A frozen graph would not see weights changed in
  place later, so each example checks the parameters' version counters and recompiles a
  model whose weights changed (:func:`weights_signature`).

Llama-style decoder-only models (Llama, Mistral, Qwen2/3, SmolLM2), T5/mT5 and BART are
supported (:data:`COMPILED_MODEL_TYPES`). Other architectures (GPT-2, ...), CALM's
per-layer exits, the early-exit small model's shared cache, HF assisted generation and
prompt lookup are refused with one line (:func:`check_compilable`; the methods that compile
are those the registry marks ``compilable``). Inside :func:`compile_settings` dynamo's
``recompile_limit`` is at least 64 (a decoder's graphs per cache size and step shape
exceed the default of 8); the process's setting is restored when the block ends.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache, StaticCache

from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.errors import InvalidParameterError

COMPILED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "t5", "mt5", "bart")
CACHE_BUCKET = 128  # static caches hold a multiple of this many positions
COMPILE_MODES = ("default", "max-autotune")
# Room for graphs (and graph breaks) before dynamo gives up and runs a model eagerly.
RECOMPILE_LIMIT = 64


def bucketed(length: int) -> int:
    """``length`` rounded up to a multiple of :data:`CACHE_BUCKET`."""
    return -(-length // CACHE_BUCKET) * CACHE_BUCKET


def check_compile_mode(mode: object, name: str = "compile_mode") -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else a one-line error."""
    if mode not in COMPILE_MODES:
        raise InvalidParameterError(
            f"{name}={mode!r} is invalid: accepted {', '.join(map(repr, COMPILE_MODES))}"
        )
    return mode


def inductor_options(device: torch.device, mode: str = "default") -> dict[str, object]:
    """Inductor's settings for a compile mode (:data:`COMPILE_MODES`).

    ``default``: on CUDA ``mode="reduce-overhead"``'s options (CUDA graphs); elsewhere
    inductor's default mode with ``freezing`` (inference only: the engine decodes under
    ``torch.inference_mode``). ``max-autotune``: on CUDA that mode's options; elsewhere
    freezing plus ``max_autotune``, which generates GEMM kernels for each matmul shape
    (one-token matmuls included) instead of calling oneDNN/MKL: much faster steps on a CPU,
    several times longer compilation (all of it in the untimed warm-up)."""
    from torch._inductor import list_mode_options

    check_compile_mode(mode)
    if device.type == "cuda":
        return list_mode_options("reduce-overhead" if mode == "default" else "max-autotune")
    return {"freezing": True, **({"max_autotune": True} if mode == "max-autotune" else {})}


@contextmanager
def compile_settings(device: torch.device, mode: str | None = "default") -> Iterator[None]:
    """Inductor's settings for ``mode`` (:func:`inductor_options`) and room for a decoder's
    graphs (:data:`RECOMPILE_LIMIT`) inside the block, e.g. a compiled ``generate``; both are
    restored when it ends. ``mode`` None (the eager path): nothing changes.

    Set globally, not only passed to the backend: weight freezing decides at *tracing* time,
    in dynamo, whether parameters become graph constants; given only as options (to
    ``torch.compile`` or to ``compile_fx``) it is silently ignored and the graph takes the
    weights as inputs (checked in ``tests/test_compiled.py``)."""
    import torch._inductor.config

    if mode is None:
        yield
        return
    with (
        torch._inductor.config.patch(inductor_options(device, check_compile_mode(mode))),
        recompile_room(),
    ):
        yield


@contextmanager
def recompile_room() -> Iterator[None]:
    """Dynamo's ``recompile_limit`` at least :data:`RECOMPILE_LIMIT` inside the block (never
    lowered), restored after it: the engine's compiled path and HF ``generate``'s compiled
    baseline both compile more graphs per model than the default 8 allows."""
    import torch._dynamo.config

    limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    with torch._dynamo.config.patch(recompile_limit=limit):
        yield


def weights_signature(model: PreTrainedModel) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lives and how often it was changed in place: a
    frozen graph holds the weights it was compiled with, so any change recompiles."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version) for t in tensors)  # noqa: SLF001


def check_compilable(method: str, models: dict[str, object]) -> None:
    """One line naming what cannot take the compiled path, before any model runs."""
    from bild_exp.decoding.registry import methods_where  # the registry imports this module

    compilable = methods_where("compilable")
    if method not in compilable:
        raise InvalidParameterError(
            f"compile=True is invalid for method={method!r}: accepted methods "
            f"{', '.join(compilable)} (CALM's per-layer exits, HF assisted generation "
            "and prompt lookup run eagerly only)"
        )
    for name, model in models.items():
        if model is None:
            continue
        if isinstance(model, EarlyExit):
            raise InvalidParameterError(
                f"compile=True is invalid with {name}={model!r}: an early-exit small model "
                "shares the large model's cache layer by layer, which the static cache does "
                "not support; accepted a separate small model"
            )
        model_type = model.config.model_type
        if model_type not in COMPILED_MODEL_TYPES:
            raise InvalidParameterError(
                f"compile=True is invalid for {name} model_type={model_type!r}: accepted "
                f"{', '.join(COMPILED_MODEL_TYPES)} (Llama-style decoder-only models, T5/mT5 "
                "and BART)"
            )


def static_cache(model: PreTrainedModel, capacity: int) -> StaticCache:
    """A static cache of ``capacity`` positions for every decoder layer of ``model``.

    ``StaticCache(config=...)`` sizes itself from ``num_hidden_layers``, which T5 and BART
    map to the *encoder* depth: a copy of the config gets the decoder's depth."""
    config = copy.deepcopy(model.config)
    depth = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
    if config.is_encoder_decoder and depth:
        config.num_hidden_layers = depth
    return StaticCache(config=config, max_cache_len=capacity)


def set_cached_length(cache: Cache, length: int) -> None:
    """Forget every position at or after ``length``: a position reset, no copy (and no host
    sync: callers know the cache holds at least ``length`` positions)."""
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def generation_cache(model: PreTrainedModel, input_ids: torch.Tensor, max_new_tokens: int) -> Cache:
    """A static cache for HF ``generate`` sized like the engine's (HF's own
    ``cache_implementation="static"`` sizes T5 from its encoder depth and fails when the
    decoder is deeper, as in the demo large model)."""
    prefix = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    length = prefix + max_new_tokens + 1
    return decoder_cache(model, static_cache(model, bucketed(length)))


def decoder_cache(model: PreTrainedModel, self_attention: StaticCache) -> Cache:
    """The static self-attention cache, plus for encoder-decoders a fresh cross-attention
    cache (the encoder length varies per example; the first call writes it)."""
    if not model.config.is_encoder_decoder:
        return self_attention
    return EncoderDecoderCache(self_attention, DynamicCache())


def mark_encoder_length_dynamic(cache: Cache, encoder_outputs: object) -> None:
    """The encoder length varies per example: one graph for all of them (the encoder output
    and the cross-attention keys and values written by the first, eager call)."""
    if encoder_outputs is None:
        return
    torch._dynamo.maybe_mark_dynamic(encoder_outputs[0], 1)
    for layer in cache.cross_attention_cache.layers:
        torch._dynamo.maybe_mark_dynamic(layer.keys, 2)
        torch._dynamo.maybe_mark_dynamic(layer.values, 2)


@dataclass
class CompiledModel:
    """A model's compiled forward and static cache, shared by every example."""

    model: PreTrainedModel
    capacity: int
    cache: StaticCache
    forward: object  # the compiled step(model, inputs) (set once the entry exists)
    weights: tuple = ()  # weights_signature(model) when compiled
    mode: str = "default"  # COMPILE_MODES
    n_graphs: int = 0  # graphs compiled for this model (counted by its backend)
    compile_s: float = 0.0  # time spent in calls that compiled a graph
    n_calls: int = 0

    def example_cache(self) -> Cache:
        """The cache one example decodes with: the static self-attention cache (reset), and
        for encoder-decoders a fresh cross-attention cache for this example's encoder output
        (its length varies per example; it is written once, at the first call)."""
        self.reset()
        return decoder_cache(self.model, self.cache)

    def run(
        self,
        tokens: torch.Tensor,
        cache: Cache,
        prefill: bool,
        keep: int = 0,
        encoder_outputs: object = None,
    ) -> torch.Tensor:
        """Feed ``tokens`` ``(1, n)`` after the cached positions; logits ``(n, vocab)``.

        ``prefill``: the first call of an example runs eagerly (a decoder-only prompt of any
        length, with the head only over its last ``keep`` positions; an encoder-decoder's
        first step, which writes the cross-attention cache)."""
        if prefill:
            inputs = self.inputs(tokens, cache, encoder_outputs)
            extra = {} if self.model.config.is_encoder_decoder else {"logits_to_keep": keep}
            logits = self.model(**inputs, **extra).logits[0]
            mark_encoder_length_dynamic(cache, encoder_outputs)
            return logits
        # a fresh tensor: a view into the sequence buffer has its row stride, which the
        # graph would guard on (one more graph per stride)
        tokens = tokens.flatten().clone().unsqueeze(0)  # strides (n, 1)
        if tokens.shape[1] > 1:  # one graph for every verification length
            torch._dynamo.mark_dynamic(tokens, 1, min=2, max=self.capacity)
        inputs = self.inputs(tokens, cache, encoder_outputs)
        graphs_before, start = self.n_graphs, time.perf_counter()
        logits = self.forward(self.model, inputs).logits
        if self.n_graphs > graphs_before:  # this call compiled: its time is compile time
            self.compile_s += time.perf_counter() - start
        self.n_calls += 1
        return logits[0]

    def inputs(self, tokens: torch.Tensor, cache: Cache, encoder_outputs: object) -> dict:
        if self.model.config.is_encoder_decoder:
            return {
                "encoder_outputs": encoder_outputs,
                "decoder_input_ids": tokens,
                "cache": cache,
                "use_cache": True,
            }
        return {"input_ids": tokens, "cache": cache, "use_cache": True}

    def warm_up(self) -> None:
        """Compile the one-token and the multi-token graphs now, outside any timed region
        (for encoder-decoders on a two-token encoder input, then a three-token one, so that
        the encoder length is a dynamic dimension from the start)."""
        lengths = (2, 3) if self.model.config.is_encoder_decoder else (1,)
        # Only the dimensions marked in run() are dynamic: automatic dynamic shapes would also
        # generalise over other models' weight shapes met in the same code and split graphs.
        # (Patched here, not per call: the patch costs ~0.1 ms, a small model's whole step.)
        with (
            torch._dynamo.config.patch(automatic_dynamic_shapes=False),
            compile_settings(self.model.device, self.mode),
        ):
            self.compile_shapes(lengths)
        self.reset()

    def compile_shapes(self, lengths: tuple[int, ...]) -> None:
        """One example per encoder length: first call, one-token step, verification passes."""
        device = self.model.device
        token = torch.zeros((1, 1), dtype=torch.long, device=device)
        for encoder_length in lengths:
            encoder_outputs = None
            if self.model.config.is_encoder_decoder:
                source = token.expand(1, encoder_length).clone()
                encoder_outputs = self.model.get_encoder()(input_ids=source)
            cache = self.example_cache()
            for index, n_tokens in enumerate((1, 1, 2, 3)):  # first call, step, verifications
                self.run(
                    token.expand(1, n_tokens).clone(),
                    cache,
                    prefill=index == 0,
                    encoder_outputs=encoder_outputs,
                )

    def reset(self) -> None:
        set_cached_length(self.cache, 0)


# Each model's compiled entries, by compile mode.
_COMPILED: weakref.WeakKeyDictionary[PreTrainedModel, dict[str, CompiledModel]] = (
    weakref.WeakKeyDictionary()
)


def compiled_model(model: PreTrainedModel, length: int, mode: str = "default") -> CompiledModel:
    """The model's :class:`CompiledModel` for compile ``mode`` with room for ``length``
    positions (callers start each example with :meth:`CompiledModel.example_cache`; call it
    inside :func:`compile_settings` for that mode).

    The first use compiles (and warms up) the graphs; a longer example grows the cache to
    the next multiple of :data:`CACHE_BUCKET`, which recompiles once for the new shape.
    """
    entries = _COMPILED.setdefault(model, {})
    entry = entries.get(mode)
    capacity = bucketed(length)
    weights = weights_signature(model)
    if entry is None or entry.weights != weights:  # new, or its weights changed since
        previous = entry
        entry = CompiledModel(
            model, capacity, static_cache(model, capacity), None, weights, mode=mode
        )
        if previous is not None:  # the stats stay the model's, across recompilations
            entry.n_graphs, entry.compile_s = previous.n_graphs, previous.compile_s
            entry.n_calls = previous.n_calls
        options = inductor_options(model.device, mode)
        entry.forward = torch.compile(own_step_function(), backend=counting_backend(entry, options))
        entries[mode] = entry
        entry.warm_up()
    elif entry.capacity < length:  # a longer example: a larger cache, recompiled once
        entry.capacity, entry.cache = capacity, static_cache(model, capacity)
        entry.warm_up()
    return entry


def own_step_function():
    """``step(model, inputs) = model(**inputs)`` with a code object of its own.

    Dynamo keeps compiled graphs per code object and checks them one after another: were
    every model's ``forward`` compiled directly, all models of one class (large, smalls,
    HF generate's own compiled call) would share one list, and a small model's step would
    pay for checking the others' guards first.
    """
    namespace: dict = {}
    source = "def step(model, inputs):\n    return model(**inputs)\n"
    exec(compile(source, "<bild-exp compiled step>", "exec"), namespace)  # noqa: S102
    return namespace["step"]


def counting_backend(entry: CompiledModel, options: dict[str, object]):
    """Inductor with ``options`` (:func:`inductor_options`), counting the graphs it compiles
    for ``entry``'s model: a backend of its own also keeps other models' graphs apart."""
    from torch._inductor.compile_fx import compile_fx

    def backend(graph, example_inputs):
        entry.n_graphs += 1
        return compile_fx(graph, example_inputs, config_patches=options)

    return backend


def compile_stats(model: PreTrainedModel, mode: str | None = None) -> dict[str, float]:
    """Graphs compiled, seconds spent compiling and compiled calls for ``model`` so far, in
    ``mode`` (None: every mode)."""
    entries = _COMPILED.get(model, {})
    chosen = [e for m, e in entries.items() if mode is None or m == mode]
    return {
        "n_graphs": sum(e.n_graphs for e in chosen),
        "compile_s": sum(e.compile_s for e in chosen),
        "n_compiled_calls": sum(e.n_calls for e in chosen),
    }
