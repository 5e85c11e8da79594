"""Where a sweep job runs, so that jobs never share what they time.

- GPU: one timed job per GPU at a time, on this host. A job holds a lock file per device
  (``$BILD_EXP_CACHE/locks/cuda-<k>.lock``) while it decodes: with ``pair.device=auto`` or
  ``cuda`` it takes the first free GPU, with ``cuda:<k>`` that one; when none is free it
  waits (saying so). Parallel jobs of Hydra's joblib launcher, or two sweeps started by
  hand, therefore spread over the GPUs or queue, instead of corrupting each other's
  latencies. The kernel drops a lock when its process dies.
- CPU: with Hydra's joblib launcher running ``n_jobs`` jobs at once, each job gets
  ``cores // n_jobs`` torch threads, so workers x threads never exceed the cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bild_exp.harness.records.store import BusyError, file_lock

log = logging.getLogger(__name__)


def lock_dir() -> Path:
    return Path(os.environ.get("BILD_EXP_CACHE", "~/.cache/bild-exp")).expanduser() / "locks"


def parallel_jobs() -> int:
    """Jobs Hydra's joblib launcher runs at once (1 outside it)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except (ImportError, ValueError):  # not inside a Hydra job
        return 1
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs", 1) or 1
    return (os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)


def cpu_threads(n_jobs: int, cores: int | None = None) -> int:
    """Threads per job so that ``n_jobs`` jobs together use at most the cores."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, n_jobs))


def candidate_devices(device: torch.device, n_gpus: int) -> list[torch.device]:
    """GPUs a job may take: the one named, or every visible one for a bare ``cuda``."""
    if device.index is not None:
        return [device]
    return [torch.device("cuda", index) for index in range(n_gpus)]


@contextlib.contextmanager
def placed(device: torch.device, poll_s: float = 2.0) -> Iterator[torch.device]:
    """Hold the device this job times on (see the module docstring); yield it."""
    if device.type != "cuda":
        n_jobs = parallel_jobs()
        if n_jobs > 1:
            torch.set_num_threads(cpu_threads(n_jobs))
            log.info("%d parallel jobs: %d torch threads each", n_jobs, torch.get_num_threads())
        yield device
        return
    candidates = candidate_devices(device, torch.cuda.device_count())
    announced = False
    while True:
        for candidate in candidates:
            held = contextlib.ExitStack()
            try:  # take the lock first: a BusyError from the job itself is not "GPU busy"
                held.enter_context(file_lock(lock_dir() / f"cuda-{candidate.index}.lock", False))
            except BusyError as busy:
                if not announced:
                    log.warning(
                        "every GPU this job may use is timing another job (%s): waiting", busy
                    )
                    announced = True
                continue
            with held:
                yield candidate
            return
        time.sleep(poll_s)
