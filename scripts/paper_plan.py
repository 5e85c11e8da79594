"""``make paper-plan``: the number of ``generate`` calls each paper target makes over the
full validation splits (configurations x examples, as its dry run plans them), written to
``results/paper-plan/generate_calls.{csv,md}``. Loads no model and no data."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from bild_exp.harness.config.plan import plan_runs
from bild_exp.paper import EXPERIMENTS
from bild_exp.sweep import with_default_task

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def plan_rows() -> list[dict]:
    rows = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for target, experiment in EXPERIMENTS.items():
            for task in experiment.tasks:  # the tasks `make <target>` runs
                cfg = with_default_task(
                    compose(
                        config_name="sweep", overrides=[f"+experiment={target}", f"+task={task}"]
                    )
                )
                split = cfg.data.split or cfg.task.split
                n_examples = cfg.task.split_sizes[split]
                n_configs = len(plan_runs(cfg))
                rows.append(
                    {
                        "target": target,
                        "task": task,
                        "split": split,
                        "configurations": n_configs,
                        "examples": n_examples,
                        "generate_calls": n_configs * n_examples,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=Path("results/paper-plan"))
    args = parser.parse_args()
    table = pd.DataFrame(plan_rows())
    totals = table.groupby("target", sort=False)["generate_calls"].sum().rename("total_calls")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.output_dir / "generate_calls.csv", index=False)
    markdown = (
        "# Generate calls per paper target (full validation splits)\n\n"
        + table.to_markdown(index=False)
        + "\n\n"
        + totals.reset_index().to_markdown(index=False)
        + "\n"
    )
    (args.output_dir / "generate_calls.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
