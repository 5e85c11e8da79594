"""``python -m bild_exp.train``: fine-tune or prediction-align a model (Hydra entry point).

Tests and scripts call :func:`run` with a config built by ``compose``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerBase

from bild_exp.console import library_output_to_log
from bild_exp.data.tasks import load_examples, resolve_path, task_from_config
from bild_exp.errors import InvalidParameterError, one_line_errors
from bild_exp.training.alignment import calibration_pairs
from bild_exp.training.causal_pipeline import train_causal
from bild_exp.training.exit_loss import exit_loss_setting
from bild_exp.training.finetune import build_model, export_model, finetune, tokenize_pairs
from bild_exp.training.tokenizer import train_unigram_tokenizer
from bild_exp.wandb_setup import check_mode, report_to

log = logging.getLogger(__name__)
# early_exit and calm fine-tune with an exit loss (exit_loss.layers/weights override theirs)
MODES = ("finetune", "align", "early_exit", "calm")


def load_tokenizer(cfg: DictConfig, train_texts: list[str]) -> PreTrainedTokenizerBase:
    """Load the configured tokenizer, training it first when asked and not yet saved."""
    path = resolve_path(cfg.tokenizer.name_or_path)
    if cfg.tokenizer.train_vocab_size and not path.exists():
        log.info(
            "training a %d-piece unigram tokenizer into %s", cfg.tokenizer.train_vocab_size, path
        )
        return train_unigram_tokenizer(train_texts, cfg.tokenizer.train_vocab_size, path)
    return AutoTokenizer.from_pretrained(str(path) if path.exists() else cfg.tokenizer.name_or_path)


def model_source(name_or_path: str) -> str:
    path = resolve_path(name_or_path)
    return str(path) if path.exists() else name_or_path


def training_pairs(cfg: DictConfig, task, tokenizer) -> tuple[list[str], list[str], dict]:
    """(sources, targets, model config) for the mode: ground truth, or the large model's outputs."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    examples = load_examples(task, cfg.train_split, cfg.train_limit)
    sources = [task.encoder_text(e.source) for e in examples]
    if cfg.mode != "align":
        return sources, [e.target for e in examples], model_cfg
    alignment = cfg.alignment
    large = AutoModelForSeq2SeqLM.from_pretrained(model_source(alignment.large))
    calibration_sources, outputs = calibration_pairs(
        alignment,
        large,
        tokenizer,
        sources,
        max_source_length=cfg.max_source_length,
        max_new_tokens=cfg.max_target_length,
    )
    if alignment.init == "finetuned":
        model_cfg = {"init": "pretrained", "name_or_path": model_source(alignment.finetuned_small)}
    elif alignment.init != "pretrained":
        raise InvalidParameterError(
            f"alignment.init={alignment.init!r} is invalid: accepted pretrained, finetuned"
        )
    return calibration_sources, outputs, model_cfg


def run(cfg: DictConfig) -> Path:
    """Train as configured; return the folder of the final model."""
    if cfg.mode not in MODES:
        raise InvalidParameterError(f"mode={cfg.mode!r} is invalid: accepted {', '.join(MODES)}")
    check_mode(cfg.logger)  # before hours of calibration or training
    task = task_from_config(cfg.task)
    if cfg.pair.architecture == "decoder-only":
        return train_causal(cfg, task)
    train_examples = load_examples(task, cfg.train_split, cfg.train_limit)
    tokenizer = load_tokenizer(
        cfg, [e.source for e in train_examples] + [e.target for e in train_examples]
    )
    sources, targets, model_cfg = training_pairs(cfg, task, tokenizer)
    if model_cfg.get("init") == "pretrained":
        model_cfg["name_or_path"] = model_source(model_cfg["name_or_path"])
    model = build_model(model_cfg, tokenizer)
    exit_loss = exit_loss_setting(cfg, model)
    if exit_loss:
        log.info("early-exit loss over depths %s with weights %s", *exit_loss)
    lengths = (cfg.max_source_length, cfg.max_target_length)
    train_dataset = tokenize_pairs(tokenizer, sources, targets, *lengths)
    eval_dataset = None
    if cfg.recipe.get("eval_strategy", "no") != "no" and cfg.eval_limit != 0:
        eval_examples = load_examples(task, cfg.eval_split, cfg.eval_limit)
        eval_dataset = tokenize_pairs(
            tokenizer,
            [task.encoder_text(e.source) for e in eval_examples],
            [e.target for e in eval_examples],
            *lengths,
        )
    trainer_args = OmegaConf.to_container(cfg.recipe, resolve=True)
    final_dir = finetune(
        model,
        tokenizer,
        train_dataset,
        eval_dataset,
        Path(cfg.output_dir),
        trainer_args,
        report_to(cfg.logger),
        exit_loss,
    )
    if cfg.export_dir:
        export_model(final_dir, resolve_path(cfg.export_dir), cfg.export_dtype)
        log.info("exported to %s", cfg.export_dir)
    return final_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with one_line_errors("bild_exp.train", lambda: interrupted_note(cfg)), library_output_to_log():
        run(cfg)


def interrupted_note(cfg: DictConfig) -> str:
    return (
        f"the Trainer's last checkpoint in {cfg.output_dir} is kept and calibration shards are "
        "reused; the same command starts again from them"
    )


if __name__ == "__main__":
    main()
