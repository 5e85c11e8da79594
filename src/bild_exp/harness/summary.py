"""Per-configuration summary rows computed from tidy records, Pareto frontiers and the
paper's Table 1 operating points. Records are the source of truth; nothing here is stored
that cannot be recomputed from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bild_exp.harness import stats
from bild_exp.harness.blocks import latest_outputs, same_block_pairs
from bild_exp.harness.execution import pass_at_1
from bild_exp.harness.metrics import score
from bild_exp.harness.plan import PARAM_COLUMNS, SAMPLING_COLUMNS

CONFIG_COLUMNS = ["config_id", "study", "method", "small_variant", *PARAM_COLUMNS]
# Resampling settings when a caller gives none (conf/sweep.yaml's ``stats``)
DEFAULT_STATS = {"bootstrap": 1000, "randomizations": 10_000, "seed": 12345, "confidence": 0.95}


def quality_column(metric: str, quality: str | None) -> str:
    """The headline quality score: BLEU, ROUGE-L, pass@1, or the task's choice (CNN/DM:
    ROUGE-Lsum)."""
    return quality or {"bleu": "bleu", "pass_at_1": "pass_at_1"}.get(metric, "rougeL")


def sampling_key(row: pd.Series | dict[str, Any]) -> tuple:
    return tuple(None if pd.isna(row.get(c)) else row.get(c) for c in SAMPLING_COLUMNS)


def metric_options(scoring: dict[str, Any]) -> dict[str, Any]:
    """The metric settings of ``scoring`` (``scoring`` in conf/sweep.yaml; the metrics'
    own defaults where a caller such as the bench passes fewer keys)."""
    return {
        "bleu_tokenize": scoring.get("bleu_tokenize", "13a"),
        "rouge_stemmer": scoring.get("rouge_stemmer", True),
    }


def summarize_config(group: pd.DataFrame, metric: str, scoring: dict[str, Any]) -> dict[str, Any]:
    """Quality, latency and policy rates of one configuration over its examples."""
    first = group.iloc[0]
    n_tokens = group["n_tokens"].sum()
    accepted = [n for lengths in group["accepted_lengths"].dropna() for n in lengths]
    # .get: records written before a parameter column existed simply lack it
    row = {column: first.get(column) for column in CONFIG_COLUMNS}
    row = {column: None if pd.isna(value) else value for column, value in row.items()}
    if metric == "pass_at_1":  # executed answers (bild_exp.harness.execution)
        row.update(pass_at_1(group))
    else:
        row.update(
            score(
                metric,
                list(group["scored_hypothesis"]),
                list(group["scored_reference"]),
                **metric_options(scoring),
            )
        )
    row.update(
        n_examples=len(group),
        n_tokens=int(n_tokens),
        total_latency_s=group["latency_s"].sum(),
        mean_latency_s=group["latency_s"].mean(),
        tokens_per_s=n_tokens / group["latency_s"].sum(),
        fallback_pct=100 * group["n_fallbacks"].sum() / max(n_tokens, 1),
        rollback_pct=100 * group["n_rollbacks"].sum() / max(n_tokens, 1),
        large_call_pct=100 * group["n_large_calls"].sum() / max(n_tokens, 1),
        mean_accepted_length=float(np.mean(accepted)) if accepted else None,
        n_oracle_replacements=int(group["n_oracle_replacements"].sum()),
    )
    row.update(latency_spread(group["latency_s"]))
    row.update(acceptance_summary(group))
    row.update(source_summary(group, n_tokens))
    row.update(cost_summary(group, n_tokens))
    exits = [
        d for depths in group.get("exit_layers", pd.Series(dtype=object)).dropna() for d in depths
    ]
    row["mean_exit_layer"] = float(np.mean(exits)) if exits else None
    return row


def latency_spread(latency: pd.Series) -> dict[str, float]:
    """The per-example latency distribution next to the totals."""
    p10, median, p90 = np.percentile(latency.to_numpy(float), [10, 50, 90])
    return {"latency_p10_s": p10, "latency_median_s": median, "latency_p90_s": p90}


def acceptance_summary(group: pd.DataFrame) -> dict[str, Any]:
    """Acceptance rate (draft tokens kept / checked) and per-position acceptance, where the
    method drafts (BiLD, speculative) and the records say how many tokens each large pass
    checked; None elsewhere (vanilla, HF assisted, records written before the column)."""
    empty = dict.fromkeys(
        ("acceptance_rate", "acceptance_by_position", "position_accepted", "position_drafted")
    )
    if "drafted_lengths" not in group:
        return empty
    calls = group.dropna(subset=["drafted_lengths", "accepted_lengths"])
    if len(calls) < len(group) or not any(len(d) for d in calls["drafted_lengths"]):
        return empty
    accepted, drafted = stats.acceptance_by_position(
        list(calls["accepted_lengths"]), list(calls["drafted_lengths"])
    )
    return {
        "acceptance_rate": sum(accepted) / sum(drafted) if sum(drafted) else None,
        "acceptance_by_position": json.dumps(
            [round(a / d, 4) for a, d in zip(accepted, drafted, strict=True)]
        ),
        "position_accepted": json.dumps(accepted),
        "position_drafted": json.dumps(drafted),
    }


SOURCE_COLUMNS = (
    "n_ngram_tokens",
    "ngram_token_pct",
    "ngram_drafted",
    "ngram_accepted",
    "ngram_acceptance_rate",
    "small_acceptance_rate",
    "ngram_large_calls",
    "small_large_calls",
    "ngram_acceptance_by_position",
    "small_acceptance_by_position",
)


def source_summary(group: pd.DataFrame, n_tokens: int) -> dict[str, Any]:
    """Per draft source (``draft_source="ngram+small"``): output tokens each wrote, draft
    tokens proposed and kept, the large passes each sent, and per-position acceptance
    (positions counted from the start of that source's part of a pass); None where no
    record has an n-gram draft (other draft sources, methods that do not draft, records
    written before the columns)."""
    empty = dict.fromkeys(SOURCE_COLUMNS)
    needed = ["draft_sources", "ngram_drafted_lengths", "ngram_accepted_lengths"]
    if any(column not in group for column in needed):
        return empty
    calls = group.dropna(subset=[*needed, "drafted_lengths", "accepted_lengths"])
    if len(calls) < len(group) or not any("ngram" in list(s) for s in calls["draft_sources"]):
        return empty
    parts: dict[str, tuple[list[list[int]], list[list[int]]]] = {
        "ngram": ([], []),
        "small": ([], []),
    }
    for _, row in calls.iterrows():
        drafted, accepted = list(row["drafted_lengths"]), list(row["accepted_lengths"])
        ngram_drafted, ngram_kept = (
            list(row["ngram_drafted_lengths"]),
            list(row["ngram_accepted_lengths"]),
        )
        small_drafted = [d - n for d, n in zip(drafted, ngram_drafted, strict=True)]
        small_kept = [min(a, d) for a, d in zip(accepted, small_drafted, strict=True)]
        parts["ngram"][0].append(ngram_kept)
        parts["ngram"][1].append(ngram_drafted)
        parts["small"][0].append(small_kept)
        parts["small"][1].append(small_drafted)
    out: dict[str, Any] = {}
    for source, (kept, drafted) in parts.items():
        n_kept, n_drafted = sum(map(sum, kept)), sum(map(sum, drafted))
        out[f"{source}_acceptance_rate"] = n_kept / n_drafted if n_drafted else None
        by_position = stats.acceptance_by_position(kept, drafted)
        out[f"{source}_acceptance_by_position"] = json.dumps(
            [round(a / d, 4) for a, d in zip(*by_position, strict=True) if d]
        )
        if source == "ngram":
            out.update(ngram_drafted=int(n_drafted), ngram_accepted=int(n_kept))
    sources = [source for row in calls["draft_sources"] for source in row]
    n_ngram_tokens = int(group["n_ngram_tokens"].sum())
    return {
        **out,
        "n_ngram_tokens": n_ngram_tokens,
        "ngram_token_pct": 100 * n_ngram_tokens / max(n_tokens, 1),
        "ngram_large_calls": sources.count("ngram"),
        "small_large_calls": sources.count("small"),
    }


def cost_summary(group: pd.DataFrame, n_tokens: int) -> dict[str, float | None]:
    """Analytical FLOPs and bytes per generated token, and their ratio (paper Figure 8).

    None when any example lacks them (HF assisted, or records written before they existed)."""
    names = ("flops_per_token", "mops_bytes_per_token", "arithmetic_intensity")
    if "flops" not in group or group["flops"].isna().any() or not n_tokens:
        return dict.fromkeys(names)
    flops, moved = group["flops"].sum(), group["mops_bytes"].sum()
    return dict(zip(names, (flops / n_tokens, moved / n_tokens, flops / moved), strict=True))


def reference_config_ids(summary: pd.DataFrame) -> dict[str, str | None]:
    """Each configuration's vanilla-large reference: the large run with the same sampling
    settings (joined once, not per row)."""
    large = summary[summary["method"] == "large"]
    by_key = {sampling_key(row): row["config_id"] for _, row in large.iterrows()}
    return {row["config_id"]: by_key.get(sampling_key(row)) for _, row in summary.iterrows()}


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
    """Speedup over same-block pairs (:func:`bild_exp.harness.blocks.same_block_pairs`):
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


def add_comparisons(
    summary: pd.DataFrame,
    records: pd.DataFrame,
    metric: str,
    quality: str,
    scoring: dict[str, Any],
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
    settings = {**DEFAULT_STATS, **(settings or {})}
    groups = dict(tuple(records.groupby("config_id", sort=False)))
    timed = groups if timings is None else dict(tuple(timings.groupby("config_id", sort=False)))
    qualities = {
        config: quality_statistics(group, metric, quality, scoring)
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


def pareto_mask(latency: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """True for points no other point beats on both (lower latency, higher quality)."""
    points = list(zip(latency, quality, strict=True))
    mask = []
    for i, (lat_i, q_i) in enumerate(points):
        dominated = any(
            lat_j <= lat_i and q_j >= q_i and (lat_j < lat_i or q_j > q_i)
            for j, (lat_j, q_j) in enumerate(points)
            if j != i
        )
        mask.append(not dominated)
    return mask


def method_family(row: pd.Series) -> str:
    """Pareto curves are drawn per study and small-model variant (e.g. bild/aligned)."""
    variant = row["small_variant"]
    return row["study"] if variant in (None, "-") else f"{row['study']}/{variant}"


def add_pareto(summary: pd.DataFrame, quality: str) -> pd.DataFrame:
    summary = summary.copy()
    summary["family"] = summary.apply(method_family, axis=1)
    summary["pareto"] = False
    for _, group in summary.dropna(subset=["normalized_latency"]).groupby("family"):
        mask = pareto_mask(list(group["normalized_latency"]), list(group[quality]))
        summary.loc[group.index, "pareto"] = mask
    return summary


# What an operating point reports besides its quality: which run, how fast, its parameters.
POINT_COLUMNS = (
    "config_id",
    "speedup",
    "speedup_low",
    "speedup_high",
    "quality_low",
    "quality_high",
    "quality_diff",
    "quality_diff_low",
    "quality_diff_high",
    "quality_p_value",
    "n_paired_examples",
    "fallback_threshold",
    "rollback_threshold",
    "window",
    "num_assistant_tokens",
    "prompt_lookup_num_tokens",
    "exit_threshold",
    "decay_temperature",
)
RULES = ("point", "ci")


def eligible_configs(
    group: pd.DataFrame, rule: str, quality: str, vanilla_quality: float, tolerance: float
) -> pd.DataFrame:
    """``point``: quality >= vanilla - tolerance (the paper's rule, on point estimates);
    ``ci``: the lower bound of the paired 95% interval of the quality difference is
    >= -tolerance (a reviewer's rule: the loss is bounded, not merely unobserved)."""
    if rule == "point":
        return group[group[quality] >= vanilla_quality - tolerance]
    if "quality_diff_low" not in group:
        return group.iloc[:0]
    return group[group["quality_diff_low"] >= -tolerance]


def best_point(
    group: pd.DataFrame, rule: str, quality: str, vanilla_quality: float, tolerance: float
) -> pd.Series | None:
    """The fastest configuration of ``group`` whose quality is within ``tolerance`` of
    vanilla large by ``rule`` (:func:`eligible_configs`); None when none is."""
    eligible = eligible_configs(group, rule, quality, vanilla_quality, tolerance)
    eligible = eligible.dropna(subset=["speedup"])
    return None if eligible.empty else eligible.loc[eligible["speedup"].idxmax()]


def vanilla_quality_of(summary: pd.DataFrame, group: pd.DataFrame, quality: str) -> float | None:
    """The quality of ``group``'s vanilla-large reference (same sampling settings)."""
    reference = reference_config_ids(summary)[group["config_id"].iloc[0]]
    if reference is None:
        return None
    return summary.set_index("config_id").loc[reference, quality]


def operating_points(
    summary: pd.DataFrame, quality: str, tolerances: Sequence[float] = (0.1, 1.0)
) -> pd.DataFrame:
    """Paper Table 1: per family, rule and tolerance, the best speedup whose quality is
    within ``tolerance`` of vanilla large (same sampling settings); ``rule`` says how
    "within" is judged (see :func:`eligible_configs`)."""
    rows = []
    for family, group in summary[summary["method"] != "large"].groupby("family"):
        vanilla_quality = vanilla_quality_of(summary, group, quality)
        if vanilla_quality is None:
            continue
        for rule in RULES:
            for tolerance in tolerances:
                best = best_point(group, rule, quality, vanilla_quality, tolerance)
                row = {"family": family, "rule": rule, "tolerance": tolerance}
                row["vanilla_quality"] = vanilla_quality
                row["quality"] = None if best is None else best[quality]
                row.update(
                    {name: None if best is None else best.get(name) for name in POINT_COLUMNS}
                )
                rows.append(row)
    return pd.DataFrame(rows)


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


def summarize(
    records: pd.DataFrame,
    metric: str,
    quality: str,
    scoring: dict[str, Any],
    settings: dict[str, Any] | None = None,
    timings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per configuration, with speedups, intervals and Pareto flags. ``records``:
    the outputs (where an example was re-timed in another block and has one record per
    block, the latest is used); ``timings``: every timed record (default ``records``).
    Quality comes from one record per (configuration, example), speedups from the
    same-block pairs of the timings."""
    outputs = latest_outputs(records)
    timings = records if timings is None else timings
    rows = [
        summarize_config(group, metric, scoring)
        for _, group in outputs.groupby("config_id", sort=False)
    ]
    summary = pd.DataFrame(rows)
    summary = add_comparisons(summary, outputs, metric, quality, scoring, settings, timings)
    summary = add_agreement(summary, outputs, metric, scoring)
    return add_pareto(summary, quality)


def add_agreement(
    summary: pd.DataFrame, records: pd.DataFrame, metric: str, scoring: dict[str, Any]
) -> pd.DataFrame:
    """``agreement_vs_large``: each configuration's outputs scored against vanilla large's
    (BLEU, or ROUGE-L for ROUGE and pass@1 tasks) on the same examples: a lossy method is
    judged against both the references and the model it approximates; and
    ``exact_match_vs_large``, the percentage of examples whose output is vanilla's."""
    name = "bleu" if metric == "bleu" else "rougeL"
    agreement_metric = "bleu" if metric == "bleu" else "rouge"
    groups = dict(tuple(records.groupby("config_id", sort=False)))
    references = reference_config_ids(summary)
    values, exact = [], []
    for config in summary["config_id"]:
        reference = groups.get(references[config], records.iloc[:0])
        joined = groups[config].merge(
            reference[["example_id", "hypothesis"]], on="example_id", suffixes=("", "_large")
        )
        if joined.empty:
            values.append(None)
            exact.append(None)
            continue
        exact.append(100 * float((joined["hypothesis"] == joined["hypothesis_large"]).mean()))
        scores = score(
            agreement_metric,
            list(joined["hypothesis"]),
            list(joined["hypothesis_large"]),
            **metric_options(scoring),
        )
        values.append(scores[name])
    summary = summary.copy()
    summary["agreement_vs_large"] = values
    summary["exact_match_vs_large"] = exact
    return summary
