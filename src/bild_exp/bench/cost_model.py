"""A latency model from per-call timings measured in the same run as the benchmark.

Each decoder call costs ``t(model, n_fed)``, measured by timing a real forward over
``n_fed`` tokens at a fixed cached length (median of repeats); each encoder runs once per
example. A method's predicted latency for an example is the sum over its recorded calls
(``large_call_shapes`` / ``small_call_shapes``). Achieved / predicted > 1 is overhead
outside the model calls (Python, policies, syncs).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from bild_exp.decoding.compiled import compile_settings
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sequence import TokenSequence, start_sequence
from bild_exp.timing import synchronize, timed


@dataclass
class CallTimes:
    """Seconds per decoder call by tokens fed, and per encoder run, for one model."""

    by_n_fed: dict[int, float]
    encoder: float

    def call(self, n_fed: int) -> float:
        ks = sorted(self.by_n_fed)
        return float(np.interp(n_fed, ks, [self.by_n_fed[k] for k in ks]))


def probe_length(
    model: PreTrainedModel, input_ids: torch.Tensor, positions: int
) -> tuple[TokenSequence, int]:
    """The sequence a measurement decodes (``positions`` after the prefix) and the static
    cache length the compiled path needs for it (eager runners ignore it)."""
    sequence = start_sequence(model, input_ids, positions)
    return sequence, sequence.buffer.shape[1]


def new_runner(
    model: PreTrainedModel, input_ids: torch.Tensor, static: int, mode: str | None
) -> DecoderRunner:
    return DecoderRunner(model, input_ids, static_length=static, compile_mode=mode)


def encoder_times(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    static: int,
    repeats: int,
    mode: str | None = None,
) -> list[float]:
    """Seconds of ``repeats`` fresh runners (the encoder, once per example; on the compiled
    path also the static cache's reset)."""
    device = input_ids.device
    with compile_settings(device, mode):
        return [
            timed(lambda: new_runner(model, input_ids, static, mode), device)[1]
            for _ in range(repeats)
        ]


class CallProbe:
    """One model's decoder, primed with ``cached_length`` positions, ready to time forwards
    over ``k`` new tokens (``mode``: None eager, else the compiled path in that mode).

    On the compiled path the probe uses the model's one static cache: no other runner of
    this model may start while the probe is in use."""

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        max_k: int,
        cached_length: int,
        mode: str | None,
    ):
        self.device, self.mode = input_ids.device, mode
        self.sequence, static = probe_length(model, input_ids, cached_length + max_k + 1)
        with compile_settings(self.device, mode):
            self.runner = new_runner(model, input_ids, static, mode)
        generator = torch.Generator().manual_seed(0)
        filler = torch.randint(
            3, model.config.vocab_size, (cached_length + max_k,), generator=generator
        )
        for token in filler.tolist():
            self.sequence.append(token, from_large=False)
        self.cached_end = self.sequence.prefix_length + cached_length
        self.runner.forward(self.sequence.view()[:, : self.cached_end])

    def forwards(self, k: int, repeats: int) -> list[float]:
        """Seconds of ``repeats`` forwards over ``k`` tokens, after one untimed warm-up call."""
        view = self.sequence.view()[:, : self.cached_end + k]
        times = []
        # inside the compile settings: a call that recompiles (a new shape) gets them too
        with compile_settings(self.device, self.mode):
            for _ in range(repeats + 1):
                _, seconds = timed(lambda: self.runner.forward(view), self.device)
                self.runner.truncate(self.cached_end)
                times.append(seconds)
        return times[1:]


@torch.inference_mode()
def measure_call_times(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    ks: Iterable[int],
    cached_length: int = 16,
    repeats: int = 7,
    mode: str | None = None,
) -> CallTimes:
    """Median time of a forward over k new tokens after ``cached_length`` cached positions
    (``mode``: None eager, else the compiled path in that compile mode)."""
    return measure_paths(model, input_ids, ks, cached_length, repeats, 1, (mode,))[mode]


@torch.inference_mode()
def measure_paths(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    ks: Iterable[int],
    cached_length: int,
    repeats: int,
    rounds: int,
    paths: tuple[str | None, ...] = (None, "default"),
) -> dict[str | None, CallTimes]:
    """:func:`measure_call_times` for each path (None: eager; else a compile mode),
    measured in ``rounds`` alternating blocks of ``repeats`` calls per path and k
    (:func:`measure_targets`)."""
    targets = {path: (model, path) for path in paths}
    return measure_targets(targets, input_ids, ks, cached_length, repeats, rounds)


@torch.inference_mode()
def measure_targets(
    targets: dict[Any, tuple[PreTrainedModel, str | None]],
    input_ids: torch.Tensor,
    ks: Iterable[int],
    cached_length: int,
    repeats: int,
    rounds: int,
) -> dict[Any, CallTimes]:
    """Per-call times of each target (a model and its path: None eager, else a compile
    mode; e.g. one model's plain and prepacked twins), measured in ``rounds`` alternating
    blocks of ``repeats`` calls per target and k.

    A shared machine's speed drifts over seconds (measured here: the same loop runs up to
    1.7x slower for a few seconds at a time): targets measured one after the other would
    compare different phases; alternating blocks spread the phases over all. Blocks, not
    single calls: alternating call by call (tried) slowed every call of both paths; in
    blocks only the first call of each, which is dropped, follows the other target."""
    ks = sorted(set(ks))
    positions = cached_length + max(ks) + 1
    statics = {
        key: probe_length(model, input_ids, positions)[1] for key, (model, _) in targets.items()
    }
    for key, (model, mode) in targets.items():  # untimed: a compiled path compiles here
        encoder_times(model, input_ids, statics[key], 1, mode)
    encoders: dict[Any, list[float]] = {key: [] for key in targets}
    for _ in range(rounds):  # before the probes: a new runner resets a compiled model's cache
        for key, (model, mode) in targets.items():
            encoders[key] += encoder_times(model, input_ids, statics[key], repeats, mode)
    probes = {
        key: CallProbe(model, input_ids, max(ks), cached_length, mode)
        for key, (model, mode) in targets.items()
    }
    calls: dict[Any, dict[int, list[float]]] = {key: {k: [] for k in ks} for key in targets}
    for _ in range(rounds):
        for k in ks:  # every target's block for one k back to back: the same phase
            for key, probe in probes.items():
                calls[key][k] += probe.forwards(k, repeats)
    synchronize(input_ids.device)
    return {
        key: CallTimes(
            by_n_fed={k: statistics.median(times) for k, times in calls[key].items()},
            encoder=statistics.median(encoders[key]),
        )
        for key in targets
    }


def predicted_latency(
    large_calls: list,
    small_calls: list,
    large_times: CallTimes | None,
    small_times: CallTimes | None,
) -> float:
    """Sum of per-call costs for one example's recorded call shapes (plus encoders)."""
    total = 0.0
    if large_calls and large_times is not None:
        total += large_times.encoder + sum(large_times.call(n_fed) for n_fed, _ in large_calls)
    if small_calls and small_times is not None:
        total += small_times.encoder + sum(small_times.call(n_fed) for n_fed, _ in small_calls)
    return total


def ideal_bild_speedup(
    large_times: CallTimes, small_times: CallTimes, max_small_steps: int
) -> float:
    """BiLD's ceiling on this pair and hardware: every small token accepted.

    A cycle yields ``max_small_steps + 1`` tokens for ``max_small_steps`` small steps and one
    large pass over ``max_small_steps + 1`` tokens; vanilla pays one large step per token.
    """
    n = max_small_steps
    cycle = n * small_times.call(1) + large_times.call(n + 1)
    return (n + 1) * large_times.call(1) / cycle
