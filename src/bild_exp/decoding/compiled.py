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
  bounds small decoders on GPUs); CPU: inductor's default mode.

Llama-style decoder-only models (Llama, Mistral, Qwen2/3, SmolLM2) are supported.
Encoder-decoders, GPT-2, CALM's per-layer exits, the early-exit small model's shared cache
and HF assisted generation are refused with one line (:func:`check_compilable`).
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, StaticCache

from bild_exp.decoding.params import InvalidParameterError

COMPILED_METHODS = ("large", "small", "bild", "speculative", "oracle")
COMPILED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
CACHE_BUCKET = 128  # static caches hold a multiple of this many positions


def static_length(sequence, compile: bool) -> int | None:
    """Positions a static cache needs for ``sequence`` (its whole buffer), or None (eager)."""
    return sequence.buffer.shape[1] if compile else None


def compile_mode(device: torch.device) -> str | None:
    """``reduce-overhead`` (CUDA graphs) on CUDA; inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


def check_compilable(method: str, models: dict[str, object]) -> None:
    """One line naming what cannot take the compiled path, before any model runs."""
    if method not in COMPILED_METHODS:
        raise InvalidParameterError(
            f"compile=True is invalid for method={method!r}: accepted methods "
            f"{', '.join(COMPILED_METHODS)} (CALM's per-layer exits and HF assisted generation "
            "run eagerly only)"
        )
    from bild_exp.decoding.early_exit import EarlyExit

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
                f"{', '.join(COMPILED_MODEL_TYPES)} (Llama-style decoder-only models)"
            )


def static_cache(model: PreTrainedModel, capacity: int) -> StaticCache:
    """A static cache of ``capacity`` positions for every decoder layer of ``model``."""
    config = copy.copy(model.config)  # some configs map num_hidden_layers to the encoder depth
    return StaticCache(config=config, max_cache_len=capacity)


def set_cached_length(cache: Cache, length: int) -> None:
    """Forget every position at or after ``length``: a position reset, no copy (and no host
    sync: callers know the cache holds at least ``length`` positions)."""
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def graphs_so_far() -> int:
    """Graphs dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@dataclass
class CompiledModel:
    """A model's compiled forward and static cache, shared by every example."""

    model: PreTrainedModel
    capacity: int
    cache: StaticCache
    forward: object
    n_graphs: int = 0  # graphs compiled for this model
    compile_s: float = 0.0  # time spent in calls that compiled a graph
    n_calls: int = 0
    shapes: set = field(default_factory=set)

    def run(self, tokens: torch.Tensor, prefill: bool, keep: int = 0) -> torch.Tensor:
        """Feed ``tokens`` ``(1, n)`` after the cached positions; logits ``(n, vocab)``.
        ``prefill``: the first call of an example (a prompt of any length) runs eagerly, its
        head only over the last ``keep`` positions (0: all)."""
        if prefill:
            out = self.model(
                input_ids=tokens, past_key_values=self.cache, use_cache=True, logits_to_keep=keep
            )
            return out.logits[0]
        # a fresh tensor: a view into the sequence buffer has its row stride, which the
        # graph would guard on (one more graph per stride)
        tokens = tokens.flatten().clone().unsqueeze(0)  # strides (n, 1)
        if tokens.shape[1] > 1:  # one graph for every verification length
            torch._dynamo.mark_dynamic(tokens, 1, min=2, max=self.capacity)
        before, start = graphs_so_far(), time.perf_counter()
        logits = self.forward(input_ids=tokens, past_key_values=self.cache, use_cache=True).logits
        new_graphs = graphs_so_far() - before
        if new_graphs:
            self.n_graphs += new_graphs
            self.compile_s += time.perf_counter() - start
        self.n_calls += 1
        return logits[0]

    def warm_up(self) -> None:
        """Compile the one-token and the multi-token graphs now, outside any timed region."""
        device = self.model.device
        token = torch.zeros((1, 1), dtype=torch.long, device=device)
        for index, n_tokens in enumerate((1, 1, 2, 3)):  # prefill, step, verification passes
            self.run(token.expand(1, n_tokens).clone(), prefill=index == 0)
        self.reset()

    def reset(self) -> None:
        set_cached_length(self.cache, 0)


_COMPILED: weakref.WeakKeyDictionary[PreTrainedModel, CompiledModel] = weakref.WeakKeyDictionary()


def compiled_model(model: PreTrainedModel, length: int) -> CompiledModel:
    """The model's :class:`CompiledModel` with room for ``length`` positions, reset to empty.

    The first use compiles (and warms up) the graphs; a longer example grows the cache to
    the next multiple of :data:`CACHE_BUCKET`, which recompiles once for the new shape.
    """
    entry = _COMPILED.get(model)
    capacity = -(-length // CACHE_BUCKET) * CACHE_BUCKET
    # Every model of one class shares the compiled code's cache (guards tell them apart):
    # leave room for a sweep's models x graphs before dynamo gives up and runs eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    if entry is None or entry.capacity < length:
        forward = (
            entry.forward
            if entry is not None
            else torch.compile(model.forward, mode=compile_mode(model.device), fullgraph=False)
        )
        previous = entry
        entry = CompiledModel(model, capacity, static_cache(model, capacity), forward)
        if previous is not None:  # counts cover the model's whole life
            entry.n_graphs, entry.compile_s = previous.n_graphs, previous.compile_s
            entry.n_calls = previous.n_calls
        _COMPILED[model] = entry
        entry.warm_up()
    entry.reset()
    return entry


def compile_stats(model: PreTrainedModel) -> dict[str, float]:
    """Graphs compiled, seconds spent compiling and compiled calls for ``model`` so far."""
    entry = _COMPILED.get(model)
    if entry is None:
        return {"n_graphs": 0, "compile_s": 0.0, "n_compiled_calls": 0}
    return {
        "n_graphs": entry.n_graphs,
        "compile_s": entry.compile_s,
        "n_compiled_calls": entry.n_calls,
    }
