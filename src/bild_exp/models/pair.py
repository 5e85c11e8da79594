"""Loading a model pair (and its tokenizer) from Hub ids, local folders or the package."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from bild_exp.data.tasks import resolve_path
from bild_exp.decoding import GenerationResult, check_pair, generate
from bild_exp.decoding.api import ARCHITECTURES
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.errors import BildError, InvalidParameterError
from bild_exp.flops import ModelShape
from bild_exp.models.cpu_kernels import prepack_models, resolve_cpu_kernels
from bild_exp.models.gguf import converted_folder, is_gguf
from bild_exp.models.shared_weights import has_shared_weights, load_with_shared
from bild_exp.models.weight_only import (
    QUANTIZED_FORMATS,
    model_bytes,
    quantize_model,
    quantized_twin,
    weights_of,
)

DTYPES = ("float32", "float16", "bfloat16")
# transformers otherwise starts a background thread that can download a second, safetensors
# copy of a `.bin`-only checkpoint (the BiLD authors' models are `.bin` only).
os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")


class ModelLoadError(BildError, OSError):
    """A checkpoint cannot be loaded (not cached while offline, missing folder, ...)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_location(name_or_path: str, field: str = "large") -> str:
    """A folder or Hub id transformers can load: package:// paths resolved, GGUF files
    converted once to a cached folder."""
    if is_gguf(name_or_path):
        return str(converted_folder(name_or_path, field))
    path = resolve_path(name_or_path)
    return str(path) if path.exists() else name_or_path


def load_checkpoint(loader: Any, name: str, name_or_path: str, **kwargs: Any) -> Any:
    location = checkpoint_location(name_or_path, name)
    try:
        return loader.from_pretrained(location, **kwargs)
    except OSError as error:
        raise ModelLoadError(
            f"pair.{name}={name_or_path!r} could not be loaded ({str(error).splitlines()[0][:160]}): "
            "accepted a local folder, a package:// path, or a Hub id that is cached "
            "(download it once with network access; HF_HUB_OFFLINE=1 forbids downloads)"
        ) from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


def own_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a checkpoint, or None when it has none (or none is cached)."""
    location = checkpoint_location(name_or_path)
    path = resolve_path(location)
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError):
        return None


def check_tokenizers(pair_cfg: Any, names: list[str], tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless every named checkpoint that carries a tokenizer has pair.tokenizer's
    vocabulary (same pieces with the same ids): equal vocab_size is not enough."""
    expected = tokenizer.get_vocab()
    for name in names:
        own = own_tokenizer(pair_cfg[name])
        if own is None:
            continue
        actual = own.get_vocab()
        if actual != expected:
            differing = len(set(actual.items()) ^ set(expected.items())) // 2 or 1
            raise InvalidParameterError(
                f"pair.{name}={pair_cfg[name]!r} has its own tokenizer, whose vocabulary differs "
                f"from pair.tokenizer={pair_cfg.tokenizer!r} in about {differing} of "
                f"{len(expected)} entries: accepted models that share pair.tokenizer's vocabulary"
            )


@dataclass(frozen=True)
class LoadSettings:
    """What loading does to the models besides reading them, resolved once from the config:
    the linear layers' kernels and the large model's weight format. (A small variant's
    format is its name: ``int8``/``int4`` are weight-only quantised twins of ``base``.) The
    pipeline records these in the manifest and the fingerprint from this one object."""

    cpu_kernels: str = "plain"  # engine.cpu_kernels resolved: plain | prepacked
    large_weights: str = "float32"  # pair.large_weights: float32, int8 or int4
    int4_group_size: int = 32  # pair.int4_group_size: input columns per int4 scale and zero

    @classmethod
    def for_pair(cls, pair_cfg: Any, cpu_kernels: str = "plain") -> LoadSettings:
        """The pair's weight settings, with ``cpu_kernels`` (already resolved)."""
        return cls(
            cpu_kernels, pair_cfg.get("large_weights") or "float32", int4_group_size(pair_cfg)
        )

    @classmethod
    def of(cls, cfg: Any) -> LoadSettings:
        """From a sweep or bench config: ``engine.cpu_kernels`` resolved for the pair's device
        and dtype (``auto``: prepacked on a CPU with float32), and the pair's weights."""
        dtype = getattr(torch, str(cfg.pair.dtype), None)
        device = resolve_device(cfg.pair.device)
        return cls.for_pair(cfg.pair, resolve_cpu_kernels(cfg.engine.cpu_kernels, device, dtype))


@dataclass
class LoadedPair:
    tokenizer: PreTrainedTokenizerBase
    large: PreTrainedModel | None
    smalls: dict[str, PreTrainedModel | EarlyExit] = field(default_factory=dict)  # by variant
    device: torch.device = torch.device("cpu")
    calm: PreTrainedModel | None = None  # CALM's own model (pair.calm_model), else the large one
    settings: LoadSettings = LoadSettings()  # what loading did to the models

    @property
    def cpu_kernels(self) -> str:
        return self.settings.cpu_kernels

    @property
    def large_weights(self) -> str:
        return self.settings.large_weights

    def weights_report(self) -> dict[str, dict[str, Any]]:
        """Each loaded model's linear-layer weights (float32, int8, int4) and its size in
        bytes (parameters and buffers, each shared tensor once), by role."""
        models = {"large": self.large, **{f"small {v}": m for v, m in self.smalls.items()}}
        return {
            role: {"weights": weights_of(model), "bytes": model_bytes(model)}
            for role, model in models.items()
            if isinstance(model, torch.nn.Module)
        }

    def models_for(
        self, method: str, small_variant: str
    ) -> tuple[PreTrainedModel | None, PreTrainedModel | EarlyExit | None]:
        """(large, small) as ``generate`` takes them: each None where the method does not use it."""
        if method == "calm":
            return self.calm or self.large, None
        large = None if method == "small" else self.large
        single = method == "large" or small_variant == "-"  # e.g. prompt lookup: no small
        small = None if single else self.smalls[small_variant]
        return large, small

    def decode(
        self,
        method: str,
        small_variant: str,
        params: dict[str, Any],
        input_ids: torch.Tensor,
        max_new_tokens: int,
        stop_strings: list[str] | None = None,
        compile_mode: str | None = None,
    ) -> GenerationResult:
        """One example decoded by ``method`` with this pair's models and tokenizer
        (``compile_mode``: None for the eager engine, else the compiled path in that mode)."""
        large, small = self.models_for(method, small_variant)
        return generate(
            method,
            large=large,
            small=small,
            input_ids=input_ids,
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
            tokenizer=self.tokenizer,
            compile=compile_mode is not None,
            compile_mode=compile_mode or "default",
            **params,
        )


# the checkpoint each small variant loads (int8 and int4 quantise it after loading)
SMALL_CHECKPOINTS = {"base": "small", "aligned": "small_aligned", "int8": "small", "int4": "small"}


def model_config(pair_cfg: Any, member: str) -> Any:
    """``pair.<member>``'s config (no weights load)."""
    return load_checkpoint(AutoConfig, member, pair_cfg[member])


def check_early_exit_depth(pair_cfg: Any) -> None:
    """Raise unless pair.early_exit_layers leaves at least one of the large model's layers out."""
    config = model_config(pair_cfg, "large")
    depth = ModelShape.from_config(config).decoder_layers
    layers = pair_cfg.early_exit_layers
    if not 1 <= layers < depth:
        raise InvalidParameterError(
            f"pair.early_exit_layers={layers!r} is invalid: accepted an integer in 1..{depth - 1} "
            f"(pair.large has {depth} decoder layers)"
        )


OVERFLOWING_IN_FLOAT16 = ("t5", "mt5")


def check_half_precision(pair_cfg: Any) -> None:
    """T5 and mT5 overflow to inf/NaN in float16 (a T4 has no fast bfloat16): refuse."""
    if pair_cfg.dtype != "float16":
        return
    model_type = load_checkpoint(AutoConfig, "large", pair_cfg.large).model_type
    if model_type in OVERFLOWING_IN_FLOAT16:
        raise InvalidParameterError(
            f"pair.dtype='float16' is invalid for {model_type} (pair.large={pair_cfg.large!r}): "
            "its activations overflow to inf/NaN in float16; accepted float32 (the paper's) "
            "or bfloat16 on GPUs that run it fast"
        )


def load_tokenizer(pair_cfg: Any) -> PreTrainedTokenizerBase:
    return load_checkpoint(AutoTokenizer, "tokenizer", pair_cfg.tokenizer)


def load_pair(
    pair_cfg: Any,
    variants: list[str],
    need_large: bool = True,
    need_calm: bool = False,
    settings: LoadSettings | None = None,
) -> LoadedPair:
    """Tokenizer, large model and the requested small variants, in eval mode on the device.

    The ``early_exit`` variant is the large model's first ``pair.early_exit_layers`` layers;
    ``need_calm`` loads ``pair.calm_model`` when the pair names one. ``settings``
    (default: the pair's weights, plain kernels): ``cpu_kernels="prepacked"`` swaps every
    model's linear layers for oneDNN-prepacked ones, each shared weight once; weight-only
    quantised layers (small variants ``int8``/``int4``, ``large_weights``) keep their own
    kernels. The large model is quantised after every small is loaded (a
    small cut from it reads its float tensors).
    """
    if pair_cfg.dtype not in DTYPES:
        raise InvalidParameterError(
            f"pair.dtype={pair_cfg.dtype!r} is invalid: accepted {', '.join(DTYPES)}"
        )
    if pair_cfg.architecture not in ARCHITECTURES:
        raise InvalidParameterError(
            f"pair.architecture={pair_cfg.architecture!r} is invalid: accepted {', '.join(ARCHITECTURES)}"
        )
    check_half_precision(pair_cfg)
    settings = settings or LoadSettings.for_pair(pair_cfg)
    device = resolve_device(pair_cfg.device)
    dtype = getattr(torch, pair_cfg.dtype)
    loader = AutoModelForSeq2SeqLM if pair_cfg.architecture == "seq2seq" else AutoModelForCausalLM
    tokenizer = load_tokenizer(pair_cfg)

    def load(name: str, large: PreTrainedModel | None = None) -> PreTrainedModel:
        location = checkpoint_location(pair_cfg[name], name)
        if has_shared_weights(location):  # a small cut from the large: its tensors are reused
            return load_with_shared(location, large or load("large"), dtype, name).eval()
        model = load_checkpoint(loader, name, pair_cfg[name], dtype=dtype)
        return model.to(device).eval()

    members = ["large"] if need_large or "early_exit" in variants else []
    members += [SMALL_CHECKPOINTS[v] for v in variants if v in SMALL_CHECKPOINTS]
    if need_calm and pair_cfg.get("calm_model"):
        members.append("calm_model")
    check_tokenizers(pair_cfg, members, tokenizer)  # before any weights load
    if "early_exit" in variants:  # the depth is checked on the config, before any weights load
        check_early_exit_depth(pair_cfg)
    large = load("large") if need_large or "early_exit" in variants else None
    smalls: dict[str, PreTrainedModel | EarlyExit] = {}
    # the float variants first: a quantised variant of a loaded base small is its twin (no
    # second load of pair.small, whose float copy would only be quantised and released)
    for variant in sorted(variants, key=lambda name: name in QUANTIZED_FORMATS):
        if variant == "early_exit":
            smalls[variant] = EarlyExit(large, layers=pair_cfg.early_exit_layers)
            continue
        if variant in QUANTIZED_FORMATS and "base" in smalls:
            smalls[variant] = quantized_twin(smalls["base"], variant, settings.int4_group_size)
            continue
        smalls[variant] = load(SMALL_CHECKPOINTS[variant], large)
        if large is not None:
            check_pair(large, smalls[variant], pair_cfg.architecture)
        if variant in QUANTIZED_FORMATS:
            quantize_model(smalls[variant], variant, settings.int4_group_size)
    smalls = {variant: smalls[variant] for variant in variants}  # in the order asked for
    calm = load("calm_model") if need_calm and pair_cfg.get("calm_model") else None
    if calm is not None and large is not None:
        check_pair(large, calm, pair_cfg.architecture)
    if large is not None and settings.large_weights in QUANTIZED_FORMATS:
        quantize_model(large, settings.large_weights, settings.int4_group_size)
    if settings.cpu_kernels == "prepacked":
        prepack_models([large, *smalls.values(), calm])
    return LoadedPair(tokenizer, large, smalls, device, calm, settings)


def int4_group_size(pair_cfg: Any) -> Any:
    """``pair.int4_group_size``: input columns per int4 scale and zero (default 32; checked
    by bild_exp.harness.config.checks.check_weight_formats)."""
    value = pair_cfg.get("int4_group_size")
    return 32 if value is None else value
