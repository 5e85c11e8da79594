"""Decoder-only training: response-only loss, and alignment of a small model cut from a
(tiny, random) Llama that uses the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from bild_exp import train
from bild_exp.data.prompts import PromptFormat
from bild_exp.models.gguf import converted_folder
from bild_exp.models.shared_weights import MARKER, load_with_shared
from bild_exp.training.causal import (
    IGNORE,
    CausalCollator,
    response_loss,
    tokenize_prompt_pairs,
    truncated_model,
)
from tests.harness_fixtures import CONF_DIR, SMOLLM2, tiny_llama

PROMPT = PromptFormat("Summarize:\n\n{source}", chat=True)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(converted_folder(SMOLLM2))


def test_loss_masks_the_prompt(tokenizer):
    dataset = tokenize_prompt_pairs(tokenizer, PROMPT, ["a b c", "d e"], ["x y", "z"], 64, 16)
    for row in dataset:
        n_prompt = sum(label == IGNORE for label in row["labels"])
        response = row["labels"][n_prompt:]
        assert row["input_ids"][n_prompt:] == response and response[-1] == tokenizer.eos_token_id
        prompt = tokenizer.decode(row["input_ids"][:n_prompt])
        assert prompt.endswith("<|im_start|>assistant\n") and "Summarize:" in prompt
    batch = CausalCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    model = tiny_llama(tokenizer)
    ours = response_loss(model, batch)
    reference = model(**batch).loss  # HF's loss over the same -100 mask
    assert torch.allclose(ours, reference, atol=1e-5)


def test_truncated_model_keeps_the_large_models_first_layers(tokenizer):
    large = tiny_llama(tokenizer, layers=3)
    small = truncated_model(large, 1)
    assert small.config.num_hidden_layers == 1
    assert small.get_input_embeddings().weight is large.get_input_embeddings().weight
    assert not small.get_input_embeddings().weight.requires_grad
    assert torch.equal(
        small.model.layers[0].mlp.up_proj.weight, large.model.layers[0].mlp.up_proj.weight
    )


def agreement(large, small, dataset, tokenizer) -> tuple[float, float]:
    """(response loss of small on the large's outputs, argmax agreement on them)."""
    batch = CausalCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        loss = response_loss(small, batch).item()
        keep = batch["labels"][:, 1:] != IGNORE
        large_pred = large(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        small_pred = small(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        same = large_pred[:, :-1].argmax(-1)[keep] == small_pred[:, :-1].argmax(-1)[keep]
    return loss, same.float().mean().item()


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_alignment_lowers_loss_and_raises_agreement(tokenizer, tmp_path):
    # untied: a random model with tied embeddings mostly predicts its input token, so any
    # cut of it would already "agree"; no stop string: the random model writes "\n" first
    large = tiny_llama(tokenizer, layers=3, seed=1, tied=False)
    large_dir = tmp_path / "large"
    large.save_pretrained(large_dir)
    tokenizer.save_pretrained(large_dir)
    overrides = [
        "+training=smollm2_align",
        f"pair.large={large_dir}",
        "model.layers=1",
        "train_limit=24",
        "alignment.limit=24",
        "alignment.batch_size=8",
        "alignment.shard_size=16",
        "max_target_length=12",
        "task.stop_strings=null",
        "recipe.max_steps=40",
        "recipe.per_device_train_batch_size=8",
        "recipe.learning_rate=0.003",
        "recipe.warmup_steps=0",
        "recipe.save_steps=1000",
        f"output_dir={tmp_path / 'out'}",
        f"alignment.calibration_dir={tmp_path / 'calibration'}",
        f"export_dir={tmp_path / 'export'}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train.run(cfg)
    calibration = [
        json.loads(line)
        for path in sorted((tmp_path / "calibration" / "shards").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert len(calibration) == 24 and all("target" in row for row in calibration)
    dataset = tokenize_prompt_pairs(
        tokenizer,
        cfg_prompt(),
        [r["source"] for r in calibration[:8]],
        [r["target"] for r in calibration[:8]],
        256,
        12,
    )
    large = AutoModelForCausalLM.from_pretrained(large_dir).eval()
    before = agreement(large, truncated_model(large, 1).eval(), dataset, tokenizer)
    exported = load_with_shared(str(tmp_path / "export"), large, torch.float32).eval()
    after = agreement(large, exported, dataset, tokenizer)
    assert after[0] < before[0]
    assert after[1] > before[1]
    assert (tmp_path / "export" / MARKER).exists()
    assert (tmp_path / "export" / "trainer_state.json").exists()


def cfg_prompt() -> PromptFormat:
    from bild_exp.data.tasks import task_from_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+training=smollm2_align"])
    return task_from_config(cfg.task).prompt_format()


def test_exit_losses_read_each_depth_like_the_truncated_model(tokenizer):
    from bild_exp.decoding.layers import truncated_model as exit_view
    from bild_exp.training.causal import response_losses

    dataset = tokenize_prompt_pairs(tokenizer, PROMPT, ["a b c", "d e"], ["x y", "z"], 64, 16)
    batch = CausalCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    model = tiny_llama(tokenizer, layers=3, tied=False)
    with torch.no_grad():
        losses = response_losses(model, batch, [1, 2, 3])
        assert torch.allclose(losses[2], response_loss(model, batch))
        for depth in (1, 2):  # the first `depth` layers run as a model of their own
            view = exit_view(model, depth)
            assert torch.allclose(losses[depth - 1], response_loss(view, batch), atol=1e-5)
        assert len({round(float(loss), 4) for loss in losses}) == 3


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
@pytest.mark.parametrize(("mode", "depths"), [("early_exit", [1, 3]), ("calm", [1, 2, 3])])
def test_exit_loss_training_of_a_decoder_only_model(tokenizer, tmp_path, mode, depths):
    from bild_exp.training.causal import response_losses

    large = tiny_llama(tokenizer, layers=3, seed=2, tied=False)
    large_dir = tmp_path / "large"
    large.save_pretrained(large_dir)
    tokenizer.save_pretrained(large_dir)
    overrides = [
        f"+training=smollm2_{mode}",
        f"pair.large={large_dir}",
        "pair.early_exit_layers=1",
        "train_limit=16",
        "max_target_length=12",
        "recipe.max_steps=30",
        "recipe.per_device_train_batch_size=8",
        "recipe.learning_rate=0.003",
        "recipe.warmup_steps=0",
        "recipe.save_steps=1000",
        "recipe.logging_steps=10",
        f"output_dir={tmp_path / 'out'}",
        f"export_dir={tmp_path / 'export'}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train.run(cfg)
    from bild_exp.data.tasks import load_examples, task_from_config

    task = task_from_config(cfg.task)
    examples = load_examples(task, "train", 16)
    dataset = tokenize_prompt_pairs(
        tokenizer,
        task.prompt_format(),
        [e.source for e in examples],
        [e.target for e in examples],
        256,
        12,
    )
    batch = CausalCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    before = AutoModelForCausalLM.from_pretrained(large_dir).eval()
    with torch.no_grad():
        old = response_losses(before, batch, depths)
        new = response_losses(trained, batch, depths)
    assert all(n < o for n, o in zip(new, old, strict=True))  # every trained exit improves
    history = json.loads((tmp_path / "export" / "trainer_state.json").read_text())["log_history"]
    logged = [row for row in history if "loss" in row]
    assert logged and all(f"loss_depth_{depth}" in logged[0] for depth in depths)
    assert not (tmp_path / "export" / MARKER).exists()  # a whole model, nothing shared
