"""Fine-tuning a seq2seq model on (source, target) pairs with Hugging Face's Seq2SeqTrainer.

Checkpoints go to ``output_dir/checkpoint-*`` and a run resumes from the newest one;
the final model and tokenizer go to ``output_dir/final``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from bild_exp.errors import InvalidParameterError
from bild_exp.training.causal import CausalCollator, ResponseExitTrainer, ResponseOnlyTrainer
from bild_exp.training.exit_loss import ExitLossTrainer

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"


def build_model(model_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A seq2seq model from a checkpoint (``init: pretrained``) or a config (``init: scratch``)."""
    init = model_cfg.get("init", "pretrained")
    if init == "pretrained":
        # float32 master weights even when the checkpoint is stored in bf16 (shipped models)
        return AutoModelForSeq2SeqLM.from_pretrained(model_cfg["name_or_path"], dtype=torch.float32)
    if init != "scratch":
        raise InvalidParameterError(f"model.init={init!r} is invalid: accepted pretrained, scratch")
    architecture = dict(model_cfg["architecture"])
    model_type = architecture.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **architecture,
    )
    torch.manual_seed(model_cfg.get("seed", 0))
    return AutoModelForSeq2SeqLM.from_config(config)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    targets: Sequence[str],
    max_source_length: int,
    max_target_length: int,
):
    """A ``datasets.Dataset`` with input_ids, attention_mask and labels."""
    import datasets

    raw = datasets.Dataset.from_dict({"source": list(sources), "target": list(targets)})

    def encode(batch: dict[str, list[str]]) -> dict[str, Any]:
        features = tokenizer(batch["source"], max_length=max_source_length, truncation=True)
        features["labels"] = tokenizer(
            text_target=batch["target"], max_length=max_target_length, truncation=True
        )["input_ids"]
        return features

    return raw.map(encode, batched=True, remove_columns=["source", "target"])


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset,
    eval_dataset,
    output_dir: Path,
    trainer_args: dict[str, Any],
    report_to: str = "none",
    exit_loss: tuple[list[int], list[float]] | None = None,
    causal: bool = False,
) -> Path:
    """Train with Seq2SeqTrainer, resuming from the newest checkpoint; return ``output_dir/final``.

    ``exit_loss`` = (depths, weights) trains early exits with the weighted exit loss instead
    of the final layer's loss alone (see :mod:`bild_exp.training.exit_loss`).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    # pinned host memory only speeds up copies to a GPU (without one, torch warns per loader)
    trainer_args = {"dataloader_pin_memory": torch.cuda.is_available(), **trainer_args}
    args = Seq2SeqTrainingArguments(output_dir=str(output_dir), report_to=report_to, **trainer_args)
    trainer_class, extra = Seq2SeqTrainer, {}
    collator: Any = DataCollatorForSeq2Seq(tokenizer, model=model)
    if exit_loss is not None:
        trainer_class = ExitLossTrainer
        extra = {"exit_depths": exit_loss[0], "exit_weights": exit_loss[1]}
    if causal:  # decoder-only: the loss of the response tokens only
        trainer_class = ResponseExitTrainer if exit_loss is not None else ResponseOnlyTrainer
        collator = CausalCollator(pad_token_id(tokenizer))
    trainer = trainer_class(
        **extra,
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
    )
    last_checkpoint = get_last_checkpoint(str(output_dir))
    if last_checkpoint:
        log.info("resuming from %s", last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(final_dir)
    trainer.state.save_to_json(
        str(final_dir / TRAINER_STATE)
    )  # the loss history, shipped with the model
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    return final_dir


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def export_model(source_dir: Path, target_dir: Path, dtype: str = "bfloat16") -> None:
    """Save a trained model and its tokenizer as compact safetensors (for shipping)."""
    from transformers import AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(source_dir)
    model.to(getattr(torch, dtype)).save_pretrained(target_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(source_dir).save_pretrained(target_dir)
    if (source_dir / TRAINER_STATE).exists():
        shutil.copyfile(source_dir / TRAINER_STATE, target_dir / TRAINER_STATE)
