"""``python -m bild_exp.train`` for decoder-only pairs (``pair.architecture: decoder-only``).

- ``mode=finetune``: the model learns the task's references after the task's prompt.
- ``mode=align``: it learns the large model's greedy outputs for the training prompts
  (the calibration set, generated in resumable shards; paper Section 3.5.1).
- ``mode=early_exit`` / ``mode=calm``: the model (usually the large one, ``model.init:
  pretrained`` with ``model.name_or_path: ${pair.large}``) learns the references with the
  exit loss ``sum_i w_i L_i``, each ``L_i`` on the response tokens read out after ``i``
  layers (:mod:`bild_exp.training.exit_loss`); BiLD then runs its first
  ``pair.early_exit_layers`` layers as the small model, CALM exits per token.

``model.init: truncate`` cuts the small model from the large one (embeddings, final norm
and head plus its first ``model.layers`` layers; embeddings and head stay shared and frozen);
``model.init: pretrained`` starts from ``model.name_or_path``. The export keeps only the
tensors the small model does not share with the large one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from bild_exp.data.tasks import TaskSpec, load_examples, resolve_path
from bild_exp.errors import InvalidParameterError
from bild_exp.models.pair import checkpoint_location
from bild_exp.models.shared_weights import save_without_shared
from bild_exp.training.alignment import calibration_pairs
from bild_exp.training.causal import (
    causal_greedy_outputs,
    check_truncation,
    tokenize_prompt_pairs,
    truncated_model,
)
from bild_exp.training.exit_loss import exit_loss_setting
from bild_exp.training.finetune import TRAINER_STATE, finetune
from bild_exp.wandb_setup import report_to

log = logging.getLogger(__name__)
INITS = ("truncate", "pretrained")


def load_large(cfg: DictConfig) -> PreTrainedModel:
    name = cfg.alignment.large or cfg.pair.large
    location = checkpoint_location(name, "large")
    return AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()


def build_model(model_cfg: DictConfig, large: PreTrainedModel, large_name: str) -> PreTrainedModel:
    """The model to train: a cut of ``large`` (``truncate``) or a checkpoint (``pretrained``;
    ``large`` itself when it names the large model)."""
    init = model_cfg.get("init")
    if init not in INITS:
        raise InvalidParameterError(
            f"model.init={init!r} is invalid for a decoder-only pair: accepted {', '.join(INITS)}"
        )
    if init == "truncate":
        check_truncation(large, model_cfg.layers)
        return truncated_model(large, model_cfg.layers)
    if model_cfg.name_or_path == large_name:  # early exit / CALM train the large itself
        return large
    location = checkpoint_location(model_cfg.name_or_path, "small")
    return AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)


def training_targets(
    cfg: DictConfig, task: TaskSpec, large: PreTrainedModel, tokenizer: Any, sources: list[str]
) -> tuple[list[str], list[str] | None]:
    """(sources, targets): the references (finetune, early_exit, calm) or the large model's
    outputs (align)."""
    if cfg.mode != "align":
        return sources, None
    prompt = task.prompt_format()

    def outputs_for(batch: list[str]) -> list[str]:
        return causal_greedy_outputs(
            large,
            tokenizer,
            prompt,
            batch,
            cfg.max_source_length,
            cfg.max_target_length,
            task.stop_strings,
        )

    return calibration_pairs(cfg.alignment, large, tokenizer, sources, outputs_for=outputs_for)


def train_causal(cfg: DictConfig, task: TaskSpec) -> Path:
    """Train (and export) a decoder-only small model as configured; return the final folder."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_location(cfg.pair.tokenizer, "tokenizer"))
    prompt = task.prompt_format()
    prompt.check_tokenizer(tokenizer, cfg.pair.tokenizer)
    torch.manual_seed(cfg.model.get("seed", 0))
    large = load_large(cfg)
    model = build_model(cfg.model, large, cfg.alignment.large or cfg.pair.large)
    exit_loss = exit_loss_setting(cfg, model)
    if exit_loss:
        log.info("early-exit loss over depths %s with weights %s", *exit_loss)
    examples = load_examples(task, cfg.train_split, cfg.train_limit)
    sources, outputs = training_targets(cfg, task, large, tokenizer, [e.source for e in examples])
    targets = outputs if outputs is not None else [e.target for e in examples]
    lengths = (cfg.max_source_length, cfg.max_target_length)
    train_dataset = tokenize_prompt_pairs(tokenizer, prompt, sources, targets, *lengths)
    final_dir = finetune(
        model,
        tokenizer,
        train_dataset,
        None,
        Path(cfg.output_dir),
        OmegaConf.to_container(cfg.recipe, resolve=True),
        report_to(cfg.logger),
        exit_loss,
        causal=True,
    )
    if cfg.export_dir:
        export_dir = resolve_path(cfg.export_dir)
        if model is large:  # a whole model of its own (early exit / CALM)
            model.to(getattr(torch, cfg.export_dtype)).save_pretrained(export_dir)
            tokenizer.save_pretrained(export_dir)
        else:  # only the tensors it does not share with the large model
            save_without_shared(model, large, export_dir, cfg.export_dtype)
        shutil.copyfile(final_dir / TRAINER_STATE, export_dir / TRAINER_STATE)
        log.info("exported to %s", export_dir)
    return final_dir
