"""Where each architecture keeps its decoder layers, final norm and head.

Early exit (BiLD's shared-layer small model, CALM) needs to read out a hidden state
after ``k`` decoder layers with the model's own final norm and head, and to run the
first ``k`` layers as a model of their own. This module is the one place that knows
the attribute paths; every other piece asks it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from bild_exp.errors import InvalidParameterError


@dataclass(frozen=True)
class DecoderLayout:
    """Attribute paths (dotted, from the top model) of the decoder's layers and final norm."""

    layers: str
    final_norm: str | None


T5_LAYOUT = DecoderLayout("decoder.block", "decoder.final_layer_norm")
LLAMA_LAYOUT = DecoderLayout("model.layers", "model.norm")
LAYOUTS: dict[str, DecoderLayout] = {
    "t5": T5_LAYOUT,
    "mt5": T5_LAYOUT,
    "llama": LLAMA_LAYOUT,
    "mistral": LLAMA_LAYOUT,
    "qwen2": LLAMA_LAYOUT,
    "qwen3": LLAMA_LAYOUT,
    "gpt2": DecoderLayout("transformer.h", "transformer.ln_f"),
}


def layout_of(model: PreTrainedModel) -> DecoderLayout:
    """The model's decoder layout; a one-line error for an architecture we do not know."""
    model_type = model.config.model_type
    if model_type not in LAYOUTS:
        raise InvalidParameterError(
            f"model_type={model_type!r} is not supported for early exit: accepted "
            f"{', '.join(LAYOUTS)}"
        )
    return LAYOUTS[model_type]


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    return model.get_submodule(layout_of(model).layers)


def decoder_depth(model: PreTrainedModel) -> int:
    """Number of decoder layers the model runs."""
    return len(decoder_layers(model))


def t5_scales_decoder_output(config) -> bool:
    """T5 rescales the decoder output before a tied head (newer releases store it explicitly)."""
    return bool(getattr(config, "scale_decoder_outputs", config.tie_word_embeddings))


def exit_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits read out from an intermediate decoder hidden state with the final norm and head."""
    layout = layout_of(model)
    if layout.final_norm is not None:
        hidden = model.get_submodule(layout.final_norm)(hidden)
    if layout is T5_LAYOUT and t5_scales_decoder_output(model.config):
        hidden = hidden * model.config.d_model**-0.5  # as T5ForConditionalGeneration does
    return model.get_output_embeddings()(hidden)


def _shallow_copy(module: nn.Module) -> nn.Module:
    """A new module object sharing every parameter, with its own child-module table."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def truncated_model(model: PreTrainedModel, n_layers: int) -> PreTrainedModel:
    """A view of ``model`` running only its first ``n_layers`` decoder layers.

    Every parameter (embeddings, encoder, the kept layers, final norm, head) is shared,
    not copied: training or moving ``model`` moves the view too.
    """
    depth = decoder_depth(model)
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or not 1 <= n_layers < depth:
        raise InvalidParameterError(
            f"layers={n_layers!r} is invalid: accepted an integer in 1..{depth - 1} "
            f"(the model has {depth} decoder layers)"
        )
    *parents, leaf = layout_of(model).layers.split(".")
    view = _shallow_copy(model)
    view.config = copy.deepcopy(model.config)
    holder = view
    for name in parents:
        child = _shallow_copy(getattr(holder, name))
        holder._modules[name] = child
        holder = child
    holder._modules[leaf] = nn.ModuleList(list(decoder_layers(model))[:n_layers])
    return view
