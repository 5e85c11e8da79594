"""The engine's plain ``large`` loop against Hugging Face ``generate`` on the same inputs.

Both decode greedily to exactly ``max_new_tokens`` (EOS disabled) from the same
random-weight model; runs alternate between the two so machine drift hits both
alike; the ratio of median per-token times is reported (< 1: the engine is faster).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, T5Config, T5ForConditionalGeneration

from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.timing import device_description, timed

# t5-small's published shape (60M parameters) with random weights.
T5_SMALL_SHAPE = {
    "vocab_size": 32128,
    "d_model": 512,
    "d_kv": 64,
    "d_ff": 2048,
    "num_layers": 6,
    "num_heads": 8,
}


@dataclass
class EngineSpeed:
    engine_ms_per_token: float
    hf_ms_per_token: float
    n_tokens: int
    repetitions: int

    @property
    def ratio(self) -> float:
        return self.engine_ms_per_token / self.hf_ms_per_token


def t5_small_sized_model(seed: int = 0, device: str = "cpu") -> PreTrainedModel:
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(**T5_SMALL_SHAPE, decoder_start_token_id=0))
    model.generation_config.eos_token_id = None  # decode exactly max_new_tokens
    return model.eval().to(device)


def measure_engine_speed(
    model: PreTrainedModel,
    input_length: int = 64,
    n_tokens: int = 64,
    repetitions: int = 7,
    warmup: int = 2,
) -> EngineSpeed:
    """Median per-token milliseconds of the engine's ``large`` loop and of HF ``generate``."""
    device = model.device
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, model.config.vocab_size, (1, input_length), generator=generator)
    input_ids = input_ids.to(device)

    def engine() -> list[int]:
        return generate("large", large=model, input_ids=input_ids, max_new_tokens=n_tokens).tokens

    def hf() -> list[int]:
        return hf_greedy_tokens(model, input_ids, n_tokens, exact_length=True)

    engine_times, hf_times = [], []
    for repetition in range(warmup + repetitions):
        # Alternate who goes first so drift and cache effects hit both alike.
        order = [(engine, engine_times), (hf, hf_times)]
        for fn, times in order if repetition % 2 == 0 else reversed(order):
            tokens, seconds = timed(fn, device)
            if len(tokens) != n_tokens:
                raise RuntimeError(f"expected {n_tokens} tokens, got {len(tokens)}")
            if repetition >= warmup:
                times.append(seconds)
    if engine() != hf():
        raise RuntimeError("the engine and HF generate disagree on this model: not comparable")
    return EngineSpeed(
        engine_ms_per_token=1000 * statistics.median(engine_times) / n_tokens,
        hf_ms_per_token=1000 * statistics.median(hf_times) / n_tokens,
        n_tokens=n_tokens,
        repetitions=repetitions,
    )


def report(speed: EngineSpeed, device: str) -> str:
    info = device_description(device)
    return (
        f"engine 'large' loop: {speed.engine_ms_per_token:.2f} ms/token | "
        f"HF generate: {speed.hf_ms_per_token:.2f} ms/token | "
        f"ratio engine/HF: {speed.ratio:.3f} (median of {speed.repetitions}, "
        f"{speed.n_tokens} tokens, {info['device_name']}, {info['cpu_threads']} threads, "
        f"torch {info['torch']}, transformers {info['transformers']})"
    )
