"""``python -m bild_exp.paper EXPERIMENT``: put a sweep's results next to the paper's numbers.

Reads ``results/<experiment>/*/summary.csv`` and ``operating_points.csv`` (written by
``bild_exp.sweep``), writes ``results/<experiment>/<experiment>.md`` and ``.csv`` and the
experiment's figures. Published Table 1 numbers (NeurIPS 2023 version, T4 GPU) are in
``bild_exp/data/paper_table1.csv``; for other tables and figures no published numbers are
transcribed, and the comparison says so.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bild_exp.analysis import plots
from bild_exp.analysis.comparison import vanilla_row
from bild_exp.analysis.operating_points import (
    best_point,
    best_quality_at_speedup,
    choose_point,
    family_rows,
)
from bild_exp.analysis.report import TABLE_COLUMNS, read_manifest, task_quality
from bild_exp.console import library_output_to_log
from bild_exp.data.tasks import DataError
from bild_exp.errors import one_line_errors


def published(table: str) -> pd.DataFrame:
    """A transcribed paper table (``data/paper_<table>.csv``: table1, table2, table3, table5,
    fig2), numbers as printed in arXiv 2302.07863."""
    return pd.read_csv(str(resources.files("bild_exp").joinpath(f"data/paper_{table}.csv")))


def published_table1() -> pd.DataFrame:
    return published("table1")


def table3_rows(run_dir: Path) -> list[dict]:
    """Tables 3-4: vanilla, speculative decoding, and BiLD matched to it in latency and in
    quality (and BiLD at vanilla quality, Table 4's row), the published numbers beside them."""
    task, quality = task_quality(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    paper = published("table3")
    paper = paper[paper["task"] == task].set_index("row")
    vanilla = vanilla_row(summary)
    speculative = family_rows(summary, "speculative/*").dropna(subset=["speedup"])
    spec = speculative.loc[speculative["speedup"].idxmax()] if len(speculative) else None
    bild = family_rows(summary, "bild/*")
    chosen: dict[str, pd.Series | None] = {
        "vanilla": vanilla,
        "speculative": spec,
        "bild (match latency)": None
        if spec is None
        else best_quality_at_speedup(bild, quality, spec["speedup"]),
        # the fastest BiLD at speculative's quality: the operating-point rule, tolerance 0
        "bild (match quality)": None
        if spec is None
        else best_point(bild, "point", quality, spec[quality], 0.0),
        "bild (better quality)": choose_point(summary, "bild/*", quality, 0.0, ["point"])[0],
    }
    rows = []
    for name, row in chosen.items():
        ours = {} if row is None else row
        rows.append(
            {
                "task": task,
                "row": name,
                "quality": ours.get(quality),
                "speedup": ours.get("speedup"),
                "fallback_pct": ours.get("fallback_pct"),
                "rollback_pct": ours.get("rollback_pct"),
                "large_call_pct": ours.get("large_call_pct"),
                "thresholds (RB, FB)": thresholds(ours),
                **intervals(ours),
                **{
                    f"paper_{column}": _value(paper, name, column)
                    for column in ("quality", "speedup", "fallback_pct", "rollback_pct")
                },
                "paper_speedup_in_ci": inside(
                    _value(paper, name, "speedup"), ours, "speedup_low", "speedup_high"
                ),
            }
        )
    return rows


def table5_rows(run_dir: Path) -> list[dict]:
    """Table 5 (nucleus sampling): vanilla and BiLD's best speedup within 0 and within 1
    point of vanilla, ours and the paper's chosen by the same rule from its rows."""
    task, quality = task_quality(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    paper = published("table5")
    paper = paper[paper["task"] == task]
    paper_vanilla = paper[paper["row"] == "vanilla"]["quality"]
    vanilla = vanilla_row(summary)
    rows = [
        {
            "task": task,
            "row": "vanilla",
            "quality": None if vanilla is None else vanilla[quality],
            "speedup": 1.0,
            "paper_quality": paper_vanilla.iloc[0] if len(paper_vanilla) else None,
            "paper_speedup": 1.0 if len(paper_vanilla) else None,
        }
    ]
    for tolerance in (0.0, 1.0):
        ours, _ = choose_point(summary, "bild/*", quality, tolerance, ["point"])
        theirs = paper[paper["row"] == "bild"]
        if len(paper_vanilla):
            theirs = theirs[theirs["quality"] >= paper_vanilla.iloc[0] - tolerance]
        best = theirs.sort_values("speedup").iloc[-1] if len(theirs) else None
        ours = {} if ours is None else ours
        rows.append(
            {
                "task": task,
                "row": f"bild (within {tolerance:g})",
                "quality": ours.get(quality),
                "speedup": ours.get("speedup"),
                "thresholds (RB, FB)": thresholds(ours),
                **intervals(ours),
                "paper_quality": None if best is None else best["quality"],
                "paper_speedup": None if best is None else best["speedup"],
                "paper_speedup_in_ci": inside(
                    None if best is None else best["speedup"], ours, "speedup_low", "speedup_high"
                ),
            }
        )
    return rows


def ci_text(row, low: str, high: str) -> str | None:
    """``[low, high]`` from a summary or operating-point row (None when it has none)."""
    lo, hi = row.get(low), row.get(high)
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return None
    return f"[{lo:.3g}, {hi:.3g}]"


def intervals(row) -> dict[str, str | None]:
    """Our 95% paired-bootstrap intervals (bild_exp.analysis.stats) of a chosen row."""
    return {
        "quality_ci": ci_text(row, "quality_low", "quality_high"),
        "diff_vs_large_ci": ci_text(row, "quality_diff_low", "quality_diff_high"),
        "speedup_ci": ci_text(row, "speedup_low", "speedup_high"),
    }


def inside(value: float | None, row, low: str, high: str) -> bool | None:
    """Whether a published number lies in our interval (None when either is missing)."""
    lo, hi = row.get(low), row.get(high)
    if value is None or lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return None
    return bool(lo <= value <= hi)


def thresholds(row) -> str | None:
    rollback, fallback = row.get("rollback_threshold"), row.get("fallback_threshold")
    if rollback is None or fallback is None or pd.isna(rollback) or pd.isna(fallback):
        return None
    return f"({rollback:g}, {fallback:g})"


def _value(paper: pd.DataFrame, row: str, column: str) -> float | None:
    if row not in paper.index or pd.isna(paper.loc[row, column]):
        return None
    return float(paper.loc[row, column])


def run_folders(experiment_dir: Path) -> list[Path]:
    return sorted(p.parent for p in experiment_dir.glob("*/summary.csv"))


def operating_point_rows(run_dir: Path, published: pd.DataFrame) -> list[dict]:
    """Our Table 1 operating points under both rules (``point``: the paper's, on point
    estimates; ``ci``: the quality difference's lower 95% bound within the tolerance), with
    our intervals, the published points beside them, and whether our intervals include the
    published speedup and quality drop."""
    task, quality = task_quality(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    points = pd.read_csv(run_dir / "operating_points.csv")
    if "rule" not in points:  # written before the ci rule existed
        points["rule"] = "point"
    paper = published[published["task"] == task]
    vanilla = vanilla_row(summary)
    paper_vanilla = _paper(paper, "vanilla", None, "quality")
    rows = [
        {
            "task": task,
            "row": "vanilla",
            "rule": None,
            "tolerance": None,
            "quality": None if vanilla is None else vanilla[quality],
            "speedup": 1.0,
            **({} if vanilla is None else intervals(vanilla)),
            "paper_quality": paper_vanilla,
            "paper_speedup": 1.0 if len(paper) else None,
        }
    ]
    for _, point in points[points["family"].str.startswith("bild/")].iterrows():
        paper_quality = _paper(paper, point["family"], point["tolerance"], "quality")
        paper_speedup = _paper(paper, point["family"], point["tolerance"], "speedup")
        paper_drop = (
            None
            if paper_quality is None or paper_vanilla is None
            else paper_quality - paper_vanilla
        )
        rows.append(
            {
                "task": task,
                "row": point["family"],
                "rule": point["rule"],
                "tolerance": point["tolerance"],
                "quality": point["quality"],
                "speedup": point["speedup"],
                "thresholds (RB, FB)": f"({point['rollback_threshold']:g}, {point['fallback_threshold']:g})"
                if pd.notna(point["quality"])
                else None,
                **intervals(point),
                "paper_quality": paper_quality,
                "paper_speedup": paper_speedup,
                "paper_speedup_in_ci": inside(paper_speedup, point, "speedup_low", "speedup_high"),
                "paper_drop_in_ci": inside(
                    paper_drop, point, "quality_diff_low", "quality_diff_high"
                ),
            }
        )
    return rows


def _paper(paper: pd.DataFrame, row: str, tolerance: float | None, column: str) -> float | None:
    match = paper[
        (paper["row"] == row)
        & ((paper["tolerance"] == tolerance) if tolerance else paper["tolerance"].isna())
    ]
    return None if match.empty else float(match[column].iloc[0])


PAPER_DEVICE = "T4"  # the paper timed everything on an NVIDIA T4 GPU, batch 1


def run_device(run_dir: Path) -> str:
    device = read_manifest(run_dir).get("device", {})
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


@dataclass(frozen=True)
class RunResults:
    """One run folder of an experiment (one task), as the comparison reads it."""

    folder: Path
    task: str
    quality: str  # the summary's quality column (bleu, rougeLsum, pass_at_1, ...)
    summary: pd.DataFrame
    device: dict[str, str]  # printed next to every speedup

    @classmethod
    def read(cls, folder: Path) -> RunResults:
        task, quality = task_quality(folder)
        summary = pd.read_csv(folder / "summary.csv")
        return cls(folder, task, quality, summary, {"device": run_device(folder)})


def summary_rows(run: RunResults, *extra_columns: str) -> list[dict]:
    """Every configuration of the run with its quality, speedup, rates and intervals."""
    columns = [
        *TABLE_COLUMNS,
        "sampling",
        run.quality,
        "speedup",
        "fallback_pct",
        "rollback_pct",
        *extra_columns,
    ]
    summary = run.summary
    frame = summary[[c for c in columns if c in summary]].assign(task=run.task, **run.device)
    return [{**row, **intervals(summary.loc[index])} for index, row in frame.iterrows()]


def cost_table(run: RunResults) -> pd.DataFrame:
    """Figure 8's analytical FLOPs, memory traffic and intensity per operating point."""
    return plots.cost_rows(run.summary, pd.read_csv(run.folder / "operating_points.csv"))


def pareto(stem: str, title: str) -> Callable[[RunResults], None]:
    """The run's Pareto figure (quality against speedup per family) as ``<stem>.png/.pdf``."""
    return lambda run: plots.pareto_figure(run.summary, run.quality, run.folder / stem, title=title)


@dataclass(frozen=True)
class Experiment:
    """A paper table or figure: its comparison rows per run folder, its figure, and whether
    the rows are printed next to transcribed published numbers. Its sweep (method, small
    variants, the tasks it runs) is ``conf/experiment/<name>.yaml``; ``make <name>`` runs
    that sweep, then ``python -m bild_exp.paper <name>``."""

    name: str
    rows: Callable[[RunResults], list[dict]]
    figure: Callable[[RunResults], None]
    compared: bool = False  # printed next to the published numbers

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks ``make <name>`` runs (the config's sweeper parameter ``+task``)."""
        return experiment_tasks(self.name)


def experiment_tasks(name: str) -> tuple[str, ...]:
    """``+task`` of ``hydra.sweeper.params`` in ``conf/experiment/<name>.yaml``."""
    config = OmegaConf.load(
        str(resources.files("bild_exp").joinpath(f"conf/experiment/{name}.yaml"))
    )
    return tuple(str(config.hydra.sweeper.params["+task"]).split(","))


def with_device(rows: Callable[[Path], list[dict]]) -> Callable[[RunResults], list[dict]]:
    return lambda run: [{**row, **run.device} for row in rows(run.folder)]


def _fig8_rows(run: RunResults) -> list[dict]:
    return cost_table(run).assign(task=run.task, **run.device).to_dict("records")


def _table1_rows(folder: Path) -> list[dict]:
    return operating_point_rows(folder, published_table1())


def _experiments(*experiments: Experiment) -> dict[str, Experiment]:
    return {experiment.name: experiment for experiment in experiments}


# The registry (the pattern of bild_exp.decoding.registry): name -> rows, figure, published.
EXPERIMENTS: dict[str, Experiment] = _experiments(
    Experiment(
        "table1", with_device(_table1_rows), pareto("table1_pareto", "table1"), compared=True
    ),
    Experiment(
        "table3", with_device(table3_rows), pareto("table3_pareto", "table3"), compared=True
    ),
    Experiment(
        "table5", with_device(table5_rows), pareto("table5_pareto", "table5"), compared=True
    ),
    Experiment(
        "fig2",
        summary_rows,
        lambda run: plots.oracle_curve(run.summary, run.quality, run.folder / "fig2_oracle"),
    ),
    Experiment("fig4", with_device(_table1_rows), pareto("fig4_pareto", "fig4"), compared=True),
    Experiment(
        "fig5",
        summary_rows,
        pareto("fig5_ablations", "ablations"),
    ),
    Experiment(
        "fig6", lambda run: summary_rows(run, "mean_exit_layer"), pareto("fig6_pareto", "fig6")
    ),
    Experiment(
        "fig7", lambda run: summary_rows(run, "mean_exit_layer"), pareto("fig7_pareto", "fig7")
    ),
    Experiment(
        "fig8",
        _fig8_rows,
        lambda run: plots.cost_figure(cost_table(run), run.folder / "fig8_costs"),
    ),
    Experiment(
        "fig10",
        summary_rows,
        lambda run: plots.threshold_map(run.summary, run.quality, run.folder / "fig10_thresholds"),
    ),
)


def compare(experiment_dir: Path, experiment: str) -> pd.DataFrame:
    """The comparison table; figures for the experiment are drawn into each run folder."""
    rows = []
    for folder in run_folders(experiment_dir):
        run = RunResults.read(folder)
        rows += EXPERIMENTS[experiment].rows(run)
        draw_figures(experiment, run)
    return pd.DataFrame(rows)


def draw_figures(experiment: str, run: RunResults) -> None:
    """The experiment's figure of one run folder, drawn into that folder."""
    EXPERIMENTS[experiment].figure(run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["BILD_DEBUG"] = "1"
    log_file = args.results_dir / args.experiment / "paper.log"
    with one_line_errors("bild_exp.paper"), library_output_to_log(log_file):
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
        "Ours: intervals are paired bootstrap 95% over examples (bild_exp.analysis.stats); "
        "rule `point` picks the fastest configuration whose quality is within the tolerance "
        "of vanilla large (the paper's rule), rule `ci` the fastest whose quality difference's "
        "lower bound is; `paper_*_in_ci` says whether our interval includes the published "
        "number.\n\n"
        if EXPERIMENTS[experiment].compared
        else (
            "Published numbers for this table/figure are not printed beside ours; the "
            "transcribed ones are in src/bild_exp/data/paper_*.csv.\n\n"
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
