"""Figures from summaries, and the paper comparison on a small results folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bild_exp import paper, sweep
from bild_exp.analysis import plots
from bild_exp.analysis.operating_points import operating_points, pareto_mask
from tests.harness_fixtures import compose_sweep, tiny_overrides
from tests.make_commands import dry_run_listing

ROOT = Path(__file__).resolve().parents[1]


def fake_summary() -> pd.DataFrame:
    rows = [
        {
            "config_id": "L",
            "study": "large",
            "method": "large",
            "small_variant": "-",
            "family": "large",
            "bleu": 30.0,
            "speedup": 1.0,
            "normalized_latency": 1.0,
            "fallback_threshold": None,
            "rollback_threshold": None,
            "window": None,
            "oracle_threshold": None,
            "n_tokens": 100,
            "n_oracle_replacements": 0,
            "pareto": True,
        },
    ]
    for i, (fb, rb, q, s) in enumerate(
        [(0.5, 2, 29.95, 1.5), (0.5, 4, 29.0, 1.9), (0.9, 2, 30.1, 1.2), (0.9, 4, 28.0, 1.3)]
    ):
        rows.append(
            {
                "config_id": f"B{i}",
                "study": "bild",
                "method": "bild",
                "small_variant": "base",
                "family": "bild/base",
                "bleu": q,
                "speedup": s,
                "normalized_latency": 1 / s,
                "fallback_threshold": fb,
                "rollback_threshold": rb,
                "window": None,
                "oracle_threshold": None,
                "n_tokens": 100,
                "n_oracle_replacements": 0,
                "pareto": False,
            }
        )
    for i, t in enumerate([0.1, 0.5]):
        rows.append(
            {
                "config_id": f"O{i}",
                "study": "oracle",
                "method": "oracle",
                "small_variant": "base",
                "family": "oracle/base",
                "bleu": 29 + i,
                "speedup": 0.8,
                "normalized_latency": 1.25,
                "fallback_threshold": None,
                "rollback_threshold": None,
                "window": None,
                "oracle_threshold": t,
                "n_tokens": 100,
                "n_oracle_replacements": 10 + 20 * i,
                "pareto": False,
            }
        )
    frame = pd.DataFrame(rows).assign(sampling="greedy", top_p=None, temperature=None, seed=None)
    for _, group in frame.groupby("family"):
        frame.loc[group.index, "pareto"] = pareto_mask(
            list(group["normalized_latency"]), list(group["bleu"])
        )
    return frame


def test_pareto_mask_by_hand():
    assert pareto_mask([1.0, 0.5, 0.6, 0.4], [30, 29, 28, 20]) == [True, True, False, True]


def test_operating_points_follow_table1_rule():
    points = operating_points(fake_summary(), "bleu")
    # without intervals the ci rule has nothing it may accept
    assert points[points["rule"] == "ci"]["config_id"].isna().all()
    points = points[points["rule"] == "point"].set_index(["family", "tolerance"])
    # within 0.1 of 30.0: 29.95 @ 1.5x and 30.1 @ 1.2x qualify -> 1.5x; within 1: 29.0 @ 1.9x.
    assert points.loc[("bild/base", 0.1), "speedup"] == 1.5
    assert points.loc[("bild/base", 1.0), "speedup"] == 1.9
    assert points.loc[("bild/base", 1.0), "rollback_threshold"] == 4


def test_every_figure_is_written(tmp_path):
    summary = fake_summary()
    written = plots.pareto_figure(summary, "bleu", tmp_path / "pareto", title="t")
    written += plots.threshold_map(summary, "bleu", tmp_path / "thresholds")
    written += plots.oracle_curve(summary, "bleu", tmp_path / "oracle")
    written += plots.token_authorship(
        ["▁The", "▁cat", "▁sat", "."], [False, True, False, False], tmp_path / "tokens"
    )
    assert len(written) == 8
    assert all(path.exists() and path.stat().st_size > 1000 for path in written)


def test_paper_comparison_from_a_results_folder(tiny_assets, tmp_path, monkeypatch):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "+experiment=table1",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
        "data.limit=4",
    )
    outcome = sweep.run(compose_sweep(overrides))
    assert outcome.run_dir.parent == tmp_path / "table1"
    monkeypatch.setattr(sys, "argv", ["paper", "table1", "--results-dir", str(tmp_path)])
    paper.main()
    table = pd.read_csv(tmp_path / "table1" / "table1.csv")
    assert set(table["row"]) == {"vanilla", "bild/base", "bild/aligned"}
    assert set(table["rule"].dropna()) == {"point", "ci"}
    for column in ("quality_ci", "speedup_ci", "diff_vs_large_ci", "paper_speedup_in_ci"):
        assert column in table
    assert table["speedup_ci"].notna().any()
    summary = outcome.summary.set_index("method")
    for column in ("quality_low", "quality_diff_low", "quality_p_value", "speedup_low"):
        assert summary[column].notna().all(), column
    assert summary.loc["large", "quality_p_value"] == 1.0  # vanilla against itself
    assert (summary["speedup_low"] <= summary["speedup"]).all()
    assert "diff_vs_large_ci" in (outcome.run_dir / "summary.md").read_text()
    assert set(outcome.operating_points["rule"]) == {"point", "ci"}
    assert (tmp_path / "table1" / "table1.md").read_text().startswith("# table1")
    assert (outcome.run_dir / "table1_pareto.png").exists()


def test_published_table1_numbers_are_the_papers():
    published = paper.published_table1()
    vanilla = published[published["row"] == "vanilla"].set_index("task")["quality"]
    assert vanilla.to_dict() == {"iwslt17": 40.32, "wmt14": 31.38, "xsum": 35.08, "cnndm": 41.54}


def sweep_arguments(target: str) -> list[str]:
    """The arguments `make <target> DRY_RUN=1 LIMIT=3` passes to ``bild_exp.sweep``."""
    listing = dry_run_listing(target, limit=3)
    lines = [line for line in listing.splitlines() if "-m bild_exp.sweep" in line]
    assert len(lines) == 1, listing
    return lines[0].split("-m bild_exp.sweep", 1)[1].split()


def test_a_paper_target_plans_without_loading_through_make():
    """One target as a user runs it: make, Hydra's multirun over the tasks, the dry run."""
    out = subprocess.run(
        [
            "make",
            "-s",
            "table1",
            "DRY_RUN=1",
            "LIMIT=3",
            "PY=" + sys.executable,
            "VENV=" + str(Path(sys.executable).parents[1]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled",
            "HOME": str(ROOT),
        },
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("configurations:") == 4  # one plan per task


@pytest.mark.parametrize("target", paper.EXPERIMENTS)
def test_make_targets_plan_without_loading(target, capsys):
    """Every paper target's own sweep arguments plan each of its tasks (composed here, as
    Hydra's multirun composes one job per task, without a process per target)."""
    arguments = sweep_arguments(target)
    assert arguments[0] == "-m" and "dry_run=true" in arguments
    overrides = arguments[1:]
    # the tasks are the experiment config's (hydra.sweeper.params), not the Makefile's
    assert f"+experiment={target}" in overrides and not any(
        o.startswith("+task=") for o in overrides
    )
    tasks = paper.EXPERIMENTS[target].tasks
    for task in tasks:
        assert sweep.run(compose_sweep([f"+task={task}", *overrides])) is None
    assert capsys.readouterr().out.count("configurations:") == len(tasks) >= 2


def test_tasks_given_to_a_paper_target_replace_the_experiments_own():
    """`make table3 TASKS=demo` runs the demo task instead of the experiment's two."""
    listing = subprocess.run(
        ["make", "-n", "-s", "--no-print-directory", "table3", "DRY_RUN=1", "TASKS=demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in listing.splitlines() if "-m bild_exp.sweep" in line]
    assert "+experiment=table3" in line and "+task=demo" in line


@pytest.mark.parametrize("experiment", ["fig6", "fig8"])
def test_figure_tables_carry_intervals(experiment, tmp_path):
    """The figure experiments' tables (not only Table 1's) quote each speedup's interval:
    rebuilt here from a copy of the committed demo folder."""
    import shutil

    folder = tmp_path / experiment
    shutil.copytree(Path(__file__).parents[1] / "results" / "demo" / experiment, folder)
    table = paper.compare(folder, experiment)
    column = "speedup_ci" if experiment == "fig6" else "speedup_low"
    assert column in table and table[column].notna().all()
    if experiment == "fig6":
        assert table["diff_vs_large_ci"].notna().all()
