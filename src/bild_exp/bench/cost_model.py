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

import numpy as np
import torch
from transformers import PreTrainedModel

from bild_exp.decoding.compiled import static_length
from bild_exp.decoding.result import start_sequence
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.timing import synchronize, timed


@dataclass
class CallTimes:
    """Seconds per decoder call by tokens fed, and per encoder run, for one model."""

    by_n_fed: dict[int, float]
    encoder: float

    def call(self, n_fed: int) -> float:
        ks = sorted(self.by_n_fed)
        return float(np.interp(n_fed, ks, [self.by_n_fed[k] for k in ks]))


@torch.inference_mode()
def measure_call_times(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    ks: Iterable[int],
    cached_length: int = 16,
    repeats: int = 7,
    compile: bool = False,
) -> CallTimes:
    """Median time of a forward over k new tokens after ``cached_length`` cached positions
    (``compile``: on the compiled path, static cache and compiled graphs)."""
    device = input_ids.device
    max_k = max(ks)
    sequence = start_sequence(model, input_ids, cached_length + max_k + 1)
    static = static_length(sequence, compile)
    encoder_times = [
        timed(lambda: DecoderRunner(model, input_ids, static_length=static), device)[1]
        for _ in range(repeats)
    ]
    runner = DecoderRunner(model, input_ids, static_length=static)
    generator = torch.Generator().manual_seed(0)
    filler = torch.randint(
        3, model.config.vocab_size, (cached_length + max_k,), generator=generator
    )
    for token in filler.tolist():
        sequence.append(token, from_large=False)
    runner.forward(sequence.view()[:, : sequence.prefix_length + cached_length])
    by_n_fed = {}
    for k in sorted(set(ks)):
        times = []
        for _ in range(repeats + 1):
            view = sequence.view()[:, : sequence.prefix_length + cached_length + k]
            _, seconds = timed(lambda view=view: runner.forward(view), device)
            runner.truncate(sequence.prefix_length + cached_length)
            times.append(seconds)
        by_n_fed[k] = statistics.median(times[1:])  # the first call of each k warms up
    synchronize(device)
    return CallTimes(by_n_fed=by_n_fed, encoder=statistics.median(encoder_times))


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
