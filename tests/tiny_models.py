"""Tiny random models of several families, built from configs, in float64.

float64 keeps argmax ties between a one-token step and a multi-token pass from
flipping, so exactness tests compare real algorithmic equality, not rounding.
"""

from __future__ import annotations

import functools

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
    T5ForConditionalGeneration,
)

from bild_exp.decoding import GenerationResult, generate
from bild_exp.training.exit_loss import decoder_hidden_states, weighted_exit_loss

VOCAB_SIZE = 64
EOS = 1
FAMILIES = ("t5", "bart", "gpt2", "llama")


def _t5_fields(layers: int, width: int) -> dict:
    return {
        "d_model": width,
        "d_kv": 8,
        "d_ff": 2 * width,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "num_heads": 4,
        "decoder_start_token_id": 0,
        "pad_token_id": 0,
        "eos_token_id": EOS,
        "tie_word_embeddings": False,
    }


def _bart_fields(layers: int, width: int) -> dict:
    return {
        "d_model": width,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 2 * width,
        "decoder_ffn_dim": 2 * width,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": EOS,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "tie_word_embeddings": False,
    }


def _gpt2_fields(layers: int, width: int) -> dict:
    return {
        "n_embd": width,
        "n_layer": layers,
        "n_head": 4,
        "n_positions": 256,
        "bos_token_id": 2,
        "eos_token_id": EOS,
        "tie_word_embeddings": False,
    }


def _llama_fields(layers: int, width: int) -> dict:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": 2,
        "eos_token_id": EOS,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    }


# family -> (config class, model class, the family's tiny defaults for layers x width)
FAMILY_CLASSES = {
    "t5": (T5Config, T5ForConditionalGeneration, _t5_fields),
    "bart": (BartConfig, BartForConditionalGeneration, _bart_fields),
    "gpt2": (GPT2Config, GPT2LMHeadModel, _gpt2_fields),
    "llama": (LlamaConfig, LlamaForCausalLM, _llama_fields),
}


def tiny_config(
    family: str, layers: int, width: int, *, vocab_size: int = VOCAB_SIZE, **fields
) -> PretrainedConfig:
    """The one tiny-model config of every test: ``family``'s defaults for ``layers`` x
    ``width``, with ``fields`` replacing any of them (a real tokenizer's size and special
    tokens, head counts, tied embeddings, a deeper decoder, ...)."""
    config_class, _, defaults = FAMILY_CLASSES[family]
    return config_class(vocab_size=vocab_size, **{**defaults(layers, width), **fields})


def random_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """A random float32 model of ``config`` in eval mode, its weights drawn after
    ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return FAMILY_CLASSES[config.model_type][1](config).eval()


SEPARATOR = 2  # between prompt and continuation for decoder-only models
# The synthetic task's next-token map over the non-special tokens 3..VOCAB_SIZE-1.
CHAIN = torch.cat(
    [
        torch.arange(3),
        3 + torch.randperm(VOCAB_SIZE - 3, generator=torch.Generator().manual_seed(7)),
    ]
)


def tiny_model(family: str, seed: int, layers: int, width: int, **fields) -> PreTrainedModel:
    """A random float64 model of ``family`` (not trained); ``fields`` as in :func:`tiny_config`."""
    model = random_model(tiny_config(family, layers, width, **fields), seed).double()
    model.generation_config.pad_token_id = 0
    return model


def synthetic_batch(
    batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources of 5-10 random tokens; the target starts from the source's first token and
    follows a fixed permutation chain for as many tokens as the source has, then EOS."""
    length = int(torch.randint(5, 11, (1,), generator=generator))
    source = torch.randint(3, VOCAB_SIZE, (batch_size, length), generator=generator)
    chain = [CHAIN[source[:, 0]]]
    for _ in range(length - 1):
        chain.append(CHAIN[chain[-1]])
    target = torch.cat([torch.stack(chain, dim=1), torch.full((batch_size, 1), EOS)], dim=1)
    return source, target


def train_briefly(
    model: PreTrainedModel, steps: int, seed: int, exit_depths: tuple[int, ...] = ()
) -> PreTrainedModel:
    """Fit the synthetic task for a few steps so greedy outputs are varied, not degenerate.

    With ``exit_depths`` the loss is the equal-weight average of those depths' exit losses.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = [1 / len(exit_depths) for _ in exit_depths]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        source, target = synthetic_batch(32, generator)
        if model.config.is_encoder_decoder:
            inputs = {"input_ids": source, "labels": target}
        else:
            separator = torch.full((source.shape[0], 1), SEPARATOR)
            sequence = torch.cat([source, separator, target], dim=1)
            labels = sequence.clone()
            labels[:, : source.shape[1] + 1] = -100
            inputs = {"input_ids": sequence, "labels": labels}
        outputs = model(**inputs, output_hidden_states=bool(exit_depths))
        loss = outputs.loss
        if exit_depths:
            hidden = decoder_hidden_states(model, outputs)
            loss = weighted_exit_loss(model, hidden, loss, inputs["labels"], exit_depths, weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@functools.cache
def _trained_pair(family: str, seed: int) -> tuple[PreTrainedModel, PreTrainedModel]:
    large = train_briefly(tiny_model(family, 1000 + seed, layers=2, width=64), 150, seed)
    small = train_briefly(tiny_model(family, 2000 + seed, layers=1, width=32), 60, seed)
    return large, small


EARLY_EXIT_FAMILIES = ("t5", "gpt2", "llama")
EARLY_EXIT_DEPTH = 4


@functools.cache
def tiny_early_exit_model(family: str) -> PreTrainedModel:
    """A 4-layer model trained with the average of its depth-1, -2 and -4 exit losses."""
    model = tiny_model(family, 3000, layers=EARLY_EXIT_DEPTH, width=64)
    # fewer steps for decoder-only models: they learn the chain task faster, and a depth-1
    # exit that already equals the full model would make the exactness tests trivial
    steps = 150 if model.config.is_encoder_decoder else 100
    return train_briefly(model, steps, 0, exit_depths=(1, 2, EARLY_EXIT_DEPTH))


def tiny_pair(family: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedModel]:
    """(large, small) of one family, briefly trained on one synthetic task so they
    partly agree: a 2-layer width-64 model and a less trained 1-layer width-32 one."""
    return _trained_pair(family, seed)


def prompt(family: str, seed: int, length: int = 7) -> torch.Tensor:
    """A ``(1, L)`` input of the synthetic task (decoder-only prompts end with the separator)."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(3, VOCAB_SIZE, (1, length), generator=generator)
    if family in ("gpt2", "llama"):
        source = torch.cat([source, torch.tensor([[SEPARATOR]])], dim=1)
    return source


def deep_decoder_t5(seed: int = 5) -> PreTrainedModel:
    """A random float64 T5 with one encoder and three decoder layers (the demo large
    model's shape: more decoder than encoder layers), as wide as the tiny pair's large T5."""
    return tiny_model("t5", seed, layers=1, width=64, num_decoder_layers=3)


def decode_with(
    method: str, large, small, input_ids: torch.Tensor, max_new_tokens: int, **options
) -> GenerationResult:
    """``generate`` as the engine tests call it: each method gets only the models it uses
    (``small`` for the small baseline, ``large`` for the single-model methods)."""
    return generate(
        method,
        large=None if method == "small" else large,
        small=None if method in ("large", "calm", "prompt_lookup") else small,
        input_ids=input_ids,
        max_new_tokens=max_new_tokens,
        **options,
    )
