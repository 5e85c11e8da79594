"""Per-depth validation loss of early-exit models: ``python scripts/exit_losses.py MODEL_DIR ...``.

Reads each decoder depth's exit (the model's final norm and head on that layer's output)
on the first ``--limit`` validation pairs of the demo task and writes
``<MODEL_DIR>/exit_losses.json`` (token cross-entropy per depth; the last is the full model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from bild_exp.data.tasks import load_examples, task_from_config
from bild_exp.training.exit_loss import depth_losses
from bild_exp.training.finetune import tokenize_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    from hydra import compose, initialize_config_module

    with initialize_config_module("bild_exp.conf", version_base="1.3"):
        task = task_from_config(compose("sweep", overrides=["+task=demo"]).task)
    examples = load_examples(task, "validation", args.limit)
    for model_dir in args.models:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        data = tokenize_pairs(
            tokenizer,
            [e.source for e in examples],
            [e.target for e in examples],
            task.max_source_length,
            task.max_new_tokens,
        )
        collate = DataCollatorForSeq2Seq(tokenizer, model=model)
        totals, n_tokens = None, 0
        for start in range(0, len(data), args.batch_size):
            batch = collate(
                [data[i] for i in range(start, min(start + args.batch_size, len(data)))]
            )
            count = int((batch["labels"] != -100).sum())
            with torch.no_grad():
                losses = depth_losses(model, batch)
            weighted = [loss * count for loss in losses]
            totals = (
                weighted
                if totals is None
                else [a + b for a, b in zip(totals, weighted, strict=True)]
            )
            n_tokens += count
        result = {
            "split": "validation",
            "n_examples": len(examples),
            "n_target_tokens": n_tokens,
            "loss_by_depth": {str(d + 1): t / n_tokens for d, t in enumerate(totals)},
        }
        (model_dir / "exit_losses.json").write_text(json.dumps(result, indent=2) + "\n")
        print(model_dir, json.dumps(result["loss_by_depth"]))


if __name__ == "__main__":
    main()
