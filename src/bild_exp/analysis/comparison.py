"""The one comparison with vanilla large, used by the sweep, the bench and the paper:
each configuration's reference (the vanilla-large run with the same sampling settings),
speedup over same-block timing pairs and the quality difference, each with a paired
bootstrap interval on one draw of examples, and what the intervals can resolve."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bild_exp.analysis import stats
from bild_exp.harness.config.plan import SAMPLING_COLUMNS
from bild_exp.harness.run.blocks import same_block_pairs
from bild_exp.harness.scoring.metrics import Scoring, metric_options


@cache
def default_stats() -> dict[str, Any]:
    """Resampling settings when a caller gives none: ``stats`` in conf/sweep.yaml, read
    from the packaged config so that the seed and sizes have one home."""
    sweep = resources.files("bild_exp").joinpath("conf/sweep.yaml").read_text()
    return dict(OmegaConf.to_container(OmegaConf.create(sweep).stats, resolve=True))


def stats_settings(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``settings`` over the defaults of :func:`default_stats`."""
    return {**default_stats(), **(settings or {})}


def sampling_key(row: pd.Series | dict[str, Any]) -> tuple:
    return tuple(None if pd.isna(row.get(c)) else row.get(c) for c in SAMPLING_COLUMNS)


def reference_config_ids(summary: pd.DataFrame) -> dict[str, str | None]:
    """Each configuration's vanilla-large reference: the large run with the same sampling
    settings (joined once, not per row)."""
    large = summary[summary["method"] == "large"]
    by_key = {sampling_key(row): row["config_id"] for _, row in large.iterrows()}
    return {row["config_id"]: by_key.get(sampling_key(row)) for _, row in summary.iterrows()}


def vanilla_row(summary: pd.DataFrame, config_id: str | None = None) -> pd.Series | None:
    """The vanilla-large row of ``summary`` that ``config_id`` is compared with (same
    sampling settings); without ``config_id``, the greedy one (or the only one). None where
    the summary has none."""
    large = summary[summary["method"] == "large"]
    if config_id is not None:
        reference = reference_config_ids(summary).get(config_id)
        large = large[large["config_id"] == reference]
    elif len(large) > 1:
        greedy = (
            large[large["sampling"].fillna("greedy") == "greedy"] if "sampling" in large else large
        )
        large = greedy if len(greedy) else large
    return None if large.empty else large.iloc[0]


def quality_statistics(
    group: pd.DataFrame, metric: str, quality: str, scoring: dict[str, Any]
) -> stats.PerExample:
    """The per-example statistics of one configuration's headline quality, in row order."""
    return stats.per_example_quality(
        metric,
        quality,
        list(group["scored_hypothesis"]) if metric != "pass_at_1" else [],
        list(group["scored_reference"]) if metric != "pass_at_1" else [],
        passed=list(group["passed"]) if metric == "pass_at_1" else None,
        **metric_options(scoring),
    )


COMPARISON_COLUMNS = (
    "speedup",
    "speedup_low",
    "speedup_high",
    "speedup_median",
    "speedup_p10",
    "speedup_p90",
    "normalized_latency",
    "modelled_speedup",
    "measured_over_modelled",
    "quality_diff",
    "quality_diff_low",
    "quality_diff_high",
    "quality_p_value",
    "n_paired_examples",
    "n_timing_pairs",
    "n_timing_blocks",
    "n_loaded_pairs",
)
MODELLED = "modelled_latency_s"  # per record: its calls times per-call costs of its block


def speedup_columns(timing: pd.DataFrame, settings: dict[str, Any]) -> tuple[dict, np.ndarray]:
    """Speedup over same-block pairs (:func:`bild_exp.harness.run.blocks.same_block_pairs`):
    the ratio of total latencies with a paired bootstrap interval stratified by block, the
    per-example ratio's median and 10th/90th percentiles, and the load-immune modelled
    speedup; and the resampled pair indices (for the quality difference)."""
    indices = stats.stratified_bootstrap_indices(
        list(timing["block_id"]), settings["bootstrap"], settings["seed"]
    )
    mine, reference = timing["latency_s"].to_numpy(float), timing["latency_s_ref"].to_numpy(float)
    speedup = stats.ratio_interval(reference, mine, indices, settings["confidence"])
    ratios = reference / mine
    row = {
        "speedup": speedup.estimate,
        "speedup_low": speedup.low,
        "speedup_high": speedup.high,
        "speedup_median": float(np.median(ratios)),
        "speedup_p10": float(np.percentile(ratios, 10)),
        "speedup_p90": float(np.percentile(ratios, 90)),
        "normalized_latency": 1 / speedup.estimate,
        "n_timing_pairs": len(timing),
        "n_timing_blocks": int(timing["block_id"].nunique()),
        "n_loaded_pairs": int(timing["loaded"].sum()),
    }
    modelled = timing.get(MODELLED), timing.get(f"{MODELLED}_ref")
    if all(m is not None and m.notna().all() and (m > 0).all() for m in modelled):
        row["modelled_speedup"] = float(modelled[1].sum() / modelled[0].sum())
        row["measured_over_modelled"] = float(mine.sum() / modelled[0].sum())
    return row, indices


def compare_with_vanilla(
    mine: pd.DataFrame,
    reference: pd.DataFrame,
    mine_quality: stats.PerExample,
    reference_quality: stats.PerExample,
    settings: dict[str, Any],
    mine_timings: pd.DataFrame | None = None,
    reference_timings: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Speedup and quality difference against vanilla large, each with a paired bootstrap
    interval. ``mine``/``reference``: one record per example (the quality statistics are in
    their row order); ``*_timings``: every timed record (several blocks may have timed an
    example; default: the same frames). The speedup divides only timings of one example
    taken in one block; when those pairs cover the examples both ran, the quality
    difference is resampled on the same draw."""
    mine_timings = mine if mine_timings is None else mine_timings
    reference_timings = reference if reference_timings is None else reference_timings
    reference_position = {example: i for i, example in enumerate(reference["example_id"])}
    mine_position = {example: i for i, example in enumerate(mine["example_id"])}
    both = [e for e in mine["example_id"] if e in reference_position]
    if not both:
        return dict.fromkeys(COMPARISON_COLUMNS)
    columns = ("latency_s", MODELLED) if MODELLED in mine_timings else ("latency_s",)
    if MODELLED not in reference_timings:
        columns = ("latency_s",)
    timing = same_block_pairs(mine_timings, reference_timings, columns)
    timing = timing[timing["example_id"].isin(set(both))]
    row = dict.fromkeys(COMPARISON_COLUMNS)
    row.update(n_timing_pairs=0, n_timing_blocks=0, n_loaded_pairs=0)
    if len(timing):
        speed, indices = speedup_columns(timing, settings)
        row.update(speed)
    if len(timing) and set(timing["example_id"]) == set(both):
        order = list(timing["example_id"])
    else:  # some example has no same-block pair: its quality still counts
        order = both
        indices = stats.bootstrap_indices(len(order), settings["bootstrap"], settings["seed"])
    mine_rows = np.array([mine_position[e] for e in order])
    reference_rows = np.array([reference_position[e] for e in order])
    mine_q = stats.PerExample(mine_quality.stats[mine_rows], mine_quality.aggregate)
    reference_q = stats.PerExample(
        reference_quality.stats[reference_rows], reference_quality.aggregate
    )
    difference = stats.paired_difference(
        mine_q,
        reference_q,
        indices,
        settings["confidence"],
        settings["randomizations"],
        settings["seed"],
    )
    row.update(
        quality_diff=difference.difference.estimate,
        quality_diff_low=difference.difference.low,
        quality_diff_high=difference.difference.high,
        quality_p_value=difference.p_value,
        n_paired_examples=len(order),
    )
    return row


def exact_share(mine: pd.Series, vanilla: pd.Series) -> float:
    """The percentage of examples whose output is vanilla large's token for token: the one
    definition of "exact" behind every table (texts can agree after clean-up where the
    tokens do not). Both series are indexed alike, one token list per example."""
    return 100 * float((mine.map(list) == vanilla.map(list)).mean())


def add_comparisons(
    summary: pd.DataFrame,
    records: pd.DataFrame,
    scoring: Scoring,
    settings: dict[str, Any] | None = None,
    timings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per configuration, against vanilla large on the same examples: speedup = vanilla
    total latency / the configuration's over same-block pairs (and the per-example ratio's
    median and spread), quality difference, both with paired bootstrap intervals, and the
    p-value of "quality differs" (paired approximate randomization); plus the
    configuration's own quality interval. ``records``: one per (configuration, example);
    ``timings``: every timed record (default ``records``). Settings: ``stats`` in
    conf/sweep.yaml."""
    settings = stats_settings(settings)
    groups = dict(tuple(records.groupby("config_id", sort=False)))
    timed = groups if timings is None else dict(tuple(timings.groupby("config_id", sort=False)))
    qualities = {
        config: quality_statistics(group, scoring.metric, scoring.quality, scoring.options)
        for config, group in groups.items()
    }
    references = reference_config_ids(summary)
    rows = []
    for config in summary["config_id"]:
        reference = references[config]
        row = (
            dict.fromkeys(COMPARISON_COLUMNS)
            if reference is None
            else compare_with_vanilla(
                groups[config],
                groups[reference],
                qualities[config],
                qualities[reference],
                settings,
                timed.get(config, groups[config]),
                timed.get(reference, groups[reference]),
            )
        )
        indices = stats.bootstrap_indices(
            len(groups[config]), settings["bootstrap"], settings["seed"]
        )
        own = stats.score_interval(qualities[config], indices, settings["confidence"])
        rows.append({**row, "quality_low": own.low, "quality_high": own.high})
    columns = [*COMPARISON_COLUMNS, "quality_low", "quality_high"]
    compared = pd.DataFrame(rows, columns=columns, index=summary.index)
    return pd.concat([summary.drop(columns=columns, errors="ignore"), compared], axis=1)


def resolution_notes(summary: pd.DataFrame, tolerances: Sequence[float] = (0.1, 1.0)) -> list[str]:
    """One line per tolerance the data cannot resolve: every lossy configuration's quality
    interval is wider than the tolerance, with the examples that would narrow the median
    half-width to it (intervals shrink as 1/sqrt(n)); and one when the bootstrap rests on
    too few examples for its percentiles to be trusted."""
    compared = summary[summary["method"] != "large"].dropna(subset=["quality_diff_low"])
    if compared.empty:
        return []
    notes = []
    n = int(compared["n_paired_examples"].min())
    if n < stats.FEW_EXAMPLES:
        notes.append(
            f"Intervals rest on {n} examples: a bootstrap on fewer than {stats.FEW_EXAMPLES} "
            "understates the uncertainty; read every interval as optimistic."
        )
    half = (compared["quality_diff_high"] - compared["quality_diff_low"]) / 2
    lossy = half[half > 0]
    for tolerance in tolerances:
        if lossy.empty or (lossy <= tolerance).any():
            continue
        median = float(lossy.median())
        needed = stats.examples_needed(n, median, tolerance)
        notes.append(
            f"Tolerance {tolerance:g}: every quality interval is wider than ±{tolerance:g} "
            f"(median ±{median:.2f} on {n} examples), so the data cannot separate the "
            f"configurations at this tolerance; about {needed:,} examples would."
        )
    return notes
