"""Writing a sweep's summary files, plots and W&B run; printing its table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from bild_exp.analysis import plots
from bild_exp.analysis.by_length import length_table
from bild_exp.analysis.comparison import resolution_notes
from bild_exp.analysis.wandb_log import log_sweep
from bild_exp.harness.config.plan import GRID_AXES
from bild_exp.harness.records.store import atomic_write_bytes, atomic_write_json, read_json
from bild_exp.harness.run.blocks import LOAD_MARGIN
from bild_exp.harness.scoring.metrics import quality_column

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["study", "small_variant", *GRID_AXES, "n_examples"]
RATE_COLUMNS = [
    "speedup",
    "speedup_ci",
    "speedup_median",
    "fallback_pct",
    "rollback_pct",
    "large_call_pct",
    "mean_accepted_length",
    "acceptance_rate",
]
# when present (the per-source columns: where some configuration drafted n-grams)
OPTIONAL_COLUMNS = [
    "agreement_vs_large",
    "mean_exit_layer",
    "flops_per_token",
    "ngram_token_pct",
    "ngram_acceptance_rate",
    "small_acceptance_rate",
]


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """A results folder's manifest.json (one line naming the remedy when it is missing)."""
    return read_json(
        run_dir / "manifest.json",
        "rerun the sweep that wrote this folder (its records are reused, the manifest rewritten)",
    )


def task_quality(run_dir: Path) -> tuple[str, str]:
    """A results folder's task and its headline quality column (pass@1, BLEU, ROUGE-L or
    the task's choice), from its manifest."""
    task = read_manifest(run_dir)["config"]["task"]
    return task["name"], quality_column(task["metric"], task.get("quality"))


def run_quality(run_dir: Path) -> str:
    """The headline quality column of a results folder (what a notebook plots)."""
    return task_quality(run_dir)[1]


def interval(low: pd.Series, high: pd.Series, digits: int) -> pd.Series:
    """``[low, high]`` as text (blank where either bound is missing)."""
    return pd.Series(
        [
            "" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"
            for lo, hi in zip(low, high, strict=True)
        ],
        index=low.index,
    )


def with_intervals(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with its intervals as printable ``[low, high]`` columns."""
    frame = summary.copy()
    for name, (low, high, digits) in {
        "quality_ci": ("quality_low", "quality_high", 2),
        "diff_vs_large_ci": ("quality_diff_low", "quality_diff_high", 2),
        "speedup_ci": ("speedup_low", "speedup_high", 2),
    }.items():
        if low in frame:
            frame[name] = interval(frame[low], frame[high], digits)
    return frame


def table(summary: pd.DataFrame, quality: str) -> pd.DataFrame:
    summary = with_intervals(summary)
    present = [c for c in summary if summary[c].notna().any() and (summary[c] != "").any()]
    columns = [c for c in TABLE_COLUMNS if c in present]
    quality_columns = [
        c for c in (quality, "quality_ci", "diff_vs_large_ci", "quality_p_value") if c in present
    ]
    latency = [c for c in ("mean_latency_s", "latency_median_s", "latency_p90_s") if c in present]
    rates = [c for c in RATE_COLUMNS if c in present]
    optional = [c for c in OPTIONAL_COLUMNS if c in present]
    frame = summary[[*columns, *quality_columns, *latency, *rates, *optional, "pareto"]].copy()
    frame["pareto"] = frame["pareto"].map({True: "*", False: ""})
    return frame.round(3)


HEADLINE_POSITIONS = 4  # per-position acceptance shown for the first draft positions


def headline_table(summary: pd.DataFrame, quality: str) -> pd.DataFrame:
    """The table a reader quotes, one row per configuration: quality with its paired
    interval against vanilla large, answers equal to vanilla's, the measured speedup with
    its same-block interval and the modelled one (per-call costs), large calls and
    acceptance (overall and at the first draft positions)."""
    frame = with_intervals(summary)
    rows = pd.DataFrame(index=frame.index)
    rows["configuration"] = [label_of(row) for _, row in frame.iterrows()]
    rows["n_examples"] = frame["n_examples"]
    rows[quality] = frame[quality].round(2)
    rows["diff_vs_large_ci"] = frame.get("diff_vs_large_ci")
    rows["exact_match_vs_large"] = frame.get("exact_match_vs_large")
    rows["speedup"] = frame["speedup"].round(2)
    rows["speedup_ci"] = frame.get("speedup_ci")
    rows["modelled_speedup"] = frame.get("modelled_speedup")
    rows["large_call_pct"] = frame.get("large_call_pct")
    rows["acceptance_rate"] = frame.get("acceptance_rate")
    rows["acceptance_first_positions"] = [
        first_positions(value) for value in frame.get("acceptance_by_position", [None] * len(frame))
    ]
    order = rows["speedup"].fillna(0).sort_values(ascending=False, kind="stable").index
    return rows.loc[order].round(3).reset_index(drop=True)


def label_of(row: pd.Series) -> str:
    """``study (small variant; the swept values it has)``, e.g. ``bild (base; 0.7/5)``."""
    parts = [] if row.get("small_variant") in (None, "-") else [str(row["small_variant"])]
    thresholds = [row.get("fallback_threshold"), row.get("rollback_threshold")]
    if all(pd.notna(t) for t in thresholds):
        parts.append(f"{thresholds[0]:g}/{thresholds[1]:g}")
    return f"{row['study']} ({'; '.join(parts)})" if parts else str(row["study"])


def first_positions(value: object) -> str:
    """The first :data:`HEADLINE_POSITIONS` per-position acceptance rates, as text."""
    if not isinstance(value, str) or not value:
        return ""
    rates = json.loads(value)[:HEADLINE_POSITIONS]
    return " ".join(f"{rate:.2f}" for rate in rates)


def points_table(points: pd.DataFrame) -> pd.DataFrame:
    """operating_points.csv with its intervals as ``[low, high]`` text, rounded to print."""
    if points.empty:
        return points
    frame = with_intervals(points)
    keep = [
        "family",
        "rule",
        "tolerance",
        "vanilla_quality",
        "quality",
        "diff_vs_large_ci",
        "speedup",
        "speedup_ci",
        "config_id",
    ]
    return frame[[c for c in keep if c in frame]].round(3)


def load_warning(manifest: dict[str, Any]) -> str | None:
    """One line when the machine's load average exceeded its cores (by more than
    LOAD_MARGIN: the sweep's own threads hold it near the core count) before or after the
    timed work: other processes shared the CPU and the latencies include their work."""
    load = manifest.get("machine_load") or {}
    cores = load.get("cores")
    readings = [r[0] for r in (load.get("before"), load.get("after")) if r]
    if not cores or not readings or max(readings) <= cores + LOAD_MARGIN:
        return None
    return (
        f"Warning: the 1-minute load average reached {max(readings):.2f} on {cores} cores "
        "around the timed runs: other work shared the CPU, so latencies and speedups are noisy."
    )


def block_note(summary: pd.DataFrame) -> str | None:
    """How many timing blocks the speedups span, and how many pairs were timed under load."""
    if "n_timing_blocks" not in summary or summary["n_timing_blocks"].isna().all():
        return None
    blocks = int(summary["n_timing_blocks"].max())
    loaded = int(summary["n_loaded_pairs"].fillna(0).sum())
    unpaired = summary[summary["speedup"].isna() & (summary["n_paired_examples"] > 0)]
    line = (
        f"Speedups divide timings of one example taken in one timing block (one process's run): "
        f"they span {blocks} block{'s' if blocks != 1 else ''}; "
        f"{loaded} pairs were timed with the 1-minute load above the cores (plus half a core)"
        + (" (sweep.retime_loaded=true times them again)" if loaded else "")
        + "."
    )
    if len(unpaired):
        line += f" {len(unpaired)} configurations have no same-block pair with vanilla large."
    return line


def sample_note(manifest: dict[str, Any]) -> str | None:
    """One line when the examples are a stratified subset (``data.sample``): the table is
    not the benchmark's."""
    data = (manifest.get("config") or {}).get("data") or {}
    if data.get("sample") is None:
        return None
    return (
        f"A subset: {manifest.get('n_examples')} examples drawn one per stratum of reference "
        f"length (data.sample={data['sample']}, data.sample_seed={data.get('sample_seed', 0)}), "
        "not the whole split."
    )


def notes(summary: pd.DataFrame, manifest: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the table: a subset, load, timing blocks,
    resolution of the data."""
    remarks = [sample_note(manifest), load_warning(manifest), block_note(summary)]
    return [r for r in remarks if r] + resolution_notes(summary)


def format_summary(
    summary: pd.DataFrame,
    quality: str,
    device: dict[str, Any],
    remarks: list[str] | None = None,
) -> str:
    header = (
        f"{len(summary)} configurations on {device['device_name']} ({device['device']}); "
        "* = Pareto point; intervals (_ci): paired bootstrap over examples at stats.confidence (default 95%)"
    )
    body = header + "\n" + table(summary, quality).to_string(index=False)
    return body + "".join(f"\n{remark}" for remark in remarks or [])


def write_outputs(
    run_dir: Path,
    summary: pd.DataFrame,
    points: pd.DataFrame,
    manifest: dict[str, Any],
    quality: str,
    cfg: DictConfig,
    record_dirs: list[Path],
    lengths: pd.DataFrame | None = None,
) -> None:
    """summary.csv, operating_points.csv, summary.md, headline.md, the per-length view
    (``lengths``, :func:`bild_exp.analysis.by_length.by_length`: by_length.csv and .md),
    manifest.json, Pareto, acceptance and per-length plots; then W&B (whose failure never
    touches the local files)."""
    atomic_write_bytes(run_dir / "summary.csv", summary.to_csv(index=False).encode())
    headline = headline_table(summary, quality).to_markdown(index=False)
    atomic_write_bytes(run_dir / "headline.md", (headline + "\n").encode())
    if lengths is not None and not lengths.empty:
        atomic_write_bytes(run_dir / "by_length.csv", lengths.to_csv(index=False).encode())
        view = length_table(lengths, summary).to_markdown()
        atomic_write_bytes(run_dir / "by_length.md", (view + "\n").encode())
    atomic_write_bytes(run_dir / "operating_points.csv", points.to_csv(index=False).encode())
    markdown = table(summary, quality).to_markdown(index=False)
    remarks = "".join(f"\n{remark}\n" for remark in notes(summary, manifest))
    atomic_write_bytes(run_dir / "summary.md", (markdown + "\n" + remarks).encode())
    atomic_write_json(run_dir / "manifest.json", manifest)
    figure_paths = plots.pareto_figure(
        summary, quality, run_dir / "pareto", title=f"{cfg.task.name} / {cfg.pair.name}"
    )
    figure_paths += plots.acceptance_figure(summary, run_dir / "acceptance")
    if lengths is not None and not lengths.empty:
        figure_paths += plots.length_figure(lengths, summary, run_dir / "by_length")
    try:
        log_sweep(cfg, run_dir, summary, figure_paths, record_dirs)
    except Exception as error:  # noqa: BLE001 - W&B must never lose or block local results
        log.warning("W&B logging failed, local results are complete: %s", error)
