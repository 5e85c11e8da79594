"""The engine benchmark runs and reports a well-formed ratio (speed itself is never asserted)."""

from __future__ import annotations

import torch
from transformers import T5ForConditionalGeneration

from bild_exp.bench.engine_speed import measure_engine_speed, report
from tests.tiny_models import tiny_config


def test_engine_benchmark_reports_a_ratio():
    torch.manual_seed(0)
    config = tiny_config("t5", layers=1, width=32, tie_word_embeddings=True)
    model = T5ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = None
    speed = measure_engine_speed(model, input_length=5, n_tokens=6, repetitions=2, warmup=1)
    assert speed.engine_ms_per_token > 0 and speed.hf_ms_per_token > 0
    text = report(speed, "cpu")
    assert f"ratio engine/HF: {speed.ratio:.3f}" in text and "torch" in text
