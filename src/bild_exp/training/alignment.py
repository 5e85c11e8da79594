"""Prediction alignment (paper Section 3.5.1): teach the small model the large model's outputs.

1. The calibration set: the large model's greedy outputs on the task's training inputs,
   generated in batches and written in shards (atomic renames), so an interrupted run
   resumes at the first missing shard; finally saved as a ``datasets`` dataset.
2. The small model is fine-tuned on (source, large output) pairs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bild_exp.decoding.runner import empty_cache

log = logging.getLogger(__name__)


def encode_sources(
    tokenizer: PreTrainedTokenizerBase, sources: Sequence[str], max_source_length: int
):
    """A padded, truncated batch with its attention mask."""
    return tokenizer(
        list(sources),
        max_length=max_source_length,
        truncation=True,
        padding=True,
        return_tensors="pt",
    )


@torch.inference_mode()
def large_greedy_outputs(
    large: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    max_source_length: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy outputs of ``large`` for a batch of sources (padding handled by the mask)."""
    batch = encode_sources(tokenizer, sources, max_source_length).to(large.device)
    output = large.generate(
        **batch,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        cache=empty_cache(large),
    )
    return tokenizer.batch_decode(output, skip_special_tokens=True)


def write_shard(rows: list[dict[str, str]], path: Path) -> None:
    """Write JSONL to a temporary name, then rename: a shard exists only when complete."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def generate_calibration_set(
    large: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    output_dir: Path,
    batch_size: int = 64,
    shard_size: int = 1024,
    max_source_length: int = 1024,
    max_new_tokens: int = 128,
    outputs_for: Callable[[list[str]], list[str]] | None = None,
):
    """Generate (or resume) the calibration set; return it as a ``datasets.Dataset``
    with columns ``source`` and ``target`` (the large model's output).

    ``outputs_for`` maps a batch of sources to the large model's outputs (default: a
    seq2seq ``large``'s greedy outputs; decoder-only pairs pass their prompt builder's)."""
    if outputs_for is None:

        def outputs_for(batch: list[str]) -> list[str]:
            return large_greedy_outputs(large, tokenizer, batch, max_source_length, max_new_tokens)

    import datasets

    shard_dir = output_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    large.eval()
    n_shards = (len(sources) + shard_size - 1) // shard_size
    for shard_index in range(n_shards):
        path = shard_dir / f"shard-{shard_index:05d}.jsonl"
        if path.exists():
            continue  # done in an earlier, interrupted run
        shard_sources = sources[shard_index * shard_size : (shard_index + 1) * shard_size]
        rows = []
        for start in range(0, len(shard_sources), batch_size):
            batch = shard_sources[start : start + batch_size]
            outputs = outputs_for(list(batch))
            rows += [{"source": s, "target": t} for s, t in zip(batch, outputs, strict=True)]
        write_shard(rows, path)
        log.info("calibration shard %d/%d written", shard_index + 1, n_shards)
    files = [str(shard_dir / f"shard-{i:05d}.jsonl") for i in range(n_shards)]
    dataset = datasets.load_dataset("json", data_files=files, split="train")
    dataset.save_to_disk(str(output_dir / "dataset"))
    return dataset


def calibration_pairs(
    alignment: Any, large: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources, **options
) -> tuple[list[str], list[str]]:
    """(sources, large outputs) of the calibration set that a train config's ``alignment``
    section describes (limit, folder, batch and shard sizes); ``options`` go to
    :func:`generate_calibration_set`."""
    calibration = generate_calibration_set(
        large,
        tokenizer,
        sources[: alignment.limit] if alignment.limit else sources,
        Path(alignment.calibration_dir),
        batch_size=alignment.batch_size,
        shard_size=alignment.shard_size,
        **options,
    )
    return list(calibration["source"]), list(calibration["target"])


@torch.inference_mode()
def token_agreement(
    large: PreTrainedModel,
    small: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    targets: Sequence[str],
    max_source_length: int = 1024,
) -> float:
    """Fraction of target positions where the small model's argmax equals the large model's
    (teacher-forced on ``targets``, e.g. the calibration outputs)."""
    batch = encode_sources(tokenizer, sources, max_source_length)
    labels = tokenizer(text_target=list(targets), padding=True, return_tensors="pt")["input_ids"]
    mask = labels != tokenizer.pad_token_id
    labels = labels.masked_fill(~mask, -100)
    large_pred = large(**batch, labels=labels).logits.argmax(-1)
    small_pred = small(**batch, labels=labels).logits.argmax(-1)
    return ((large_pred == small_pred) & mask).sum().item() / mask.sum().item()
