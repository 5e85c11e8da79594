"""Decoder-only (causal LM) training: prompts from the task, loss on the response only.

- :func:`tokenize_prompt_pairs`: each example is the task's prompt (its template and chat
  template, as the harness builds it) followed by the response and the end token; labels
  are ``-100`` on the prompt, so only response tokens carry loss.
- :class:`ResponseOnlyTrainer` runs the decoder over the whole sequence but the output head
  only at response positions: with a 49k vocabulary the head costs as much as many layers,
  and prompts are several times longer than responses.
- :func:`truncated_model`: a small model cut from a large one (its embeddings, final norm
  and head, plus its first ``k`` layers), whose shared tensors are frozen so that only its
  own layers need shipping (:mod:`bild_exp.models.shared_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Trainer

from bild_exp.data.prompts import PromptFormat, prompt_input
from bild_exp.decoding.layers import decoder_depth, decoder_layers, exit_logits
from bild_exp.decoding.sequence import StopStrings
from bild_exp.training.exit_loss import ExitLossTrainer

IGNORE = -100
SHARED_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def tokenize_prompt_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    sources: Sequence[str],
    targets: Sequence[str],
    max_source_length: int,
    max_target_length: int,
):
    """A ``datasets.Dataset`` of input_ids (prompt + response + end token) and labels."""
    import datasets

    end = tokenizer.eos_token_id
    rows: dict[str, list] = {"input_ids": [], "labels": []}
    for source, target in zip(sources, targets, strict=True):
        prompt_ids = prompt_input(source, prompt, tokenizer, max_source_length).ids
        response = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_length]
        response = response + ([end] if end is not None else [])
        rows["input_ids"].append(prompt_ids + response)
        rows["labels"].append([IGNORE] * len(prompt_ids) + response)
    return datasets.Dataset.from_dict(rows)


class CausalCollator:
    """Right-pads input_ids (pad id), labels (-100) and builds the attention mask."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)

        def pad(values: list[int], fill: int) -> list[int]:
            return list(values) + [fill] * (width - len(values))

        return {
            "input_ids": torch.tensor([pad(f["input_ids"], self.pad_token_id) for f in features]),
            "labels": torch.tensor([pad(f["labels"], IGNORE) for f in features]),
            "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features]),
        }


def response_losses(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], depths: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """Mean cross-entropy of the response tokens read out after each decoder depth (1-based;
    default: the last only), the head applied at response positions only.

    Position t predicts token t + 1, so the hidden states at ``labels[:, 1:] != -100``
    (shifted back by one) are the ones that need logits. An intermediate depth is read out
    with the model's own final norm and head (:func:`~bild_exp.decoding.layers.exit_logits`).
    """
    n_layers = decoder_depth(model)
    depths = [n_layers] if depths is None else list(depths)
    intermediate = any(depth < n_layers for depth in depths)
    outputs = model.get_decoder()(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=intermediate,
    )
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE  # (batch, length - 1)
    losses = []
    for depth in depths:
        if depth == n_layers:  # already normed by the decoder
            logits = model.get_output_embeddings()(outputs.last_hidden_state[:, :-1][keep])
        else:  # hidden_states[depth] is the output of the first `depth` layers
            logits = exit_logits(model, outputs.hidden_states[depth][:, :-1][keep])
        losses.append(F.cross_entropy(logits.float(), targets[keep]))  # (n_response, vocab)
    return losses


def response_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the response tokens (see :func:`response_losses`)."""
    return response_losses(model, batch)[0]


class ResponseOnlyTrainer(Trainer):
    """``Trainer`` whose loss is :func:`response_loss`."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = response_loss(model, inputs)
        return (loss, None) if return_outputs else loss


class ResponseExitTrainer(ExitLossTrainer):
    """The early-exit / CALM loss ``sum_i w_i L_i`` with each ``L_i`` over response tokens only."""

    def depth_losses(self, model, inputs) -> tuple[None, list[torch.Tensor]]:
        unwrapped = self.accelerator.unwrap_model(model)
        return None, response_losses(unwrapped, inputs, self.exit_depths)


def truncated_model(large: PreTrainedModel, layers: int) -> PreTrainedModel:
    """A copy of ``large`` keeping its first ``layers`` decoder layers; embeddings and head
    are shared with ``large`` (same tensors) and frozen, everything else is trainable."""
    config = large.config.__class__.from_dict(large.config.to_dict())
    config.num_hidden_layers = layers
    small = AutoModelForCausalLM.from_config(config)
    own = {k: v for k, v in large.state_dict().items() if not k.startswith("model.layers.")}
    kept_layers = {
        k: v
        for k, v in large.state_dict().items()
        if k.startswith("model.layers.") and int(k.split(".")[2]) < layers
    }
    small.load_state_dict({**own, **kept_layers})
    share_tensors(small, large)
    return small


def share_tensors(small: PreTrainedModel, large: PreTrainedModel) -> None:
    """Make ``small`` use ``large``'s embeddings and head (the same, frozen tensors)."""
    embeddings = large.get_input_embeddings().weight
    embeddings.requires_grad_(False)
    small.get_input_embeddings().weight = embeddings
    head = large.get_output_embeddings().weight
    head.requires_grad_(False)
    small.get_output_embeddings().weight = head


def check_truncation(large: PreTrainedModel, layers: int) -> None:
    depth = len(decoder_layers(large))
    if not 1 <= layers < depth:
        from bild_exp.errors import InvalidParameterError

        raise InvalidParameterError(
            f"model.layers={layers!r} is invalid: accepted 1..{depth - 1} (the large model "
            f"has {depth} layers)"
        )


@torch.inference_mode()
def causal_greedy_outputs(
    large: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptFormat,
    sources: Sequence[str],
    max_source_length: int,
    max_new_tokens: int,
    stop_strings: Sequence[str] | None = None,
) -> list[str]:
    """Greedy outputs of a decoder-only ``large`` for a batch of prompts (left-padded),
    generated text only, cut before the first stop string."""
    prompts = [prompt_input(s, prompt, tokenizer, max_source_length).ids for s in sources]
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    stops = StopStrings.of(stop_strings, tokenizer)
    output = large.generate(
        input_ids=input_ids.to(large.device),
        attention_mask=mask.to(large.device),
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        **({"stop_strings": list(stops.strings), "tokenizer": tokenizer} if stops else {}),
    )
    texts = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [(stops.cut(t) if stops else t).strip() for t in texts]
