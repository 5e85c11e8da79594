"""What identifies a results folder's records: the settings that must match for records
to share a folder (``compat.json``) and the data slice's fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

from omegaconf import DictConfig

from bild_exp.data.tasks import Example, TaskSpec
from bild_exp.harness.checks import engine_cpu_kernels
from bild_exp.harness.plan import RunConfig
from bild_exp.harness.settings import resolve_settings


def dataset_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.id}\x00{example.source}\x00{example.target}\x01".encode())
    return digest.hexdigest()


def compatibility(
    cfg: DictConfig, task: TaskSpec, device: dict[str, Any], runs: list[RunConfig]
) -> dict[str, Any]:
    """What must match for records to share a folder (the data limit may grow).

    The early-exit depth and CALM's model count only when a planned run uses them, so
    folders of sweeps without them keep their fingerprint.
    """
    settings = resolve_settings(cfg)
    compile_mode = settings.decode.compile_mode
    uses = {
        "early_exit_layers": any(run.small_variant == "early_exit" for run in runs),
        "calm_model": any(run.method == "calm" for run in runs),
    }
    return {
        "task": task.name,
        "dataset": task.hub_id or str(task.data_files),
        "split": settings.split,
        "source_prefix": task.source_prefix,
        "large": cfg.pair.large,
        "small": cfg.pair.small,
        "small_aligned": cfg.pair.get("small_aligned"),
        "dtype": cfg.pair.dtype,
        "device": device["device_name"],
        # a baseline is never reused across library versions or matmul precision settings
        "torch": device["torch"],
        "transformers": device["transformers"],
        "float32_matmul_precision": device["float32_matmul_precision"],
        "cuda_matmul_allow_tf32": device["cuda_matmul_allow_tf32"],
        "max_new_tokens": settings.decode.max_new_tokens,
        "max_source_length": task.max_source_length,
        **{name: cfg.pair.get(name) for name, used in uses.items() if used},
        # compiled and eager timings never share a folder (eager folders keep their key),
        # nor do two compile modes (default-mode folders keep theirs)
        **({"engine_compile": True} if compile_mode else {}),
        **({"engine_compile_mode": compile_mode} if compile_mode not in (None, "default") else {}),
        # prepacked kernels round differently from plain ones (folders from before keep theirs)
        **({"engine_cpu_kernels": "prepacked"} if engine_cpu_kernels(cfg) == "prepacked" else {}),
    }


def short_hash(value: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted(value.items())).encode()).hexdigest()[:16]
