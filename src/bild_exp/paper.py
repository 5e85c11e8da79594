"""``python -m bild_exp.paper EXPERIMENT``: put a sweep's results next to the paper's numbers.

Reads ``results/<experiment>/*/summary.csv`` and ``operating_points.csv`` (written by
``bild_exp.sweep``), writes ``results/<experiment>/<experiment>.md`` and ``.csv`` and the
experiment's figures. Published Table 1 numbers (NeurIPS 2023 version, T4 GPU) are in
``bild_exp/data/paper_table1.csv``; for other tables and figures no published numbers are
transcribed, and the comparison says so.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path

import pandas as pd

from bild_exp import plots
from bild_exp.data.tasks import DataError
from bild_exp.errors import one_line_errors
from bild_exp.harness.report import TABLE_COLUMNS
from bild_exp.harness.summary import quality_column

EXPERIMENTS = (
    "table1",
    "table3",
    "table5",
    "fig2",
    "fig4",
    "fig5",
    "fig6",
    "fig7",
    "fig8",
    "fig10",
)


def published_table1() -> pd.DataFrame:
    return pd.read_csv(str(resources.files("bild_exp").joinpath("data/paper_table1.csv")))


def run_folders(experiment_dir: Path) -> list[Path]:
    return sorted(p.parent for p in experiment_dir.glob("*/summary.csv"))


def task_quality(run_dir: Path) -> tuple[str, str]:
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    task = config["task"]
    return task["name"], quality_column(task["metric"], task.get("quality"))


def operating_point_rows(run_dir: Path, published: pd.DataFrame) -> list[dict]:
    """Our Table 1 operating points with the published ones beside them."""
    task, quality = task_quality(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    points = pd.read_csv(run_dir / "operating_points.csv")
    paper = published[published["task"] == task]
    vanilla = summary[summary["method"] == "large"]
    rows = [
        {
            "task": task,
            "row": "vanilla",
            "tolerance": None,
            "quality": vanilla[quality].iloc[0] if len(vanilla) else None,
            "speedup": 1.0,
            "paper_quality": _paper(paper, "vanilla", None, "quality"),
            "paper_speedup": 1.0 if len(paper) else None,
        }
    ]
    for _, point in points[points["family"].str.startswith("bild/")].iterrows():
        rows.append(
            {
                "task": task,
                "row": point["family"],
                "tolerance": point["tolerance"],
                "quality": point["quality"],
                "speedup": point["speedup"],
                "thresholds (RB, FB)": f"({point['rollback_threshold']:g}, {point['fallback_threshold']:g})"
                if pd.notna(point["quality"])
                else None,
                "paper_quality": _paper(paper, point["family"], point["tolerance"], "quality"),
                "paper_speedup": _paper(paper, point["family"], point["tolerance"], "speedup"),
            }
        )
    return rows


def _paper(paper: pd.DataFrame, row: str, tolerance: float | None, column: str) -> float | None:
    match = paper[
        (paper["row"] == row)
        & ((paper["tolerance"] == tolerance) if tolerance else paper["tolerance"].isna())
    ]
    return None if match.empty else float(match[column].iloc[0])


def compare(experiment_dir: Path, experiment: str) -> pd.DataFrame:
    """The comparison table; figures for the experiment are drawn into each run folder."""
    published = published_table1()
    rows = []
    for run_dir in run_folders(experiment_dir):
        task, quality = task_quality(run_dir)
        summary = pd.read_csv(run_dir / "summary.csv")
        device = {"device": run_device(run_dir)}  # printed next to every speedup
        if experiment in ("table1", "fig4"):
            rows += [{**row, **device} for row in operating_point_rows(run_dir, published)]
        elif experiment == "fig8":
            points = pd.read_csv(run_dir / "operating_points.csv")
            costs = plots.cost_rows(summary, points)
            plots.cost_figure(costs, run_dir / "fig8_costs")
            rows += costs.assign(task=task, **device).to_dict("records")
            continue
        else:
            columns = [
                *TABLE_COLUMNS,
                "sampling",
                quality,
                "speedup",
                "fallback_pct",
                "rollback_pct",
                *(["mean_exit_layer"] if experiment in ("fig6", "fig7") else []),
            ]
            frame = summary[[c for c in columns if c in summary]].assign(task=task, **device)
            rows += frame.to_dict("records")
        draw_figures(experiment, summary, quality, run_dir)
    return pd.DataFrame(rows)


PAPER_DEVICE = "T4"  # the paper timed everything on an NVIDIA T4 GPU, batch 1


def run_device(run_dir: Path) -> str:
    device = json.loads((run_dir / "manifest.json").read_text()).get("device", {})
    return f"{device.get('device_name')} ({device.get('device')})"


def device_note(table: pd.DataFrame) -> str:
    """One line when speedups were not measured on the paper's T4."""
    devices = sorted(set(table["device"].dropna())) if "device" in table else []
    others = [d for d in devices if PAPER_DEVICE not in d]
    if not others:
        return ""
    return (
        f"Speedups measured on {', '.join(others)}, not the paper's NVIDIA {PAPER_DEVICE}: "
        "compare qualities directly, speedups only as trends.\n\n"
    )


def draw_figures(experiment: str, summary: pd.DataFrame, quality: str, run_dir: Path) -> None:
    if experiment == "fig2":
        plots.oracle_curve(summary, quality, run_dir / "fig2_oracle")
    elif experiment == "fig5":
        plots.pareto_figure(summary, quality, run_dir / "fig5_ablations", title="ablations")
    elif experiment == "fig10":
        plots.threshold_map(summary, quality, run_dir / "fig10_thresholds")
    else:
        plots.pareto_figure(summary, quality, run_dir / f"{experiment}_pareto", title=experiment)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["BILD_DEBUG"] = "1"
    with one_line_errors("bild_exp.paper"):
        write_comparison(args.experiment, args.results_dir)


def write_comparison(experiment: str, results_dir: Path) -> None:
    """``<results_dir>/<experiment>/<experiment>.csv|.md``: ours next to the paper's numbers."""
    experiment_dir = results_dir / experiment
    if not run_folders(experiment_dir):
        raise DataError(
            f"experiment={experiment!r} has no results under {str(experiment_dir)!r}: "
            f"run `make {experiment}` first (or pass --results-dir)"
        )
    table = compare(experiment_dir, experiment)
    note = (
        ""
        if experiment in ("table1", "fig4")
        else (
            "Published numbers for this table/figure are not transcribed here; compare with the paper.\n\n"
        )
    )
    (experiment_dir / f"{experiment}.csv").write_text(table.to_csv(index=False))
    markdown = (
        f"# {experiment}\n\n{note}{device_note(table)}"
        + table.to_markdown(index=False, floatfmt=".3g")
        + "\n"
    )
    (experiment_dir / f"{experiment}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
