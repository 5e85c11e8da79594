"""Small models that share tensors with their large model, shipped without them.

A small model cut from a large one (:func:`bild_exp.training.causal.truncated_model`)
keeps the large model's embeddings and head unchanged; its folder stores only its own
tensors plus ``shared_weights.json``, which names the shared tensors and a digest of the
large model's embeddings. Loading takes the shared tensors from the loaded large model
(the same memory) after checking the digest, so a small model is never paired with a
large one it was not cut from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from bild_exp.errors import BildError

MARKER = "shared_weights.json"


class SharedWeightsError(BildError, ValueError):
    """A small model's shared tensors do not match the large model it is paired with."""


def embedding_digest(model: PreTrainedModel) -> str:
    weights = model.get_input_embeddings().weight.detach().to(torch.float32).cpu().contiguous()
    return hashlib.sha256(weights.numpy().tobytes()).hexdigest()


def shared_names(model: PreTrainedModel) -> list[str]:
    """State-dict names of the input embeddings and the head (one name when tied)."""
    embeddings = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return [
        name
        for name, tensor in model.state_dict(keep_vars=True).items()
        if tensor is embeddings or tensor is head
    ]


def save_without_shared(
    model: PreTrainedModel, large: PreTrainedModel, output_dir: Path, dtype: str = "bfloat16"
) -> None:
    """Save ``model``'s own tensors (as ``dtype``), config and marker; not the shared ones."""
    output_dir.mkdir(parents=True, exist_ok=True)
    shared = set(shared_names(model))
    own = {
        name: tensor.detach().to(getattr(torch, dtype)).contiguous()
        for name, tensor in model.state_dict().items()
        if name not in shared
    }
    save_file(own, str(output_dir / "model.safetensors"))
    model.config.save_pretrained(output_dir)
    model.generation_config.save_pretrained(output_dir)
    marker = {"shared_with": "large", "tensors": sorted(shared)}
    marker["large_embedding_sha256"] = embedding_digest(large)
    (output_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def has_shared_weights(location: str) -> bool:
    return (Path(location) / MARKER).is_file()


def load_with_shared(
    location: str, large: PreTrainedModel, dtype: torch.dtype, field: str = "small"
) -> PreTrainedModel:
    """The small model of ``location``, its shared tensors taken from ``large``."""
    folder = Path(location)
    marker = json.loads((folder / MARKER).read_text())
    if marker["large_embedding_sha256"] != embedding_digest(large):
        raise SharedWeightsError(
            f"pair.{field}={location!r} was cut from another large model (its embedding digest "
            "differs from pair.large's): accepted the large model it was trained with"
        )
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    result = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    missing = set(result.missing_keys) - set(marker["tensors"]) - set(shared_names(model))
    if missing or result.unexpected_keys:
        raise SharedWeightsError(
            f"pair.{field}={location!r} does not match its config: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]}"
        )
    model.get_input_embeddings().weight = large.get_input_embeddings().weight
    model.get_output_embeddings().weight = large.get_output_embeddings().weight
    return model.to(large.device)
