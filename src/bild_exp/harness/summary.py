"""Per-configuration summary rows computed from tidy records, Pareto frontiers and the
paper's Table 1 operating points. Records are the source of truth; nothing here is stored
that cannot be recomputed from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bild_exp.harness.execution import pass_at_1
from bild_exp.harness.metrics import score
from bild_exp.harness.plan import PARAM_COLUMNS

SAMPLING_COLUMNS = ["sampling", "top_p", "temperature", "seed"]
CONFIG_COLUMNS = ["config_id", "study", "method", "small_variant", *PARAM_COLUMNS]


def quality_column(metric: str, quality: str | None) -> str:
    """The headline quality score: BLEU, ROUGE-L, pass@1, or the task's choice (CNN/DM:
    ROUGE-Lsum)."""
    return quality or {"bleu": "bleu", "pass_at_1": "pass_at_1"}.get(metric, "rougeL")


def sampling_key(row: pd.Series | dict[str, Any]) -> tuple:
    return tuple(None if pd.isna(row[c]) else row[c] for c in SAMPLING_COLUMNS)


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
                scoring.get("bleu_tokenize", "13a"),
                scoring.get("rouge_stemmer", True),
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
    row.update(cost_summary(group, n_tokens))
    exits = [
        d for depths in group.get("exit_layers", pd.Series(dtype=object)).dropna() for d in depths
    ]
    row["mean_exit_layer"] = float(np.mean(exits)) if exits else None
    return row


def cost_summary(group: pd.DataFrame, n_tokens: int) -> dict[str, float | None]:
    """Analytical FLOPs and bytes per generated token, and their ratio (paper Figure 8).

    None when any example lacks them (HF assisted, or records written before they existed)."""
    names = ("flops_per_token", "mops_bytes_per_token", "arithmetic_intensity")
    if "flops" not in group or group["flops"].isna().any() or not n_tokens:
        return dict.fromkeys(names)
    flops, moved = group["flops"].sum(), group["mops_bytes"].sum()
    return dict(zip(names, (flops / n_tokens, moved / n_tokens, flops / moved), strict=True))


def add_speedups(summary: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Speedup = vanilla-large total latency / config total latency over the same examples,
    and the median of per-example ratios; the large run with the same sampling settings is
    the reference."""
    large = records[records["method"] == "large"]
    ratio_total, ratio_median = [], []
    for _, row in summary.iterrows():
        reference = large[large.apply(sampling_key, axis=1) == sampling_key(row)]
        mine = records[records["config_id"] == row["config_id"]]
        joined = mine.merge(
            reference[["example_id", "latency_s"]], on="example_id", suffixes=("", "_large")
        )
        if len(joined) == 0:
            ratio_total.append(None)
            ratio_median.append(None)
            continue
        ratio_total.append(joined["latency_s_large"].sum() / joined["latency_s"].sum())
        ratio_median.append(float((joined["latency_s_large"] / joined["latency_s"]).median()))
    summary = summary.copy()
    summary["speedup"] = ratio_total
    summary["speedup_median"] = ratio_median
    summary["normalized_latency"] = [1 / s if s else None for s in ratio_total]
    return summary


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
    "fallback_threshold",
    "rollback_threshold",
    "window",
    "exit_threshold",
    "decay_temperature",
)


def operating_points(
    summary: pd.DataFrame, quality: str, tolerances: Sequence[float] = (0.1, 1.0)
) -> pd.DataFrame:
    """Paper Table 1: per family, the best speedup whose quality is within ``tolerance`` of
    vanilla large (same sampling settings)."""
    rows = []
    large = summary[summary["method"] == "large"]
    for family, group in summary[summary["method"] != "large"].groupby("family"):
        for tolerance in tolerances:
            reference = large[large.apply(sampling_key, axis=1) == sampling_key(group.iloc[0])]
            if reference.empty:
                continue
            floor = reference[quality].iloc[0] - tolerance
            eligible = group[group[quality] >= floor].dropna(subset=["speedup"])
            best = eligible.loc[eligible["speedup"].idxmax()] if not eligible.empty else None
            row = {"family": family, "tolerance": tolerance}
            row["vanilla_quality"] = reference[quality].iloc[0]
            row["quality"] = None if best is None else best[quality]
            row.update({name: None if best is None else best.get(name) for name in POINT_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(
    records: pd.DataFrame, metric: str, quality: str, scoring: dict[str, Any]
) -> pd.DataFrame:
    """One row per configuration, with speedups and Pareto flags."""
    rows = [
        summarize_config(group, metric, scoring)
        for _, group in records.groupby("config_id", sort=False)
    ]
    summary = pd.DataFrame(rows)
    summary = add_speedups(summary, records)
    summary = add_agreement(summary, records, metric, scoring)
    return add_pareto(summary, quality)


def add_agreement(
    summary: pd.DataFrame, records: pd.DataFrame, metric: str, scoring: dict[str, Any]
) -> pd.DataFrame:
    """``agreement_vs_large``: each configuration's outputs scored against vanilla large's
    (BLEU, or ROUGE-L for ROUGE and pass@1 tasks) on the same examples: a lossy method is
    judged against both the references and the model it approximates; and
    ``exact_match_vs_large``, the percentage of examples whose output is vanilla's."""
    large = records[records["method"] == "large"]
    name = "bleu" if metric == "bleu" else "rougeL"
    agreement_metric = "bleu" if metric == "bleu" else "rouge"
    values, exact = [], []
    for _, row in summary.iterrows():
        reference = large[large.apply(sampling_key, axis=1) == sampling_key(row)]
        mine = records[records["config_id"] == row["config_id"]]
        joined = mine.merge(
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
            scoring.get("bleu_tokenize", "13a"),
            scoring.get("rouge_stemmer", True),
        )
        values.append(scores[name])
    summary = summary.copy()
    summary["agreement_vs_large"] = values
    summary["exact_match_vs_large"] = exact
    return summary
