"""A tiny seq2seq pair and a tiny custom task on disk, for harness tests (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

from bild_exp.training.tokenizer import train_unigram_tokenizer

SENTENCES = [
    ("das haus ist klein .", "the house is small ."),
    ("das haus ist groß .", "the house is big ."),
    ("der hund ist alt .", "the dog is old ."),
    ("die katze ist jung .", "the cat is young ."),
    ("ich sehe den hund .", "i see the dog ."),
    ("ich sehe die katze .", "i see the cat ."),
    ("wir gehen nach hause .", "we go home ."),
    ("das wetter ist gut .", "the weather is good ."),
    ("der tag ist lang .", "the day is long ."),
    ("die nacht ist kurz .", "the night is short ."),
    ("er liest ein buch .", "he reads a book ."),
    ("sie trinkt wasser .", "she drinks water ."),
]


def write_task_files(directory: Path, n: int = 12) -> dict[str, str]:
    """JSONL train/validation/test files with columns id, de, en."""
    files = {}
    for split in ("train", "validation", "test"):
        path = directory / f"{split}.jsonl"
        with open(path, "w") as handle:
            for index in range(n):
                de, en = SENTENCES[index % len(SENTENCES)]
                handle.write(json.dumps({"id": f"{split}-{index}", "de": de, "en": en}) + "\n")
        files[split] = str(path)
    return files


def t5_config(tokenizer, layers: int, width: int) -> T5Config:
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_ff=2 * width,
        d_kv=16,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=layers,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def write_tiny_pair(directory: Path) -> dict[str, str]:
    """Tokenizer plus random large (2 decoder layers), small and 'aligned' small models."""
    texts = [t for pair in SENTENCES for t in pair] * 5
    tokenizer = train_unigram_tokenizer(texts, vocab_size=60, output_dir=directory / "tokenizer")
    paths = {"tokenizer": str(directory / "tokenizer")}
    for name, layers, width, seed in (
        ("large", 2, 32, 0),
        ("small", 1, 16, 1),
        ("small_aligned", 1, 16, 2),
    ):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(t5_config(tokenizer, layers, width))
        model.save_pretrained(directory / name)
        tokenizer.save_pretrained(directory / name)
        paths[name] = str(directory / name)
    return paths
