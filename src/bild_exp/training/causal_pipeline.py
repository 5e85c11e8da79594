"""``python -m bild_exp.train`` for decoder-only pairs (``pair.architecture: decoder-only``).

- ``mode=finetune``: the model learns the task's references after the task's prompt.
- ``mode=align``: it learns the large model's greedy outputs for the training prompts
  (the calibration set, generated in resumable shards; paper Section 3.5.1).

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
from bild_exp.decoding.params import InvalidParameterError
from bild_exp.harness.models import checkpoint_location
from bild_exp.harness.shared_weights import save_without_shared
from bild_exp.training.alignment import calibration_pairs
from bild_exp.training.causal import (
    causal_greedy_outputs,
    check_truncation,
    tokenize_prompt_pairs,
    truncated_model,
)
from bild_exp.training.finetune import TRAINER_STATE, finetune
from bild_exp.wandb_setup import report_to

log = logging.getLogger(__name__)
CAUSAL_MODES = ("finetune", "align")
INITS = ("truncate", "pretrained")


def load_large(cfg: DictConfig) -> PreTrainedModel:
    name = cfg.alignment.large or cfg.pair.large
    location = checkpoint_location(name, "large")
    return AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()


def build_small(model_cfg: DictConfig, large: PreTrainedModel) -> PreTrainedModel:
    init = model_cfg.get("init")
    if init not in INITS:
        raise InvalidParameterError(
            f"model.init={init!r} is invalid for a decoder-only pair: accepted {', '.join(INITS)}"
        )
    if init == "truncate":
        check_truncation(large, model_cfg.layers)
        return truncated_model(large, model_cfg.layers)
    location = checkpoint_location(model_cfg.name_or_path, "small")
    return AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)


def training_targets(
    cfg: DictConfig, task: TaskSpec, large: PreTrainedModel, tokenizer: Any, sources: list[str]
) -> tuple[list[str], list[str] | None]:
    """(sources, targets): the references (finetune) or the large model's outputs (align)."""
    if cfg.mode == "finetune":
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
    if cfg.mode not in CAUSAL_MODES:
        raise InvalidParameterError(
            f"mode={cfg.mode!r} is not available for decoder-only pairs: accepted "
            f"{', '.join(CAUSAL_MODES)}"
        )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_location(cfg.pair.tokenizer, "tokenizer"))
    prompt = task.prompt_format()
    prompt.check_tokenizer(tokenizer, cfg.pair.tokenizer)
    torch.manual_seed(cfg.model.get("seed", 0))
    large = load_large(cfg)
    model = build_small(cfg.model, large)
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
        causal=True,
    )
    if cfg.export_dir:
        export_dir = resolve_path(cfg.export_dir)
        save_without_shared(model, large, export_dir, cfg.export_dtype)
        shutil.copyfile(final_dir / TRAINER_STATE, export_dir / TRAINER_STATE)
        log.info("exported to %s", export_dir)
    return final_dir
