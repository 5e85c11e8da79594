"""Provenance of a results folder: code version, libraries, device, config, data."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bild_exp.lockfile import lock_report

LIBRARIES = (
    "torch",
    "transformers",
    "datasets",
    "sacrebleu",
    "rouge-score",
    "hydra-core",
    "wandb",
    "pandas",
)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(
    cfg: DictConfig,
    examples: list,
    items: list,
    n_skipped: dict[str, int],
    device: dict[str, Any],
    dataset_fingerprint: str,
) -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "lock": lock_report(),
        "device": device,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dataset_fingerprint": dataset_fingerprint,
        "n_examples": len(examples),
        **n_skipped,
        "n_truncated_sources": sum(item.truncated for item in items),
    }


def peak_memory_gb() -> dict[str, float]:
    """The most memory this process has held so far, in GB: resident host memory (the
    models, their caches and everything a sweep holds) and, on CUDA, torch's peak
    allocation; recorded so a sweep's memory need is stated, not guessed."""
    import resource

    import torch

    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bytes_per_unit = 1 if sys.platform == "darwin" else 1024  # macOS: bytes; Linux: KiB
    peak = {"host_rss": round(max_rss * bytes_per_unit / 1e9, 2)}
    if torch.cuda.is_available():
        peak["cuda_allocated"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return peak


def machine_load() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none): recorded
    before and after a sweep's timed work, so a summary can say when something else ran."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None
