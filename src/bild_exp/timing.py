"""Honest wall-clock timing of generation: synchronise the device around the timed region."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels: CUDA launches are asynchronous, so a timer would stop early."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], T], device: torch.device | str) -> tuple[T, float]:
    """Run ``fn`` once; return its result and the elapsed seconds (device synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def device_description(device: torch.device | str) -> dict[str, Any]:
    """Device name and library versions, recorded next to every timing."""
    import platform

    import transformers

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        **numerics_settings(),
    }


def numerics_settings() -> dict[str, Any]:
    """The settings that change matmul speed and results (TF32, cuDNN, float32 precision)
    and the CUDA runtime and driver versions: recorded next to every timing."""
    driver = None
    if torch.cuda.is_available():
        try:
            driver = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
        except RuntimeError:
            driver = None
    return {
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_runtime": torch.version.cuda,
        "cuda_driver": driver,
    }
