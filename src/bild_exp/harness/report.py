"""Writing a sweep's summary files, plots and W&B run; printing its table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from bild_exp import plots
from bild_exp.harness.plan import GRID_AXES
from bild_exp.harness.store import atomic_write_bytes, atomic_write_json
from bild_exp.harness.wandb_log import log_sweep

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["study", "small_variant", *GRID_AXES, "n_examples"]
RATE_COLUMNS = [
    "speedup",
    "speedup_median",
    "fallback_pct",
    "rollback_pct",
    "large_call_pct",
    "mean_accepted_length",
]
OPTIONAL_COLUMNS = ["agreement_vs_large", "mean_exit_layer", "flops_per_token"]  # when present


def table(summary: pd.DataFrame, quality: str) -> pd.DataFrame:
    columns = [c for c in TABLE_COLUMNS if c in summary and summary[c].notna().any()]
    optional = [c for c in OPTIONAL_COLUMNS if c in summary and summary[c].notna().any()]
    frame = summary[
        [*columns, quality, "mean_latency_s", *RATE_COLUMNS, *optional, "pareto"]
    ].copy()
    frame["pareto"] = frame["pareto"].map({True: "*", False: ""})
    return frame.round(3)


def format_summary(summary: pd.DataFrame, quality: str, device: dict[str, Any]) -> str:
    header = f"{len(summary)} configurations on {device['device_name']} ({device['device']}); * = Pareto point"
    return header + "\n" + table(summary, quality).to_string(index=False)


def write_outputs(
    run_dir: Path,
    summary: pd.DataFrame,
    points: pd.DataFrame,
    manifest: dict[str, Any],
    quality: str,
    cfg: DictConfig,
    record_dirs: list[Path],
) -> None:
    """summary.csv, operating_points.csv, summary.md, manifest.json, Pareto plot; then W&B
    (whose failure never touches the local files)."""
    atomic_write_bytes(run_dir / "summary.csv", summary.to_csv(index=False).encode())
    atomic_write_bytes(run_dir / "operating_points.csv", points.to_csv(index=False).encode())
    markdown = table(summary, quality).to_markdown(index=False)
    atomic_write_bytes(run_dir / "summary.md", (markdown + "\n").encode())
    atomic_write_json(run_dir / "manifest.json", manifest)
    figure_paths = plots.pareto_figure(
        summary, quality, run_dir / "pareto", title=f"{cfg.task.name} / {cfg.pair.name}"
    )
    try:
        log_sweep(cfg, run_dir, summary, figure_paths, record_dirs)
    except Exception as error:  # noqa: BLE001 - W&B must never lose or block local results
        log.warning("W&B logging failed, local results are complete: %s", error)
