"""Training early exits: a weighted average of the losses read out after several decoder depths.

Each exit at depth ``i`` (1-based: after ``i`` decoder layers) predicts with the model's own
final norm and head; the last depth is the model's usual loss.
- BiLD early exit (paper Section 4.4): depths ``[k, L]`` with equal weights,
  ``L = (L_k + L_last) / 2``.
- CALM (Schuster et al. 2022): every depth, ``w_i = i / sum_j j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, Seq2SeqTrainer

from bild_exp.decoding.layers import decoder_depth, exit_logits
from bild_exp.errors import InvalidParameterError

WEIGHT_SCHEMES = ("equal", "depth")


def resolve_exit_layers(layers: Sequence[int | str] | str, n_layers: int) -> list[int]:
    """Sorted unique 1-based exit depths; ``"all"`` is every depth, ``"last"`` is ``n_layers``."""
    if layers == "all":
        return list(range(1, n_layers + 1))
    if isinstance(layers, str) or not layers:
        raise InvalidParameterError(
            f"exit_loss.layers={layers!r} is invalid: accepted 'all' or a non-empty list of "
            f"depths in 1..{n_layers} (or 'last')"
        )
    depths = []
    for layer in layers:
        depth = n_layers if layer == "last" else layer
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= n_layers:
            raise InvalidParameterError(
                f"exit_loss.layers entry={layer!r} is invalid: accepted a depth in 1..{n_layers} "
                "or 'last'"
            )
        depths.append(depth)
    return sorted(set(depths))


def exit_loss_weights(depths: Sequence[int], scheme: str | Sequence[float]) -> list[float]:
    """Weights summing to 1: ``equal``, ``depth`` (``w_i = i / sum_j j``) or given (normalised)."""
    if scheme == "equal":
        raw = [1.0] * len(depths)
    elif scheme == "depth":
        raw = [float(depth) for depth in depths]
    elif isinstance(scheme, str):
        raise InvalidParameterError(
            f"exit_loss.weights={scheme!r} is invalid: accepted {', '.join(WEIGHT_SCHEMES)} "
            "or a list of non-negative numbers, one per exit layer"
        )
    else:
        raw = [float(weight) for weight in scheme]
        if len(raw) != len(depths) or any(w < 0 for w in raw) or sum(raw) <= 0:
            raise InvalidParameterError(
                f"exit_loss.weights={list(scheme)!r} is invalid: accepted {len(depths)} "
                "non-negative numbers (one per exit layer) with a positive sum"
            )
    total = sum(raw)
    return [weight / total for weight in raw]


def exit_loss_setting(cfg: Any, model: PreTrainedModel) -> tuple[list[int], list[float]] | None:
    """(depths, weights) of the training config's early-exit loss, or None for the usual
    final-layer loss: ``exit_loss.layers``/``weights`` when set, else the mode's own
    (``early_exit``: ``[pair.early_exit_layers, last]``, equal; ``calm``: every depth, ``depth``).
    """
    from omegaconf import OmegaConf

    exit_cfg = cfg.get("exit_loss") or {}
    layers, weights = exit_cfg.get("layers"), exit_cfg.get("weights", "equal")
    if layers is None and cfg.mode == "early_exit":  # (L_k + L_last) / 2, paper Section 4.4
        layers, weights = [cfg.pair.early_exit_layers, "last"], "equal"
    elif layers is None and cfg.mode == "calm":  # w_i = i / sum_j j over every layer
        layers, weights = "all", "depth"
    if layers is None:
        return None
    layers = OmegaConf.to_container(layers, resolve=True) if OmegaConf.is_list(layers) else layers
    weights = (
        OmegaConf.to_container(weights, resolve=True) if OmegaConf.is_list(weights) else weights
    )
    depths = resolve_exit_layers(layers, decoder_depth(model))
    return depths, exit_loss_weights(depths, weights)


def exit_losses(
    model: PreTrainedModel,
    decoder_hidden_states: Sequence[torch.Tensor],
    final_loss: torch.Tensor,
    labels: torch.Tensor,
    depths: Sequence[int],
) -> list[torch.Tensor]:
    """``L_i`` for each depth; ``decoder_hidden_states[i]`` is the output of the first ``i`` layers.

    ``labels`` as the model takes them: aligned with the decoder inputs for encoder-decoders,
    equal to the inputs (shifted here) for decoder-only models.
    """
    n_layers = decoder_depth(model)
    if not model.config.is_encoder_decoder:  # position t predicts token t + 1
        labels = labels[:, 1:]
    losses = []
    for depth in depths:
        if depth == n_layers:
            losses.append(final_loss)
            continue
        logits = exit_logits(model, decoder_hidden_states[depth])
        if not model.config.is_encoder_decoder:
            logits = logits[:, :-1]
        losses.append(
            torch.nn.functional.cross_entropy(
                logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100
            )
        )
    return losses


def weighted_exit_loss(
    model: PreTrainedModel,
    decoder_hidden_states: Sequence[torch.Tensor],
    final_loss: torch.Tensor,
    labels: torch.Tensor,
    depths: Sequence[int],
    weights: Sequence[float],
) -> torch.Tensor:
    """``sum_i w_i L_i`` over the exit depths (see :func:`exit_losses`)."""
    losses = exit_losses(model, decoder_hidden_states, final_loss, labels, depths)
    return sum(weight * loss for weight, loss in zip(weights, losses, strict=True))


def depth_losses(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> list[float]:
    """Token cross-entropy of every decoder depth's exit on one batch (the last: the model's)."""
    outputs = model(**batch, output_hidden_states=True)
    hidden = decoder_hidden_states(model, outputs)
    depths = range(1, decoder_depth(model) + 1)
    return [
        float(loss) for loss in exit_losses(model, hidden, outputs.loss, batch["labels"], depths)
    ]


def decoder_hidden_states(model: PreTrainedModel, outputs: Any) -> Sequence[torch.Tensor]:
    """The decoder's per-layer hidden states from a forward run with ``output_hidden_states``."""
    if model.config.is_encoder_decoder:
        return outputs.decoder_hidden_states
    return outputs.hidden_states


class ExitLossTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose training loss is the weighted average over exit depths.

    Each logged training loss comes with the mean loss of every exit depth since the last
    log (``loss_depth_<i>``), so the history in ``trainer_state.json`` shows each exit.
    """

    def __init__(self, *args: Any, exit_depths: Sequence[int], exit_weights: Sequence[float], **kw):
        super().__init__(*args, **kw)
        self.exit_depths, self.exit_weights = list(exit_depths), list(exit_weights)
        self._depth_sums: list[torch.Tensor] = []
        self._depth_steps = 0

    def depth_losses(self, model, inputs) -> tuple[Any, list[torch.Tensor]]:
        """(model outputs, the loss of each exit depth) for one batch."""
        outputs = model(**inputs, output_hidden_states=True)
        unwrapped = self.accelerator.unwrap_model(model)
        hidden = decoder_hidden_states(unwrapped, outputs)
        return outputs, exit_losses(
            unwrapped, hidden, outputs.loss, inputs["labels"], self.exit_depths
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs, losses = self.depth_losses(model, inputs)
        loss = sum(weight * one for weight, one in zip(self.exit_weights, losses, strict=True))
        if model.training:  # kept on the device: no host sync until the next log
            detached = [one.detach() for one in losses]
            if self._depth_sums:
                detached = [a + b for a, b in zip(self._depth_sums, detached, strict=True)]
            self._depth_sums = detached
            self._depth_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._depth_steps:
            for depth, total in zip(self.exit_depths, self._depth_sums, strict=True):
                logs[f"loss_depth_{depth}"] = round(float(total) / self._depth_steps, 4)
            self._depth_sums, self._depth_steps = [], 0
        super().log(logs, *args, **kwargs)
