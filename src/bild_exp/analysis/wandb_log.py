"""One W&B run per sweep: resolved config, per-config summary metrics, the summary as a
``wandb.Table``, the Pareto plot, and the records as an artifact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bild_exp.wandb_setup import resolve_mode

# Per-configuration numbers in the run summary (the whole table is logged as well)
LOGGED_METRICS = (
    "speedup",
    "speedup_low",
    "speedup_high",
    "normalized_latency",
    "mean_latency_s",
    "latency_median_s",
    "latency_p10_s",
    "latency_p90_s",
    "quality_diff",
    "quality_diff_low",
    "quality_diff_high",
    "quality_p_value",
    "acceptance_rate",
    "ngram_token_pct",
    "ngram_acceptance_rate",
    "small_acceptance_rate",
    "ngram_large_calls",
    "mean_accepted_length",
    "fallback_pct",
    "rollback_pct",
)


def log_sweep(
    cfg: DictConfig,
    run_dir: Path,
    summary: pd.DataFrame,
    figures: list[Path],
    record_dirs: list[Path],
) -> str | None:
    """Log to W&B in the configured mode; return the local W&B run folder (None when disabled).

    ``record_dirs`` (the run's and the shared baselines' ``parts`` and ``examples``
    folders) go into the records artifact as ``<run folder>/<parts|examples>``; missing
    ones are left out.
    """
    mode = resolve_mode(cfg.logger)
    if mode == "disabled":
        return None
    import wandb

    # silent here, not only in init's settings: W&B's terminal messages (artifact uploads)
    # follow the settings of wandb.setup, which init would otherwise call with defaults
    wandb.setup(settings=wandb.Settings(silent=True))
    run = wandb.init(
        project=cfg.logger.get("project") or "bild-exp",
        entity=cfg.logger.get("entity"),
        mode=mode,
        dir=str(run_dir),
        name=f"{cfg.experiment_name}/{run_dir.name}",
        tags=list(cfg.logger.get("tags") or []),
        config=OmegaConf.to_container(cfg, resolve=True),
        settings=wandb.Settings(init_timeout=60, silent=True),
    )
    try:
        for _, row in summary.iterrows():
            prefix = f"{row['family']}/{row['config_id']}"
            metrics = {k: row[k] for k in LOGGED_METRICS if k in row and pd.notna(row[k])}
            run.summary.update({f"{prefix}/{k}": v for k, v in metrics.items()})
        run.log({"summary": wandb.Table(dataframe=summary.astype(str))})
        for figure in figures:
            if figure.suffix == ".png":
                run.log({figure.stem: wandb.Image(str(figure))})
        artifact = wandb.Artifact(name=f"records-{run_dir.name}", type="records")
        for directory in record_dirs:
            if directory.is_dir():
                artifact.add_dir(str(directory), name=f"{directory.parent.name}/{directory.name}")
        run.log_artifact(artifact)
        return run.dir
    finally:
        run.finish()
        # stop W&B's service now, while library output still goes to the job log (left to
        # exit, its last log lines would reach the terminal)
        wandb.teardown()
