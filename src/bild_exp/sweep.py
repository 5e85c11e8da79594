"""``python -m bild_exp.sweep``: threshold sweeps with timing, scoring and resumable results.

    python -m bild_exp.sweep                      # the offline demo task
    python -m bild_exp.sweep +task=xsum data.limit=100
    python -m bild_exp.sweep +task=iwslt17 method=speculative grid.window=[3,5,10]

Tests call :func:`run` with a config built by ``compose``.
"""

from __future__ import annotations

import logging
import sys
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from bild_exp.console import library_output_to_log
from bild_exp.errors import one_line_errors
from bild_exp.harness.config.checks import check_engine, check_settings
from bild_exp.harness.config.dry_run import print_plan
from bild_exp.harness.config.plan import plan_runs
from bild_exp.harness.records.store import check_writable
from bild_exp.harness.run.pipeline import SweepOutcome, run_sweep

log = logging.getLogger(__name__)
DEFAULT_TASK = "demo"


def with_default_task(cfg: DictConfig) -> DictConfig:
    """Without ``+task=...`` the demo task applies (the task is not in the defaults list, so
    that ``+task=`` works); task keys set without a task (``+task.max_new_tokens=10``)
    override the demo task's."""
    if "task" in cfg and cfg.task.get("name") is not None:
        return cfg
    demo = OmegaConf.load(
        str(resources.files("bild_exp").joinpath(f"conf/task/{DEFAULT_TASK}.yaml"))
    )
    with open_dict(cfg):
        cfg.task = OmegaConf.merge(demo.task, cfg.get("task") or {})
    return cfg


def run(cfg: DictConfig) -> SweepOutcome | None:
    """Plan, validate (before any model loads), execute, score and summarise one sweep."""
    cfg = with_default_task(cfg)
    check_settings(cfg)
    runs = plan_runs(cfg)
    check_engine(cfg, runs)
    if cfg.dry_run:
        print_plan(cfg, runs)
        return None
    return run_sweep(cfg, runs)


@hydra.main(version_base="1.3", config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> None:
    with one_line_errors("bild_exp.sweep"), library_output_to_log():
        run(cfg)


def results_dir_argument(argv: list[str], default: str = "results") -> Path:
    """The ``results_dir`` a command line asks for (Hydra writes its own files there before
    any of the project's code runs, so it is checked from the arguments first)."""
    for argument in reversed(argv):
        key, _, value = argument.lstrip("+").partition("=")
        if key == "results_dir" and value:
            return Path(value)
    return Path(default)


def check_results_dir(program: str, argv: list[str]) -> None:
    with one_line_errors(program):
        check_writable(results_dir_argument(argv))


if __name__ == "__main__":
    check_results_dir("bild_exp.sweep", sys.argv[1:])
    main()
