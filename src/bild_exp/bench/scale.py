"""Scaling views for the benchmark: latency by output length, sweep throughput by workers."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

SCALE_METHODS = "bild,bild_no_rollback,bild_no_fallback,speculative"


def length_table(records: pd.DataFrame, edges: list[int], order: list[str]) -> pd.DataFrame:
    """Mean latency per method and output-length bucket (columns: buckets)."""
    labels = [f"{lo + 1}-{hi}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    buckets = pd.cut(records["n_tokens"], bins=edges, labels=labels)
    table = records.assign(bucket=buckets).pivot_table(
        index="method", columns="bucket", values="latency_s", aggfunc="mean", observed=False
    )
    return table.reindex([m for m in order if m in table.index])


def write_scale_config(cfg: DictConfig, directory: Path) -> None:
    """A primary config that is the sweep's, with this run's task and pair pinned."""
    config = {
        "defaults": ["sweep", "_self_"],
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "pair": OmegaConf.to_container(cfg.pair, resolve=True),
    }
    OmegaConf.save(OmegaConf.create(config), directory / "bench_scale.yaml")


def worker_throughput(cfg: DictConfig, workers: list[int], n_examples: int) -> pd.DataFrame:
    """Wall time of one multirun sweep (4 jobs) with the joblib launcher at each worker count,
    each into a fresh results folder (so nothing is skipped as already done)."""
    rows = []
    for n_jobs in workers:
        with tempfile.TemporaryDirectory() as scratch:
            write_scale_config(cfg, Path(scratch))
            command = [
                sys.executable,
                "-m",
                "bild_exp.sweep",
                "-m",
                f"--config-dir={scratch}",
                "--config-name=bench_scale",
                f"method={SCALE_METHODS}",
                "grid.fallback_threshold=[0.5]",
                "grid.rollback_threshold=[3.0]",
                "grid.window=[4]",
                "pair.small_variants=[base]",
                f"data.limit={n_examples}",
                "data.warmup=1",
                "logger=none",
                "progress=false",
                f"results_dir={scratch}/results",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={n_jobs}",
                f"hydra.sweep.dir={scratch}/multirun",
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - start
        rows.append(
            {
                "joblib workers": n_jobs,
                "wall_s": wall,
                "jobs": 4,
                "examples_per_job": n_examples,
                "examples_per_s": 4 * n_examples / wall,
            }
        )
    return pd.DataFrame(rows)
