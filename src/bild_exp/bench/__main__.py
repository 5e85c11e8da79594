"""``python -m bild_exp.bench``: see ``bild_exp.bench.run``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bild_exp.bench.run import run
from bild_exp.console import library_output_to_log
from bild_exp.errors import one_line_errors
from bild_exp.sweep import check_results_dir, with_default_task


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    note = "the selection sweep's records are saved; the same command resumes it, then reruns the head-to-head"
    with one_line_errors("bild_exp.bench", lambda: note), library_output_to_log():
        run(with_default_task(cfg))


if __name__ == "__main__":
    check_results_dir("bild_exp.bench", sys.argv[1:])
    main()
